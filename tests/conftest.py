import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

import numpy as np
import pytest
import torch

from dragnb.models import load_model
from dragnb.testing import save_tiny_random_pipeline


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random SD-family pipeline saved in the diffusers layout, as a user's SD 1.5 folder is."""
    return save_tiny_random_pipeline(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    return load_model(tiny_dir, device="cpu")


@pytest.fixture
def blob_image():
    """A 64x64 RGB image: a red disc on a gray background."""
    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64, 3), 128, np.uint8)
    img[(yy - 24) ** 2 + (xx - 24) ** 2 < 100] = (220, 30, 30)
    return img


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
