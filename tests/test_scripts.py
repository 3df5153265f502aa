"""The measuring scripts run and report what they measured (they assert no time: they are not benchmarks here)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_row_times_each_stage_and_the_floor_under_its_option(tiny_model):
    benchmark = _script("benchmark")
    row = benchmark.bench(tiny_model, "fused", ["compute.fuse_lora=true"], None, lora_steps=1, drag_steps=2)
    assert row["drag_steps"] == 2 and row["lora_steps"] == 1  # exactly the iterations asked for
    assert row["settings"]["compute"]["fuse_lora"] is True
    assert row["second_stages_s"]["lora"] == 0.0 and row["second_stages_s"]["inversion"] == 0.0  # cached
    assert row["first_edit_s"] >= sum(row["first_stages_s"].values()) * 0.99
    assert row["floor_fwd_bwd_s"] > 0 and row["iteration_over_floor"] == pytest.approx(
        row["drag_iteration_s"] / row["floor_fwd_bwd_s"])
    table = benchmark.markdown([row], "header")
    assert table.count("\n") == 5 and "fused" in table


def test_benchmark_builds_the_model_in_the_weights_of_its_option():
    import torch

    benchmark = _script("benchmark")
    model = benchmark.build("tiny", torch.device("cpu"), "bf16")
    assert model.pipe.unet.dtype == torch.bfloat16 and model.settings.compute.weights == "bf16"
    row = benchmark.bench(model, "bf16 weights", ["compute.weights=bf16"], None, lora_steps=1, drag_steps=2)
    assert row["settings"]["compute"]["weights"] == "bf16" and row["drag_steps"] == 2


def test_benchmark_memory_rows_count_weights_and_what_backward_keeps():
    import torch

    benchmark = _script("benchmark")
    fp32, bf16 = (benchmark.build("tiny", torch.device("cpu"), w) for w in ("fp32", "bf16"))
    plain = benchmark.memory_row(fp32, "fp32", [], None)
    checkpointed = benchmark.memory_row(fp32, "checkpointing", ["compute.gradient_checkpointing=true"], None)
    half = benchmark.memory_row(bf16, "bf16 weights", ["compute.weights=bf16"], None)
    assert half["weights_gib"] == plain["weights_gib"] / 2  # every parameter in 2 bytes instead of 4
    assert 0 < checkpointed["kept_gib"] < plain["kept_gib"] / 2  # activations recomputed, not kept
    assert 0 < half["kept_gib"] < plain["kept_gib"]
    table = benchmark.markdown([plain, half], "h", benchmark.MEMORY_COLUMNS)
    assert "kept GiB" in table and table.count("\n") == 6


def test_a_labelled_set_of_overrides_is_parsed_and_a_bad_one_named():
    from dragnb.config import named_overrides
    from dragnb.errors import InputError

    assert named_overrides("fast: lora.steps=20, drag.lr=0.02", "--option") == ("fast", ["lora.steps=20", "drag.lr=0.02"])
    assert named_overrides("plain:", "--variant") == ("plain", [])
    with pytest.raises(InputError, match="--option: expects NAME:stage.field=value"):
        named_overrides("compute.autocast=bf16", "--option")
