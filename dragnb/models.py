"""Load a Stable-Diffusion-1.x/2.x-family pipeline by hub id or local folder, configured for DragDiffusion.

The same code path loads SD 1.5, its fine-tunes, SD 2.x and the embedded tiny model shipped in ``data/``.
The scheduler is replaced by DDIM with the reference code's settings (docs/method.md §2.2), keeping the model's own
betas and prediction type.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from .compute import WEIGHTS, weights_name
from .config import EMBEDDED_MODEL, Settings, model_defaults
from .errors import InputError, ModelError, Notice

_verbosity = transformers_logging.get_verbosity()
transformers_logging.set_verbosity_error()  # diffusers' pipelines import transformers' image processors, which warn
try:  # (once, on stderr) that torchvision is missing; dragnb uses none of them. The level is restored after.
    from diffusers import DDIMScheduler, StableDiffusionPipeline
finally:
    transformers_logging.set_verbosity(_verbosity)

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def default_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device names this torch build can use here."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device | None, argument: str = "device") -> torch.device:
    """``device`` as a torch device this machine has (None: :func:`default_device`), else one clear error."""
    if device is None:
        return default_device()
    here = ", ".join(available_devices())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(argument, f"{str(device)!r} is not a device name; available here: {here}") from None
    usable = {"cpu": True, "cuda": torch.cuda.is_available(),
              "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not usable.get(resolved.type, False):
        build = f"torch {torch.__version__}" + ("" if torch.backends.cuda.is_built() else ", built without CUDA")
        raise InputError(argument, f"{str(device)!r} is not available ({build}); available here: {here}")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(argument, f"{str(device)!r} does not exist; available here: {here}")
    return resolved


def ddim_scheduler(config) -> DDIMScheduler:
    """DDIM as the reference configures it: leading spacing, offset 1, no clipping, no alpha-to-one."""
    return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                     timestep_spacing="leading")


@dataclass
class Model:
    """A loaded pipeline plus what dragnb needs to know about it."""

    pipe: StableDiffusionPipeline
    name: str  # hub id or folder it came from (part of every cache key)
    settings: Settings  # the model's own defaults (its dragnb_defaults.json), else the reference's

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def vae_scale(self) -> int:
        """Image pixels per latent pixel (8 for SD 1.5)."""
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this for the UNet's down/up sampling to line up."""
        return self.vae_scale * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The image side the model was trained at (512 for SD 1.5)."""
        return int(self.pipe.unet.config.sample_size) * self.vae_scale



def weights_dtype(dtype: str | torch.dtype | None, argument: str = "dtype") -> torch.dtype | None:
    """A weights dtype given as a torch dtype or a ``compute.weights`` name ("fp32", "fp16", "bf16"); None stays
    None."""
    if dtype is None or dtype in WEIGHTS.values():
        return dtype
    if isinstance(dtype, str) and dtype in WEIGHTS:
        return WEIGHTS[dtype]
    raise InputError(argument, f"{dtype!r} is not a weights dtype; use one of {', '.join(WEIGHTS)} (or torch.float32, "
                     "torch.float16, torch.bfloat16)")


def load_model(name_or_path: str | Path | None = None, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, offline: bool | None = None) -> Model:
    """Load an SD-family diffusers pipeline.

    ``name_or_path``: a local folder in the diffusers layout, or a hub id (e.g. ``SD15``); None = the embedded
    tiny model. ``dtype``: the weights' dtype (``compute.weights``: "fp32", "fp16", "bf16" or a torch dtype); None =
    what the model's ``dragnb_defaults.json`` names, else fp32. The model's settings carry it
    (``model.settings.compute.weights``). ``offline``: never touch the network (default: the ``HF_HUB_OFFLINE``
    environment variable). Raises :class:`ModelError` saying how to get the weights when they are missing or
    unreadable.
    """
    name = str(EMBEDDED_MODEL if name_or_path is None else name_or_path)
    device = resolve_device(device)
    dtype = weights_dtype(dtype)
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    path = Path(name).expanduser()
    local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1
    if local:
        if not path.is_dir():
            hint = ("the embedded model is missing from data/: restore it with `git checkout data/` or retrain it "
                    "with `python -m dragnb train-tiny`" if path == EMBEDDED_MODEL else
                    "give a folder in the diffusers layout (model_index.json, unet/, vae/, text_encoder/, "
                    f"tokenizer/, scheduler/), or a hub id such as {SD15!r}")
            raise ModelError(f"model: no model folder at {name!r}; {hint}")
        if not (path / "model_index.json").is_file():
            raise ModelError(f"model: {name!r} has no model_index.json, so it is not a diffusers pipeline folder; "
                             "save one with `pipe.save_pretrained(folder)` or download one with "
                             f"`hf download {SD15} --local-dir {name}`")
        _check_components(path, name)
        settings = model_defaults(path)  # a broken dragnb_defaults.json fails here, before the weights load
    else:
        settings = model_defaults(None)
    if dtype is None:
        dtype = WEIGHTS[settings.compute.weights]
    settings = dataclasses.replace(settings, compute=dataclasses.replace(settings.compute, weights=weights_name(dtype)))
    try:
        with warnings.catch_warnings(), _quiet_loading():  # diffusers 0.42 renamed torch_dtype; older releases
            warnings.simplefilter("ignore", FutureWarning)  # know only that name
            pipe = StableDiffusionPipeline.from_pretrained(
                str(path) if local else name, torch_dtype=dtype, safety_checker=None,
                requires_safety_checker=False, local_files_only=offline or local)
    except OSError as exc:
        if local:
            raise ModelError(f"model: could not read the weights in {name!r} ({exc}); the folder is incomplete or "
                             "corrupt, re-download or re-save it") from None
        raise ModelError(f"model: {name!r} is not available ({exc.__class__.__name__}: {str(exc)[:200]}). "
                         f"Download it once with `hf download {name}` (or `huggingface-cli download {name}`) on a "
                         "machine with internet access and a hub login if the model is gated, then run again, or "
                         "pass the local folder instead") from None
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"model: the weights in {name!r} are corrupt or do not match their config "
                         f"({exc.__class__.__name__}: {str(exc)[:300]}); re-download or re-save the model") from None
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    if device.type != "cpu":  # loaded on the CPU (diffusers' .to warns of fp16 there, which runs in torch 2.13)
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    return Model(pipe=pipe, name=name, settings=settings)


@contextmanager
def _quiet_loading():
    """No diffusers or transformers progress bars while a pipeline loads ("Loading pipeline components", "Loading
    weights": in an executed notebook they stay printed at 0 %); each library's previous state is restored after."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()


CORE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # what dragnb uses of a pipeline


def _check_components(path: Path, name: str) -> None:
    """Each component dragnb uses must be a non-empty folder: one line naming what is missing."""
    for component in CORE_COMPONENTS:
        folder = path / component
        if not folder.is_dir() or not any(folder.iterdir()):
            raise ModelError(f"model: {name!r} lacks its {component}/ folder; the download or copy is incomplete: "
                             "re-download or re-save the model")


def classifier_free_guidance(eps: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ε̂ = ε_u + s (ε_c − ε_u) for a UNet output of the batch [uncond | cond]."""
    eps_u, eps_c = eps.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def encode_prompt(model: Model, prompt: str, guidance_scale: float = 1.0) -> torch.Tensor:
    """Text embeddings c in fp32 (whatever the weights' dtype): (1, 77, D), or (2, 77, D) = [unconditional,
    conditional] when guidance > 1."""
    from diffusers.utils import logging as diffusers_logging

    _say_if_truncated(model.pipe.tokenizer, prompt)
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its own truncation message would repeat ours on several lines
    try:
        cond, uncond = model.pipe.encode_prompt(prompt, model.device, 1, guidance_scale > 1.0, negative_prompt="")
    finally:
        diffusers_logging.set_verbosity(level)
    return (torch.cat([uncond, cond]) if guidance_scale > 1.0 else cond).float()


def _say_if_truncated(tokenizer, prompt: str) -> None:
    """One line when the text encoder will not read the whole prompt (diffusers cuts it at the tokenizer's length)."""
    ids = tokenizer(prompt, truncation=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        dropped = tokenizer.decode(ids[limit - 1:-1])
        warnings.warn(f"prompt: {len(ids)} tokens with its start and end marks, the text encoder reads {limit}; "
                      f"dropped: {dropped[:60]!r}{'...' if len(dropped) > 60 else ''}", Notice, stacklevel=2)


def held_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype a model's weights are held in: its first parameter's (diffusers' ``unet.dtype`` walks every module
    looking for casting hooks, about 1 ms on the embedded UNet: too slow for every UNet call)."""
    return next(module.parameters()).dtype


def run_unet(unet, z: torch.Tensor, t, text: torch.Tensor) -> torch.Tensor:
    """The UNet's output (ε, or v or x_0 for models predicting those) for latent z at t under text c, in fp32: the
    one place the inputs are cast to the weights' dtype (``compute.weights``), so everything around the UNet stays
    fp32 (a no-op for fp32 weights; under fp16/bf16 autocast the output comes back fp32 too)."""
    dtype = held_dtype(unet)
    return unet(z.to(dtype), t, text.to(dtype)).sample.float()
