"""What the optimiser changes (step 5, docs/method.md §3.5 and §6).

* :class:`Latent`, the paper's: ẑ_t alone, by Adam with lr η (``drag.optimizer = "sgd"``: the paper's plain step).
* :class:`LatentAndText`, DragText (Choi et al. 2024): the text embedding c' (a copy of the prompt's c) as a second
  parameter group of the same optimiser (lr ``drag.text_lr``), with the regulariser ``text_lam`` · Σ|c' − c| over
  the prompt's tokens (<bos> to <eos>, not the padding). The features and x̂_{t-1} read c'; the mask term's
  x_{t-1}^0 keeps c; the denoising gives c' to the edited branch.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import DragSettings
from .parts import Optimised

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}  # drag.optimizer


class Latent(Optimised):
    """The paper's variable: the latent ẑ_t."""

    def start(self, latent: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.prompt_text = text  # c, or [uncond, c] with guidance
        self.z = latent.detach().clone().requires_grad_(True)  # ẑ_t^0 = z_t (a copy: the input is not modified)
        self.optimizer = OPTIMIZERS[self.settings.optimizer]([{"params": [self.z]}, *self.more_groups()],
                                                             lr=self.settings.lr)
        return self.z

    def more_groups(self) -> list[dict]:
        """Parameter groups optimised beside the latent's (none here)."""
        return []

    @property
    def text(self) -> torch.Tensor:
        """The text the edited branch reads: the prompt's."""
        return self.prompt_text

    def restart(self, latent: torch.Tensor) -> torch.Tensor:
        group = self.optimizer.param_groups[0]
        self.optimizer.state.pop(group["params"][0], None)  # a fresh optimiser for the new latent, as GoodDrag
        self.z = latent.detach().clone().requires_grad_(True)
        group["params"] = [self.z]
        return self.z

    def penalty(self) -> torch.Tensor:
        return self.z.new_zeros(())


def prompt_tokens(tokenizer, prompt: str | None) -> torch.Tensor | None:
    """(77,) bool: the prompt's own tokens with <bos> and <eos>; None (every token) without a prompt."""
    if prompt is None:
        return None
    n = len(tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids)
    keep = torch.zeros(tokenizer.model_max_length, dtype=torch.bool)
    keep[:n] = True
    return keep


class LatentAndText(Latent):
    """DragText: the latent and the conditional text embedding, optimised together."""

    def __init__(self, settings: DragSettings, tokens: torch.Tensor | None = None):
        super().__init__(settings)
        self.tokens = tokens  # (77,) bool, the tokens the regulariser covers; None = all (:func:`prompt_tokens`)

    def start(self, latent: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.cond = text[-1:].detach().clone().requires_grad_(True)  # c' starts at c
        keep = torch.ones(text.shape[1], dtype=torch.bool) if self.tokens is None else self.tokens
        self.keep = keep.to(text.device)[None, :, None]  # (1, 77, 1)
        return super().start(latent, text)

    def more_groups(self) -> list[dict]:
        return [{"params": [self.cond], "lr": self.settings.text_lr}]

    @property
    def text(self) -> torch.Tensor:
        """c' (or [uncond, c'] with guidance) as it is now."""
        return torch.cat([self.prompt_text[:1].detach(), self.cond]) if len(self.prompt_text) == 2 else self.cond

    def penalty(self) -> torch.Tensor:
        return self.settings.text_lam * ((self.cond - self.prompt_text[-1:]) * self.keep).abs().sum()

    def record(self, keep_features: bool) -> dict[str, Any]:
        return {"text_distance": float((self.cond.detach() - self.prompt_text[-1:]).abs().max())}
