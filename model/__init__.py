"""FBIL model: SlowFast backbone, FBIL head, configs, labels and checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_model
from .config import ConfigError, FBILConfig, load_config
from .detector import FBILDetector, ava_scores, build_detector
from .labels import LabelMap, ava_v22
from .metadata import ModelMetadata
from .preprocess import PreprocessSpec

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
    "load_checkpoint",
    "load_config",
    "load_model",
    "save_model",
]
