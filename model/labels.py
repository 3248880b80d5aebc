"""Label maps: a model's output classes, in output order, as data.

A label map is ordered ``(id, name, type)`` rows. Built in: AVA v2.2's 60 evaluated classes
(:func:`ava_v22`) and all 80 AVA actions (:func:`ava_v22_actions`); any other set is read from a
file (:func:`read_label_map`): the AVA ``.pbtxt`` layouts (``label { name label_id label_type }``,
``item { name id }``) or JSON (``{"classes": [{"id", "name", "type"}, ...]}`` or the bare list).
Pose (``PERSON_MOVEMENT``, mutually exclusive) classes come first; a model with pose softmax
scores them with one softmax, and a label set without pose classes is scored by plain sigmoid.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from fbil.model.config import ConfigError

POSE_TYPE = "PERSON_MOVEMENT"
OTHER_TYPE = "OTHER"  # a class of a file that gives no type and is no AVA action: not a pose


class LabelMapError(ConfigError):
    """A label map file that cannot be read, or no label map for a model's class count."""


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
            raise LabelMapError("duplicate class ids in label map")
        if not self.classes:
            raise LabelMapError("the label map has no classes")
        self._index_of_id = {c.id: i for i, c in enumerate(self.classes)}
        pose = [i for i, c in enumerate(self.classes) if c.is_pose]
        if pose != list(range(len(pose))):
            raise LabelMapError(
                f"pose ({POSE_TYPE}) classes must come first in the label map (model output "
                f"order); found them at positions {pose}"
            )
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


@lru_cache(maxsize=1)
def ava_v22_actions() -> LabelMap:
    """All 80 AVA v2.2 actions in id order (the output order of 80-class checkpoints)."""
    text = resources.files("fbil.model").joinpath("data/ava_v2.2_actions.json").read_text("utf-8")
    return LabelMap.from_list(json.loads(text)["classes"])


BUILT_IN = {60: ava_v22, 80: ava_v22_actions}


def default_labels(num_classes: int, option: str = "a label map file") -> LabelMap:
    """The built-in label map of a model with ``num_classes`` outputs (60: the AVA v2.2
    evaluated classes, 80: all AVA actions); :class:`LabelMapError` naming ``option`` (how the
    caller passes a label map) for any other count."""
    if num_classes in BUILT_IN:
        return BUILT_IN[num_classes]()
    raise LabelMapError(
        f"the model has {num_classes} classes and only 60 and 80 (AVA) have a built-in label "
        f"map: pass its label map with {option}"
    )


_PBTXT_BLOCK = re.compile(r"\b(?:item|label)\s*\{([^}]*)\}")
_PBTXT_FIELD = re.compile(r'\b(name|display_name|id|label_id|label_type)\s*:\s*("[^"]*"|\S+)')


def _pbtxt_rows(text: str, source: object) -> list[dict[str, Any]]:
    rows = []
    for n, block in enumerate(_PBTXT_BLOCK.findall(text), 1):
        fields = {k: v.strip('"') for k, v in _PBTXT_FIELD.findall(block)}
        name = fields.get("name", fields.get("display_name"))
        class_id = fields.get("label_id", fields.get("id"))
        if name is None or class_id is None:
            raise LabelMapError(f"{source}: entry {n} lacks a name or an id: {block.strip()!r}")
        rows.append({"id": class_id, "name": name, "type": fields.get("label_type")})
    return rows


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A row without a type gets the AVA action's type when its id and name are an AVA
    action's (the official ``item`` label maps carry no types), else :data:`OTHER_TYPE`."""
    if row.get("type"):
        return row
    ava = {c.id: c for c in ava_v22_actions()}
    known = ava.get(int(row["id"]))
    same = known is not None and known.name == row["name"]
    return {**row, "type": known.type if same else OTHER_TYPE}


def read_label_map(path: str | os.PathLike) -> LabelMap:
    """Read a label map file: ``.json`` or an AVA ``.pbtxt`` (see the module docstring), rows in
    file order (the model output order)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelMapError(f"cannot read label map {path}: {e}") from e
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
            rows = doc["classes"] if isinstance(doc, dict) else doc
        else:
            rows = _pbtxt_rows(text, path)
        if not rows:
            raise LabelMapError(f"{path}: no label map entries")
        return LabelMap.from_list([_typed(dict(r)) for r in rows])
    except LabelMapError as e:
        if str(path) in str(e):
            raise
        raise LabelMapError(f"{path}: {e}") from e
    except (ValueError, KeyError, TypeError) as e:
        raise LabelMapError(f"{path} is not a label map: {e!r}") from e
