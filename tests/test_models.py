import json
import shutil

import pytest
import torch

from dragnb.config import DragSettings, Settings, apply_overrides
from dragnb.errors import ModelError
from dragnb.models import encode_prompt, load_model


def test_loads_folder_with_reference_scheduler(tiny_model):
    cfg = tiny_model.pipe.scheduler.config
    assert type(tiny_model.pipe.scheduler).__name__ == "DDIMScheduler"
    assert (cfg.clip_sample, cfg.set_alpha_to_one, cfg.steps_offset) == (False, False, 1)
    assert cfg.beta_schedule == "scaled_linear" and cfg.beta_start == 0.00085 and cfg.beta_end == 0.012
    tiny_model.pipe.scheduler.set_timesteps(50)
    assert int(tiny_model.pipe.scheduler.timesteps[15]) == 681  # docs/method.md §2.2: t = 681 at 35 of 50
    assert tiny_model.resolution == 64 and tiny_model.size_multiple == 8
    assert not any(p.requires_grad for p in tiny_model.pipe.unet.parameters())


def test_prompt_embeddings_shapes(tiny_model):
    assert encode_prompt(tiny_model, "a red circle").shape == (1, 77, 32)
    assert encode_prompt(tiny_model, "", guidance_scale=3.0).shape == (2, 77, 32)


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="no model folder"):
        load_model(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="model_index.json"):
        load_model(tmp_path / "empty", device="cpu")


def test_hub_id_offline_fails_with_download_hint():
    with pytest.raises(ModelError, match="hf download"):
        load_model("someone/not-cached-model-xyz", device="cpu", offline=True)


def test_corrupt_weights_are_reported(tiny_dir, tmp_path):
    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="corrupt|could not read"):
        load_model(broken, device="cpu")


def test_model_folder_defaults(tiny_dir, tmp_path):
    own = shutil.copytree(tiny_dir, tmp_path / "own")
    (own / "dragnb_defaults.json").write_text(json.dumps({"drag": {"lr": 0.03, "feature_blocks": [-1]},
                                                          "notes": "why"}))
    model = load_model(own, device="cpu")
    assert model.settings.drag.lr == 0.03 and model.settings.drag.feature_blocks == (-1,)
    assert model.settings.lora == Settings().lora


def test_overrides_are_typed_and_checked():
    s = apply_overrides(Settings(), ["drag.lr=0.05", "drag.feature_blocks=1,2", "denoise.reference_control=off"])
    assert s.drag.lr == 0.05 and s.drag.feature_blocks == (1, 2) and s.denoise.reference_control is False
    assert s.drag.r1 == DragSettings().r1
    with pytest.raises(ValueError, match="drag.nope: no such setting"):
        apply_overrides(Settings(), ["drag.nope=1"])
    with pytest.raises(ValueError, match="stage.field=value"):
        apply_overrides(Settings(), ["lr=1"])


def test_inverted_step_count():
    from dragnb.config import InversionSettings

    assert InversionSettings().inverted_steps == 35
    assert InversionSettings(strength=0.8).inverted_steps == 40
