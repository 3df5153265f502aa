"""The run panel's rounds strip: continue from result, undo / redo round, keep round 0's LoRA, a thumbnail per round.

:class:`RoundStrip` only shows and asks: ``strip.show(rounds, current, ...)`` draws a thumbnail per round (its result,
or its source until it has run; the current one framed) and sets which buttons can be pressed; a press calls the
callback it was made with (``on_continue(keep_lora)``, ``on_undo()``, ``on_redo()``, ``on_goto(index)``), and the
owner (:class:`~dragnb.ui.runpanel.RunPanel`) moves the session (:mod:`dragnb.rounds`) and shows the round.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import ipywidgets as widgets
from PIL import Image

from ..rounds import Round
from .editor import TARGET_COLOUR, fit_to

THUMBNAIL = 72  # the longer side of a round's thumbnail, screen pixels


class RoundStrip(widgets.VBox):
    """The round buttons and the keep-LoRA checkbox above a row of thumbnails, one per round."""

    def __init__(self, on_continue: Callable[[bool], object], on_undo: Callable[[], object],
                 on_redo: Callable[[], object], on_goto: Callable[[int], object]):
        self.on_goto = on_goto
        self.continue_button = widgets.Button(description="continue from result", icon="forward",
                                              tooltip="make this result the source of the next drag", disabled=True)
        self.undo_button = widgets.Button(description="undo round", icon="undo", disabled=True,
                                          tooltip="back to the round before: its source, points and mask")
        self.redo_button = widgets.Button(description="redo round", icon="repeat", disabled=True,
                                          tooltip="forward to the round undo left")
        self.keep_lora = widgets.Checkbox(value=False, description="keep round 0's LoRA", indent=False,
                                          tooltip="continue without training a LoRA on the new source")
        self.continue_button.on_click(lambda _: on_continue(bool(self.keep_lora.value)))
        self.undo_button.on_click(lambda _: on_undo())
        self.redo_button.on_click(lambda _: on_redo())
        for button in (self.continue_button, self.undo_button, self.redo_button):
            button.layout.width = "170px"
        self.thumbnails = widgets.HBox([])
        for name, control in {"continue": self.continue_button, "undo-round": self.undo_button,
                              "redo-round": self.redo_button, "keep-lora": self.keep_lora,
                              "rounds": self.thumbnails}.items():
            control.add_class(f"dragnb-{name}")
        super().__init__([widgets.HBox([self.continue_button, self.undo_button, self.redo_button, self.keep_lora]),
                          self.thumbnails])

    def show(self, rounds: Sequence[Round], current: int | None, can_continue: bool, can_undo: bool,
             can_redo: bool, busy: bool) -> None:
        """A thumbnail per round (``current`` framed) and which buttons can be pressed (none while ``busy``)."""
        self.thumbnails.children = [self._thumbnail(rnd, rnd.index == current, busy) for rnd in rounds]
        self.continue_button.disabled = busy or not can_continue
        self.undo_button.disabled = busy or not can_undo
        self.redo_button.disabled = busy or not can_redo

    def _thumbnail(self, rnd: Round, current: bool, busy: bool) -> widgets.VBox:
        """A round's result (its source until it has run) and a button that goes to it."""
        image = rnd.image if rnd.done else rnd.source
        h, w = image.shape[:2]
        size = (max(1, round(THUMBNAIL * h / max(h, w))), max(1, round(THUMBNAIL * w / max(h, w))))
        buffer = io.BytesIO()
        Image.fromarray(fit_to(image, size)).save(buffer, format="png")
        picture = widgets.Image(value=buffer.getvalue(), format="png",
                                layout=widgets.Layout(width=f"{size[1]}px", height=f"{size[0]}px"))
        label = f"{rnd.index}" + ("" if rnd.parent is None else f" ← {rnd.parent}") + ("" if rnd.done else " ·")
        button = widgets.Button(description=label, disabled=busy, button_style="info" if current else "",
                                tooltip=f"round {rnd.index}" + ("" if rnd.parent is None else
                                                                f", from round {rnd.parent}'s result")
                                + ("" if rnd.done else ", not run yet"),
                                layout=widgets.Layout(width=f"{max(size[1], 56)}px"))
        button.on_click(lambda _, index=rnd.index: self.on_goto(index))
        box = widgets.VBox([picture, button],
                           layout=widgets.Layout(border=f"2px solid {TARGET_COLOUR if current else 'transparent'}",
                                                 padding="2px", margin="0 4px 0 0"))
        box.add_class("dragnb-round")
        if current:
            box.add_class("dragnb-round-current")
        return box
