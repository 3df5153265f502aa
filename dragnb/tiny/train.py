"""Train the embedded tiny SD-family model from scratch on the scene world; resumable; exports the diffusers layout.

    python -m dragnb.tiny.train --out data/tiny-scenes --work runs/tiny [--minutes-vae 22 --minutes-unet 75]
        [--world flat|textured] [--image-size 64 --vae-factor 4] [--device cpu|cuda]

``--image-size 128 --vae-factor 8`` gives Stable Diffusion 1.5's geometry (latents 1/8 of the image, the tapped
up block 1/8, the supervision grid 1/2); the default 64 / 4 is the first embedded models'. ``--device cuda``
trains on a GPU with the same random streams (drawn on the CPU), so either device follows the same recipe.

Stages (each resumes from ``<work>/`` where it stopped, optimiser state and EMA included):
  0. tokenizer: a word-level CLIP BPE vocabulary (every word of the grammar is one token), trained with
     ``tokenizers`` and saved as vocab.json + merges.txt;
  1. a pool of rendered scenes (image-size square) and their prompts, cached in ``<work>/pool.npz``;
  2. VAE: AutoencoderKL f = 4 (64 px -> 16x16x4) or 8 (128 px -> 16x16x4), on random half-size crops (4x cheaper steps) for 75 % of its
     minutes, then on whole images; L1 + MSE + a colour term (MSE of 4x4 means, so a hue
     shift of a flat region costs as much as an edge error) + a tiny KL; held-out PSNR and hue checks logged;
  3. latents: the pool encoded once (posterior means), ``scaling_factor`` = 1 / their std;
  4. UNet2DConditionModel + 2-layer CLIPTextModel, epsilon prediction on SD 1.5's DDPM schedule, min-SNR-5
     loss weights (more weight on the high-noise steps that decide colour, shape and layout), 10 % empty
     prompts for classifier-free guidance, offset noise 0.1 (SD 1.5's schedule leaks the latent mean at
     t = 999, so plain noise lets the model copy the background from the leak and ignore its word), EMA 0.997, lr 1e-3 held constant and cosine-decayed in the
     last 15 % of the phase's minutes;
  5. every ``--check-minutes``: export the EMA model to ``--out`` (usable before training ends), sample
     single-shape prompts from the exported folder with DDIM 25 steps at guidance 4, score them by
     segmentation (:mod:`dragnb.tiny.adherence`) and log the figures.

Budgets are minutes of training-step time per phase (checks and checkpoints come on top), so a resumed run
continues its schedule exactly. The log is ``<work>/log.jsonl``, one JSON object a line.

The shipped model (v3.2, textured world, about 2 h 15 min of wall time on 2 CPU cores): a 20-minute pilot
``--world textured --minutes-vae 7 --minutes-unet 13``, then the same work folder resumed with
``--minutes-unet 65 --minutes-decoder 6 --check-minutes 15``, then with ``--minutes-decoder 30 --check-minutes 10``
(v3.1) and ``--minutes-decoder 55`` (v3.2): a finished decoder phase given more minutes continues; the encoder, the
latents and the UNet stay as they were. Its exact commands are in its training_log.jsonl.

Trained further (``--init MODEL_DIR``): v4 is v3.2 trained on the occlusion world (shapes that overlap in depth
order, uneven grounds) with ``--init data/tiny-scenes --world occlusion``; the exact commands are in its
training_log.jsonl and docs/embedded-model.md.

The model itself (configs, constructors, tokenizer, the exported folder) is :mod:`dragnb.tiny.model`; the held-out
checks logged here (VAE PSNR and hue, prompt adherence) are :mod:`dragnb.tiny.checks`; the log, the checkpoints and
the resumable time-budgeted phase all stages share are :mod:`dragnb.tiny.timed_phase`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from dragnb.tiny.checks import adherence, evaluate_vae
from dragnb.tiny.model import (IMAGE_SIZE, MAX_TOKENS, TRAIN_SEED_BASE, build_tokenizer, export, load_models,
                               make_models, to_tensor)
from dragnb.tiny.timed_phase import Log, TimedPhase, save_atomic


# ------------------------------------------------------------------------------------------ learning rate
def lr_at(frac: float, step: int, base: float, warmup: int = 100, decay_from: float = 0.85) -> float:
    """Linear warmup, constant, then cosine to 5 % of ``base`` over the last ``1 - decay_from`` of the phase."""
    lr = base * min(1.0, (step + 1) / warmup)
    if frac > decay_from:
        p = min(1.0, (frac - decay_from) / (1 - decay_from))
        lr *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
    return lr


# ------------------------------------------------------------------------------------------ stage 1: pool
def _render_seeds(job: tuple[int, int, str, int]) -> tuple[np.ndarray, list[str]]:
    """Images (n, S, S, 3) and prompts of the training scenes ``start .. start + n`` (one worker's share)."""
    from dragnb.tiny.drawing import render
    from dragnb.tiny.scenes import sample_scene

    start, n, world, size = job
    scenes = [sample_scene(TRAIN_SEED_BASE + i, world=world) for i in range(start, start + n)]
    return np.stack([np.asarray(render(s, size)) for s in scenes]), [s.prompt for s in scenes]


def scene_pool(work: Path, n: int, log: Log, world: str = "flat", size: int = IMAGE_SIZE, workers: int = 1):
    """(images uint8 (N, S, S, 3), prompts list[str]) of training scenes of ``world``, rendered once and cached."""
    path = work / "pool.npz"
    if path.exists():
        data = np.load(path, allow_pickle=False)
        if len(data["images"]) >= n and data["images"].shape[1] == size:
            return data["images"][:n], [str(p) for p in data["prompts"][:n]]
    t0 = time.time()
    chunk = 500
    jobs = [(i, min(chunk, n - i), world, size) for i in range(0, n, chunk)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_render_seeds, jobs)
    else:
        parts = [_render_seeds(job) for job in jobs]
    images = np.concatenate([p[0] for p in parts])
    prompts = [q for p in parts for q in p[1]]
    tmp = work / "pool.tmp.npz"
    np.savez(tmp, images=images, prompts=np.array(prompts))
    os.replace(tmp, path)
    log(phase="pool", n=n, seconds=round(time.time() - t0, 1))
    return images, prompts


# ------------------------------------------------------------------------------------------- stage 2: VAE
def train_vae(vae, images: np.ndarray, args, work: Path, log: Log, decoder_only: bool = False) -> bool:
    """Train the VAE (stage 2), or with ``decoder_only`` fine-tune its decoder on the frozen encoder's latents.

    The decoder-only phase (``--minutes-decoder``, run after the UNet) raises reconstruction quality without
    changing the latents the UNet was trained on, as SD's ft-MSE decoder did. Returns whether this call trained
    (False: the phase was already finished, its weights only loaded).
    """
    import torch
    import torch.nn.functional as F

    phase = "decoder" if decoder_only else "vae"
    base_lr = args.lr_decoder if decoder_only else args.lr_vae
    params = (list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())) if decoder_only \
        else list(vae.parameters())
    opt = torch.optim.Adam(params, lr=base_lr)
    run = TimedPhase(work / ("decoder.pt" if decoder_only else "vae.pt"), phase, 1,
                     args.minutes_decoder if decoder_only else args.minutes_vae, log, log_every=50)
    rng, gen = run.rng, run.gen
    ck = run.resume(args.device)
    if ck is not None:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
    if run.state["done"] and not (decoder_only and run.running):
        return False  # a larger --minutes-decoder extends a finished decoder phase (its lr schedule follows the
        # new budget); the whole VAE is never reopened: the UNet was trained on its latents
    last_eval = time.time()

    def checkpoint():
        run.save(model=vae.state_dict(), opt=opt.state_dict())

    vae.train()
    vae.requires_grad_(False)
    for p_ in params:
        p_.requires_grad_(True)
    while run.running:
        t0 = time.time()
        frac = run.fraction
        lr = lr_at(frac, run.state["step"], base_lr, decay_from=0.75)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(images), args.batch_vae)
        x = to_tensor(images[idx], args.device)  # (B, 3, S, S)
        crop = args.vae_crop if args.vae_crop is not None else images.shape[1] // 2
        if crop and frac < 0.75 and not decoder_only:  # random crops: 4x cheaper steps; full images at the end for GroupNorm
            r, c = rng.integers(0, images.shape[1] - crop + 1, 2)
            x = x[:, :, r : r + crop, c : c + crop]  # (B, 3, crop, crop)
        flip = torch.from_numpy(rng.random(args.batch_vae) < 0.5).to(args.device)
        x[flip] = x[flip].flip(-1)
        if decoder_only:
            with torch.no_grad():
                post = vae.encode(x).latent_dist
            z = post.mean  # (B, 4, 16, 16): the latents the UNet learned
        else:
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(args.device)  # (B, 4, h, w)
        y = vae.decode(z).sample
        l1 = (y - x).abs().mean()
        mse = F.mse_loss(y, x)
        colour = F.mse_loss(F.avg_pool2d(y, 4), F.avg_pool2d(x, 4))  # flat-region colour, hue shifts
        kl = post.kl().mean() / post.mean[0].numel()
        loss = l1 + mse + colour + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run.step_done(t0, lr, loss=loss, l1=l1, mse=mse, colour=colour, kl=kl)
        if time.time() - last_eval > args.check_minutes * 60 / 2:
            vae.eval()
            log(phase=phase, step=run.state["step"], event="eval", **evaluate_vae(vae, world=args.world))
            vae.train()
            last_eval = time.time()
        if run.save_due(args.checkpoint_minutes):
            checkpoint()
    vae.eval()
    log(phase=phase, step=run.state["step"], event="final_eval", **evaluate_vae(vae, 256, args.world))
    run.state["done"] = True
    checkpoint()
    return True



# --------------------------------------------------------------------------------------- stage 3: latents
def encode_pool(vae, images: np.ndarray, work: Path, log: Log, scaling: float | None = None):
    """(latents (N, 4, 16, 16) unscaled posterior means on the CPU, scaling_factor), cached.

    ``scaling_factor`` is 1 / the latents' std, or ``scaling`` when given (a model trained further keeps its own,
    so its UNet sees latents on the scale it learned).
    """
    import torch

    path = work / "latents.pt"
    device = next(vae.parameters()).device
    if path.exists():
        ck = torch.load(path, weights_only=False)
        return ck["latents"], ck["scaling_factor"]
    t0 = time.time()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 128):
            out.append(vae.encode(to_tensor(images[i : i + 128], device)).latent_dist.mean.cpu())
    latents = torch.cat(out)
    scaling = float(1.0 / latents.std()) if scaling is None else float(scaling)
    save_atomic({"latents": latents, "scaling_factor": scaling}, path)
    log(phase="latents", n=len(latents), scaling_factor=scaling, mean=float(latents.mean()),
        seconds=round(time.time() - t0, 1))
    return latents, scaling



# ------------------------------------------------------------------------------------------- stage 4: UNet
def train_unet(vae, unet, text_encoder, tokenizer, scheduler, latents, scaling, prompts, args, work, log) -> None:
    import torch

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr_unet, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]  # on the training device
    run = TimedPhase(work / "unet.pt", "unet", 2, args.minutes_unet, log, log_every=25, checks=[])
    rng, gen, state = run.rng, run.gen, run.state
    ck = run.resume(args.device)
    if ck is not None:
        unet.load_state_dict(ck["unet"])
        text_encoder.load_state_dict(ck["text_encoder"])
        opt.load_state_dict(ck["opt"])
        for e, v in zip(ema, ck["ema"]):
            e.copy_(v)
        state = run.state
    if state["done"] and not run.running:
        return  # a larger --minutes-unet extends a finished run (its lr schedule follows the new budget)

    ids = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                    return_tensors="pt").input_ids  # (N, T)
    empty = tokenizer([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids  # (1, T)
    ids, empty = ids.to(args.device), empty.to(args.device)
    z0_all = (latents * scaling).to(args.device)  # (N, 4, 16, 16)
    alphas_cumprod = scheduler.alphas_cumprod.to(args.device)  # (1000,)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    loss_weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weights for epsilon prediction

    def checkpoint():
        run.save(unet=unet.state_dict(), text_encoder=text_encoder.state_dict(), opt=opt.state_dict(), ema=ema,
                 scaling_factor=scaling)

    def ema_models():
        """Copies of the UNet and text encoder holding the EMA weights."""
        import copy

        u, te = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
        with torch.no_grad():
            for p, e in zip(list(u.parameters()) + list(te.parameters()), ema):
                p.copy_(e)
        return u, te

    def check():
        u, te = ema_models()
        vae.register_to_config(scaling_factor=scaling)
        summary = {"unet_step": state["step"], "unet_minutes": state["elapsed"] / 60, "checks": state["checks"],
                   "world": args.world}
        export(vae, u, te, tokenizer, scheduler, Path(args.out), work / "tokenizer", summary)
        t0 = time.time()
        result = adherence(Path(args.out), world=args.world)
        state["checks"].append({"step": state["step"], **result})
        summary["checks"] = state["checks"]
        (Path(args.out) / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log(phase="unet", event="adherence", step=state["step"], elapsed_min=state["elapsed"] / 60,
            seconds=round(time.time() - t0, 1), **result)

    unet.train()
    text_encoder.train()
    last_check = time.time()
    first_export_done = (Path(args.out) / "model_index.json").exists() and state["step"] > 0
    while run.running:
        t0 = time.time()
        lr = lr_at(run.fraction, state["step"], args.lr_unet, warmup=200)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.from_numpy(rng.integers(0, len(z0_all), args.batch_unet)).to(args.device)
        z0 = z0_all[idx]  # (B, 4, 16, 16)
        tokens = ids[idx].clone()  # (B, T)
        drop = torch.from_numpy(rng.random(args.batch_unet) < 0.1).to(args.device)
        tokens[drop] = empty
        t = torch.randint(0, 1000, (args.batch_unet,), generator=gen)  # (B,) drawn on the CPU: same on any device
        noise = torch.randn(z0.shape, generator=gen)  # (B, 4, 16, 16)
        if args.offset_noise:  # per-channel constant noise: flat backgrounds must come from the text, not the leak
            noise = noise + args.offset_noise * torch.randn(z0.shape[0], z0.shape[1], 1, 1, generator=gen)
        t, noise = t.to(args.device), noise.to(args.device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise  # q(z_t | z_0)
        cond = text_encoder(tokens)[0]  # (B, T, 128)
        pred = unet(zt, t, cond).sample  # (B, 4, 16, 16)
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))  # (B,)
        loss = (per * loss_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + state["step"]) / (10 + state["step"]))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        run.step_done(t0, lr, loss=loss, mse=per.mean())
        if run.save_due(args.checkpoint_minutes):
            checkpoint()
            if not first_export_done:  # an early usable model for integration, right after the first checkpoint
                check()
                first_export_done = True
                last_check = time.time()
        if time.time() - last_check > args.check_minutes * 60:
            check()
            checkpoint()
            last_check = time.time()
    state["done"] = True
    check()
    checkpoint()


def export_checkpoint(vae, unet, text_encoder, tokenizer, scheduler, args, work: Path, log: Log) -> None:
    """Export the EMA weights of ``<work>/unet.pt`` with the current VAE, and check adherence again."""
    import torch

    ck = torch.load(work / "unet.pt", weights_only=False, map_location=args.device)
    with torch.no_grad():
        for p, e in zip(list(unet.parameters()) + list(text_encoder.parameters()), ck["ema"]):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    summary = {"unet_step": ck["state"]["step"], "unet_minutes": ck["state"]["elapsed"] / 60,
               "checks": ck["state"]["checks"], "vae": evaluate_vae(vae, 256, args.world), "world": args.world}
    export(vae, unet, text_encoder, tokenizer, scheduler, Path(args.out), work / "tokenizer", summary)
    result = adherence(Path(args.out), world=args.world)
    summary["final_check"] = result
    (Path(args.out) / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(phase="export", step=ck["state"]["step"], **result, **{f"vae_{k}": v for k, v in summary["vae"].items()})


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m dragnb.tiny.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data/tiny-scenes", help="model folder to export (diffusers layout)")
    p.add_argument("--work", default="runs/tiny", help="checkpoints, caches and log.jsonl")
    p.add_argument("--minutes-vae", type=float, default=22.0, help="VAE training-step minutes")
    p.add_argument("--minutes-unet", type=float, default=75.0, help="UNet training-step minutes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--world", default="flat", choices=["flat", "textured", "occlusion"],
                   help="the scene world to train on (dragnb.tiny.scenes.WORLDS)")
    p.add_argument("--init", default=None, metavar="MODEL_DIR",
                   help="train further from an exported model (its tokenizer, VAE, UNet and text encoder): no VAE "
                        "phase, the pool encoded with its encoder at its scaling factor, the UNet phase starting "
                        "from its weights")
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="training image side (128 with --vae-factor 8: SD 1.5's geometry)")
    p.add_argument("--vae-factor", type=int, default=4, help="VAE downsampling factor: 4 or 8")
    p.add_argument("--device", default="cpu", help="cpu or cuda (random streams are drawn on the CPU either way)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering the scene pool")
    p.add_argument("--n-scenes", type=int, default=30000, help="training pool size")
    p.add_argument("--batch-vae", type=int, default=16)
    p.add_argument("--vae-crop", type=int, default=None,
                   help="train the VAE on random crops of this side for 75 %% of its time (default half the image; 0: off)")
    p.add_argument("--batch-unet", type=int, default=64)
    p.add_argument("--lr-vae", type=float, default=2e-3)
    p.add_argument("--lr-unet", type=float, default=1e-3)
    p.add_argument("--minutes-decoder", type=float, default=0.0,
                   help="after the UNet: fine-tune the VAE decoder alone (latents unchanged) for this many minutes")
    p.add_argument("--lr-decoder", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.997)
    p.add_argument("--offset-noise", type=float, default=0.1,
                   help="std of per-channel constant noise added in UNet training (0: off); SD 1.5's schedule leaks "
                        "the mean of z_0 at t = 999, so without it the background ignores the prompt")
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--check-minutes", type=float, default=10.0, help="export + adherence check interval")
    return p.parse_args(argv)


def main(argv=None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = parse_args(argv)
    if args.init and not (Path(args.init) / "model_index.json").is_file():
        from dragnb.errors import InputError

        raise InputError("--init", f"{args.init} holds no exported model (no model_index.json); give the folder a "
                         "training run exported, e.g. data/tiny-scenes")
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(work / "log.jsonl")
    log(phase="start", argv=" ".join(sys.argv[1:] if argv is None else argv), threads=args.threads)

    if args.init:
        tokenizer, vae, unet, text_encoder, scheduler = load_models(Path(args.init), work / "tokenizer")
    else:
        tokenizer = build_tokenizer(work / "tokenizer")
        vae, unet, text_encoder, scheduler = make_models(len(tokenizer), args.image_size, args.vae_factor)
    vae.to(args.device)
    unet.to(args.device)
    text_encoder.to(args.device)
    log(phase="models", vae_params=sum(p.numel() for p in vae.parameters()),
        unet_params=sum(p.numel() for p in unet.parameters()),
        text_params=sum(p.numel() for p in text_encoder.parameters()), vocab=len(tokenizer))
    images, prompts = scene_pool(work, args.n_scenes, log, args.world, args.image_size, args.workers)
    if not args.init:
        train_vae(vae, images, args, work, log)
    vae.eval().requires_grad_(False)
    latents, scaling = encode_pool(vae, images, work, log, vae.config.scaling_factor if args.init else None)
    vae.register_to_config(scaling_factor=scaling)
    train_unet(vae, unet, text_encoder, tokenizer, scheduler, latents, scaling, prompts, args, work, log)
    if args.minutes_decoder > 0 or (work / "decoder.pt").exists():
        trained = train_vae(vae, images, args, work, log, decoder_only=True)
        vae.eval().requires_grad_(False)
        vae.register_to_config(scaling_factor=scaling)
        if trained:  # a new or a longer decoder: export the model with it
            export_checkpoint(vae, unet, text_encoder, tokenizer, scheduler, args, work, log)
    log(phase="done", out=str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
