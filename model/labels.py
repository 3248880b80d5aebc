"""AVA v2.2 label map: the 60 evaluated classes, in model output order."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

POSE_TYPE = "PERSON_MOVEMENT"


@dataclass(frozen=True)
class ActionClass:
    """One output class: its AVA id, name and AVA action type."""

    id: int
    name: str
    type: str

    @property
    def is_pose(self) -> bool:
        """Pose (person movement) classes are mutually exclusive: scored by one softmax."""
        return self.type == POSE_TYPE


class LabelMap:
    """Index <-> AVA id <-> name mapping for a model's output classes."""

    def __init__(self, classes: Sequence[ActionClass]) -> None:
        self.classes = tuple(classes)
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate AVA ids in label map")
        self._index_of_id = {c.id: i for i, c in enumerate(self.classes)}
        pose = [i for i, c in enumerate(self.classes) if c.is_pose]
        if pose != list(range(len(pose))):
            raise ValueError("pose classes must come first in the label map")
        self.num_pose = len(pose)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and self.classes == other.classes

    def __hash__(self) -> int:
        return hash(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[ActionClass]:
        return iter(self.classes)

    def __getitem__(self, index: int) -> ActionClass:
        return self.classes[index]

    def index_of(self, ava_id: int) -> int:
        """Output index of an AVA action id (KeyError if the id is not a model class)."""
        return self._index_of_id[ava_id]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    def to_list(self) -> list[dict[str, Any]]:
        return [{"id": c.id, "name": c.name, "type": c.type} for c in self.classes]

    @classmethod
    def from_list(cls, rows: Sequence[dict[str, Any]]) -> LabelMap:
        return cls([ActionClass(int(r["id"]), str(r["name"]), str(r["type"])) for r in rows])


@lru_cache(maxsize=1)
def ava_v22() -> LabelMap:
    """The 60-class AVA v2.2 evaluation label map shipped with the package."""
    text = resources.files("fbil.model").joinpath("data/ava_v2.2_labels.json").read_text("utf-8")
    return LabelMap.from_list(json.loads(text)["classes"])
