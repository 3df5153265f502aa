"""What the embedded tiny SD-family model is: its configs, constructors, tokenizer and exported folder.

The definition that :mod:`dragnb.tiny.train` trains and :mod:`dragnb.models` loads back: the seed split of the
scene world (training scenes from ``TRAIN_SEED_BASE``, held-out ones from ``HOLDOUT_SEED_BASE``), the image side,
the configs of the AutoencoderKL, the UNet2DConditionModel, the 2-layer CLIPTextModel and SD 1.5's DDIM scheduler,
:func:`vae_config` and :func:`make_models` that build them for a geometry (64 px f = 4, or SD 1.5's 128 px f = 8),
:func:`build_tokenizer` (a word-level CLIP BPE vocabulary of the scene grammar), the drag settings each world's model
ships with (``MODEL_DEFAULTS``, from ``defaults/<world>.json``), the VAE's pixel convention (:func:`to_tensor`,
:func:`to_uint8`) and :func:`export`, which writes the model folder in the diffusers layout of Stable Diffusion 1.5.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

TRAIN_SEED_BASE = 10_000_000  # training scenes use seeds from here; held-out checks use seeds below 1e6
HOLDOUT_SEED_BASE = 500_000
IMAGE_SIZE = 64  # the first embedded models' side; --image-size changes it
MAX_TOKENS = 32  # longest prompt of the grammar is 20 tokens with <bos>/<eos>; SD 1.5 pads to 77
GRAMMAR_WORDS = ["a", "an", "on", "and", "background", ","]

VAE_CONFIG = dict(  # f = 4 at 64 px; vae_config() derives other geometries from it
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,  # 3 levels: f = 4
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,  # as SD 1.5
    norm_num_groups=16,
    sample_size=IMAGE_SIZE,
)
UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE // 4,  # 16x16 latents
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",) * 3,  # cross-attention at every level: conditioning is the hard part
    up_block_types=("CrossAttnUpBlock2D",) * 3,  # up_blocks[-2] outputs 16x16: the drag feature block
    cross_attention_dim=128,
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
    norm_num_groups=16,
)
TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    projection_dim=128,
)
SCHEDULER_CONFIG = dict(  # SD 1.5's DDIM
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"  # the drag settings each world's model ships with
MODEL_DEFAULTS = {world: json.loads((DEFAULTS_DIR / f"{world}.json").read_text())
                  for world in ("flat", "textured", "occlusion")}


# ---------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(folder: Path):
    """Word-level CLIP BPE: train merges with ``tokenizers`` so every word of the grammar is one token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    from dragnb.tiny.scenes import COLOURS, SHAPES, STYLES

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "vocab.json").exists():
        words = GRAMMAR_WORDS + list(COLOURS) + list(SHAPES) + [s for s in STYLES if s != "plain"]
        tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=["<|startoftext|>", "<|endoftext|>"],  # ids 0, 1
            end_of_word_suffix="</w>",
            min_frequency=1,
            show_progress=False,
        )
        tok.train_from_iterator([" ".join(words)] * 10, trainer)
        tok.model.save(str(folder))  # vocab.json, merges.txt
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)
    for word in GRAMMAR_WORDS:
        assert len(tokenizer(word).input_ids) == 3, f"{word!r} is not one token"
    return tokenizer


def vae_config(image_size: int = IMAGE_SIZE, factor: int = 4) -> dict:
    """AutoencoderKL config with downsampling ``factor`` (4 or 8: one level per factor of 2) at ``image_size``."""
    levels = int(round(math.log2(factor))) + 1
    if 2 ** (levels - 1) != factor:
        raise ValueError(f"--vae-factor must be a power of two, got {factor}")
    channels = (16, 32, 64, 64, 64)[:levels]
    return {**VAE_CONFIG, "down_block_types": ("DownEncoderBlock2D",) * levels,
            "up_block_types": ("UpDecoderBlock2D",) * levels, "block_out_channels": channels,
            "sample_size": image_size}


def make_models(vocab_size: int, image_size: int = IMAGE_SIZE, factor: int = 4):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(**vae_config(image_size, factor))
    unet = UNet2DConditionModel(**{**UNET_CONFIG, "sample_size": image_size // factor})
    text_config = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=0, eos_token_id=1, pad_token_id=1, **TEXT_CONFIG)
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    return vae, unet, text_encoder, scheduler


def load_models(folder: Path, tokenizer_dir: Path):
    """(tokenizer, vae, unet, text_encoder, scheduler) of an exported model ``folder``, to train further.

    Its tokenizer files are copied to ``tokenizer_dir`` (the work folder's, which the export ships again) unless
    one is there already; the scheduler is the recipe's (:data:`SCHEDULER_CONFIG`), as every export has it.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        if not (tokenizer_dir / name).exists():
            shutil.copy(folder / "tokenizer" / name, tokenizer_dir / name)
    tokenizer = build_tokenizer(tokenizer_dir)
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    return tokenizer, vae, unet, text_encoder, DDIMScheduler(**SCHEDULER_CONFIG)


# ------------------------------------------------------------------------------------------------- pixels
def to_tensor(images: np.ndarray, device="cpu"):
    import torch

    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    return x.div(127.5).sub(1.0)  # (B, 3, H, W) in [-1, 1]


def to_uint8(x) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)


# --------------------------------------------------------------------------------------- the model folder
def export(vae, unet, text_encoder, tokenizer, scheduler, out: Path, tokenizer_dir: Path, summary: dict) -> None:
    """Write the diffusers layout of SD 1.5 to ``out`` (via a sibling temporary folder, then swapped in)."""
    from diffusers import StableDiffusionPipeline

    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(tmp, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # the SD 1.5 tokenizer files, beside transformers' tokenizer.json
        shutil.copy(tokenizer_dir / name, tmp / "tokenizer" / name)
    cfg_path = tmp / "tokenizer" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = MAX_TOKENS
    cfg_path.write_text(json.dumps(cfg, indent=2))
    defaults = MODEL_DEFAULTS[summary.get("world", "flat")]
    (tmp / "dragnb_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n")
    (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log_path = tokenizer_dir.parent / "log.jsonl"  # the work folder's log, shipped for the notebook's curves
    if log_path.is_file():
        shutil.copy(log_path, tmp / "training_log.jsonl")
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
