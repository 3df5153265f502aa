"""The hostile battery (issues 10 and 26), table-driven: every case through the command line in one fresh process
that never loads torch. Each must exit 2 with one line naming the argument at fault, no traceback, nothing written,
and answer before torch, diffusers, transformers or peft are imported (arguments first)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from dragnb.evaluation.dragbench import write_sample
from dragnb.points import make_points


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("battery")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "in.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "small_mask.png")
    (root / "not_an_image.png").write_text("hello")
    (root / "a_file").write_text("x")
    (root / "a_folder.png").mkdir()
    mask = np.zeros((64, 64), bool)
    mask[5:30, 5:30] = True
    sample = write_sample(root / "data" / "c" / "s", np.zeros((64, 64, 3), np.uint8), "",
                          make_points([(10, 10, 20, 20)], (64, 64)), mask)
    broken = write_sample(root / "broken" / "c" / "s", np.zeros((64, 64, 3), np.uint8), "",
                          make_points([(10, 10, 20, 20)], (64, 64)), mask)
    (broken / "original_image.png").unlink()
    (root / "history").mkdir()
    (root / "out").mkdir()  # where outputs would go: nothing but a bench's skipped.json may appear in it
    return root, sample


DRAG = ["drag", "--image", "{r}/in.png", "--points", "10,10,20,20", "--out", "{r}/out/o.png"]
CASES = [  # (argv, the field the one line names)
    (["drag", "--image", "{r}/missing.png", "--points", "1,2,3,4", "--out", "{r}/out/o.png"], "--image"),
    (["drag", "--image", "{r}/not_an_image.png", "--points", "1,2,3,4", "--out", "{r}/out/o.png"], "--image"),
    (["drag", "--points", "1,2,3,4", "--out", "{r}/out/o.png"], "--image"),
    (["drag", "--image", "{r}/in.png", "--out", "{r}/out/o.png"], "--points"),
    (["drag", "--image", "{r}/in.png", "--points", "1,2,3", "--out", "{r}/out/o.png"], "--points"),
    (["drag", "--image", "{r}/in.png", "--points", "1,2,3,64", "--out", "{r}/out/o.png"], "--points"),
    (["drag", "--image", "{r}/in.png", "--points", "-1,2,3,4", "--out", "{r}/out/o.png"], "--points"),
    (["drag", "--image", "{r}/in.png", "--points", "a,b,c,d", "--out", "{r}/out/o.png"], "--points"),
    ([*DRAG, "--mask", "{r}/missing_mask.png"], "--mask"),
    ([*DRAG, "--mask", "{r}/small_mask.png"], "--mask"),
    ([*DRAG, "--set", "drag.lr=-1"], "drag.lr"),
    ([*DRAG, "--set", "drag.lr=nan"], "drag.lr"),
    ([*DRAG, "--set", "drag.method=warp"], "drag.method"),
    ([*DRAG, "--set", "regiondrag.noise_sigma=2"], "regiondrag.noise_sigma"),
    ([*DRAG, "--set", "fastdrag.circle_scale=0.5"], "fastdrag.circle_scale"),
    ([*DRAG, "--set", "dragnoise.lr=0"], "dragnoise.lr"),
    ([*DRAG, "--set", "drag.nope=1"], "drag.nope"),
    ([*DRAG, "--set", "nostage.x=1"], "nostage"),
    ([*DRAG, "--set", "inversion.strength=1.5"], "inversion.strength"),
    ([*DRAG, "--device", "gpu7"], "--device"),
    ([*DRAG, "--cache-dir", "{r}/a_file"], "--cache-dir"),
    (["drag", "--image", "{r}/in.png", "--points", "1,2,3,4", "--out", "{r}/a_folder.png"], "--out"),
    (["drag", "--sample", "{s}", "--image", "{r}/in.png", "--out", "{r}/out/o.png"], "--sample"),
    (["bench", "--data", "{r}/missing", "--out", "{r}/out/bench"], "--data"),
    (["bench", "--data", "{r}/broken", "--out", "{r}/out/broken"], "--data"),
    (["bench", "--data", "{r}/data", "--out", "{r}/out/bench", "--set", "drag.lr=0"], "drag.lr"),
    (["bench", "--data", "{r}/data", "--out", "{r}/out/bench", "--sweep", "drag.r1=a,b"], "drag.r1"),
    (["bench", "--data", "{r}/data", "--out", "{r}/out/bench", "--limit", "0"], "--limit"),
    (["replay", "{r}/missing_history", "--out", "{r}/out/replay"], "HISTORY_DIR"),
    (["replay", "{r}/history", "--out", "{r}/out/replay"], "HISTORY_DIR"),
    (["train-tiny", "--init", "{r}/missing_model", "--work", "{r}/out/work"], "--init"),
]

RUNNER = textwrap.dedent("""
    import contextlib, io, json, sys
    from dragnb.cli import main

    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        heavy = sorted(m for m in ("torch", "diffusers", "transformers", "peft") if m in sys.modules)
        results.append({"code": code, "err": err.getvalue(), "heavy": heavy})
    print(json.dumps(results))
""")


def test_every_hostile_case_is_one_line_before_the_heavy_libraries(files):
    root, sample = files
    argvs = [[a.format(r=root, s=sample) for a in argv] for argv, _ in CASES]
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=300, env={"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1",
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for (argv, field), got in zip(CASES, results):
        line = got["err"]
        assert got["code"] == 2, (argv, got)
        assert line.startswith(f"error: {field}") and line.count("\n") == 1, (argv, line)
        assert "Traceback" not in line, (argv, line)
        assert got["heavy"] == [], (argv, got["heavy"])  # answered before torch & co. were imported
    written = [p for p in (root / "out").rglob("*") if p.is_file()] if (root / "out").exists() else []
    assert [p.name for p in written] == ["skipped.json"], written  # only the no-usable-sample case keeps its reasons
