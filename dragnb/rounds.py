"""Edits in rounds: each round drags the result of the one before; the rounds form a tree a session moves through.

A :class:`Round` is one drag: its source image, prompt, points, mask and settings, whether its LoRA was trained
on its own source or kept from the first round's (docs/method.md §10), and what it made (the result image and
its record). A :class:`History` holds the rounds as a tree: a round's ``parent`` is the round whose result it
drags (None for a first round), ``current`` the round a session works on. :meth:`History.undo` moves to the
parent, :meth:`History.redo` back to the child undo left (the newest child when none was), and a new round made
from an undone round starts a new branch: the old one stays in ``rounds``, where :meth:`History.goto` reaches it.

:meth:`History.save` writes one folder: every round's source, result and mask as PNG plus ``history.json`` (every
round's inputs and settings, and its record), each file written atomically and the JSON last.
:meth:`History.load` reads one back and checks all of it before any work; ``python -m dragnb replay`` re-runs it
round by round (:mod:`dragnb.cli`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .config import Settings, settings_from_dict
from .errors import InputError
from .files import writable_folder, write_atomic
from .images import load_mask, to_rgb_array
from .points import DragPoints, make_points

if TYPE_CHECKING:
    from .generate import GeneratedImage
    from .edit import EditResult

HISTORY_FILE = "history.json"
FORMAT = "dragnb.history"
VERSION = 1


@dataclass
class Round:
    """One drag of a chain: its inputs and, once run, what it made."""

    index: int  # position in History.rounds
    parent: int | None  # the round whose result is this round's source; None for a first round
    source: np.ndarray  # (H, W, 3) uint8
    prompt: str
    settings: Settings
    keep_lora: bool = False  # True: the LoRA of the first round of the chain, not one trained on this source
    points: DragPoints | None = None  # image pixels; those of the result once run
    mask: np.ndarray | None = None  # (H, W) bool, None = the whole image editable
    image: np.ndarray | None = None  # (H, W, 3) uint8, the result; None until run
    record: dict | None = None  # EditResult.to_record() of the result
    result: EditResult | None = None  # the result itself (in memory only: None in a loaded history)
    generated: GeneratedImage | None = None  # a first round of DragSession.from_generated: its kept latents
    generation: dict | None = None  # ...and how to make it again (prompt, guidance_scale, seed, num_steps, size)

    @property
    def done(self) -> bool:
        """Whether the round has a result."""
        return self.image is not None

    def same_inputs(self, points: DragPoints | None, mask: np.ndarray | None, prompt: str,
                    settings: Settings) -> bool:
        """Whether a run with these inputs is this round's run again."""
        def as_list(p: DragPoints | None):
            return None if p is None else p.as_list()

        same_mask = (mask is None and self.mask is None) or (
            mask is not None and self.mask is not None and np.array_equal(mask, self.mask))
        return (as_list(points) == as_list(self.points) and same_mask and prompt == self.prompt
                and settings == self.settings)

    def keep(self, result: EditResult) -> None:
        """Hold a finished run of this round: its inputs and what it made."""
        self.points, self.mask, self.prompt, self.settings = result.points, result.mask, result.prompt, \
            result.settings
        self.image, self.record, self.result = result.image, result.to_record(), result


@dataclass
class History:
    """The rounds of a session as a tree (each round's ``parent``) and the round it is at (``current``)."""

    rounds: list[Round]
    current: int = 0
    model: str = ""  # Model.name of the session that made it
    model_settings: Settings | None = None  # that model's own defaults (what a replay elsewhere rebases from)
    _left: dict[int, int] = field(default_factory=dict, repr=False)  # round -> the child undo last left it from

    def rebase_from(self, argument: str) -> Settings:
        """The defaults of the model that made the history, which a replay elsewhere rebases the rounds' settings
        from (:func:`dragnb.config.rebase`); a history saved without them cannot tell the rounds' own choices."""
        if self.model_settings is None:
            raise InputError(argument, "this history does not record its model's defaults (it was saved before they "
                             "were kept), so they cannot be told from the rounds' own choices; replay the settings "
                             "as saved")
        return self.model_settings

    @property
    def round(self) -> Round:
        """The current round."""
        return self.rounds[self.current]

    def children(self, index: int) -> list[Round]:
        """The rounds made from round ``index``'s result, oldest first."""
        return [r for r in self.rounds if r.parent == index]

    def root(self, index: int) -> Round:
        """The first round of round ``index``'s chain."""
        rnd = self.rounds[index]
        while rnd.parent is not None:
            rnd = self.rounds[rnd.parent]
        return rnd

    def path(self, index: int) -> list[Round]:
        """The chain from its first round to round ``index``."""
        chain = [self.rounds[index]]
        while chain[-1].parent is not None:
            chain.append(self.rounds[chain[-1].parent])
        return chain[::-1]

    def add(self, parent: int | None, source: np.ndarray, prompt: str, settings: Settings,
            keep_lora: bool = False, points: DragPoints | None = None, mask: np.ndarray | None = None,
            generated: GeneratedImage | None = None) -> Round:
        """Append a round and make it the current one (a round beside others of ``parent`` starts a branch)."""
        rnd = Round(index=len(self.rounds), parent=parent, source=source, prompt=prompt, settings=settings,
                    keep_lora=keep_lora, points=points, mask=mask, generated=generated,
                    generation=None if generated is None else generation_of(generated))
        self.rounds.append(rnd)
        self.current = rnd.index
        return rnd

    # ---- moving ---------------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return self.round.parent is not None

    @property
    def can_redo(self) -> bool:
        return bool(self.children(self.current))

    def undo(self) -> Round:
        """Move to the round before (the parent); the round left stays, :meth:`redo` returns to it."""
        if not self.can_undo:
            raise InputError("undo", f"round {self.current} is a first round: there is no round before it")
        self._left[self.round.parent] = self.current
        self.current = self.round.parent
        return self.round

    def redo(self) -> Round:
        """Move to the round after: the one :meth:`undo` last left, else the newest child."""
        children = [r.index for r in self.children(self.current)]
        if not children:
            raise InputError("redo", f"round {self.current} has no later round; make one with new_round()")
        self.current = self._left.get(self.current) if self._left.get(self.current) in children else children[-1]
        return self.round

    def goto(self, index: int) -> Round:
        """Move to round ``index`` (any branch)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.rounds):
            raise InputError("index", f"got {index!r}; the rounds are 0..{len(self.rounds) - 1}")
        self.current = int(index)
        return self.round

    # ---- saving ---------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write every round's images (PNG) and ``history.json`` into ``folder`` (created if missing); returns the
        JSON's path. Each file is written atomically, the JSON last, so a reader never sees half a history."""
        from .models import EMBEDDED_MODEL

        out = writable_folder(folder, "folder")
        entries = []
        for rnd in self.rounds:
            name = f"round_{rnd.index:02d}"
            entry = {"index": rnd.index, "parent": rnd.parent, "prompt": rnd.prompt, "keep_lora": rnd.keep_lora,
                     "points": None if rnd.points is None else rnd.points.as_list(),
                     "settings": rnd.settings.to_dict(), "source": _write_png(out, f"{name}_source.png", rnd.source),
                     "result": None if rnd.image is None else _write_png(out, f"{name}_result.png", rnd.image),
                     "mask": None if rnd.mask is None else _write_png(out, f"{name}_mask.png",
                                                                       rnd.mask.astype(np.uint8) * 255),
                     "generated": rnd.generation,
                     "record": rnd.record}
            entries.append(entry)
        document = {"format": FORMAT, "version": VERSION, "model": self.model,
                    "embedded_model": self.model == str(EMBEDDED_MODEL), "current": self.current,
                    "model_settings": None if self.model_settings is None else self.model_settings.to_dict(),
                    "rounds": entries}
        path = out / HISTORY_FILE
        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(document, indent=1)))
        return path

    @classmethod
    def load(cls, folder: str | Path, argument: str = "history") -> History:
        """Read a folder :meth:`save` wrote, checking everything (JSON, images, points, masks, settings): a
        problem is one :class:`InputError` naming ``argument``, the round and the fix."""
        folder = Path(folder).expanduser()
        document = _read_document(folder, argument)
        raw = document["rounds"]
        rounds: list[Round] = []
        for position, entry in enumerate(raw):
            rounds.append(_read_round(folder, entry, position, rounds, argument))
        current = document.get("current", 0)
        if isinstance(current, bool) or not isinstance(current, int) or not 0 <= current < len(rounds):
            raise InputError(argument, f"{HISTORY_FILE}: current is {current!r}; it must be a round, 0..{len(rounds) - 1}")
        model = str(document.get("model") or "")
        if document.get("embedded_model"):  # saved elsewhere: the embedded model is this checkout's
            from .models import EMBEDDED_MODEL

            model = str(EMBEDDED_MODEL)
        defaults = document.get("model_settings")
        if defaults is not None and not isinstance(defaults, dict):
            raise InputError(argument, f"{HISTORY_FILE}: model_settings must be an object of settings or null")
        try:
            defaults = None if defaults is None else settings_from_dict(defaults)
        except InputError as exc:
            raise InputError(argument, f"{HISTORY_FILE}: model_settings: {exc}") from None
        return cls(rounds=rounds, current=current, model=model, model_settings=defaults)


def generation_of(generated: GeneratedImage) -> dict:
    """What :func:`dragnb.generate.generate` needs to make ``generated`` again."""
    return {"prompt": generated.prompt, "guidance_scale": generated.guidance_scale, "seed": generated.seed,
            "num_steps": len(generated.timesteps) - 1, "size": list(generated.image.shape[-2:])}


def _write_png(folder: Path, name: str, array: np.ndarray) -> str:
    write_atomic(folder / name, lambda tmp: Image.fromarray(np.asarray(array)).save(tmp, format="PNG"))
    return name


def _is_generation(data, parent: int | None) -> bool:
    """Whether ``data`` is what :func:`generation_of` writes, for a first round."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return (parent is None and isinstance(data, dict) and isinstance(data.get("prompt"), str)
            and isinstance(data.get("guidance_scale"), (int, float)) and not isinstance(data["guidance_scale"], bool)
            and whole(data.get("seed")) and whole(data.get("num_steps")) and data["num_steps"] > 0
            and isinstance(data.get("size"), list) and len(data["size"]) == 2
            and all(whole(v) and v > 0 for v in data["size"]))


def _read_document(folder: Path, argument: str) -> dict:
    if not folder.is_dir():
        raise InputError(argument, f"{str(folder)!r} is not a folder; give the folder a history was saved to "
                         "(session.save_history(folder))")
    path = folder / HISTORY_FILE
    if not path.is_file():
        raise InputError(argument, f"no {HISTORY_FILE} in {str(folder)!r}; save one with session.save_history(folder)")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(argument, f"cannot read {str(path)!r} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(argument, f"{str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg}); save the "
                         "history again") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(argument, f"{str(path)!r} is not a dragnb history (no \"format\": \"{FORMAT}\")")
    if document.get("version") != VERSION:
        raise InputError(argument, f"{str(path)!r} is version {document.get('version')!r}; this dragnb reads "
                         f"version {VERSION}")
    if not isinstance(document.get("rounds"), list) or not document["rounds"]:
        raise InputError(argument, f"{str(path)!r} holds no rounds")
    return document


def _read_round(folder: Path, entry, position: int, before: list[Round], argument: str) -> Round:
    """Round ``position`` of a saved history, checked against the rounds ``before`` it."""
    where = f"round {position}"

    def fail(message: str) -> InputError:
        return InputError(argument, f"{HISTORY_FILE}, {where}: {message}")

    if not isinstance(entry, dict):
        raise fail("expected an object")
    if entry.get("index") != position:
        raise fail(f"its index is {entry.get('index')!r}, expected {position}")
    parent = entry.get("parent")
    if parent is not None and (isinstance(parent, bool) or not isinstance(parent, int)
                               or not 0 <= parent < position or not before[parent].done):
        raise fail(f"parent {parent!r} is not an earlier round with a result")
    prompt, keep_lora = entry.get("prompt"), entry.get("keep_lora", False)
    if not isinstance(prompt, str):
        raise fail("prompt must be a string")
    if not isinstance(keep_lora, bool) or (keep_lora and parent is None):
        raise fail("keep_lora must be true or false, and false for a first round")

    def image(key: str, required: bool):
        name = entry.get(key)
        if name is None and not required:
            return None
        if not isinstance(name, str) or Path(name).name != name:
            raise fail(f"{key} must name a PNG file in the history folder, got {name!r}")
        if not (folder / name).is_file():
            raise fail(f"its {key} {name!r} is missing from the history folder; copy the whole folder")
        try:
            return folder / name if key == "mask" else to_rgb_array(folder / name, argument)
        except InputError as exc:
            raise fail(str(exc).removeprefix(f"{argument}: ")) from None

    source = image("source", required=True)
    size = (before[0].source.shape[:2] if before else source.shape[:2])
    if source.shape[:2] != size:
        raise fail(f"source is {source.shape[1]}x{source.shape[0]}, round 0's {size[1]}x{size[0]}; rounds keep "
                   "the image size")
    try:
        settings = settings_from_dict(entry.get("settings") or {}, Settings())
        points = None if entry.get("points") is None else make_points(entry["points"], size, "points")
        mask_path = image("mask", required=False)
        mask = None if mask_path is None else load_mask(mask_path, size, "mask")
    except InputError as exc:
        raise fail(str(exc)) from None
    result = image("result", required=False)
    if result is not None and points is None:
        raise fail("it has a result but no points")
    generated = entry.get("generated")
    if generated is not None and not _is_generation(generated, parent):
        raise fail("generated must be null, or for a first round {prompt: text, guidance_scale: number, seed: "
                   "whole number, num_steps: whole number > 0, size: [height, width]}")
    return Round(index=position, parent=parent, source=source, prompt=prompt, settings=settings,
                 keep_lora=keep_lora, points=points, mask=mask, image=result,
                 record=entry.get("record") if isinstance(entry.get("record"), dict) else None,
                 generation=generated)
