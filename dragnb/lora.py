"""Stage 1: fine-tune a LoRA on the UNet so the model reconstructs the one input image (docs/method.md §2.1).

peft adds rank-r adapters to the attention projections; the loss is the usual denoising MSE at a random
t ~ U[0, T) on random resize-crops of the image, with the user's prompt. The adapter is kept as a
diffusers-format state dict, so it saves as safetensors that ``pipe.load_lora_weights`` reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft
from peft import LoraConfig, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from tqdm.auto import tqdm

from .callbacks import Callback, LoraStep, notify
from .compute import autocast, checkpointing, grad_scaler, require_supported
from .config import ComputeSettings, LoraSettings
from .errors import ModelError
from .models import Model, encode_prompt, held_dtype, run_unet

ADAPTER = "dragnb"  # peft adapter names are "dragnb_<cache key>": the UNet's own adapter registry says which is on


ADAPTABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, LoraLayer)  # what peft's LoRA adapts (a layer
# that carries an adapter already counts as its base layer)


def adaptable_modules(unet) -> list[tuple[str, bool]]:
    """The UNet's modules as (dotted name, whether peft's LoRA can adapt it), leaving out peft's own parts (an
    adapter's ``lora_A``/``lora_B``/``base_layer``): what ``lora.target_modules`` is checked against."""
    return [(name, isinstance(module, ADAPTABLE)) for name, module in unet.named_modules()
            if ".lora_" not in name and not name.endswith(".base_layer")]


def adapters_in_fp32(unet) -> list[torch.nn.Parameter]:
    """The UNet's LoRA parameters, made fp32 whatever the weights' dtype (the adapters train and compute in fp32)."""
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
    return params


def adapter_name(key: str) -> str:
    """The peft adapter name of the LoRA with cache key ``key`` (an unnamed one: plain ``dragnb``)."""
    return f"{ADAPTER}_{key}" if key else ADAPTER


def active_adapter(unet) -> str | None:
    """The one adapter peft holds on ``unet``, None for the base model (or several, which dragnb never makes)."""
    names = list(getattr(unet, "peft_config", None) or {})
    return names[0] if len(names) == 1 else None


@dataclass
class LoraResult:
    """The trained adapter and how training went."""

    state_dict: dict[str, torch.Tensor]  # diffusers format, keys prefixed "unet.", on the CPU
    losses: list[float] = field(default_factory=list)  # denoising MSE per step
    seconds: float = 0.0
    interrupted: bool = False  # Ctrl-C or the callback stopped training early; the adapter holds the steps done
    key: str = ""  # cache key: image, prompt, model, settings


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Crop a random box of area fraction in ``scale`` (aspect in [3/4, 4/3]) and resize back. x: (1, 3, H, W)."""
    _, _, h, w = x.shape
    u = torch.rand(3, generator=generator).tolist()
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * h * w
    aspect = float(torch.exp(torch.tensor(-0.2877 + 0.5754 * u[1])))  # log-uniform in [3/4, 4/3]
    ch = min(h, max(1, int(round((area / aspect) ** 0.5))))
    cw = min(w, max(1, int(round((area * aspect) ** 0.5))))
    top = int(u[2] * (h - ch + 1))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    crop = x[:, :, top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def train_lora(model: Model, image: torch.Tensor, prompt: str, settings: LoraSettings = LoraSettings(),
               progress: bool = False, callbacks: Sequence[Callback] = (), key: str = "",
               compute: ComputeSettings = ComputeSettings()) -> LoraResult:
    """Fine-tune a LoRA on ``image`` (1, 3, H, W) in [-1, 1]; leaves the adapter active on the UNet, named
    after ``key`` (:func:`adapter_name`).

    ``callbacks`` get a :class:`~dragnb.callbacks.LoraStep` after every step; one returning True stops training.
    Ctrl-C also stops it. Either way the adapter as trained so far is returned, marked ``interrupted``, and taken
    off the UNet: a half-trained adapter never stands on the model under the name of the finished one.
    ``compute``: autocast and gradient checkpointing of the UNet (:mod:`dragnb.compute`).
    """
    require_supported(compute, model.device)
    pipe = model.pipe
    unet, vae, scheduler = pipe.unet, pipe.vae, pipe.scheduler
    device = model.device
    generator = torch.Generator().manual_seed(settings.seed)
    remove_lora(pipe)
    unet.requires_grad_(False)
    torch.manual_seed(settings.seed)  # peft draws the adapters' initial weights from the global generator
    unet.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian",
                                target_modules=list(settings.target_modules)), adapter_name=adapter_name(key))
    params = adapters_in_fp32(unet)
    for p in params:
        p.requires_grad_(True)
    # foreach: one batched update of the many small adapter tensors (the CUDA default; the same numbers on the CPU)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, foreach=True)
    text = encode_prompt(model, prompt).repeat(settings.batch_size, 1, 1)  # (B, 77, D)
    image = image.to(device, vae.dtype)
    result = LoraResult(state_dict={})
    start = time.perf_counter()
    unet.train()
    scaler = grad_scaler(compute, device, held_dtype(unet))
    try:
        with checkpointing(unet, compute.gradient_checkpointing):  # less memory, the same gradients
            for step in tqdm(range(settings.steps), desc="LoRA", disable=not progress, leave=False):
                batch = torch.cat([random_resized_crop(image, settings.crop_scale, generator)
                                   for _ in range(settings.batch_size)])  # (B, 3, H, W)
                with torch.no_grad():
                    dist = vae.encode(batch).latent_dist
                    z0 = (dist.mean.float() + dist.std.float() * torch.randn(dist.mean.shape, generator=generator)
                          .to(device)) * vae.config.scaling_factor  # (B, 4, h, w), fp32
                noise = torch.randn(z0.shape, generator=generator).to(device)
                t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=generator).to(device)
                noisy = scheduler.add_noise(z0, noise, t)
                target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(z0, noise, t)
                with autocast(compute, device):
                    pred = run_unet(unet, noisy, t, text)
                loss = F.mse_loss(pred, target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # loss scaling only for fp16 (a disabled scaler is a plain step)
                scaler.step(optimizer)
                scaler.update()
                result.losses.append(loss.item())
                if notify(callbacks, LoraStep(step=step, total=settings.steps, loss=result.losses[-1])):
                    result.interrupted = True  # stopped early: the adapter holds fewer steps than asked for
                    break
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        unet.eval()
        unet.requires_grad_(False)
    result.seconds = time.perf_counter() - start
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name(key))
    result.state_dict = {f"unet.{k}": v.detach().cpu().clone() for k, v in convert_state_dict_to_diffusers(state).items()}
    if result.interrupted:
        remove_lora(pipe)
    else:
        result.key = key
    return result


def remove_lora(pipe: StableDiffusionPipeline) -> None:
    """Take every LoRA adapter off the UNet, leaving the base weights."""
    if getattr(pipe.unet, "peft_config", None):
        pipe.unload_lora_weights()


def apply_lora(model: Model, lora: LoraResult | None) -> None:
    """Make ``lora`` the UNet's only adapter (None: the base model). Cheap when it is already active."""
    pipe = model.pipe
    if lora is not None and lora.key and active_adapter(pipe.unet) == adapter_name(lora.key):
        return
    remove_lora(pipe)
    if lora is not None:
        pipe.unet.load_lora_adapter({k: v.clone() for k, v in lora.state_dict.items()}, prefix="unet",
                                    adapter_name=adapter_name(lora.key))
        pipe.unet.requires_grad_(False)
        if held_dtype(pipe.unet) != torch.float32:  # peft made the adapter in its layers' dtype and rounded the
            adapters_in_fp32(pipe.unet)  # saved values into it: fp32 again, as train_lora keeps it, and the saved
            # values once more, so a cached LoRA computes as the trained one did
            state = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in lora.state_dict.items()})
            set_peft_model_state_dict(pipe.unet, state, adapter_name=adapter_name(lora.key))


@contextmanager
def without_lora(unet) -> Iterator[None]:
    """The base UNet for the block: every adapter turned off (peft's ``disable_adapters``), on again on exit."""
    if not getattr(unet, "peft_config", None):
        yield
        return
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


@contextmanager
def fused_lora(unet, on: bool = True) -> Iterator[int]:
    """The active LoRA folded into the weights for the block: W' = W + ΔW (peft's ``get_delta_weight``, i.e. the
    adapter scale times B·A) in a plain ``nn.Linear`` that stands in for each adapted layer; the adapted layers
    are put back unchanged on exit, so the base weights never drift. Yields the number of layers fused.

    The same function as the adapter (x·W' = x·W + s·(x·A)·B up to rounding) at the cost of the bare UNet: on the
    embedded model a UNet forward costs 11.3 ms with the adapter and 7.2 ms without. Not bit-identical to the
    reference, which keeps the adapter unfused: ``compute.fuse_lora`` is off by default (docs/method.md §6).
    """
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    if on:
        for name, module in list(unet.named_modules()):
            if not (isinstance(module, LoraLayer) and isinstance(module.base_layer, torch.nn.Linear)):
                continue
            base = module.base_layer
            with torch.no_grad():
                weight = base.weight.detach().clone()
                for adapter in module.active_adapters:
                    if adapter in module.lora_A and adapter not in module.merged_adapters:
                        weight += module.get_delta_weight(adapter).to(weight.dtype)
            plain = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                    device=weight.device, dtype=weight.dtype)
            plain.weight = torch.nn.Parameter(weight, requires_grad=False)
            if base.bias is not None:
                plain.bias = torch.nn.Parameter(base.bias.detach(), requires_grad=False)
            parent_name, _, attr = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            swaps.append((parent, attr, module))
            setattr(parent, attr, plain)
    try:
        yield len(swaps)
    finally:
        for parent, attr, module in reversed(swaps):
            setattr(parent, attr, module)


def save_lora(lora: LoraResult, folder: str | Path) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` in ``folder``, loadable by ``pipe.load_lora_weights(folder)``."""
    folder = Path(folder)
    unet_layers = {k.removeprefix("unet."): v for k, v in lora.state_dict.items()}
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=unet_layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def load_lora(folder: str | Path, key: str = "") -> LoraResult:
    """Read an adapter written by :func:`save_lora` (or any diffusers UNet LoRA file) as a :class:`LoraResult`."""
    from safetensors.torch import load_file

    path = Path(folder)
    path = path / "pytorch_lora_weights.safetensors" if path.is_dir() else path
    try:
        state = load_file(path)
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise ModelError(f"lora: cannot read {str(path)!r} ({exc}); delete it so the LoRA is trained again") from None
    return LoraResult(state_dict=state, key=key)
