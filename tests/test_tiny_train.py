"""The trainer's geometry options and the defaults it writes: SD 1.5's geometry at 128 px, valid settings per world."""

import pytest
import torch

from dragnb.config import settings_from_dict
from dragnb.tiny.model import MODEL_DEFAULTS, make_models, vae_config


def test_sd_geometry_puts_latents_at_one_eighth():
    assert len(vae_config(64, 4)["block_out_channels"]) == 3
    assert len(vae_config(128, 8)["block_out_channels"]) == 4
    vae, unet, _, _ = make_models(104, image_size=128, factor=8)
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean  # (1, 4, 16, 16)
    assert z.shape == (1, 4, 16, 16) and unet.config.sample_size == 16
    with pytest.raises(ValueError, match="power of two"):
        vae_config(128, 6)


@pytest.mark.parametrize("world", sorted(MODEL_DEFAULTS))
def test_the_defaults_a_model_ships_are_valid_settings(world):
    settings = settings_from_dict(MODEL_DEFAULTS[world])
    assert settings.drag.lam > 0.1  # scaled up for 16x16 latents
    assert MODEL_DEFAULTS[world]["notes"] and len(MODEL_DEFAULTS[world]["notes"]) > 100


def test_the_shipped_model_carries_its_worlds_defaults():
    """One home for the embedded model's settings: its dragnb_defaults.json is what the trainer writes."""
    import json

    from dragnb.models import EMBEDDED_MODEL
    from dragnb.tiny.report import model_world

    shipped = json.loads((EMBEDDED_MODEL / "dragnb_defaults.json").read_text())
    assert shipped == MODEL_DEFAULTS[model_world(EMBEDDED_MODEL)]


@pytest.mark.slow
def test_the_trainer_runs_resumes_and_extends(tmp_path):
    """Both phases through the shared TimedPhase loop: a short run exports a loadable model; run again with a
    larger UNet budget and it resumes both phases from their checkpoints and continues the UNet's steps; a
    larger decoder budget continues the decoder's steps and exports again, the encoder (the UNet's latents) kept."""
    import json

    from dragnb.models import load_model
    from dragnb.tiny.train import main

    common = ["--world", "textured", "--out", str(tmp_path / "model"), "--work", str(tmp_path / "work"),
              "--minutes-vae", "0.01", "--n-scenes", "48", "--batch-vae", "4", "--batch-unet", "8",
              "--checkpoint-minutes", "0.002", "--check-minutes", "100", "--threads", "2"]
    assert main([*common, "--minutes-unet", "0.01"]) == 0
    log = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    first = max(r.get("step", 0) for r in log if r["phase"] == "unet")
    assert first > 0 and any(r.get("event") == "final_eval" for r in log)
    assert main([*common, "--minutes-unet", "0.02"]) == 0
    log = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    resumed = {r["phase"] for r in log if r.get("event") == "resumed"}
    assert resumed == {"vae", "unet"}
    assert max(r.get("step", 0) for r in log if r["phase"] == "unet") > first
    model = load_model(tmp_path / "model", device="cpu")
    assert model.resolution == 64 and model.settings.drag.supervision == "anchored"

    def decoder_steps():
        log = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
        return max((r.get("step", 0) for r in log if r["phase"] == "decoder"), default=0)

    encoder = {k: v.clone() for k, v in model.pipe.vae.encoder.state_dict().items()}
    assert main([*common, "--minutes-unet", "0.02", "--minutes-decoder", "0.01"]) == 0
    once = decoder_steps()
    assert once > 0
    assert main([*common, "--minutes-unet", "0.02", "--minutes-decoder", "0.02"]) == 0
    assert decoder_steps() > once
    extended = load_model(tmp_path / "model", device="cpu").pipe.vae
    assert all(torch.equal(encoder[k], v) for k, v in extended.encoder.state_dict().items())


@pytest.mark.slow
def test_the_trainer_trains_an_exported_model_further(tmp_path):
    """``--init``: no VAE phase, the pool encoded by the model's own encoder at its scaling factor, the UNet
    phase starting from its weights (its first loss is the trained model's, far below a fresh one's), the same
    tokenizer; the export loads and carries the occlusion world's defaults."""
    import json

    from dragnb.models import EMBEDDED_MODEL, load_model
    from dragnb.tiny.train import main

    args = ["--init", str(EMBEDDED_MODEL), "--world", "occlusion", "--out", str(tmp_path / "model"),
            "--work", str(tmp_path / "work"), "--n-scenes", "32", "--batch-unet", "8", "--minutes-unet", "0.01",
            "--checkpoint-minutes", "100", "--check-minutes", "100", "--threads", "2"]
    assert main(args) == 0
    log = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    assert not any(r["phase"] == "vae" for r in log)
    shipped = json.loads((EMBEDDED_MODEL / "vae" / "config.json").read_text())["scaling_factor"]
    assert next(r for r in log if r["phase"] == "latents")["scaling_factor"] == pytest.approx(shipped)
    model = load_model(tmp_path / "model", device="cpu")
    shipped_unet = load_model(EMBEDDED_MODEL, device="cpu").pipe.unet.state_dict()
    trained = model.pipe.unet.state_dict()
    moved = max(float((trained[k] - v).norm() / (v.norm() + 1e-8)) for k, v in shipped_unet.items() if v.numel() > 100)
    assert 0 < moved < 0.05  # a few steps on from the shipped weights, not a fresh start
    assert model.resolution == 64
    assert (tmp_path / "model" / "tokenizer" / "vocab.json").read_text() == \
        (EMBEDDED_MODEL / "tokenizer" / "vocab.json").read_text()
    assert json.loads((tmp_path / "model" / "dragnb_defaults.json").read_text()) == MODEL_DEFAULTS["occlusion"]
