"""Request and response documents of the HTTP API (pydantic)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from fbil.service.errors import ERROR_CODES

MIN_KEYFRAME_INTERVAL_S = 0.1  # keyframe_interval's bounds, /detect's and a job's
MAX_KEYFRAME_INTERVAL_S = 3600.0

EXAMPLE_REQUEST: dict[str, Any] = {
    "keyframes": [
        {
            "time": 2.0,
            "boxes": [
                {"box": [120, 40, 260, 400], "id": "person-1"},
                {"box": [400, 60, 520, 410], "id": 7},
            ],
        }
    ],
    "box_format": "pixels",
    "top_k": 3,
    "min_score": 0.05,
    "all_scores": False,
}

EXAMPLE_RESPONSE: dict[str, Any] = {
    "model": {"name": "fbil-slowfast", "version": "1.0", "backend": "onnx"},
    "video": {"width": 720, "height": 528, "fps": 23.976, "duration": 11.26},
    "keyframes": [
        {
            "time": 2.0,
            "actors": [
                {
                    "id": "person-1",
                    "box": [120, 40, 260, 400],
                    "actions": [
                        {"id": 12, "name": "stand", "score": 0.91},
                        {"id": 80, "name": "watch (a person)", "score": 0.64},
                        {"id": 17, "name": "carry/hold (an object)", "score": 0.33},
                    ],
                    "source": "client",
                },
                {
                    "id": 7,
                    "box": [400, 60, 520, 410],
                    "actions": [
                        {"id": 12, "name": "stand", "score": 0.88},
                        {"id": 79, "name": "talk to (e.g., self, a person, a group)", "score": 0.4},
                    ],
                    "source": "client",
                },
            ],
        }
    ],
    "timing_ms": {
        "decode": 41.2,
        "detect": 0.0,
        "detect_wait": 0.0,
        "queue": 1.3,
        "inference": 87.5,
        "total": 135.0,
    },
}


def _json_number(value: object) -> object:
    """A JSON number, finite: no strings, no booleans, no NaN/Infinity (one error, no union)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number_type", "Input should be a JSON number")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


def _json_id(value: object) -> object:
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise PydanticCustomError("id_type", "Input should be a string or an integer")
    return value


Number = Annotated[int | float, BeforeValidator(_json_number)]
ActorId = Annotated[str | int | None, BeforeValidator(_json_id)]


class _Strict(BaseModel):
    """Request documents: unknown fields refused, JSON types as written (``"107"`` is no
    number, ``true`` no integer), no NaN or Infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BoxIn(_Strict):
    box: list[Number] = Field(description="x1, y1, x2, y2 (pixels or 0..1, see box_format)")
    id: ActorId = Field(None, description="echoed back; default: the box's index")


class KeyframeIn(_Strict):
    time: float | None = Field(
        None,
        description="seconds from the segment start; may be omitted for a single keyframe "
        "(then the middle of the segment)",
    )
    boxes: list[BoxIn] | None = Field(
        None,
        description="actor boxes on this keyframe; omitted: the people the person detector "
        "finds on the frame (each with a track_id)",
    )


class KeyframeRequest(_Strict):
    """The fields every request for keyframes shares (``/detect``'s and a job's ``request``):
    the same names, defaults and bounds everywhere."""

    keyframes: list[KeyframeIn] | None = Field(
        None,
        min_length=1,
        description="keyframes with their actor boxes; omitted: keyframes every "
        "keyframe_interval seconds over the video (the middle of each interval), with detected "
        "people",
    )
    keyframe_interval: float = Field(
        1.0,
        ge=MIN_KEYFRAME_INTERVAL_S,
        le=MAX_KEYFRAME_INTERVAL_S,
        description="seconds between keyframes when keyframes is omitted",
    )
    person_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="detected people scored below are left out (default: the service's "
        "FBIL_PERSON_THRESHOLD)",
    )
    box_format: Literal["pixels", "normalized"] = "pixels"
    top_k: int = Field(5, ge=0, description="actions listed per actor")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="actions below are left out")
    all_scores: bool = Field(False, description="add every class's score, in label order")


class DetectRequest(KeyframeRequest):
    """The ``request`` form field of ``POST /detect`` (a JSON document)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REQUEST]})


class ModelRef(BaseModel):
    name: str
    version: str
    backend: str


class VideoOut(BaseModel):
    width: int
    height: int
    fps: float | None
    duration: float | None


class ActionOut(BaseModel):
    id: int = Field(description="AVA action id")
    name: str
    score: float


class ActorOut(BaseModel):
    id: str | int = Field(description="the box's id or index; a detected person's track_id")
    box: list[int | float] = Field(
        description="as the caller sent it; a detected person's in the request's box_format"
    )
    actions: list[ActionOut] = Field(description="best first")
    scores: list[float] | None = Field(
        None,
        description="every class's score in label order (only with all_scores)",
        exclude_if=lambda v: v is None,
    )
    source: Literal["client", "detector"] = Field(
        "client", description="the box came with the request or from the person detector"
    )
    detection_score: float | None = Field(
        None,
        description="the person detector's score (detected people only)",
        exclude_if=lambda v: v is None,
    )
    track_id: int | None = Field(
        None,
        description="the same for the same person on every keyframe of the request "
        "(detected people only)",
        exclude_if=lambda v: v is None,
    )


class KeyframeOut(BaseModel):
    time: float
    actors: list[ActorOut]


class Timing(BaseModel):
    decode: float
    detect: float = Field(0.0, description="detecting and tracking people (0: all boxes given)")
    detect_wait: float = Field(
        0.0, description="waiting for the person detector's thread (other requests use it)"
    )
    queue: float
    inference: float
    total: float


class DetectResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_RESPONSE]})

    model: ModelRef
    video: VideoOut
    keyframes: list[KeyframeOut]
    timing_ms: Timing


class ErrorDetail(BaseModel):
    code: str = Field(
        description="machine-readable; the list is in README's Errors section",
        json_schema_extra={"enum": [e.code for e in ERROR_CODES]},
    )
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


class LabelOut(BaseModel):
    index: int
    id: int
    name: str
    type: str


class ModelCard(BaseModel):
    """``GET /v1/model``: what is served and how."""

    name: str
    version: str
    description: str
    demo: bool
    backend: str
    runtime: dict[str, Any] = Field(description="device or ONNX Runtime providers, and precision")
    labels: list[LabelOut]
    preprocess: dict[str, Any]
    limits: dict[str, Any]
    batching: dict[str, Any]
    person_detector: dict[str, Any] | None = Field(
        None, description="what finds people on keyframes without boxes (null: FBIL_DETECTOR=none)"
    )


class Status(BaseModel):
    status: str
