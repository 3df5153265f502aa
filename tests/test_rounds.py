"""Edits in rounds (issue 12): continue from a result, undo, redo, branches, the LoRA kept or retrained, a history
saved and replayed bit for bit (``python -m dragnb replay``), bad histories refused in one line, and the run
panel's round buttons and strip driven by synthetic events."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from PIL import Image

from dragnb.cli import main
from dragnb.config import DragSettings, LoraSettings, Settings, settings_from_dict
from dragnb.errors import InputError
from dragnb.generate import generate
from dragnb.models import load_model
from dragnb.points import make_points
from dragnb.rounds import HISTORY_FILE, History, Round
from dragnb.replay import replay
from dragnb.session import DragSession
from dragnb.ui.editor import DragEditor
from dragnb.ui.runpanel import RunPanel

FAST = Settings(lora=LoraSettings(steps=2), drag=DragSettings(max_steps=3, lr=0.05))
ALL_MEMORY = dict.fromkeys(("lora", "inversion", "drag", "denoise"), "memory")


def first_round(model, image) -> tuple[DragSession, object]:
    session = DragSession(model, image, "a red disc", FAST)
    session.set_points([(24, 24, 36, 24)])
    return session, session.run()


def test_rounds_undo_redo_and_branches(tiny_model, blob_image):
    session, r0 = first_round(tiny_model, blob_image)
    assert [r.index for r in session.rounds] == [0] and session.round.done and session.round.result is r0
    one = session.new_round()
    assert (one.index, one.parent, one.keep_lora) == (1, 0, False) and session.round is one
    assert session.source is r0.image and session.points is None and session.mask is None  # points and mask cleared
    assert session.prompt == "a red disc" and session.settings == FAST  # the same prompt and settings by default
    with pytest.raises(InputError, match="new_round: round 1 has no result yet"):
        session.new_round()
    session.set_points([(36, 24, 36, 40)])
    mask = np.zeros((64, 64), bool)
    mask[16:50, 26:50] = True
    session.set_mask(mask)
    r1 = session.run()
    assert r1.source is r0.image and r1.origin["lora"] == "computed" and r1.lora.key != r0.lora.key  # retrained
    assert one.record["points"] == [[36, 24], [36, 40]] and one.image is r1.image and (one.mask == mask).all()

    # undo: back to round 0's source, points and mask; running it again computes nothing and makes no round
    back = session.undo()
    assert back.index == 0 and np.array_equal(session.source, blob_image)
    assert session.points.as_list() == [[24, 24], [36, 24]] and session.mask is None
    again = session.run()
    assert again.origin == ALL_MEMORY and np.array_equal(again.image, r0.image) and len(session.rounds) == 2
    with pytest.raises(InputError, match="undo: round 0 is a first round"):
        session.undo()
    # redo: forward to round 1, whose run is cached as well
    assert session.redo().index == 1 and (session.mask == mask).all()
    assert session.run().origin == ALL_MEMORY
    with pytest.raises(InputError, match="redo: round 1 has no later round"):
        session.redo()

    # a new round from an undone round starts a branch; the old one stays reachable
    session.undo()
    two = session.new_round()
    session.set_points([(36, 24, 20, 40)])
    r2 = session.run()
    assert (two.index, two.parent) == (2, 0) and [r.index for r in session.history.children(0)] == [1, 2]
    assert np.array_equal(session.rounds[1].image, r1.image) and not np.array_equal(r2.image, r1.image)
    session.undo()
    assert session.redo().index == 2  # the child undo left, not the first one
    assert session.goto(1) is session.rounds[1] and session.run().origin == ALL_MEMORY
    assert [r.index for r in session.history.path(1)] == [0, 1]
    with pytest.raises(InputError, match="index: got 7"):
        session.goto(7)

    # a different drag of a round that has later rounds goes to a new round beside it: no later round loses its source
    session.goto(0)
    session.set_points([(24, 24, 24, 40)])
    r3 = session.run()
    assert (session.round.index, session.round.parent) == (3, None) and np.array_equal(session.rounds[0].image, r0.image)
    assert r3.origin["lora"] == "memory" and r3.origin["drag"] == "computed"
    # ...while a round without later rounds is simply run again
    session.goto(2)
    session.set_points([(36, 24, 24, 40)])
    session.run()
    assert session.round.index == 2 and len(session.rounds) == 4 and session.round.points.as_list()[1] == [24, 40]


def test_keep_lora_uses_round_zeros_lora_and_says_so(tiny_model, blob_image):
    session, r0 = first_round(tiny_model, blob_image)
    kept = session.new_round(keep_lora=True)
    session.set_points([(36, 24, 36, 40)])
    r1 = session.run()
    assert kept.keep_lora and r1.origin["lora"] == "memory" and r1.lora is r0.lora  # round 0's, under its own key
    assert r1.origin["inversion"] == "computed" and r1.inversion.key != r0.inversion.key  # this round's image
    # retrained instead (the default): a LoRA of its own, under another key
    session.undo()
    session.new_round()
    session.set_points([(36, 24, 36, 40)])
    retrained = session.run()
    assert retrained.origin["lora"] == "computed" and retrained.lora.key not in (r0.lora.key,)
    assert not np.array_equal(retrained.image, r1.image)
    # honoured, not just named: with another LoRA seed the kept LoRA is trained on round 0's image and prompt
    session.goto(kept.index)
    session.settings = dataclasses.replace(FAST, lora=dataclasses.replace(FAST.lora, seed=5))
    lora = session.run_lora()
    fresh = DragSession(tiny_model, blob_image, "a red disc", session.settings).run_lora()
    assert lora.key == fresh.key and lora.losses == fresh.losses
    with pytest.raises(InputError, match="keep_lora: expected True or False"):
        session.new_round(keep_lora="yes")


def test_a_generated_first_round(tiny_model):
    gen = generate(tiny_model, "a red disc", guidance_scale=2.0, num_steps=50, seed=3)
    session = DragSession.from_generated(tiny_model, gen, FAST)
    session.set_points([(20, 20, 30, 20)])
    r0 = session.run()
    assert r0.lora is None and session.round.generated is gen and session.round.generation["seed"] == 3
    with pytest.raises(InputError, match="keep_lora: the first round is a generated image"):
        session.new_round(keep_lora=True)
    session.new_round()
    assert session.generated is None and session.guidance_scale == 1.0  # a real image now: LoRA and inversion
    session.set_points([(30, 20, 30, 34)])
    r1 = session.run()
    assert r1.lora is not None and r1.inversion is not None
    session.undo()
    assert session.generated is gen and session.run().origin["drag"] == "memory"
    replayed = replay(tiny_model, session.history)  # generated again from its seed, then dragged
    assert all(np.array_equal(a.image, b.image) for a, b in zip(session.rounds, replayed.rounds))


def three_rounds(model, image) -> DragSession:
    """Round 0, round 1 from its result (masked), and round 2 a branch from round 0 that keeps its LoRA."""
    session, _ = first_round(model, image)
    session.new_round()
    session.set_points([(36, 24, 36, 40)])
    mask = np.zeros((64, 64), bool)
    mask[16:50, 26:50] = True
    session.set_mask(mask)
    session.run()
    session.undo()
    session.new_round(keep_lora=True)
    session.set_points([(36, 24, 20, 40)])
    session.run()
    return session


def test_save_and_replay_reproduce_every_image(tiny_model, blob_image, tmp_path, capsys):
    session = three_rounds(tiny_model, blob_image)
    path = session.save_history(tmp_path / "saved")
    assert path == tmp_path / "saved" / HISTORY_FILE
    document = json.loads(path.read_text())
    assert document["model"] == tiny_model.name and document["current"] == 2
    entries = document["rounds"]
    assert [(e["index"], e["parent"], e["keep_lora"]) for e in entries] == [(0, None, False), (1, 0, False),
                                                                             (2, 0, True)]
    assert entries[1]["mask"] == "round_01_mask.png" and entries[0]["mask"] is None
    assert entries[1]["points"] == [[36, 24], [36, 40]] and entries[1]["settings"] == json.loads(json.dumps(FAST.to_dict()))
    assert entries[2]["record"]["origin"]["lora"] == "memory"
    loaded = History.load(tmp_path / "saved")
    for a, b in zip(session.rounds, loaded.rounds):
        assert a.settings == b.settings and a.points.as_list() == b.points.as_list() and a.prompt == b.prompt
        assert np.array_equal(a.source, b.source) and np.array_equal(a.image, b.image)
        assert (a.mask is None and b.mask is None) or np.array_equal(a.mask, b.mask)

    capsys.readouterr()
    assert main(["replay", str(tmp_path / "saved"), "--out", str(tmp_path / "replay"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("identical to the saved result") == 3, out
    saved = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "replay").iterdir())
    for name in saved:
        if name.endswith(".png"):  # bit for bit, as images and as files
            assert (tmp_path / "saved" / name).read_bytes() == (tmp_path / "replay" / name).read_bytes(), name
    again = json.loads((tmp_path / "replay" / HISTORY_FILE).read_text())
    for a, b in zip(entries, again["rounds"]):
        assert {k: v for k, v in a.items() if k != "record"} == {k: v for k, v in b.items() if k != "record"}


def test_a_history_in_bf16_weights_replays_in_them(tiny_dir, blob_image, tmp_path, capsys):
    """The replay loads the model in the dtype the history's rounds name (one model, one dtype)."""
    model = load_model(tiny_dir, device="cpu", dtype="bf16")
    session = DragSession(model, blob_image, "", dataclasses.replace(FAST, compute=model.settings.compute))
    session.set_points([(24, 24, 36, 24)])
    session.run()
    session.save_history(tmp_path / "saved")
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "saved"), "--out", str(tmp_path / "replay"), "--quiet"]) == 0
    assert "identical to the saved result" in capsys.readouterr().out
    again = json.loads((tmp_path / "replay" / HISTORY_FILE).read_text())
    assert again["rounds"][0]["settings"]["compute"]["weights"] == "bf16"


def test_a_stopped_round_replays_as_it_was_stopped(tiny_model, blob_image, tmp_path):
    """A drag stopped early (the Stop button, a callback) replays with as many iterations, so it replays equal."""
    session = DragSession(tiny_model, blob_image, "a red disc",
                          dataclasses.replace(FAST, drag=DragSettings(max_steps=6, lr=0.05)))
    session.set_points([(24, 24, 44, 24)])
    stopped = session.run(callbacks=[lambda step: step.stage == "drag" and step.step == 1])
    assert stopped.drag.stop_reason == "callback" and len(stopped.drag.history) == 2
    session.save_history(tmp_path / "saved")
    replayed = replay(tiny_model, History.load(tmp_path / "saved"))
    again = replayed.rounds[0]
    assert again.record["stop_reason"] == "callback" and again.record["drag_steps"] == 2
    assert np.array_equal(again.image, stopped.image)


def test_replay_on_another_model(tiny_model, blob_image, tmp_path, capsys):
    """--model runs the saved rounds on another model: the same files, each round said to differ."""
    from dragnb.testing import save_tiny_random_pipeline

    session = DragSession(tiny_model, blob_image, "a red disc", FAST)
    session.set_points([(24, 24, 36, 24)])
    session.run()
    session.new_round()
    session.set_points([(36, 24, 36, 36)])
    session.run()
    session.save_history(tmp_path / "saved")
    other = save_tiny_random_pipeline(tmp_path / "other", seed=1)
    assert main(["replay", str(tmp_path / "saved"), "--out", str(tmp_path / "replay"), "--model", str(other),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("differs from the saved result") == 2, out
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(p.name for p in
                                                                           (tmp_path / "replay").iterdir())
    replayed = History.load(tmp_path / "replay")
    assert replayed.model == str(other) and [r.parent for r in replayed.rounds] == [None, 0]
    assert not np.array_equal(replayed.rounds[0].image, session.rounds[0].image)


def test_replay_rebased_on_another_models_defaults(tiny_model, tiny_dir, blob_image, tmp_path, capsys):
    """--settings model: what each round changed from its model's defaults is kept, the rest is the new model's."""
    import shutil

    from dragnb.config import rebase

    session = DragSession(tiny_model, blob_image, "a red disc", FAST)  # FAST changes lora.steps, drag.max_steps, lr
    session.set_points([(24, 24, 36, 24)])
    session.run()
    session.save_history(tmp_path / "saved")
    assert History.load(tmp_path / "saved").model_settings == tiny_model.settings
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    (other / "dragnb_defaults.json").write_text(json.dumps({"drag": {"r1": 2, "lr": 0.02}, "lora": {"rank": 4}}))
    assert main(["replay", str(tmp_path / "saved"), "--out", str(tmp_path / "rebased"), "--model", str(other),
                 "--settings", "model", "--quiet"]) == 0
    replayed = History.load(tmp_path / "rebased").rounds[0].settings
    assert (replayed.drag.r1, replayed.lora.rank) == (2, 4)  # not chosen by the round: the new model's
    assert (replayed.drag.lr, replayed.drag.max_steps, replayed.lora.steps) == (0.05, 3, 2)  # the round's own
    assert replayed == rebase(FAST, tiny_model.settings, settings_from_dict(
        {"drag": {"r1": 2, "lr": 0.02}, "lora": {"rank": 4}}))
    assert History.load(tmp_path / "rebased").model_settings == settings_from_dict(
        {"drag": {"r1": 2, "lr": 0.02}, "lora": {"rank": 4}})  # rebased: the new model's defaults are the base now
    assert main(["replay", str(tmp_path / "saved"), "--out", str(tmp_path / "as-saved"), "--model", str(other),
                 "--quiet"]) == 0  # as saved: the rounds still hold the first model's choices, and the file says so
    assert History.load(tmp_path / "as-saved").model_settings == tiny_model.settings
    capsys.readouterr()
    old = hand_made_history(tmp_path / "old")  # written without its model's defaults
    assert main(["replay", str(old), "--out", str(tmp_path / "o"), "--settings", "model", "--quiet"]) == 2
    assert "does not record its model's defaults" in capsys.readouterr().err


def test_rebase_keeps_what_a_setting_changed():
    from dragnb.config import rebase

    old, new = Settings(), settings_from_dict({"drag": {"lr": 0.02, "r1": 2}, "denoise": {"blend_outside_mask": True}})
    mine = settings_from_dict({"drag": {"lr": 0.05, "max_steps": 7}})
    moved = rebase(mine, old, new)
    assert (moved.drag.lr, moved.drag.max_steps, moved.drag.r1, moved.denoise.blend_outside_mask) == (0.05, 7, 2, True)
    assert rebase(old, old, new) == new and rebase(mine, old, old) == mine


def hand_made_history(folder):
    """A saved history written without a model: round 0 and round 1 from its (stand-in) result."""
    rng = np.random.default_rng(0)
    source, result = (rng.integers(0, 255, (32, 40, 3), dtype=np.uint8) for _ in range(2))
    mask = np.zeros((32, 40), bool)
    mask[4:20, 4:30] = True
    points = make_points([(5, 6, 20, 6)], (32, 40))
    rounds = [Round(index=0, parent=None, source=source, prompt="p", settings=FAST, points=points, mask=mask,
                    image=result),
              Round(index=1, parent=0, source=result, prompt="p", settings=FAST, keep_lora=True, points=points,
                    image=source)]
    History(rounds=rounds, current=1, model="some/model").save(folder)
    return folder


def _rewrite(folder, change):
    path = folder / HISTORY_FILE
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


BAD_HISTORIES = {
    "no folder": (lambda h: h / "nowhere", r"HISTORY_DIR: .* is not a folder"),
    "no history.json": (lambda h: (h / HISTORY_FILE).unlink() or h, r"HISTORY_DIR: no history\.json in"),
    "corrupt JSON": (lambda h: (h / HISTORY_FILE).write_text('{"rounds": [') and h, r"is not valid JSON \(line 1"),
    "another JSON": (lambda h: (h / HISTORY_FILE).write_text("[1, 2]") and h, r"is not a dragnb history"),
    "a missing image": (lambda h: (h / "round_01_result.png").unlink() or h,
                        r"round 1: its result 'round_01_result\.png' is missing from the history folder"),
    "a corrupt image": (lambda h: (h / "round_00_source.png").write_bytes(b"\x89PNG broken") and h,
                        r"round 0: .*round_00_source\.png' is not a readable image"),
    "a mask of another size": (lambda h: Image.new("L", (8, 8), 255).save(h / "round_00_mask.png") or h,
                               r"round 0: mask: mask is 8x8 \(WxH\) but the image is 40x32"),
    "a point outside": (lambda h: _rewrite(h, lambda d: d["rounds"][0].update(points=[[5, 6], [99, 6]])) or h,
                        r"round 0: points: target of pair 0 at \(x=99, y=6\) lies outside"),
    "a bad setting": (lambda h: _rewrite(h, lambda d: d["rounds"][1]["settings"]["drag"].update(lr=-1)) or h,
                      r"round 1: drag\.lr: got -1\.0; must be > 0"),
    "a bad parent": (lambda h: _rewrite(h, lambda d: d["rounds"][1].update(parent=1)) or h,
                     r"round 1: parent 1 is not an earlier round with a result"),
    "a bad current round": (lambda h: _rewrite(h, lambda d: d.update(current=5)) or h,
                            r"history\.json: current is 5; it must be a round, 0\.\.1"),
    "a bad generation": (lambda h: _rewrite(h, lambda d: d["rounds"][0].update(generated={"seed": "x"})) or h,
                         r"round 0: generated must be null, or for a first round"),
    "a path as a file name": (lambda h: _rewrite(h, lambda d: d["rounds"][0].update(source="../x.png")) or h,
                              r"round 0: source must name a PNG file in the history folder"),
}


@pytest.mark.parametrize("case", list(BAD_HISTORIES))
def test_bad_histories_are_one_line_before_any_work(case, tmp_path, capsys):
    history = hand_made_history(tmp_path / "history")
    breaks, message = BAD_HISTORIES[case]
    broken = breaks(history)
    out = tmp_path / "out"
    code = main(["replay", str(broken), "--out", str(out), "--model", str(tmp_path / "no-model"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert not out.exists()  # refused before anything was written or loaded


@pytest.mark.parametrize("where", ["a file", "the history itself", "another history"])
def test_bad_replay_outputs(where, tmp_path, capsys):
    history = hand_made_history(tmp_path / "history")
    out = {"a file": tmp_path / "file.png", "the history itself": history,
           "another history": tmp_path / "older"}[where]
    out.touch() if where == "a file" else None
    if where == "another history":  # its round images would mix with the replay's
        hand_made_history(out)
    code = main(["replay", str(history), "--out", str(out), "--model", str(tmp_path / "no-model"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --out: "), err
    # the hand-made history loads; a model that does not exist is the next one-line error
    assert main(["replay", str(history), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-model")]) == 2
    assert "no model folder" in capsys.readouterr().err


QUICK = {"lora": {"steps": 2}, "inversion": {"num_steps": 20, "strength": 0.5}, "drag": {"max_steps": 4}}


def test_panel_round_buttons_and_strip(tiny_model, blob_image):
    editor = DragEditor(blob_image, points=[(24, 24, 40, 30)], display_width=128)
    panel = RunPanel(tiny_model, editor, prompt="a red disc", settings=settings_from_dict(QUICK, tiny_model.settings))
    classes = {c for w in (panel.continue_button, panel.undo_round_button, panel.redo_round_button, panel.keep_lora,
                           panel.rounds_strip) for c in w._dom_classes}
    assert {"dragnb-continue", "dragnb-undo-round", "dragnb-redo-round", "dragnb-keep-lora", "dragnb-rounds"} <= classes
    assert panel.continue_button.disabled and panel.undo_round_button.disabled and not panel.rounds_strip.children
    r0 = panel.run()
    assert panel.error is None and len(panel.rounds_strip.children) == 1 and not panel.continue_button.disabled

    panel.continue_button.click()  # the result becomes the canvas's source, points and mask cleared
    assert np.array_equal(editor.image, r0.image) and editor.points == [] and not editor.mask.any()
    strip = panel.rounds_strip.children
    assert len(strip) == 2 and "dragnb-round-current" in strip[1]._dom_classes
    assert panel.result is None and panel.continue_button.disabled and not panel.undo_round_button.disabled
    editor.set_points([(40, 30, 40, 45)])
    r1 = panel.run()
    assert r1.origin["lora"] == "computed" and np.array_equal(r1.source, r0.image)

    panel.undo_round_button.click()  # round 0's source, points and mask again; nothing runs
    assert np.array_equal(editor.image, blob_image) and editor.points == [(24, 24, 40, 30)]
    assert panel.result is r0 and "dragnb-round-current" in panel.rounds_strip.children[0]._dom_classes
    assert panel.run().origin == ALL_MEMORY and len(panel.session.rounds) == 2  # cached, no new round
    panel.redo_round_button.click()
    assert editor.points == [(40, 30, 40, 45)] and panel.result is r1 and panel.redo_round_button.disabled

    # a branch keeping round 0's LoRA, from the strip: round 0's thumbnail button, then continue
    panel.rounds_strip.children[0].children[1].click()
    panel.keep_lora.value = True
    panel.continue_button.click()
    editor.set_points([(40, 30, 20, 30)])
    r2 = panel.run()
    assert r2.origin["lora"] == "memory" and (panel.session.round.parent, panel.session.round.keep_lora) == (0, True)
    assert len(panel.rounds_strip.children) == 3 and panel.error is None
    # a round's settings come back with it
    panel.drag_steps.value = 2
    panel.undo_round_button.click()
    assert panel.drag_steps.value == 4 and panel.settings == panel.session.round.settings
    with pytest.raises(InputError, match="image: got 32x64"):
        editor.set_image(blob_image[:, :32])
