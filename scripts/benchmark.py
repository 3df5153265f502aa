"""Benchmark (not a test): time each stage and the drag iteration against its floor, on this machine.

    .venv/bin/python scripts/benchmark.py [--models tiny,sd15] [--latent 16] [--lora-steps 5] [--drag-steps 8]

The floor is one bare UNet forward + backward to the latent on the same latent, timestep and prompt:
a drag iteration cannot cost less. The ratio says how much the method adds on top (feature hooks,
resizing, the one-step DDIM prediction, the loss, tracking, the optimiser step). Models:
  tiny  the tiny random SD-family model of the tests (dragnb.testing)
  sd15  Stable Diffusion 1.5's UNet config with random weights, a small f = 8 VAE and a 2-layer text encoder
        of SD 1.5's width (the UNet dominates every stage), at a small latent.
Prints a table and writes JSON with --json.
"""

from __future__ import annotations

import argparse
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

from dragnb.config import DragSettings, LoraSettings, Settings
from dragnb.models import Model, ddim_scheduler, encode_prompt
from dragnb.session import DragSession
from dragnb.testing import SD15_UNET_CONFIG, character_tokenizer, tiny_random_pipeline


def sd15_like_pipeline() -> StableDiffusionPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    vae = AutoencoderKL(block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = character_tokenizer(tmp)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=1024,
                                        num_hidden_layers=2, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    pipe = tiny_random_pipeline()
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=pipe.scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def floor_seconds(model: Model, z: torch.Tensor, t: int, text: torch.Tensor, repeats: int) -> list[float]:
    """Bare UNet forward + backward to the latent, as many times as asked."""
    times = []
    for _ in range(repeats):
        x = z.detach().clone().requires_grad_(True)
        tick = time.perf_counter()
        model.pipe.unet(x, t, text).sample.sum().backward()
        times.append(time.perf_counter() - tick)
    return times


def bench(name: str, pipe: StableDiffusionPipeline, latent: int, lora_steps: int, drag_steps: int) -> dict:
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False).eval()
    model = Model(pipe=pipe, name=name, settings=Settings())
    side = latent * model.vae_scale
    rng = np.random.default_rng(0)
    image = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    settings = Settings(lora=LoraSettings(steps=lora_steps), drag=DragSettings(max_steps=drag_steps, stop_distance=0.0))
    session = DragSession(model, image, "a photo", settings)
    session.model_size = (side, side)  # benchmark at exactly this latent, not the model's native size
    from dragnb.images import to_model_tensor

    session.image_tensor = to_model_tensor(image, (side, side))
    session.set_points([(side * 0.3, side * 0.5, side * 0.7, side * 0.5)])
    mask = np.zeros((side, side), bool)
    mask[side // 4: 3 * side // 4, side // 8: 7 * side // 8] = True  # a mask, so the loss reaches ε as in use
    session.set_mask(mask)
    result = session.run()
    steps = [s.seconds for s in result.drag.history[1:]] or [s.seconds for s in result.drag.history]
    inv = result.inversion
    text = encode_prompt(model, "a photo")
    floor = floor_seconds(model, inv.zt, inv.t, text, repeats=max(3, len(steps)))
    iteration, bare = statistics.median(steps), statistics.median(floor)
    return {
        "model": name, "unet_parameters_M": sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
        "image": side, "latent": latent, "lora_steps": lora_steps, "drag_steps": len(result.drag.history),
        "seconds": result.seconds,
        "lora_step_s": result.seconds["lora"] / max(1, lora_steps),
        "inversion_step_s": result.seconds["inversion"] / settings.inversion.inverted_steps,
        "denoise_step_s": result.seconds["denoise"] / settings.inversion.inverted_steps,
        "drag_iteration_s": iteration, "floor_fwd_bwd_s": bare, "iteration_over_floor": iteration / bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,sd15")
    parser.add_argument("--latent", type=int, default=16, help="latent side (image side = latent x VAE factor)")
    parser.add_argument("--lora-steps", type=int, default=5)
    parser.add_argument("--drag-steps", type=int, default=8)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        pipe = tiny_random_pipeline() if name == "tiny" else sd15_like_pipeline()
        rows.append(bench(name, pipe, args.latent, args.lora_steps, args.drag_steps))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    cols = ["model", "unet_parameters_M", "latent", "lora_step_s", "inversion_step_s", "drag_iteration_s",
            "floor_fwd_bwd_s", "iteration_over_floor", "denoise_step_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
        print("  stage seconds:", {k: round(v, 2) for k, v in r["seconds"].items()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
