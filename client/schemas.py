"""The documents of the HTTP API as typed, frozen dataclasses (field names are the JSON keys).

Requests: :class:`Keyframe` with its :class:`Box` es. Responses: :class:`DetectResult`
(``POST /detect``) and :class:`ModelInfo` (``GET /v1/model``), read with ``from_json``; keys a
newer service adds are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Action",
    "Actor",
    "Box",
    "BoxFormat",
    "DETECT_FIELDS",
    "DetectResult",
    "Keyframe",
    "KeyframeResult",
    "Label",
    "ModelInfo",
    "ModelRef",
    "Timing",
    "VideoMeta",
]

BoxFormat = Literal["pixels", "normalized"]
DETECT_FIELDS = (
    "keyframes",
    "keyframe_interval",
    "person_threshold",
    "box_format",
    "top_k",
    "min_score",
    "all_scores",
)
"""The fields of the ``request`` document of ``POST /detect`` (:meth:`Client.detect`'s
arguments after the video)."""
Number = int | float


# --------------------------------------------------------------------------- request


@dataclass(frozen=True)
class Box:
    """An actor box ``(x1, y1, x2, y2)`` on a keyframe, in pixels of the displayed frame or
    0..1 (the request's ``box_format``); ``id`` is echoed back (default: the box's index)."""

    box: tuple[Number, Number, Number, Number]
    id: str | int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"box": list(self.box)}
        if self.id is not None:
            out["id"] = self.id
        return out


@dataclass(frozen=True)
class Keyframe:
    """Boxes on the frame at ``time`` seconds from the segment start (``None``: the segment's
    middle, for a single keyframe). Boxes may be :class:`Box` es or bare 4-sequences;
    ``None``: the people the service's person detector finds there."""

    time: float | None
    boxes: Sequence[Box | Sequence[Number]] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.boxes is None:
            return {"time": self.time}
        boxes = [b.to_json() if isinstance(b, Box) else {"box": list(b)} for b in self.boxes]
        return {"time": self.time, "boxes": boxes}


# --------------------------------------------------------------------------- POST /detect


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    backend: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRef:
        return cls(str(data["name"]), str(data["version"]), str(data["backend"]))


@dataclass(frozen=True)
class VideoMeta:
    """Displayed size (after the display rotation), nominal frame rate, duration in seconds."""

    width: int
    height: int
    fps: float | None
    duration: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VideoMeta:
        return cls(int(data["width"]), int(data["height"]), data["fps"], data["duration"])


@dataclass(frozen=True)
class Action:
    id: int  # AVA action id
    name: str
    score: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Action:
        return cls(int(data["id"]), str(data["name"]), float(data["score"]))


@dataclass(frozen=True)
class Actor:
    """One box's actions, best first; ``scores``: every class's score in label order (only
    with ``all_scores``). ``source`` is ``client`` (a box sent) or ``detector`` (a person the
    service found: with its ``detection_score`` and a ``track_id`` that is the same for the same
    person on every keyframe of the request)."""

    id: str | int
    box: tuple[Number, ...]  # as sent, or a detected person's in the request's box_format
    actions: tuple[Action, ...]
    scores: tuple[float, ...] | None = None
    source: Literal["client", "detector"] = "client"
    detection_score: float | None = None
    track_id: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Actor:
        scores = data.get("scores")
        detection_score = data.get("detection_score")
        track_id = data.get("track_id")
        return cls(
            data["id"],
            tuple(data["box"]),
            tuple(Action.from_json(a) for a in data["actions"]),
            tuple(float(s) for s in scores) if scores is not None else None,
            data.get("source", "client"),
            float(detection_score) if detection_score is not None else None,
            int(track_id) if track_id is not None else None,
        )


@dataclass(frozen=True)
class KeyframeResult:
    time: float
    actors: tuple[Actor, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyframeResult:
        return cls(float(data["time"]), tuple(Actor.from_json(a) for a in data["actors"]))


@dataclass(frozen=True)
class Timing:
    """Milliseconds spent decoding, waiting for a batch, in inference, and in all; ``detect``:
    detecting and tracking people (0 when every keyframe came with boxes), ``detect_wait``:
    waiting for the detector's thread."""

    decode: float
    detect: float
    detect_wait: float
    queue: float
    inference: float
    total: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timing:
        return cls(
            float(data["decode"]),
            float(data.get("detect", 0.0)),  # services before person detection
            float(data.get("detect_wait", 0.0)),  # services before it was shown
            *(float(data[k]) for k in ("queue", "inference", "total")),
        )


@dataclass(frozen=True)
class DetectResult:
    """The answer of ``POST /detect``: one :class:`KeyframeResult` per keyframe sent, in order."""

    model: ModelRef
    video: VideoMeta
    keyframes: tuple[KeyframeResult, ...]
    timing_ms: Timing

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DetectResult:
        return cls(
            ModelRef.from_json(data["model"]),
            VideoMeta.from_json(data["video"]),
            tuple(KeyframeResult.from_json(k) for k in data["keyframes"]),
            Timing.from_json(data["timing_ms"]),
        )


# --------------------------------------------------------------------------- GET /v1/model


@dataclass(frozen=True)
class Label:
    index: int  # position in the score vector
    id: int  # AVA action id
    name: str
    type: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Label:
        return cls(int(data["index"]), int(data["id"]), str(data["name"]), str(data["type"]))


@dataclass(frozen=True)
class ModelInfo:
    """The served model: name, version, whether it is a demo, runtime, labels, preprocessing,
    limits and batching settings."""

    name: str
    version: str
    description: str
    demo: bool
    backend: str
    runtime: dict[str, Any]
    labels: tuple[Label, ...]
    preprocess: dict[str, Any]
    limits: dict[str, Any]
    batching: dict[str, Any]
    person_detector: dict[str, Any] | None = None  # None: the service detects no people

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            description=str(data["description"]),
            demo=bool(data["demo"]),
            backend=str(data["backend"]),
            runtime=dict(data["runtime"]),
            labels=tuple(Label.from_json(label) for label in data["labels"]),
            preprocess=dict(data["preprocess"]),
            limits=dict(data["limits"]),
            batching=dict(data["batching"]),
            person_detector=dict(data["person_detector"]) if data.get("person_detector") else None,
        )
