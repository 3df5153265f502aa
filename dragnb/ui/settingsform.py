"""The run panel's settings form: a widget per setting the workbench varies most, read as a :class:`Settings`.

:class:`SettingsForm` holds the sliders and dropdowns (drag steps, latent lr, mask λ, inversion strength, the
feature block, LoRA steps, reference-latent control, the drag method, a dropdown per variant and the variants' own
numbers).
Its data are plain: ``form.settings`` is the widgets' values over ``form.base`` (every other setting is
``form.base``'s), and ``form.show(settings)`` makes the widgets show a :class:`Settings` (a round's) and edit over it.
"""

from __future__ import annotations

import dataclasses
import typing

import ipywidgets as widgets

from ..config import DragSettings, Settings

VARIANT_CHOICES = ("method", "supervision", "schedule", "tracking", "start", "image_copy", "image_fill",
                   "footprint")
# DragSettings' switches with choices: the drag family's method (dragnb/family), then the optimisation's variants


def _drag_hints() -> dict:
    return typing.get_type_hints(DragSettings)


class SettingsForm(widgets.VBox):
    """The main settings as widgets over ``settings``, for a UNet with ``n_blocks`` up blocks."""

    def __init__(self, settings: Settings, n_blocks: int):
        self.base, self.n_blocks = settings, n_blocks
        s = settings.drag
        self.drag_steps = widgets.IntSlider(value=s.max_steps, min=1, max=300, description="drag steps")
        self.lr = widgets.FloatLogSlider(value=s.lr, base=10, min=-3, max=-0.5, step=0.05,
                                         description="latent lr η", readout_format=".3g")
        self.lam = widgets.FloatLogSlider(value=s.lam, base=10, min=-3, max=1.5, step=0.05,
                                          description="mask λ", readout_format=".3g")
        self.strength = widgets.FloatSlider(value=settings.inversion.strength, min=0.1, max=0.96, step=0.02,
                                            description="inversion", readout_format=".2f")
        options = [(f"up_blocks[{i}]", (i - n_blocks,)) for i in range(n_blocks)]
        self.block = widgets.Dropdown(options=options, value=options[-2 if n_blocks > 1 else -1][1],
                                      description="features")
        self._show_blocks(s.feature_blocks)
        self.lora_steps = widgets.IntSlider(value=settings.lora.steps, min=0, max=300, description="LoRA steps")
        self.reference_control = widgets.Checkbox(value=settings.denoise.reference_control,
                                                  description="reference-latent control")
        # one dropdown per method variant (docs/method.md §6), its choices read from DragSettings itself
        self.variants = {name: widgets.Dropdown(options=list(typing.get_args(_drag_hints()[name])),
                                                value=getattr(s, name), description=name)
                         for name in VARIANT_CHOICES}
        self.optimize_text = widgets.Checkbox(value=s.optimize_text, description="optimize text (DragText)")
        # the variants' own numbers: B of the alternating schedule, the hold after arrival, DragText's weight
        self.variant_values = {
            "steps_per_timestep": widgets.IntSlider(value=s.steps_per_timestep, min=1,
                                                    max=max(50, s.steps_per_timestep), description="B per timestep"),
            "hold_steps": widgets.IntSlider(value=s.hold_steps, min=0, max=max(100, s.hold_steps),
                                            description="hold steps"),
            "text_lam": widgets.BoundedFloatText(value=s.text_lam, min=0.0, max=1e6, step=0.01,
                                                 description="text λ"),  # 0 allowed: no regulariser
        }
        controls = {"steps": self.drag_steps, "lr": self.lr, "lam": self.lam, "strength": self.strength,
                    "block": self.block, "lora-steps": self.lora_steps, "reference-control": self.reference_control,
                    "optimize-text": self.optimize_text,
                    **{f"variant-{name}": box for name, box in {**self.variants, **self.variant_values}.items()}}
        for name, control in controls.items():
            control.add_class(f"dragnb-{name}")
        super().__init__([self.drag_steps, self.lr, self.lam, self.strength, self.block, self.lora_steps,
                          self.reference_control, *self.variants.values(), self.optimize_text,
                          *self.variant_values.values()])
        self.add_class("dragnb-settings")

    @property
    def settings(self) -> Settings:
        """The widgets' values over ``base`` (dataclasses.replace, stage by stage)."""
        s = self.base
        return dataclasses.replace(
            s, lora=dataclasses.replace(s.lora, steps=int(self.lora_steps.value)),
            inversion=dataclasses.replace(s.inversion, strength=round(float(self.strength.value), 4)),
            drag=dataclasses.replace(s.drag, max_steps=int(self.drag_steps.value), lr=float(self.lr.value),
                                     lam=float(self.lam.value), feature_blocks=tuple(self.block.value),
                                     optimize_text=bool(self.optimize_text.value),
                                     **{name: box.value for name, box in self.variants.items()},
                                     **{name: type(getattr(s.drag, name))(box.value)
                                        for name, box in self.variant_values.items()}),
            denoise=dataclasses.replace(s.denoise, reference_control=bool(self.reference_control.value)))

    def show(self, s: Settings) -> None:
        """The widgets show ``s`` (a round's settings) and edit over it."""
        self.base = s
        self.drag_steps.value, self.lr.value, self.lam.value = s.drag.max_steps, s.drag.lr, s.drag.lam
        self.strength.value, self.lora_steps.value = s.inversion.strength, s.lora.steps
        self.reference_control.value = s.denoise.reference_control
        self.optimize_text.value = s.drag.optimize_text
        for name, box in {**self.variants, **self.variant_values}.items():
            box.value = getattr(s.drag, name)
        self._show_blocks(s.drag.feature_blocks)

    def _show_blocks(self, blocks: tuple[int, ...]) -> None:
        """The features dropdown set to ``blocks`` (negative indices), adding a choice for a combination."""
        n_blocks = self.n_blocks
        value = tuple(b if b < 0 else b - n_blocks for b in blocks)
        if value not in [v for _, v in self.block.options]:
            self.block.options = [*self.block.options,
                                  (" + ".join(f"up_blocks[{b % n_blocks}]" for b in value), value)]
        self.block.value = value
