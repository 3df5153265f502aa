"""Nothing lost, nothing cryptic: every failure class of issue 10, each answered by one clear line before any work."""

import dataclasses
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import dragnb.session
from dragnb.evaluation.bench import SampleRef, load_samples
from dragnb.cache import LORA_LOSSES, LORA_WEIGHTS
from dragnb.cli import main
from dragnb.config import DragSettings, InversionSettings, LoraSettings, Settings, apply_overrides
from dragnb.evaluation.dragbench import write_sample
from dragnb.drag import drag
from dragnb.errors import InputError, Interrupted, ModelError, SettingError
from dragnb.files import TEMP_MARK
from dragnb.images import to_rgb_array
from dragnb.models import load_model, resolve_device
from dragnb.motion import motion_loss
from dragnb.points import make_points
from dragnb.session import DragSession

FAST = Settings(lora=LoraSettings(steps=2), drag=DragSettings(max_steps=3, lr=0.05),
                inversion=InversionSettings(num_steps=10))


def run_cli(*args) -> int:
    return main(["drag", *map(str, args), "--quiet"])


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if LoRA training starts: the checks must all come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("LoRA started although the input was bad")

    monkeypatch.setattr(dragnb.session, "train_lora", refuse)


# ---------------------------------------------------------------------------------------------- 1. settings
BAD_SETTINGS = [
    ("inversion.strength=1.5", "inversion.strength: got 1.5; must be in (0, 1]"),
    ("inversion.strength=0", "inversion.strength"),
    ("inversion.strength=0.001", "0 steps"),
    ("inversion.num_steps=0", "inversion.num_steps: got 0; must be >= 1"),
    ("drag.lr=abc", "drag.lr: got 'abc'; must be a finite number"),
    ("drag.lr=-1", "drag.lr: got -1.0; must be > 0"),
    ("drag.lr=nan", "drag.lr: got nan"),
    ("drag.max_steps=-5", "drag.max_steps: got -5; must be >= 0"),
    ("drag.stop_distance=-1", "drag.stop_distance"),
    ("drag.r1=-1", "drag.r1"), ("drag.r2=-1", "drag.r2"), ("drag.r1=2.5", "must be a whole number"),
    ("drag.feature_scale=0", "drag.feature_scale: got 0.0; must be > 0"),
    ("drag.feature_blocks=", "drag.feature_blocks"),
    ("drag.optimizer=adamw", "drag.optimizer: got 'adamw'; must be one of adam, sgd"),
    ("drag.lam=-1", "drag.lam"), ("compute.gradient_checkpointing=maybe", "must be true or false"),
    ("compute.autocast=fp8", "compute.autocast: got 'fp8'; must be one of off, fp16, bf16"),
    ("lora.rank=0", "lora.rank: got 0; must be >= 1"), ("lora.batch_size=0", "lora.batch_size"),
    ("lora.steps=-1", "lora.steps"), ("lora.lr=0", "lora.lr"), ("lora.crop_scale=1.2,0.5", "lora.crop_scale"),
    ("denoise.control_from_step=-1", "denoise.control_from_step"),
    ("drag.nope=1", "drag.nope: no such setting"),
]


@pytest.mark.parametrize("assignment,message", BAD_SETTINGS)
def test_bad_setting_is_one_line_naming_field_and_range(assignment, message):
    with pytest.raises(SettingError if "no such" not in message else InputError) as info:
        apply_overrides(Settings(), [assignment])
    text = str(info.value)
    assert message in text and "\n" not in text
    if "no such" not in message and "0 steps" not in message:
        assert "the default is" in text  # the fix: a value that works


def test_settings_are_checked_however_they_are_made():
    with pytest.raises(SettingError, match="drag.optimizer"):
        dataclasses.replace(DragSettings(), optimizer="adamw")  # a notebook's way
    with pytest.raises(SettingError, match="inversion.strength"):
        InversionSettings(strength=1.5)
    with pytest.raises(SettingError, match="lora.rank"):
        LoraSettings(rank=True)  # a bool is not a rank
    ok = apply_overrides(Settings(), ["drag.r1=2.0", "compute.vae_tiling=off", "drag.feature_blocks=-1,-2"])
    assert ok.drag.r1 == 2 and ok.compute.vae_tiling is False and ok.drag.feature_blocks == (-1, -2)
    assert Settings() == apply_overrides(Settings(), [])  # the reference defaults pass their own checks
    with pytest.raises(InputError, match="drag: expected a dragnb.config.DragSettings, got dict"):
        Settings(drag={"lr": 0.03})  # a stage given as a dict would be carried along unchecked


def test_model_bound_settings_fail_before_any_stage(tiny_model, blob_image, no_work):
    session = DragSession(tiny_model, blob_image, "", FAST)
    for bad, field in ((dataclasses.replace(FAST, drag=DragSettings(feature_blocks=(7,))), "drag.feature_blocks"),
                       (dataclasses.replace(FAST, inversion=InversionSettings(num_steps=5000)), "inversion.num_steps"),
                       (dataclasses.replace(FAST, drag=DragSettings(feature_scale=0.001)), "drag.feature_scale"),
                       (dataclasses.replace(FAST, lora=LoraSettings(target_modules=("to_qq",))),
                        "lora.target_modules"),
                       (dataclasses.replace(FAST, lora=LoraSettings(target_modules=("attn1",))),  # a block
                        "lora.target_modules.*not layers")):
        with pytest.raises(SettingError, match=field):
            session.settings = bad
        with pytest.raises(SettingError, match=field):
            DragSession(tiny_model, blob_image, "", bad)
    assert session.settings == FAST  # the rejected value never replaced the good one


def test_layers_carrying_an_adapter_are_still_layers(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "", FAST)
    session.set_points([(10, 10, 20, 10)])
    assert session.run_lora() is not None  # an adapter on to_q, to_k, to_v, to_out.0 now
    session.settings = dataclasses.replace(FAST, drag=DragSettings(max_steps=2))  # still the same, valid, targets
    with pytest.raises(SettingError, match="lora.target_modules"):
        session.settings = dataclasses.replace(FAST, lora=LoraSettings(target_modules=("lora_A",)))  # peft's own


@pytest.mark.parametrize("assignment", ["inversion.strength=1.5", "drag.max_steps=-5", "drag.optimizer=adamw",
                                        "drag.lr=abc", "drag.feature_blocks=7", "denoise.control_blocks=9",
                                        "lora.target_modules=to_q,attn9"])
def test_cli_bad_setting_exits_2_before_lora(tiny_dir, tmp_path, blob_image, capsys, no_work, assignment):
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    code = run_cli("--image", tmp_path / "in.png", "--points", "10,10,20,20", "--model", tiny_dir,
                   "--out", tmp_path / "o.png", "--set", assignment)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {assignment.split('=')[0]}: ") and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------------------------------------- 2. zero length
def test_handle_on_its_target_does_not_divide_by_zero(tiny_model):
    feature = torch.randn(1, 4, 8, 8, requires_grad=True)
    at = torch.tensor([[3.0, 4.0]])
    assert float(motion_loss(feature, at, at.clone(), r1=1, stop_distance=0.0)) == 0.0
    handles, targets = torch.tensor([[3.0, 4.0], [2.0, 2.0]]), torch.tensor([[3.0, 4.0], [5.0, 2.0]])
    loss = motion_loss(feature, handles, targets, r1=1, stop_distance=0.0)  # one arrived, one still to go
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0 and torch.isfinite(feature.grad).all()
    zt = torch.randn(1, 4, 16, 16)
    text = tiny_model.pipe.encode_prompt("", "cpu", 1, False)[0]
    result = drag(tiny_model, zt, 500, text, at, at.clone(), settings=DragSettings(stop_distance=0.0, max_steps=5))
    assert result.stop_reason == "reached" and not result.history  # arrived before the first step
    held = drag(tiny_model, zt, 500, text, at, at.clone(),
                settings=DragSettings(stop_distance=0.0, max_steps=5, hold_steps=2, supervision="anchored"))
    assert held.stop_reason == "reached" and len(held.history) == 2  # held twice, then done; finite losses
    assert all(np.isfinite(s.loss) for s in held.history)
    searched = drag(tiny_model, zt, 500, text, at, at.clone(),
                    settings=DragSettings(stop_distance=0.0, max_steps=5, tracking="line_search"))
    assert searched.stop_reason == "reached"


# ---------------------------------------------------------------------------------------------- 3. outputs
def test_outputs_are_checked_before_the_work(tiny_dir, tmp_path, blob_image, capsys, no_work):
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("x")
    common = ["--image", tmp_path / "in.png", "--points", "10,10,20,20", "--model", tiny_dir]
    for extra, message in ((["--out", tmp_path / "folder.png"], "--out: "),
                           (["--out", tmp_path / "in.png" / "o.png"], "is a file, not a folder"),
                           (["--out", tmp_path / "o.png", "--cache-dir", tmp_path / "afile"], "--cache-dir: ")):
        assert run_cli(*common, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_outputs_that_cannot_be_written_fail_before_the_work(tiny_dir, tmp_path, blob_image, capsys, no_work):
    """A read-only --out, a folder where the record OUT.json goes, a read-only --cache-dir: one line, no work."""
    import os

    Image.fromarray(blob_image).save(tmp_path / "in.png")
    common = ["--image", tmp_path / "in.png", "--points", "10,10,20,20", "--model", tiny_dir]
    (tmp_path / "locked.png").write_bytes(b"")
    (tmp_path / "locked.png").chmod(0o444)
    (tmp_path / "rec.json").mkdir()
    (tmp_path / "shut").mkdir()
    (tmp_path / "shut").chmod(0o555)
    cases = [(["--out", tmp_path / "rec.png"], "a folder has that name")]
    if os.geteuid() != 0:  # root writes through permissions
        cases += [(["--out", tmp_path / "locked.png"], "cannot be overwritten"),
                  (["--out", tmp_path / "o.png", "--cache-dir", tmp_path / "shut"], "--cache-dir: cannot write")]
    try:
        for extra, message in cases:
            assert run_cli(*common, *extra) == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    finally:
        (tmp_path / "shut").chmod(0o755)


# ---------------------------------------------------------------------------------------------- 4. caches
def _cached_session(model, image, cache):
    session = DragSession(model, image, "a disc", FAST, cache_dir=cache)
    session.set_points([(24, 24, 36, 24)])
    return session


def test_caches_heal_and_say_where_each_stage_came_from(tiny_model, blob_image, tmp_path, caplog):
    cache = tmp_path / "cache"
    first = _cached_session(tiny_model, blob_image, cache).run()
    assert first.origin == dict.fromkeys(("lora", "inversion", "drag", "denoise"), "computed")
    again = _cached_session(tiny_model, blob_image, cache).run()
    assert again.origin["lora"] == again.origin["inversion"] == "disk" and again.cached["inversion"]
    assert again.to_record()["origin"]["lora"] == "disk"
    np.testing.assert_array_equal(again.image, first.image)  # a disk entry reproduces the edit exactly

    [inv_file] = (cache / "inversion").glob("*.safetensors")
    [lora_dir] = (cache / "lora").iterdir()
    breakages = [
        ("inversion", lambda: inv_file.write_bytes(inv_file.read_bytes()[: inv_file.stat().st_size // 2])),
        ("inversion", lambda: inv_file.write_bytes(b"")),
        ("lora", lambda: (lora_dir / LORA_LOSSES).write_text("[1.0, oops")),
        ("lora", lambda: (lora_dir / LORA_WEIGHTS).write_bytes((lora_dir / LORA_WEIGHTS).read_bytes()[:100])),
    ]
    for stage, breakage in breakages:
        breakage()
        (cache / "lora" / f".x{TEMP_MARK}1234").mkdir()  # what a killed writer leaves behind
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dragnb"):
            healed = _cached_session(tiny_model, blob_image, cache).run()
        warnings = [r.getMessage() for r in caplog.records if "cache:" in r.getMessage()]
        assert len(warnings) == 1 and "discarded" in warnings[0], warnings
        assert healed.origin[stage] == "computed" and not healed.cached[stage]
        np.testing.assert_array_equal(healed.image, first.image)  # recomputed, the same edit
        assert not list((cache / "lora").glob(f".*{TEMP_MARK}*"))  # leftover temporaries removed
        assert _cached_session(tiny_model, blob_image, cache).run().origin[stage] == "disk"  # and written anew
        lora_dir = next((cache / "lora").iterdir())
        inv_file = next((cache / "inversion").glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------- 5. model folders
@pytest.mark.parametrize("breakage,message", [
    (lambda d: (d / "dragnb_defaults.json").write_text("{oops"), "dragnb_defaults.json' is not usable"),
    (lambda d: (d / "dragnb_defaults.json").write_text('{"drag": {"lrr": 1}}'), "drag.lrr: no such setting"),
    (lambda d: (d / "dragnb_defaults.json").write_text('{"drag": {"lr": -1}}'), "drag.lr: got -1.0"),
    (lambda d: (d / "dragnb_defaults.json").write_text('{"drag": 5}'), "drag: must be an object of settings"),
    (lambda d: (d / "dragnb_defaults.json").write_text('{"dragg": {}}'), "dragg: no such stage"),
    (lambda d: shutil.rmtree(d / "tokenizer"), "lacks its tokenizer/ folder"),
])
def test_broken_model_folders_get_a_model_line(tiny_dir, tmp_path, breakage, message):
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    breakage(folder)
    with pytest.raises(ModelError) as info:
        load_model(folder, device="cpu")
    assert str(info.value).startswith("model: ") and message in str(info.value)


# ---------------------------------------------------------------------------------------------- 6. bench samples
def test_one_malformed_sample_never_stops_the_bench(tmp_path, blob_image):
    good = write_sample(tmp_path / "c" / "good", blob_image, "", make_points([(1, 2, 3, 4)], (64, 64)), None)
    metas = {"text_points": {"prompt": "", "points": [["a", 1], [2, 3]], "mask": None},
             "ragged_points": {"prompt": "", "points": [[1, 2], [3]], "mask": None},
             "points_not_a_list": {"prompt": "", "points": 7, "mask": None},
             "mask_of_text": {"prompt": "", "points": [[1, 2], [3, 4]], "mask": np.array([["x"] * 64] * 64)},
             "not_a_dict": [1, 2, 3]}
    refs = [SampleRef("c", "good", good)]
    for name, meta in metas.items():
        folder = write_sample(tmp_path / "c" / name, blob_image, "", make_points([(1, 2, 3, 4)], (64, 64)), None)
        with open(folder / "meta_data.pkl", "wb") as f:
            pickle.dump(meta, f)
        refs.append(SampleRef("c", name, folder))
    samples, skipped = load_samples(refs)
    assert [ref.name for ref, _ in samples] == ["good"]
    assert sorted(s.path.rsplit("/", 1)[-1] for s in skipped) == sorted(metas)
    assert all("meta_data.pkl" in s.reason for s in skipped), skipped  # each names the file at fault


# ---------------------------------------------------------------------------------------------- 7. devices, images
def test_devices_and_images_get_one_line(tmp_path, monkeypatch, blob_image, capsys):
    with pytest.raises(InputError, match="'foo' is not a device name; available here: cpu"):
        resolve_device("foo")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only build, even on a GPU machine
    with pytest.raises(InputError, match="'cuda' is not available .*available here: cpu"):
        resolve_device("cuda")
    monkeypatch.undo()
    assert resolve_device("cpu") == torch.device("cpu")
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000: a "bomb" at this limit
    with pytest.raises(InputError, match="--image: .*decompression bombs"):
        to_rgb_array(tmp_path / "in.png", "--image")


def test_negative_first_point_reaches_the_point_check(tmp_path, blob_image, capsys, no_work):
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    assert run_cli("--image", tmp_path / "in.png", "--points", "-1,18,30,30", "--out", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert "--points: handle of pair 0 at (x=-1, y=18) lies outside" in err


# ---------------------------------------------------------------------------------------------- 8. Ctrl-C
@pytest.mark.parametrize("stage,function", [("inversion", "invert"), ("lora", "train_lora")])
def test_ctrl_c_at_the_command_line_says_what_was_kept(stage, function, tiny_dir, tmp_path, blob_image, capsys,
                                                       monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dragnb.session, function, interrupted)
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    code = run_cli("--image", tmp_path / "in.png", "--points", "10,10,20,20", "--model", tiny_dir,
                   "--out", tmp_path / "o.png", "--cache-dir", tmp_path / "cache", "--set", "lora.steps=2")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err[-1].startswith(f"interrupted during {stage}: nothing from {stage} was cached"), err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "cache" / stage).exists()
    if stage == "inversion":  # the stage before it finished, and stays
        assert "lora is cached" in err[-1] and list((tmp_path / "cache" / "lora").iterdir())


def test_ctrl_c_during_lora_names_the_stage(tiny_model, blob_image):
    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, lora=LoraSettings(steps=5)))
    session.set_points([(10, 10, 50, 10)])

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        session.run(callbacks=[interrupt])
    assert info.value.stage == "lora" and "lora was interrupted" in str(info.value)


# ---------------------------------------------------------------------------------------------- issue 26
@pytest.mark.parametrize("size,scale", [((64, 64), 0.5), ((48, 80), 0.5), ((65, 63), 0.5), ((64, 64), 0.25)])
@pytest.mark.parametrize("round_points", [True, False])
def test_a_handle_anywhere_in_the_image_works(tiny_model, size, scale, round_points):
    """Issue 26: a handle on the last column or row rounded past the grid's last pixel (IndexError after the work)."""
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    settings = dataclasses.replace(FAST, lora=LoraSettings(steps=0), drag=DragSettings(
        max_steps=2, feature_scale=scale, round_points=round_points))
    session = DragSession(tiny_model, image, "", settings)
    corners = [(w - 1, h - 1, w - 4, h - 4), (0, 0, 3, 3), (w - 1, 0, w - 3, 2), (0, h - 1, 2, h - 3)]
    session.set_points(corners)
    result = session.run()
    grid = session.feature_grid
    assert result.drag.stop_reason in ("reached", "max_steps")
    for points in (result.drag.initial_handles, result.drag.targets):
        assert (points >= 0).all() and (points[:, 0] <= grid[0] - 1).all() and (points[:, 1] <= grid[1] - 1).all()


def test_a_bench_with_no_usable_sample_says_so_in_one_line(tmp_path, blob_image, capsys):
    folder = write_sample(tmp_path / "data" / "c" / "only", blob_image, "", make_points([(1, 2, 3, 4)], (64, 64)),
                          None)
    (folder / "original_image.png").unlink()
    code = main(["bench", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--no-fidelity",
                 "--no-mean-distance"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --data: no usable sample") and err.count("\n") == 1, err
    assert "Traceback" not in err and (tmp_path / "run" / "skipped.json").is_file()


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    """A JPEG every viewer shows as 96 x 64 (stored 64 x 96 with EXIF orientation 6 = rotated 90°)."""
    stored = np.zeros((96, 64, 3), np.uint8)  # (H, W) as stored
    stored[:10, :] = 255  # a white band along the stored top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    shown = to_rgb_array(tmp_path / "rot.jpg", "--image")
    assert shown.shape == (64, 96, 3)  # as a viewer shows it
    assert shown[:, -10:].mean() > 200 and shown[:, :40].mean() < 30  # the band is now on the right
    mask = np.zeros((96, 64), np.uint8)
    mask[:10] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png", exif=exif.tobytes())
    from dragnb.images import load_mask

    loaded = load_mask(tmp_path / "mask.png", (64, 96))
    assert loaded.shape == (64, 96) and loaded[:, -10:].all() and not loaded[:, :40].any()


def test_a_diverging_drag_stops_with_the_last_good_latent(tiny_model, blob_image, tmp_path, tiny_dir, capsys):
    from dragnb.errors import Notice

    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, drag=DragSettings(max_steps=5,
                                                                                                lr=1e9)))
    session.set_points([(24, 24, 40, 24)])
    with pytest.warns(Notice, match="drag: diverged at iteration 0 .*lower drag.lr"):
        drag = session.run_drag()
    assert drag.stop_reason == "diverged" and drag.history == []
    torch.testing.assert_close(drag.latent, session.run_inversion().zt)  # the last good latent: z_t itself
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    code = main(["drag", "--image", str(tmp_path / "in.png"), "--points", "24,24,40,24", "--model", str(tiny_dir),
                 "--out", str(tmp_path / "o.png"), "--quiet", "--set", "lora.steps=0", "--set", "drag.lr=1e9"])
    captured = capsys.readouterr()
    assert code == 0 and "note: drag: diverged at iteration 0" in captured.err and "diverged after 0 steps" in captured.out


def test_a_second_concurrent_run_is_refused_in_one_line(tiny_model, blob_image):
    import threading

    from dragnb.errors import SessionBusy

    session = DragSession(tiny_model, blob_image, "", dataclasses.replace(FAST, drag=DragSettings(max_steps=40)))
    session.set_points([(24, 24, 40, 24)])
    started, results, errors = threading.Event(), [], []

    def first():
        results.append(session.run(callbacks=[lambda record: started.set() and False]))

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(60)
    with pytest.raises(SessionBusy, match="a run is already going on this session"):
        session.run()
    worker.join()
    assert len(results) == 1 and results[0].image.shape == blob_image.shape
    assert session.run().image.shape == blob_image.shape  # usable again once the first has ended


@pytest.mark.parametrize("array,message", [
    (np.full((8, 8, 3), 840, np.int32), "int32 values from 840 to 840; give uint8"),
    (np.full((8, 8, 3), -3, np.int64), "int64 values from -3 to -3"),
    (np.where(np.eye(8, dtype=bool)[..., None], np.nan, 0.5).repeat(3, 2), "24 value.s. are NaN or infinite"),
    (np.full((8, 8, 3), -0.5), "float values from -0.5 to -0.5"),
])
def test_image_arrays_of_another_range_are_refused_in_one_line(array, message):
    with pytest.raises(InputError, match=message):
        to_rgb_array(array, "image")


def test_bool_and_small_int_arrays_are_taken_and_said(recwarn):
    from dragnb.errors import Notice

    with pytest.warns(Notice, match="a bool array, taken as black .False. and white .True."):
        out = to_rgb_array(np.eye(4, dtype=bool))
    assert out.dtype == np.uint8 and out[0, 0, 0] == 255 and out[0, 1, 0] == 0
    assert (to_rgb_array(np.full((4, 4, 3), 200, np.int64)) == 200).all()  # ints within 0-255: taken as they are


def test_masks_and_frames_that_mean_something_else_are_said_in_one_line(tmp_path, blob_image):
    from dragnb.errors import Notice
    from dragnb.images import load_mask

    with pytest.warns(Notice, match="all zero.*whole image may change"):
        assert load_mask(np.zeros((8, 8), np.uint8), (8, 8)) is None
    lossy = np.zeros((8, 8), np.uint8)
    lossy[2:6, 2:6], lossy[1, 1] = 255, 3  # a JPEG's ringing
    with pytest.warns(Notice, match="1 pixel.s. lie between 0 and 255 .*17 in all"):
        assert load_mask(lossy, (8, 8)).sum() == 17
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(Notice, match="holds 2 frames; the first is used"):
        first = to_rgb_array(tmp_path / "anim.gif", "--image")
    assert abs(int(first.mean()) - 10) <= 2


@pytest.mark.parametrize("prompt", ["", "a 🎈 ball, très jolie", "zxqv blorf snarfle", "a red disc " * 40])
def test_any_prompt_runs_and_a_long_one_is_said(tiny_model, tiny_dir, blob_image, tmp_path, capsys, prompt):
    from dragnb.errors import Notice

    session = DragSession(tiny_model, blob_image, prompt, dataclasses.replace(FAST, drag=DragSettings(max_steps=2)))
    session.set_points([(24, 24, 30, 24)])
    long = len(tiny_model.pipe.tokenizer(prompt).input_ids) > tiny_model.pipe.tokenizer.model_max_length
    if long:
        with pytest.warns(Notice, match=r"prompt: \d+ tokens .* the text encoder reads \d+; dropped"):
            assert session.run().image.shape == blob_image.shape
    else:
        assert session.run().image.shape == blob_image.shape
    Image.fromarray(blob_image).save(tmp_path / "in.png")
    code = main(["drag", "--image", str(tmp_path / "in.png"), "--points", "24,24,30,24", "--prompt", prompt,
                 "--model", str(tiny_dir), "--out", str(tmp_path / "o.png"), "--quiet", "--set", "lora.steps=1",
                 "--set", "drag.max_steps=2"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    assert err.count("note: prompt:") == (1 if long else 0), err
