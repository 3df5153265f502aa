"""The model's parts as a table, and how its tokenizer splits text.

:func:`architecture` lists the pipeline's VAE, UNet, text encoder, tokenizer and scheduler as :class:`Component` s
with their shapes and sizes read from their configs and their parameter counts (for
:func:`dragnb.tables.markdown_table`); :func:`tokens` shows the tokens a text becomes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    name: str
    cls: str
    shape: str  # what goes in and out
    config: str  # the sizes that matter
    params: int


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def architecture(model) -> list[Component]:
    """The pipeline's parts with their sizes read from their configs, and parameter counts."""
    pipe = model.pipe
    vae, unet, te, tok, sched = pipe.vae.config, pipe.unet.config, pipe.text_encoder.config, pipe.tokenizer, \
        pipe.scheduler.config
    f = model.vae_scale
    side, latent = model.resolution, unet.sample_size
    return [
        Component("VAE", type(pipe.vae).__name__,
                  f"{side}×{side}×3 → {side // f}×{side // f}×{vae.latent_channels} (f = {f})",
                  f"channels {tuple(vae.block_out_channels)}, {vae.layers_per_block} layer/block, "
                  f"scaling factor {vae.scaling_factor:.3f}", _count(pipe.vae)),
        Component("UNet", type(pipe.unet).__name__, f"{latent}×{latent}×{unet.in_channels} latent, t, text → ε",
                  f"channels {tuple(unet.block_out_channels)}, {unet.layers_per_block} layer/block, "
                  f"cross-attention dim {unet.cross_attention_dim}, "
                  f"{sum('CrossAttn' in b for b in unet.down_block_types)}+"
                  f"{sum('CrossAttn' in b for b in unet.up_block_types)} cross-attention blocks",
                  _count(pipe.unet)),
        Component("text encoder", type(pipe.text_encoder).__name__,
                  f"{tok.model_max_length} tokens → {tok.model_max_length}×{te.hidden_size}",
                  f"{te.num_hidden_layers} layers, width {te.hidden_size}, {te.num_attention_heads} heads, "
                  f"MLP {te.intermediate_size}", _count(pipe.text_encoder)),
        Component("tokenizer", type(tok).__name__, "text → token ids", f"vocabulary {len(tok)}", 0),
        Component("scheduler", type(pipe.scheduler).__name__, "sampling and inversion",
                  f"{sched.num_train_timesteps} steps, {sched.beta_schedule} β {sched.beta_start}–{sched.beta_end}, "
                  f"{sched.prediction_type} prediction", 0),
    ]


def tokens(tokenizer, text: str) -> list[str]:
    """How ``tokenizer`` (a CLIPTokenizer, e.g. ``model.pipe.tokenizer``) splits ``text``, start and end included."""
    return tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)
