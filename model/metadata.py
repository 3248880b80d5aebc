"""What travels with the weights: config, labels, preprocessing, provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fbil.model.config import ConfigError, FBILConfig
from fbil.model.labels import LabelMap, default_labels
from fbil.model.preprocess import PreprocessSpec

FORMAT = "fbil-model/1"


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a runtime needs besides the weights (embedded in every artifact we write)."""

    config: FBILConfig
    labels: LabelMap = None  # type: ignore[assignment]  # None: the built-in map of the count
    name: str = "fbil-slowfast"
    version: str = "unversioned"
    description: str = ""
    demo: bool = False
    source_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.labels is None:
            object.__setattr__(self, "labels", default_labels(self.config.head.num_classes))
        if len(self.labels) != self.config.head.num_classes:
            raise ConfigError(
                f"label map has {len(self.labels)} classes, "
                f"the model {self.config.head.num_classes}"
            )

    @property
    def preprocess(self) -> PreprocessSpec:
        return self.config.preprocess

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "demo": self.demo,
            "source_sha256": self.source_sha256,
            "labels": self.labels.to_list(),
            "num_pose_classes": self.labels.num_pose,
            "pose_softmax": self.config.pose_softmax,
            "preprocess": self.preprocess.to_dict(),
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        if d.get("format") != FORMAT:
            raise ConfigError(f"unknown model metadata format {d.get('format')!r}")
        return cls(
            config=FBILConfig.from_dict(d["config"]),
            labels=LabelMap.from_list(d["labels"]),
            name=str(d.get("name", "fbil")),
            version=str(d.get("version", "unversioned")),
            description=str(d.get("description", "")),
            demo=bool(d.get("demo", False)),
            source_sha256=d.get("source_sha256"),
        )
