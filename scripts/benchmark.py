"""Benchmark (not a test): a whole edit and a re-drag per precision/memory option, per stage, with peak memory
and the drag iteration against its floor, on this machine.

    .venv/bin/python scripts/benchmark.py [--device cuda] [--models embedded,sd15] [--image 512]
        [--lora-steps 80] [--drag-steps 80] [--option "NAME:compute.autocast=fp16,..."] [--json F] [--markdown F]

Models:
  embedded  the embedded model (data/tiny-scenes) with its own defaults, at its 64 px
  tiny      the tiny random SD-family model of the tests (dragnb.testing)
  sd15      Stable Diffusion 1.5's topology with random weights (UNet, VAE and a 12-layer CLIP text encoder at
            SD 1.5's configs: the same cost as the real weights), at --image (default 512, latents 64x64)
  sd15-unet SD 1.5's UNet with a small VAE and a 2-layer text encoder (the UNet dominates; for the CPU)

Each option (repeatable ``--option NAME:ASSIGNMENTS``, the settings overrides of ``--set``; default: the set in
OPTIONS for the device) runs one first edit (LoRA ``--lora-steps``, the inversion, ``--drag-steps`` drag
iterations exactly, the denoising) and one re-drag (new points; LoRA and inversion cached), each timed around
``session.run()`` with the device synchronised, with ``torch.cuda.max_memory_allocated`` reset before each on
CUDA. The floor is one bare UNet forward + backward to the latent on the same latent, timestep and prompt under
the same precision and memory options (and the LoRA as the drag sees it): a drag iteration cannot cost less;
the ratio says what the method adds (feature taps, resizing, the one-step DDIM prediction, losses, tracking,
the optimiser step, the record). Prints a table and writes JSON / markdown when asked.

Memory on any device: ``weights GiB`` (the UNet's, VAE's and text encoder's parameters as held) and ``kept GiB``,
what autograd keeps for the backward of one drag forward (the tensors saved for backward, counted once per storage,
the parameters left out) under the option: their sum is what a drag iteration must hold at least, a lower bound of
its peak that the CPU can measure too. ``--memory-only`` reports just these (one forward per option, no edit): on
the CPU the SD 1.5 topology at 512² then costs seconds per option instead of an hour.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dragnb.compute import WEIGHTS, autocast, checkpointing
from dragnb.config import ComputeSettings, Settings, apply_overrides, named_overrides, requested_weights
from dragnb.errors import InputError
from dragnb.images import to_model_tensor
from dragnb.lora import fused_lora
from dragnb.models import Model, ddim_scheduler, encode_prompt, load_model, resolve_device, run_unet
from dragnb.session import DragSession
from dragnb.tables import markdown_table
from dragnb.testing import SD15_UNET_CONFIG, character_tokenizer, tiny_random_pipeline

SD15_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                       layers_per_block=2, norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4,
                       up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
MEMORY = ["compute.gradient_checkpointing=true", "compute.vae_slicing=true"]
PLAIN_COMPUTE = [f"compute.{f.name}={str(f.default).lower()}" for f in dataclasses.fields(ComputeSettings)]  # each
# option row says every compute field it changes from the plain defaults, whatever the model's own defaults
OPTIONS = {  # name -> settings overrides; the default rows per device
    "cuda": {
        "fp32": [],
        "fp16 autocast": ["compute.autocast=fp16"],  # the reference's drag and LoRA (its weights are fp16 elsewhere)
        "bf16 autocast": ["compute.autocast=bf16"],
        "fp16 autocast + memory": ["compute.autocast=fp16", *MEMORY],
        "fp16 weights": ["compute.weights=fp16"],
        "fp16 weights + memory": ["compute.weights=fp16", *MEMORY],
        "fp16 weights + memory + fused LoRA": ["compute.weights=fp16", *MEMORY, "compute.fuse_lora=true"],
    },
    "cpu": {
        "fp32": [],
        "fp32 + fused LoRA": ["compute.fuse_lora=true"],
        "bf16 autocast": ["compute.autocast=bf16"],
        "bf16 weights": ["compute.weights=bf16"],
        "fp32 + checkpointing": ["compute.gradient_checkpointing=true"],
    },
}


def sd15_pipeline(small_parts: bool) -> StableDiffusionPipeline:
    """SD 1.5's topology with random weights; ``small_parts``: a small VAE and a 2-layer text encoder."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(**(SD15_VAE_CONFIG if not small_parts else dict(
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = character_tokenizer(tmp)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768,
                                        intermediate_size=1024 if small_parts else 3072,
                                        num_hidden_layers=2 if small_parts else 12, num_attention_heads=12,
                                        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = tiny_random_pipeline().scheduler  # SD 1.5's DDIM betas
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build(name: str, device: torch.device, weights: str = "fp32") -> Model:
    """The model ``name`` on ``device`` with its weights in ``weights`` (the random ones drawn in fp32, then cast)."""
    if name == "embedded":
        model = load_model(None, device=device, dtype=weights)
        return dataclasses.replace(model, name="embedded")
    pipe = tiny_random_pipeline() if name == "tiny" else sd15_pipeline(small_parts=name == "sd15-unet")
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    pipe.to(device, WEIGHTS[weights])
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False).eval()
    return Model(pipe=pipe, name=name, settings=apply_overrides(Settings(), [f"compute.weights={weights}"]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_run(session: DragSession, device: torch.device) -> tuple[object, float, float | None]:
    """(edit, seconds, peak GiB on CUDA else None) of one ``session.run()``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    tick = time.perf_counter()
    edit = session.run()
    sync(device)
    seconds = time.perf_counter() - tick
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return edit, seconds, peak


def floor_seconds(model: Model, settings: Settings, z: torch.Tensor, t: int, text: torch.Tensor,
                  repeats: int) -> list[float]:
    """Bare UNet forward + backward to the latent under the options the drag ran with."""
    unet, compute, device = model.pipe.unet, settings.compute, model.device
    times = []
    with fused_lora(unet, compute.fuse_lora), checkpointing(unet, compute.gradient_checkpointing):
        for _ in range(repeats + 1):  # the first is a warm-up
            x = z.detach().clone().requires_grad_(True)
            sync(device)
            tick = time.perf_counter()
            with autocast(compute, device):
                eps = run_unet(unet, x, t, text)
            eps.sum().backward()
            sync(device)
            times.append(time.perf_counter() - tick)
    return times[1:]


def weights_gib(model: Model) -> float:
    pipe = model.pipe
    return sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder)
               for p in m.parameters()) / 2 ** 30


def kept_for_backward_gib(model: Model, settings: Settings, z: torch.Tensor, t: int, text: torch.Tensor) -> float:
    """GiB autograd keeps for the backward of one UNet forward from the latent (as the drag runs it: the
    options' autocast, checkpointing and fused LoRA), each storage once, the parameters left out."""
    unet, compute, device = model.pipe.unet, settings.compute, model.device
    kept: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        storage = x.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return x

    with fused_lora(unet, compute.fuse_lora), checkpointing(unet, compute.gradient_checkpointing):
        parameters = {p.untyped_storage().data_ptr() for p in unet.parameters()}
        x = z.detach().clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), autocast(compute, device):
            eps = run_unet(unet, x, t, text)
        del eps
    return sum(n for ptr, n in kept.items() if ptr not in parameters) / 2 ** 30


def memory_row(model: Model, option: str, overrides: list[str], image_side: int | None) -> dict:
    """Weights and kept-for-backward GiB of one drag forward at the image side, without an edit."""
    side = image_side or model.resolution
    settings = apply_overrides(model.settings, PLAIN_COMPUTE + overrides)
    latent = side // model.vae_scale
    z = torch.randn(1, model.pipe.unet.config.in_channels, latent, latent,
                    generator=torch.Generator().manual_seed(0)).to(model.device)
    model.pipe.scheduler.set_timesteps(settings.inversion.num_steps)
    t = int(model.pipe.scheduler.timesteps[settings.inversion.num_steps - settings.inversion.inverted_steps])
    kept = kept_for_backward_gib(model, settings, z, t, encode_prompt(model, "a photo"))
    return {"model": model.name, "option": option, "overrides": overrides, "device": str(model.device),
            "image": side, "latent": latent, "weights_gib": weights_gib(model), "kept_gib": kept,
            "settings": settings.to_dict()}


def bench(model: Model, option: str, overrides: list[str], image_side: int | None, lora_steps: int | None,
          drag_steps: int) -> dict:
    device = model.device
    side = image_side or model.resolution
    rng = np.random.default_rng(0)
    image = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    fixed = [f"drag.max_steps={drag_steps}", "drag.stop_distance=0",  # exactly drag_steps iterations
             "drag.round_points=false"]  # (a handle tracked onto a rounded target is at distance 0: it would stop)
    fixed += PLAIN_COMPUTE
    if lora_steps is not None:
        fixed.append(f"lora.steps={lora_steps}")
    settings = apply_overrides(model.settings, [*fixed, *overrides])
    session = DragSession(model, image, "a photo", settings)
    if side != model.resolution:  # benchmark at exactly this latent, not the model's native size
        session.model_size = (side, side)
        session.image_tensor = to_model_tensor(image, (side, side))
    session.set_points([(side * 0.3, side * 0.5, side * 0.7, side * 0.5)])
    mask = np.zeros((side, side), bool)
    mask[side // 4: 3 * side // 4, side // 8: 7 * side // 8] = True  # a mask, so the loss reaches ε as in use
    session.set_mask(mask)
    first, first_s, first_peak = timed_run(session, device)
    session.set_points([(side * 0.3, side * 0.4, side * 0.6, side * 0.6)])
    second, second_s, second_peak = timed_run(session, device)
    steps = [s.seconds for s in first.drag.history[1:]] or [s.seconds for s in first.drag.history]
    inv = first.inversion
    floor = floor_seconds(model, settings, inv.zt, inv.t, encode_prompt(model, "a photo"),
                          repeats=max(5, min(20, len(steps))))
    iteration, bare = statistics.median(steps), statistics.median(floor)
    kept = kept_for_backward_gib(model, settings, inv.zt, inv.t, encode_prompt(model, "a photo"))
    return {
        "model": model.name, "option": option, "overrides": overrides, "device": str(device),
        "unet_parameters_M": sum(p.numel() for p in model.pipe.unet.parameters()) / 1e6,
        "image": side, "latent": side // model.vae_scale, "lora_steps": settings.lora.steps,
        "drag_steps": len(first.drag.history), "denoise_steps": settings.inversion.inverted_steps,
        "first_edit_s": first_s, "first_stages_s": first.seconds, "first_peak_gib": first_peak,
        "second_drag_s": second_s, "second_stages_s": second.seconds, "second_peak_gib": second_peak,
        "drag_iteration_s": iteration, "floor_fwd_bwd_s": bare, "iteration_over_floor": iteration / bare,
        "weights_gib": weights_gib(model), "kept_gib": kept,
        "settings": settings.to_dict(),
    }


COLUMNS = [("model", "model"), ("option", "option"), ("image", "image"), ("first edit s", "first_edit_s"),
           ("LoRA s", None), ("inversion s", None), ("drag s", None), ("denoise s", None),
           ("re-drag s", "second_drag_s"), ("peak GiB", "first_peak_gib"), ("re-drag peak GiB", "second_peak_gib"),
           ("weights GiB", "weights_gib"), ("kept GiB", "kept_gib"),
           ("iteration ms", "drag_iteration_s"), ("floor ms", "floor_fwd_bwd_s"), ("ratio", "iteration_over_floor")]
MEMORY_COLUMNS = [("model", "model"), ("option", "option"), ("image", "image"), ("weights GiB", "weights_gib"),
                  ("kept GiB", "kept_gib")]


def cells(row: dict, columns=COLUMNS) -> list[str]:
    out = []
    for label, key in columns:
        if key is None:
            value = row["first_stages_s"][{"LoRA s": "lora", "inversion s": "inversion", "drag s": "drag",
                                           "denoise s": "denoise"}[label]]
        else:
            value = row[key]
        if key in ("drag_iteration_s", "floor_fwd_bwd_s"):
            value = value * 1000
        out.append("–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value))
    return out


def markdown(rows: list[dict], header: str, columns=COLUMNS) -> str:
    table = markdown_table([dict(zip((label for label, _ in columns), cells(r, columns))) for r in rows])
    return f"{header}\n\n{table}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="embedded,sd15-unet")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when there is one)")
    parser.add_argument("--image", type=int, default=None, help="image side for the random models (default: native)")
    parser.add_argument("--lora-steps", type=int, default=None, help="default: each model's own lora.steps")
    parser.add_argument("--drag-steps", type=int, default=80)
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="NAME:ASSIGNMENTS")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--memory-only", action="store_true", help="weights and kept-for-backward GiB only, no edit")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        options = dict(named_overrides(o, "--option") for o in args.options) or OPTIONS[
            "cuda" if device.type == "cuda" else "cpu"]
        for overrides in options.values():
            apply_overrides(Settings(), overrides)  # a bad option fails here, before any model is built
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None
    rows = []
    for name in args.models.split(","):
        model = None
        image = None if name == "embedded" else args.image
        for option, overrides in options.items():
            if "compute.autocast=fp16" in overrides and device.type != "cuda":
                continue
            weights = requested_weights(overrides) or "fp32"
            if model is None or model.settings.compute.weights != weights:  # the weights' dtype is the model's
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                model = build(name.strip(), device, weights)
            if args.memory_only:
                row = memory_row(model, option, overrides, image)
            else:
                row = bench(model, option, overrides, image, args.lora_steps, args.drag_steps)
            rows.append(row)
            print(" | ".join(cells(row, MEMORY_COLUMNS if args.memory_only else COLUMNS)), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    header = (f"{gpu or platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads" + ("; weights and kept-for-backward memory only"
                                                           if args.memory_only else
                                                           f"; drag iterations fixed at {args.drag_steps}"))
    table = markdown(rows, header, MEMORY_COLUMNS if args.memory_only else COLUMNS)
    print("\n" + table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
