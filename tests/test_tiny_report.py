"""dragnb.tiny.report: the training log is parsed right, its figures have their panels, prompts are read back, and
the embedded model's inversion round trip is as faithful as measured (scripts/eval_inversion.py's measure)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from dragnb.config import InversionSettings
from dragnb.models import EMBEDDED_MODEL
from dragnb.tiny.drawing import render
from dragnb.tiny.scenes import Scene, Shape
from dragnb.tiny import report

LINES = [
    {"time": "2026-01-01T10:00:00Z", "phase": "start", "argv": "--minutes-vae 1", "threads": 2},
    {"time": "2026-01-01T10:00:05Z", "phase": "models", "vae_params": 10, "unet_params": 20, "text_params": 5,
     "vocab": 89},
    {"time": "2026-01-01T10:01:00Z", "phase": "vae", "step": 50, "elapsed_min": 0.9, "lr": 1e-3, "loss": 1.0,
     "l1": 0.5, "mse": 0.3, "colour": 0.2, "kl": 0.1},
    {"time": "2026-01-01T10:02:00Z", "phase": "vae", "step": 100, "elapsed_min": 1.9, "lr": 2e-3, "loss": 0.5},
    {"time": "2026-01-01T10:02:10Z", "phase": "vae", "step": 101, "event": "eval", "psnr_mean": 20.0,
     "psnr_min": 18.0, "hue_ok": 0.5, "hue_shift_max": 60.0},
    {"time": "2026-01-01T10:03:00Z", "phase": "vae", "step": 150, "elapsed_min": 2.8, "lr": 1e-3, "loss": 0.4},
    # killed after step 150; the restart resumes from the checkpoint at step 120 and logs 150 again
    {"time": "2026-01-01T10:10:00Z", "phase": "start", "argv": "--minutes-vae 3", "threads": 2},
    {"time": "2026-01-01T10:10:05Z", "phase": "models", "vae_params": 10, "unet_params": 20, "text_params": 5,
     "vocab": 89},
    {"time": "2026-01-01T10:10:06Z", "phase": "vae", "event": "resumed", "step": 120, "elapsed_min": 2.2},
    {"time": "2026-01-01T10:11:06Z", "phase": "vae", "step": 150, "elapsed_min": 2.7, "lr": 1e-3, "loss": 0.3},
    {"time": "2026-01-01T10:11:30Z", "phase": "vae", "step": 170, "event": "final_eval", "psnr_mean": 30.0,
     "psnr_min": 25.0, "hue_ok": 0.97, "hue_shift_max": 30.0},
    {"time": "2026-01-01T10:12:30Z", "phase": "latents", "n": 100, "scaling_factor": 0.25, "seconds": 60.0},
    {"time": "2026-01-01T10:13:30Z", "phase": "unet", "step": 25, "elapsed_min": 1.0, "lr": 1e-4, "loss": 0.9,
     "mse": 1.0},
    {"time": "2026-01-01T10:14:00Z", "phase": "unet", "event": "adherence", "step": 30, "elapsed_min": 1.2,
     "seconds": 20.0, "colour": 0.25, "shape": 0.5, "background": 0.0, "n": 48},
    {"time": "2026-01-01T10:15:00Z", "phase": "unet", "step": 50, "elapsed_min": 2.0, "lr": 2e-4, "loss": 0.5,
     "mse": 0.6},
]


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "training_log.jsonl"
    text = "\n".join(json.dumps(line) for line in LINES)
    path.write_text(text + '\n\n{"time": "2026-01-01T10:15:01Z", "phase": "un')  # a half-written last line
    return path


def test_read_training_log_keeps_the_curves_events_and_drops_lines_a_restart_repeats(log_path):
    log = report.read_training_log(log_path)
    assert sorted(log.curves) == ["unet", "vae"]
    vae = log.curves["vae"]
    assert vae.steps.tolist() == [50, 100, 120 + 30]  # the first step-150 line was superseded by the restart
    assert vae.loss.tolist() == [1.0, 0.5, 0.3]
    assert vae.lr.tolist() == [1e-3, 2e-3, 1e-3]
    np.testing.assert_array_equal(vae.column("l1"), [0.5, np.nan, np.nan])
    assert log.curves["unet"].loss.tolist() == [0.9, 0.5]
    assert [(e.kind, e.step) for e in log.events_of("vae")] == [("eval", 101), ("resumed", 120), ("final_eval", 170)]
    assert log.events_of("unet", "adherence")[0].values["shape"] == 0.5
    assert log.resumes("vae") == [120] and log.resumes("unet") == []
    assert log.runs == ["--minutes-vae 1", "--minutes-vae 3"]
    assert log.params == {"vae_params": 10, "unet_params": 20, "text_params": 5, "vocab": 89}


def test_phase_times_count_training_minutes_and_wall_clock_without_restart_gaps(log_path):
    times = {p.phase: p for p in report.phase_times(report.read_training_log(log_path))}
    assert list(times) == ["vae", "latents", "unet"]
    # the trainer's count continues from the checkpoint: the killed run's minutes after it are lost, not counted
    assert times["vae"].steps == 170 and times["vae"].step_minutes == pytest.approx(2.7)
    # 10:00:05 -> 10:03:00 and 10:10:05 -> 10:11:30; the 7-minute gap before the restart is nobody's
    assert times["vae"].wall_minutes == pytest.approx((175 + 85) / 60)
    assert times["latents"].step_minutes == pytest.approx(1.0)
    assert times["unet"].step_minutes == pytest.approx(2.0) and times["unet"].wall_minutes == pytest.approx(2.5)


def test_training_curves_has_four_panels_with_the_logged_data(log_path):
    log = report.read_training_log(log_path)
    fig = report.training_curves(log)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    vae_ax, psnr_ax, unet_ax, adherence_ax = fig.axes
    np.testing.assert_array_equal(vae_ax.lines[0].get_ydata(), [1.0, 0.5, 0.3])
    assert [line.get_xdata()[0] for line in vae_ax.lines if line.get_label() == "resumed from checkpoint"] == [120]
    np.testing.assert_array_equal(psnr_ax.lines[0].get_ydata(), [20.0, 30.0])
    np.testing.assert_array_equal(adherence_ax.lines[0].get_ydata(), [0.25])
    empty = report.training_curves(report.TrainingLog({}, [], [], {}, {}))  # a log with nothing: notes, no error
    assert len(empty.axes) == 4 and all(ax.texts for ax in empty.axes)


def test_parse_prompt_and_score_image_read_a_rendered_scene_back():
    assert report.parse_prompt("a red circle, a blue square and a white triangle on a gray and black background") \
        == ([("red", "circle"), ("blue", "square"), ("white", "triangle")], ("gray", "black"))
    assert report.parse_prompt("a red dog on a blue background") is None
    scene = Scene((Shape("square", "red", 0.3, 0.3, 0.15), Shape("circle", "yellow", 0.7, 0.7, 0.15)),
                  ("blue", "white"))
    sample = report.score_image(np.asarray(render(scene, 64)), scene.prompt)
    assert sorted(sample.shapes_read) == [("red", "square"), ("yellow", "circle")]
    assert (sample.colours_right, sample.kinds_right, sample.background_right) == (2, 2, True)
    wrong = report.score_image(np.asarray(render(scene, 64)), "a green triangle on a blue and white background")
    assert (wrong.n_shapes, wrong.colours_right, wrong.kinds_right, wrong.background_right) == (1, 0, 0, True)
    assert report.sample_tally([sample, wrong]) == {"samples": 2, "colour": 2 / 3, "shape": 2 / 3, "background": 1.0}
    assert isinstance(report.samples_per_prompt([sample, wrong]), Figure)


def test_markdown_table_formats_dataclasses():
    rows = [report.PhaseTime("vae", 2837, 27.0005, float("nan")), report.PhaseTime("latents", None, 3.8, 3.8)]
    assert report.markdown_table(rows).splitlines() == [
        "| phase | steps | step_minutes | wall_minutes |", "|---|---|---|---|",
        "| vae | 2 837 | 27 | – |", "| latents | – | 3.8 | 3.8 |"]


@pytest.mark.skipif(not (EMBEDDED_MODEL / "model_index.json").is_file(), reason="the embedded model is not in data/")
def test_the_embedded_models_inversion_round_trip_is_faithful():
    from dragnb.models import load_model

    model = load_model(None, device="cpu")
    scene = report.held_out_scenes(1)[0]
    # 5 steps to t = 401 and back: 31.8 dB on this scene when measured (44 dB at the default 35 of 50 steps)
    records = report.inversion_quality(model, [np.asarray(render(scene, 64))], scene.prompt,
                                       InversionSettings(num_steps=10, strength=0.5))
    (r,) = records
    assert (r.steps, r.t) == (5, 401) and r.round_trip.shape == (64, 64, 3)
    assert r.psnr > 28.0, "invert -> denoise drifts from the VAE reconstruction"
    assert 26.0 < r.vae_psnr < 40.0, "the VAE's reconstruction of a held-out scene"
    fig = report.inversion_figure(records)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    arch = {c.name: c for c in report.architecture(model)}
    assert arch["UNet"].params == sum(p.numel() for p in model.pipe.unet.parameters())


def test_what_defaults_buy_reads_each_default_against_the_run_that_sets_it_back(tmp_path):
    from dragnb.tiny.report.benchmark import what_defaults_buy

    (tmp_path / "dragnb_defaults.json").write_text(json.dumps(
        {"drag": {"lr": 0.03, "supervision": "anchored", "hold_steps": 30}, "denoise": {"blend_outside_mask": True}}))
    group = "v9, 10 cases"
    runs = {f"{group}: defaults": {"n": 10, "success_rate": 0.9, "variant": []},
            f"{group}: reference supervision": {"n": 10, "success_rate": 0.8, "variant": ["drag.supervision=reference"]},
            f"{group}: both back": {"n": 10, "success_rate": 0.5,
                                    "variant": ["drag.supervision=reference", "drag.hold_steps=0"]},
            f"{group}: an addition": {"n": 10, "success_rate": 0.1, "variant": ["drag.tracking=line_search"]},
            "another group: defaults": {"n": 5, "success_rate": 0.2, "variant": []}}
    (tmp_path / "scene_benchmark.json").write_text(json.dumps({"variant_runs": runs}))
    rows = {r["setting"]: r for r in what_defaults_buy(tmp_path, group)}
    assert rows["the model's defaults (all of the below), 10 cases"]["success (%)"] == 90
    assert rows["drag.supervision"] == {"setting": "drag.supervision", "this model": "anchored",
                                        "the paper's loop": "reference", "success (%)": 80, "it buys (points)": 10}
    assert rows["drag.hold_steps"]["success (%)"] is None  # not measured alone: no number made up
    assert rows["denoise.blend_outside_mask"]["the paper's loop"] == "False"
    assert rows["drag.supervision + drag.hold_steps"]["it buys (points)"] == 40
    assert "drag.lr" not in rows and "drag.tracking" not in rows  # the model's scale, and what it does not add
    assert what_defaults_buy(tmp_path, "no such group") == []
    runs[f"{group}: defaults"]["kept_success_rate"] = 0.8  # scored with the scene kept: its own two columns
    runs[f"{group}: reference supervision"]["kept_success_rate"] = 0.75
    (tmp_path / "scene_benchmark.json").write_text(json.dumps({"variant_runs": runs}))
    rows = {r["setting"]: r for r in what_defaults_buy(tmp_path, group)}
    assert rows["drag.supervision"]["with the scene kept (%)"] == 75
    assert rows["drag.supervision"]["it buys, kept (points)"] == 5
    assert rows["drag.hold_steps"]["with the scene kept (%)"] is None  # the run that set it back had no kept score
    assert rows["drag.supervision + drag.hold_steps"]["it buys, kept (points)"] is None
