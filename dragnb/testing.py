"""Tiny random SD-family pipelines, built offline from configs, for tests and benchmarks.

They have the architecture of Stable Diffusion (AutoencoderKL, UNet2DConditionModel with cross-attention,
CLIPTextModel + CLIPTokenizer, DDIM) at a few million parameters, so every code path runs in seconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# SD 1.5's UNet config (runwayml/stable-diffusion-v1-5, unet/config.json), for tests at small latents.
SD15_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)


def character_tokenizer(folder: str | Path, max_length: int = 77) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary is single characters (no merges), saved to and loaded from ``folder``."""
    chars = [chr(b) for b in range(256) if chr(b).isprintable() and not chr(b).isspace()]
    chars += [chr(256 + i) for i in range(256 - len(chars))]  # the byte-to-unicode table's stand-ins
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length,
                                                              "tokenizer_class": "CLIPTokenizer"}))
    return CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)


def tiny_random_pipeline(seed: int = 0, sample_size: int = 16, cross_attention_dim: int = 32,
                         unet_channels: tuple[int, ...] = (32, 64)) -> StableDiffusionPipeline:
    """A random SD-family pipeline: VAE f = 4, a small cross-attention UNet, a 2-layer CLIP text encoder."""
    torch.manual_seed(seed)
    n = len(unet_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=unet_channels, norm_num_groups=8, cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                        layers_per_block=1, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = character_tokenizer(tmp)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cross_attention_dim, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_random_pipeline(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Build :func:`tiny_random_pipeline` and save it in the diffusers layout (safetensors) to ``folder``."""
    folder = Path(folder)
    tiny_random_pipeline(seed, **kwargs).save_pretrained(folder, safe_serialization=True)
    return folder
