"""One finished edit (:class:`EditResult`): the image at the user's size, every stage's record, and how to read it.

A :class:`~dragnb.session.DragSession` makes one per :meth:`~dragnb.session.DragSession.run`; a round of the history
(:mod:`dragnb.rounds`) keeps it, and the views (:mod:`dragnb.ui.plots`) take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import Settings
from .denoise import DenoiseResult
from .drag import DragResult
from .inversion import InversionResult
from .lora import LoraResult
from .points import DragPoints, grid_to_image


@dataclass
class EditResult:
    """One finished edit: the image at the original size plus every stage's record."""

    image: np.ndarray  # (H, W, 3) uint8 at the original image size
    source: np.ndarray  # (H, W, 3) uint8, the input
    points: DragPoints  # image pixels
    mask: np.ndarray | None  # (H, W) bool, None = whole image editable
    prompt: str
    model: str
    settings: Settings
    lora: LoraResult | None
    inversion: InversionResult | None
    drag: DragResult
    denoise: DenoiseResult
    image_size: tuple[int, int]  # original (H, W)
    model_size: tuple[int, int]  # (H, W) the model saw
    seconds: dict[str, float] = field(default_factory=dict)  # per stage; 0 when cached in memory
    cached: dict[str, bool] = field(default_factory=dict)  # True: the stage came from memory or disk
    origin: dict[str, str] = field(default_factory=dict)  # per stage: "computed" | "memory" | "disk" | "skipped"

    def trajectory_xy(self) -> np.ndarray:
        """(K + 1, N, 2) handle positions in image pixels (x, y) of the original image."""
        traj = self.drag.trajectory
        return np.stack([grid_to_image(step, self.image_size, self.drag.feature_size) for step in traj])

    @property
    def final_handles_xy(self) -> np.ndarray:
        return grid_to_image(self.drag.handles, self.image_size, self.drag.feature_size)

    def to_record(self) -> dict:
        """Everything needed to reproduce and inspect the edit, JSON-serialisable."""
        return {
            "model": self.model, "prompt": self.prompt,
            "image_size": list(self.image_size), "model_size": list(self.model_size),
            "points": self.points.as_list(), "mask_used": self.mask is not None,
            "mask_note": None if self.mask is not None else "no mask drawn: whole image editable, mask term dropped",
            "settings": self.settings.to_dict(),
            "stop_reason": self.drag.stop_reason, "drag_steps": len(self.drag.history),
            "handle_trajectory_xy": self.trajectory_xy().round(2).tolist(),
            "final_handles_xy": self.final_handles_xy.round(2).tolist(),
            "loss_history": [{"step": s.step, "t": s.t, "motion": s.motion_loss, "mask": s.mask_loss, "total": s.loss,
                              "distances": s.distances, "seconds": s.seconds,
                              **{k: v for k, v in s.extras.items() if isinstance(v, float)}}  # e.g. text_distance
                             for s in self.drag.history],
            "drag_timestep": self.drag.t, "drag_denoised_steps": len(self.drag.timesteps) - 1,
            "lora_losses": self.lora.losses if self.lora else None,
            "inverted_timestep": self.inversion.t if self.inversion else None,
            "seconds": self.seconds, "cached": self.cached, "origin": self.origin,
            "interrupted": {"lora": bool(self.lora and self.lora.interrupted),
                            "inversion": bool(self.inversion and self.inversion.interrupted),
                            "drag": self.drag.stop_reason == "interrupted", "denoise": self.denoise.interrupted},
        }
