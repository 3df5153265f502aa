"""The session's caching and input handling, and the command line end to end on a saved tiny model."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from dragnb.callbacks import only
from dragnb.cli import main
from dragnb.config import DragSettings, LoraSettings, Settings
from dragnb.evaluation.dragbench import read_sample, write_sample
from dragnb.errors import InputError
from dragnb.generate import generate
from dragnb.points import make_points
from dragnb.session import DragSession

FAST = Settings(lora=LoraSettings(steps=2), drag=DragSettings(max_steps=3, lr=0.05))


def test_session_reruns_only_what_changed(tiny_model, blob_image, tmp_path):
    image = np.concatenate([blob_image, blob_image[:16]], axis=0)  # 80 x 64: non-square
    session = DragSession(tiny_model, image, "a red disc", FAST, cache_dir=tmp_path / "cache")
    assert session.model_size == (64, 48)
    session.set_points([(24, 24, 36, 24)])
    first = session.run()
    assert first.image.shape == image.shape and first.cached == dict.fromkeys(first.cached, False)
    assert first.trajectory_xy().shape == (len(first.drag.history) + 1, 1, 2)
    # the reference rounds the points to the supervision grid (32 x 24 here): y = 24 -> row 9.6 -> 10 -> y = 25
    np.testing.assert_allclose(first.trajectory_xy()[0, 0], [24, 25], atol=1e-4)
    again = session.run()
    assert all(again.cached.values()) and again.drag is first.drag
    session.set_points([(24, 24, 24, 40)])
    moved = session.run()
    assert moved.cached == {"lora": True, "inversion": True, "drag": False, "denoise": False}
    session.set_mask(np.ones(image.shape[:2]))
    assert session.run().drag.mask_used and not moved.drag.mask_used
    session.settings = dataclasses.replace(session.settings, lora=LoraSettings(steps=3))
    assert not session.is_cached("lora") and not session.is_cached("inversion")
    # a new session on the same image finds the LoRA and inversion on disk
    other = DragSession(tiny_model, image, "a red disc", FAST, cache_dir=tmp_path / "cache")
    other.set_points([(24, 24, 36, 24)])
    lora = other.run_lora()
    assert lora.losses == first.lora.losses
    inv = other.run_inversion()
    assert inv.t == first.inversion.t and np.allclose(inv.zt.numpy(), first.inversion.zt.numpy())
    record = json.loads(json.dumps(first.to_record()))
    assert record["mask_used"] is False and "whole image" in record["mask_note"]


def test_session_needs_points(tiny_model, blob_image):
    with pytest.raises(InputError, match="set_points"):
        DragSession(tiny_model, blob_image, "", FAST).run_drag()


def test_stop_request_returns_partial(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, drag=DragSettings(max_steps=20, lr=0.05)))
    session.set_points([(10, 10, 50, 10)])
    result = session.run(callbacks=[only("drag", lambda step: session.request_stop() if step.step == 1 else None)])
    assert result.drag.stop_reason == "callback" and len(result.drag.history) == 2
    assert not session.is_cached("drag")  # partial results are returned, not cached as finished
    session.request_stop()  # asked while no run goes: the next run stops at its drag's first iteration
    assert len(session.run().drag.history) == 1 and not session.stop_requested


def test_generated_mode_session(tiny_model):
    gen = generate(tiny_model, "a red disc", guidance_scale=2.0, num_steps=50, seed=3)
    session = DragSession.from_generated(tiny_model, gen, FAST)
    session.set_points([(20, 20, 30, 20)])
    result = session.run()
    assert result.lora is None and result.inversion is None and result.image.shape == (64, 64, 3)


def test_dragbench_sample_round_trip(tmp_path, blob_image):
    mask = np.zeros((64, 64), bool)
    mask[10:40, 10:50] = True
    write_sample(tmp_path / "s", blob_image, "a red disc", make_points([(24, 24, 40, 24)], (64, 64)), mask)
    sample = read_sample(tmp_path / "s")
    assert sample.prompt == "a red disc" and sample.points.as_list() == [[24, 24], [40, 24]]
    assert (sample.mask == mask).all()


def test_dragbench_pickle_is_restricted(tmp_path, blob_image):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "evil"
    folder.mkdir()
    Image.fromarray(blob_image).save(folder / "original_image.png")
    (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "x", "points": [[1, 1], [2, 2]], "e": Evil()}))
    with pytest.raises(InputError, match="refusing to load builtins.print"):
        read_sample(folder)


def run_cli(*args):
    return main(["drag", *map(str, args), "--quiet", "--set", "lora.steps=2", "--set", "drag.max_steps=3"])


def test_cli_writes_image_and_record(tiny_dir, tmp_path, blob_image):
    rgba = np.dstack([blob_image[:, :48], np.full((64, 48), 255, np.uint8)])  # RGBA, non-square 48 x 64
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    mask = np.zeros((64, 48), np.uint8)
    mask[5:45, 5:45] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    code = run_cli("--image", tmp_path / "in.png", "--points", "24,24,34,24", "--mask", tmp_path / "mask.png",
                   "--prompt", "a red disc", "--model", tiny_dir, "--out", out)
    assert code == 0
    assert Image.open(out).size == (48, 64)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["points"] == [[24, 24], [34, 24]] and record["mask_used"]
    assert record["settings"]["lora"]["steps"] == 2 and record["settings"]["drag"]["max_steps"] == 3
    assert set(record["seconds"]) >= {"lora", "inversion", "drag", "denoise", "load_model"}
    assert len(record["handle_trajectory_xy"]) == record["drag_steps"] + 1
    assert len(record["loss_history"]) == record["drag_steps"]


def test_cli_auto_mask_and_a_drag_family_method(tiny_dir, tmp_path, blob_image):
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    out = tmp_path / "fast.png"
    assert run_cli("--image", tmp_path / "in.png", "--points", "24,24,34,24", "--mask", "auto", "--model", tiny_dir,
                   "--out", out, "--set", "drag.method=fastdrag") == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["mask_used"] and record["input"]["mask"] == "auto"
    assert record["settings"]["drag"]["method"] == "fastdrag" and record["drag_steps"] == 0
    assert record["stop_reason"] == "one step" and len(record["handle_trajectory_xy"]) == 2  # start, then moved


def test_cli_loads_the_model_in_the_weights_dtype_asked_for(tiny_dir, tmp_path, blob_image, capsys):
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    out = tmp_path / "bf16.png"
    assert run_cli("--image", tmp_path / "in.png", "--points", "24,24,34,24", "--model", tiny_dir, "--out", out,
                   "--set", "compute.weights=bf16") == 0
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["compute"]["weights"] == "bf16"
    capsys.readouterr()
    assert run_cli("--image", tmp_path / "in.png", "--points", "24,24,34,24", "--model", tiny_dir, "--out", out,
                   "--set", "compute.weights=fp8") == 2
    err = capsys.readouterr().err
    assert "compute.weights: got 'fp8'; must be one of fp32, fp16, bf16" in err and err.count("\n") == 1, err


def test_cli_sample_folder(tiny_dir, tmp_path, blob_image):
    write_sample(tmp_path / "s", blob_image, "a red disc", make_points([(24, 24, 40, 24)], (64, 64)), None)
    assert run_cli("--sample", tmp_path / "s", "--model", tiny_dir, "--out", tmp_path / "o.png") == 0
    assert json.loads((tmp_path / "o.json").read_text())["mask_used"] is False


@pytest.mark.parametrize("args,message", [
    (["--points", "1,2,3"], "--points: pair 0"),
    (["--points", "1,2,3,4;5,6"], "--points: pair 1"),
    (["--points", "1,2,300,4"], "--points: target of pair 0"),
    (["--points", "1,2,3,4", "--mask", "WRONGMASK"], "--mask: mask is 10x10"),
    (["--points", "1,2,3,4", "--set", "drag.bogus=1"], "drag.bogus: no such setting"),
])
def test_cli_bad_input_names_the_argument(tiny_dir, tmp_path, blob_image, capsys, args, message):
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    Image.fromarray(np.ones((10, 10), np.uint8)).save(tmp_path / "m.png")
    args = [a.replace("WRONGMASK", str(tmp_path / "m.png")) for a in args]
    assert run_cli("--image", tmp_path / "in.png", *args, "--model", tiny_dir, "--out", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_corrupt_image_and_missing_model(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert run_cli("--image", tmp_path / "bad.png", "--points", "1,2,3,4", "--out", tmp_path / "o.png") == 2
    assert "--image" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    assert run_cli("--image", tmp_path / "ok.png", "--points", "1,2,3,4", "--model", tmp_path / "none",
                   "--out", tmp_path / "o.png") == 2
    assert "no model folder" in capsys.readouterr().err


def test_ctrl_c_during_lora_hands_back_partial_results(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, lora=LoraSettings(steps=10)))
    session.set_points([(10, 10, 50, 10)])

    def interrupt(record):
        if record.stage == "lora" and record.step == 2:
            raise KeyboardInterrupt

    from dragnb.errors import Interrupted

    with pytest.raises(Interrupted) as info:
        session.run(callbacks=[interrupt])
    partial = info.value.partial["lora"]
    assert info.value.stage == "lora" and partial.interrupted and len(partial.losses) == 3  # steps 0-2 done
    assert not session.is_cached("lora")  # a half-trained adapter is not reused
    assert len(session.run().lora.losses) == 10


def test_one_callback_sees_every_stage(tiny_model, blob_image):
    from dragnb.callbacks import DenoiseStep, InversionStep, LoraStep
    from dragnb.drag import DragStep

    session = DragSession(tiny_model, blob_image, "", FAST)
    session.set_points([(10, 10, 50, 10)])
    seen = []
    result = session.run(callbacks=[seen.append])
    stages = [r.stage for r in seen]
    assert stages == ["lora"] * 2 + ["inversion"] * 35 + ["drag"] * len(result.drag.history) + ["denoise"] * 35
    kinds = {r.stage: type(r) for r in seen}
    assert kinds == {"lora": LoraStep, "inversion": InversionStep, "drag": DragStep, "denoise": DenoiseStep}
    assert (seen[-1].done, seen[-1].total) == (35, 35) and seen[36].done == seen[36].total == 35
    assert [r.loss for r in seen[:2]] == result.lora.losses and seen[36].t == result.inversion.t
    assert [r.t for r in seen if r.stage == "denoise"] == sorted({r.t for r in seen if r.stage == "inversion"},
                                                                   reverse=True)  # back down the same schedule


@pytest.mark.parametrize("stage", ["lora", "inversion", "drag", "denoise"])
def test_any_callback_can_stop_any_stage(tiny_model, blob_image, stage):
    from dragnb.errors import Interrupted

    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, lora=LoraSettings(steps=4)))
    session.set_points([(10, 10, 50, 10)])
    stop = only(stage, lambda record: record.step == 1)
    if stage in ("lora", "inversion"):
        with pytest.raises(Interrupted) as info:
            session.run(callbacks=[stop])
        assert info.value.stage == stage and not session.is_cached(stage)
        return
    result = session.run(callbacks=[stop])
    if stage == "drag":
        assert result.drag.stop_reason == "callback" and len(result.drag.history) == 2
    else:
        assert result.denoise.interrupted and not session.is_cached("denoise")


def test_stop_during_lora_and_denoise_cache_state(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, lora=LoraSettings(steps=10)))
    session.set_points([(10, 10, 50, 10)])
    from dragnb.errors import Interrupted

    with pytest.raises(Interrupted) as caught:  # a Stop pressed during LoRA stops it
        session.run(callbacks=[only("lora", lambda r: session.request_stop() if r.step == 1 else None)])
    assert caught.value.stopped and not session.stop_requested  # told from Ctrl-C; the request ended with the run
    assert not session.is_cached("lora")
    session.run()
    assert session.is_cached("drag") and session.is_cached("denoise")


def test_paste_outside_puts_the_sources_pixels_outside_the_mask(tiny_model, blob_image):
    from dragnb.config import settings_from_dict

    mask = np.zeros((64, 64), bool)
    mask[10:40, 10:40] = True
    settings = settings_from_dict({"lora": {"steps": 0}, "drag": {"max_steps": 2},
                                   "denoise": {"paste_outside": True, "paste_blur": 0}}, tiny_model.settings)
    session = DragSession(tiny_model, blob_image, "", settings)
    session.set_points([(24, 24, 30, 24)])
    session.set_mask(mask)
    pasted = session.run()
    assert (pasted.image[~mask] == blob_image[~mask]).all()  # the user's own pixels, not the VAE's reconstruction
    session.settings = settings_from_dict({"denoise": {"paste_outside": False}}, settings)
    plain = session.run()
    assert not (plain.image[~mask] == blob_image[~mask]).all() and plain.cached["drag"]
    assert plain.cached["denoise"]  # the paste comes after the denoising: switching it runs nothing again
    assert (plain.image[mask] == pasted.image[mask]).all()  # inside the mask the same edit
