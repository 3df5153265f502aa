"""The benchmark harness end to end on a small DragBench-shaped tree built here from generated images:
skipped samples, outputs, resume, sweeps, fidelity wiring, and the same summary from 2 processes as from 1."""

from __future__ import annotations

import csv
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragnb.evaluation import bench, metrics
from dragnb.cli import main
from dragnb.evaluation.dragbench import read_sample, write_sample
from dragnb.points import make_points

REPO = Path(__file__).resolve().parent.parent
FAST = ["--device", "cpu", "--set", "lora.steps=2", "--set", "drag.max_steps=3", "--set", "inversion.num_steps=10",
        "--set", "dift.ensemble_size=2", "--quiet"]


def disc_image(cx: int, cy: int, colour=(220, 30, 30)) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64, 3), 128, np.uint8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = colour
    return img


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """discs/{a,b} (b with a mask and two pairs), scenes/scene_000000 (known answer), and three broken samples."""
    root = tmp_path_factory.mktemp("bench") / "data"
    write_sample(root / "discs" / "a", disc_image(24, 24), "a red disc", make_points([(24, 24, 36, 30)], (64, 64)),
                 None)
    mask = np.zeros((64, 64), bool)
    mask[10:50, 10:60] = True
    write_sample(root / "discs" / "b", disc_image(40, 30, (30, 30, 220)), "a blue disc",
                 make_points([(40, 30, 30, 30), (20, 40, 22, 44)], (64, 64)), mask)
    from dragnb.evaluation.scenebench import write_cases

    write_cases(root / "scenes", n=1, seed=0, size=64)  # a case with a known answer
    broken = root / "discs" / "broken_pickle"
    broken.mkdir(parents=True)
    Image.fromarray(disc_image(20, 20)).save(broken / "original_image.png")
    (broken / "meta_data.pkl").write_bytes(b"not a pickle")
    outside = root / "discs" / "point_outside"
    outside.mkdir()
    Image.fromarray(disc_image(20, 20)).save(outside / "original_image.png")
    with open(outside / "meta_data.pkl", "wb") as f:
        pickle.dump({"prompt": "", "points": [[10, 10], [99, 10]], "mask": np.zeros((64, 64), np.uint8)}, f)
    (root / "discs" / "no_image").mkdir()
    with open(root / "discs" / "no_image" / "meta_data.pkl", "wb") as f:
        pickle.dump({"prompt": "", "points": [[1, 1], [2, 2]]}, f)
    (root / "discs" / "notes").mkdir()  # neither file: not a sample
    return root


def bench_args(tree: Path, out: Path, tiny_dir: Path, *extra: str) -> list[str]:
    return ["bench", "--data", str(tree), "--out", str(out), "--model", str(tiny_dir), "--dift-model", "same",
            "--seeds", "0,1", "--no-fidelity", *FAST, *extra]


@pytest.fixture(scope="module")
def single(tree, tiny_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "single"
    assert main(bench_args(tree, out, tiny_dir)) == 0
    return out


def test_outputs_and_skipped_samples(single, tree, capsys):
    summary = json.loads((single / "summary.json").read_text())
    assert summary["samples"]["used"] == 3 and summary["samples"]["skipped"] == 4
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["samples"]["skipped_reasons"]}
    assert "meta_data.pkl" in reasons["broken_pickle"] and "cannot read" in reasons["broken_pickle"]
    assert "outside" in reasons["point_outside"] and "meta_data.pkl" in reasons["point_outside"]
    assert "original_image.png" in reasons["no_image"] and "neither" in reasons["notes"]
    # every setting, versions and seeds are written next to the numbers
    assert summary["seeds"] == [0, 1] and summary["versions"]["torch"] == torch.__version__
    assert summary["settings"]["lora"]["steps"] == 2 and summary["metrics"]["dift"]["t"] == 261
    assert summary["metrics"]["image_fidelity"] is False
    # the DragBench result tree: one dragged image and one record per sample and seed
    for seed in (0, 1):
        for key in ("discs/a", "discs/b", "scenes/scene_000000"):
            folder = single / f"seed_{seed}" / key
            assert Image.open(folder / "dragged_image.png").size == (64, 64)
            record = json.loads((folder / "record.json").read_text())
            assert record["edit"]["settings"]["lora"]["seed"] == seed  # seed s offsets the LoRA seed
            assert len(record["metrics"]["distances"]) == len(record["edit"]["points"]) // 2
    assert (single / "md_vs_fidelity.png").read_bytes()[:4] == b"\x89PNG"
    assert any((single / "cache" / "lora").iterdir())


def test_summary_numbers_follow_the_records(single):
    summary = json.loads((single / "summary.json").read_text())
    rows = list(csv.DictReader(open(single / "pairs.csv")))
    assert len(rows) == 2 * 4  # (1 + 2 + 1 pairs) x 2 seeds
    res = summary["results"]["base"]
    per_seed = []
    for seed in (0, 1):
        d = [float(r["distance"]) for r in rows if r["seed"] == str(seed)]
        assert res["per_seed"][str(seed)]["overall"]["mean_distance"] == pytest.approx(np.mean(d))
        per_seed.append(np.mean(d))
    assert res["overall"]["mean_distance"]["mean"] == pytest.approx(np.mean(per_seed))
    assert res["overall"]["mean_distance"]["std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    discs = [float(r["distance"]) for r in rows if r["seed"] == "0" and r["category"] == "discs"]
    assert res["per_seed"]["0"]["categories"]["discs"]["mean_distance"] == pytest.approx(np.mean(discs))
    assert res["categories"]["discs"]["mean_distance"]["per_seed"][0] == pytest.approx(np.mean(discs))
    known = res["categories"]["scenes"]["known_answer"]  # the scene benchmark's known answer is plugged in
    scene_rows = [r for r in rows if r["seed"] == "0" and r["category"] == "scenes"]
    assert len(scene_rows) == 1 and known["success_rate"]["mean"] in (0.0, 1.0)
    assert known["placement_error_px"]["mean"] >= 0 and known["psnr_outside_mask"]["mean"] > 0


def test_masked_mean_distance_and_dai_in_summary_and_csv(single):
    """Masked MD (discs/b has a mask, discs/a none) and DAI_γ: per pair in pairs.csv, in every summary block."""
    summary = json.loads((single / "summary.json").read_text())
    rows = list(csv.DictReader(open(single / "pairs.csv")))
    assert list(rows[0])[:len(bench.PAIR_COLUMNS) - 7] == list(bench.PAIR_COLUMNS[:-7])  # old columns first
    assert list(rows[0])[-7:] == ["masked_matched_x", "masked_matched_y", "masked_distance",
                                  "dai_1", "dai_5", "dai_10", "dai_20"]
    res = summary["results"]["base"]
    for seed in (0, 1):
        mine = [r for r in rows if r["seed"] == str(seed)]
        overall = res["per_seed"][str(seed)]["overall"]
        assert overall["masked_mean_distance"] == pytest.approx(np.mean([float(r["masked_distance"]) for r in mine]))
        for r in mine:
            record = json.loads((single / f"seed_{seed}" / r["category"] / r["sample"] / "record.json").read_text())
            mask = read_sample(Path(summary["data"]) / r["category"] / r["sample"]).mask
            assert record["metrics"]["masked_search"] == ("whole image" if mask is None else "mask")
            if mask is None:  # discs/a: the whole image is searched, masked MD is MD
                assert r["masked_distance"] == r["distance"] and r["masked_matched_x"] == r["matched_x"]
            else:  # the match lies inside the mask (discs/b: rows 10-49, columns 10-59)
                assert mask[int(float(r["masked_matched_y"])), int(float(r["masked_matched_x"]))]
        for gamma in (1, 5, 10, 20):
            # DAI: mean over a sample's pairs, then over samples (GoodDrag)
            per_sample = {}
            for r in mine:
                per_sample.setdefault(r["sample"], []).append(float(r[f"dai_{gamma}"]))
            assert overall[f"dai_{gamma}"] == pytest.approx(np.mean([np.mean(v) for v in per_sample.values()]))
            assert 0 <= overall[f"dai_{gamma}"] <= 3
    assert res["overall"]["dai_5"]["per_seed"] == [res["per_seed"][s]["overall"]["dai_5"] for s in ("0", "1")]
    assert res["categories"]["discs"]["masked_mean_distance"]["mean"] is not None
    assert summary["metrics"]["dai_gammas"] == [1, 5, 10, 20] and "dai_definition" in summary["metrics"]
    table = bench.category_table(summary)
    assert list(table[0])[:5] == ["category", "samples", "mean_distance", "image_fidelity", "tracked_distance"]
    assert {"masked_mean_distance", "dai_1", "dai_5", "dai_10", "dai_20"} <= set(table[0])
    assert table[-1]["category"] == "(all)" and table[-1]["dai_1"] != "n/a"


def test_score_adds_dai_always_and_masked_md_with_a_featurizer():
    from types import SimpleNamespace

    image = np.zeros((9, 9, 3), np.uint8)
    image[4, 4] = (255, 0, 0)
    moved = np.zeros((9, 9, 3), np.uint8)
    moved[4, 6] = (255, 0, 0)
    sample = SimpleNamespace(image=image, prompt="", points=make_points([(4, 4, 6, 4)], (9, 9)), mask=None,
                             folder=Path("/nonexistent"))
    out = bench.score(sample, moved, None, None, None)  # no featurizer: no (masked) MD, DAI all the same
    assert out["masked_mean_distance"] is None and out["mean_distance"] is None
    assert out["dai"] == {str(g): pytest.approx(metrics.dai(image, moved, [[4, 4]], [[6, 4]], g))
                          for g in (1, 5, 10, 20)}
    assert out["dai"]["1"] == 0.0 and out["dai_pairs"]["1"] == [0.0]  # the red pixel is exactly at the target

    def red(img, prompt, generator):  # features: (red, 1) per pixel
        r = torch.from_numpy(img[..., 0].astype(np.float32))
        return torch.stack([r, torch.ones_like(r)])[None]

    sample.mask = np.zeros((9, 9), bool)
    sample.mask[:, :5] = True  # the moved red pixel (6, 4) is outside
    out = bench.score(sample, moved, None, red, None)
    assert out["matched_xy"] == [[6.0, 4.0]] and out["distances"] == [0.0]
    # inside the mask every pixel is (0, 1): a tie, so the first in row-major order, (0, 0)
    assert out["masked_matched_xy"] == [[0.0, 0.0]] and out["masked_distances"] == pytest.approx([np.hypot(6, 4)])
    assert out["masked_search"] == "mask"


def test_resume_redoes_only_unfinished_edits(single, tree, tiny_dir, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(single, out)
    (out / "seed_1" / "discs" / "a" / "record.json").unlink()  # as if interrupted there
    record = out / "seed_0" / "discs" / "b" / "record.json"
    stale = json.loads(record.read_text())
    stale["digest"] = "other settings"
    record.write_text(json.dumps(stale))
    assert main(bench_args(tree, out, tiny_dir)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["edits_run_by_this_process"] == 2 and summary["timing"]["edits_resumed"] == 4
    before = json.loads((single / "summary.json").read_text())
    assert summary["results"] == before["results"]  # deterministic: the redone edits score the same


def test_manual_shards_merge_to_the_same_summary(single, tree, tiny_dir, tmp_path):
    """``--shard 1/2`` takes samples 1, 3, ... (here discs/b); with shard 0's records already there it merges."""
    import shutil

    out = tmp_path / "sharded"
    shutil.copytree(single, out, ignore=shutil.ignore_patterns("summary.json"))
    for seed in (0, 1):
        shutil.rmtree(out / f"seed_{seed}" / "discs" / "b")  # shard 1's share, not done yet
    assert main(bench_args(tree, out, tiny_dir, "--merge-only")) == 2  # refuses to summarise a partial run
    assert main(bench_args(tree, out, tiny_dir, "--shard", "1/2")) == 0
    merged = json.loads((out / "summary.json").read_text())
    assert merged["timing"]["edits_run_by_this_process"] == 2  # discs/b with seeds 0 and 1, nothing else
    assert merged["results"] == json.loads((single / "summary.json").read_text())["results"]


def test_scoring_an_existing_result_tree(single, tree, tiny_dir, tmp_path):
    """``--score``: another method's DragBench outputs get the same metrics (here: our own seed-0 results)."""
    import shutil

    results = tmp_path / "other_method"
    shutil.copytree(single / "seed_0", results)
    (results / "discs" / "a" / "dragged_image.png").unlink()  # a result the other method did not produce
    args = ["bench", "--data", str(tree), "--out", str(tmp_path / "scored"), "--score", str(results),
            "--dift-model", str(tiny_dir), "--no-fidelity", *FAST]
    assert main(args) == 0
    scored = json.loads((tmp_path / "scored" / "summary.json").read_text())
    assert any("no dragged_image.png" in s["reason"] for s in scored["samples"]["skipped_reasons"])
    ours = json.loads((single / "seed_0" / "discs" / "b" / "record.json").read_text())["metrics"]
    theirs = json.loads((tmp_path / "scored" / "seed_0" / "discs" / "b" / "record.json").read_text())["metrics"]
    assert theirs["distances"] == ours["distances"] and theirs["matched_xy"] == ours["matched_xy"]
    assert scored["settings"] is None and scored["scored_results"] == str(results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_accelerate_processes_merge_to_the_single_process_summary(single, tree, tiny_dir, tmp_path):
    """``accelerate launch`` with 2 CPU processes (``--multi_gpu`` forms the CPU process group without GPUs)."""
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO),
           "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "dragnb", *bench_args(tree, out, tiny_dir)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = json.loads((out / "summary.json").read_text())
    assert merged["processes"] == 2
    assert merged["results"] == json.loads((single / "summary.json").read_text())["results"]
    records = sorted(p.relative_to(out) for p in out.glob("seed_*/*/*/record.json"))
    assert len(records) == 6


def test_sweep_with_injected_fidelity(tree, tiny_dir, tmp_path, monkeypatch):
    """A 2 x 1 grid, Image Fidelity through a stand-in distance network: table, plot, LoRA shared by the grid."""
    monkeypatch.setattr(metrics, "lpips_alex", lambda device=None: lambda a, b: (a - b).abs().mean() / 4)
    out = tmp_path / "sweep"
    args = ["bench", "--data", str(tree), "--out", str(out), "--model", str(tiny_dir), "--dift-model", "same",
            "--categories", "discs", "--sweep", "drag.max_steps=1,3", "--sweep", "drag.lr=0.05", *FAST]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    names = [c["name"] for c in summary["configs"]]
    assert names == ["drag.max_steps=1 drag.lr=0.05", "drag.max_steps=3 drag.lr=0.05"]
    for name in names:
        fid = summary["results"][name]["overall"]["image_fidelity"]["mean"]
        assert 0 < fid <= 1
    table = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["drag.max_steps"] for r in table] == ["1", "3"]
    assert list(table[0])[2:] == ["mean_distance", "image_fidelity", "tracked_distance", "masked_mean_distance",
                                  "dai_1", "dai_5", "dai_10", "dai_20"]
    assert "n/a" not in {table[0]["masked_mean_distance"], table[0]["dai_10"]}
    assert "| drag.max_steps |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "drag.max_steps=1__drag.lr=0.05" / "seed_0" / "discs" / "a" / "dragged_image.png").is_file()
    assert len(list((out / "cache" / "lora").iterdir())) == 2  # one LoRA per sample, shared by both settings
    rows = list(csv.DictReader(open(out / "pairs.csv")))
    assert {r["image_fidelity"] for r in rows} != {""}


def test_sweep_of_method_variants(tree, tiny_dir, tmp_path):
    """The variants' switches sweep like any setting: choices and booleans, each edit recorded under its own."""
    out = tmp_path / "variants"
    args = ["bench", "--data", str(tree), "--out", str(out), "--model", str(tiny_dir), "--dift-model", "same",
            "--categories", "discs", "--no-fidelity", "--sweep", "drag.supervision=reference,anchored",
            "--sweep", "drag.optimize_text=false,true", *FAST]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [c["name"] for c in summary["configs"]] == [
        f"drag.supervision={s} drag.optimize_text={t}" for s in ("reference", "anchored") for t in ("false", "true")]
    for folder in out.glob("drag.supervision=*/seed_0/discs/a"):
        drag = json.loads((folder / "record.json").read_text())["edit"]["settings"]["drag"]
        name = folder.parts[-4]
        assert f"drag.supervision={drag['supervision']}" in name
        assert f"drag.optimize_text={str(drag['optimize_text']).lower()}" in name
    assert len(list(out.glob("drag.supervision=*/seed_0/discs/a/record.json"))) == 4
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["drag.supervision"], r["drag.optimize_text"]) for r in rows] == [
        ("reference", "false"), ("reference", "true"), ("anchored", "false"), ("anchored", "true")]


def test_bad_input_is_reported(tree, tiny_dir, tmp_path, capsys):
    assert main(["bench", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(bench_args(tree, tmp_path / "o", tiny_dir, "--set", "drag.nope=1")) == 2
    assert "nope" in capsys.readouterr().err
    assert main(bench_args(tree, tmp_path / "o", tiny_dir, "--sweep", "drag.lr")) == 2
    assert main(bench_args(tree, tmp_path / "o", tiny_dir, "--sweep", "compute.weights=fp32,bf16")) == 2
    assert "compute.weights takes one value per bench run" in capsys.readouterr().err
    assert main(["bench", "--data", str(tree), "--out", str(tmp_path / "o"), "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")  # outputs, the cache and the device are checked before any edit
    for extra, message in ((["--out", str(tmp_path / "afile")], "--out: "),
                           (["--cache-dir", str(tmp_path / "afile")], "--cache-dir: "),
                           (["--device", "foo"], "--device: 'foo' is not a device name"),
                           (["--set", "drag.lr=-1"], "drag.lr: got -1.0")):
        args = bench_args(tree, tmp_path / "o2", tiny_dir, *[a for a in extra if extra[0] != "--out"])
        if extra[0] == "--out":
            args[args.index("--out") + 1] = extra[1]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_missing_lpips_stops_before_any_edit(tree, tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lpips", None)
    out = tmp_path / "nolpips"
    args = [a for a in bench_args(tree, out, tiny_dir) if a != "--no-fidelity"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pip install lpips torchvision" in err and "--no-fidelity" in err
    assert not list(out.glob("seed_*/*/*/record.json"))


def test_sweep_parsing():
    configs = bench.parse_sweeps(["drag.lr=0.01,0.03", "inversion.strength=0.6,0.7"])
    assert [c.assignments for c in configs] == [("drag.lr=0.01", "inversion.strength=0.6"),
                                                ("drag.lr=0.01", "inversion.strength=0.7"),
                                                ("drag.lr=0.03", "inversion.strength=0.6"),
                                                ("drag.lr=0.03", "inversion.strength=0.7")]
    blocks = bench.parse_sweeps(["drag.feature_blocks=-2|-2,-1"])
    assert [c.assignments for c in blocks] == [("drag.feature_blocks=-2",), ("drag.feature_blocks=-2,-1",)]
    assert bench.parse_sweeps([]) == [bench.BenchConfig("base")]


def test_compare_script(single, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "scripts" / "bench_compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    assert compare.main([str(single), str(single)]) == 0
    changed = json.loads((single / "summary.json").read_text())
    changed["results"]["base"]["overall"]["mean_distance"]["mean"] += 1.0
    changed["settings"]["drag"]["lr"] = 0.5
    (tmp_path / "summary.json").write_text(json.dumps(changed))
    assert compare.main([str(single), str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "settings.drag.lr" in out and "different (largest difference 1" in out
