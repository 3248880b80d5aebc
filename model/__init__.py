"""FBIL model: SlowFast backbone, FBIL head, configs, labels and checkpoints; the video decoding
and preprocessing that training and serving share (``video``, ``preprocess``).

Names are imported lazily, so tools that only need e.g. ``fbil.model.training.ava_eval`` do not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "ConfigError": "config",
    "default_device": "device",
    "resolve_device": "device",
    "FBILConfig": "config",
    "load_config": "config",
    "FBILDetector": "detector",
    "ava_scores": "detector",
    "build_detector": "detector",
    "LabelMap": "labels",
    "ava_v22": "labels",
    "ModelMetadata": "metadata",
    "PreprocessSpec": "preprocess",
}
_SUBMODULES = {"artifact", "backbone", "checkpoint", "config", "detector", "device", "head",
               "labels", "masks", "metadata", "preprocess", "training", "video"}  # fmt: skip

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FBILConfig",
    "FBILDetector",
    "LabelMap",
    "ModelMetadata",
    "PreprocessSpec",
    "ava_scores",
    "ava_v22",
    "build_detector",
    "default_device",
    "load_checkpoint",
    "load_config",
    "load_model",
    "resolve_device",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from fbil.model.checkpoint import CheckpointError, load_checkpoint, load_model, save_model
    from fbil.model.config import ConfigError, FBILConfig, load_config
    from fbil.model.detector import FBILDetector, ava_scores, build_detector
    from fbil.model.device import default_device, resolve_device
    from fbil.model.labels import LabelMap, ava_v22
    from fbil.model.metadata import ModelMetadata
    from fbil.model.preprocess import PreprocessSpec
