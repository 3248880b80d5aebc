"""Service test fixtures: a tiny random model on disk and an app served in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fbil.model import ModelMetadata, build_detector, save_model
from tests.support.serving import TINY_CONFIG, TinyModel


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A random tiny FBIL model saved in our safetensors format."""
    torch.manual_seed(0)
    detector = build_detector(TINY_CONFIG)
    metadata = ModelMetadata(config=TINY_CONFIG, name="fbil-tiny", version="test")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(detector, metadata, path)
    return TinyModel(path, detector, metadata)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def megamind(test_videos: Path) -> Path:
    """720x528, 11.3 s, 24 fps: the main request video."""
    return test_videos / "Megamind.avi"
