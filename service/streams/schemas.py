"""Request and answer documents of ``/v1/streams``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from fbil.service.schemas import MIN_KEYFRAME_INTERVAL_S, _Strict

StreamState = Literal["connecting", "running", "reconnecting", "stopped", "failed"]
STATES: tuple[str, ...] = ("connecting", "running", "reconnecting", "stopped", "failed")
MAX_RULES = 16
MAX_SMOOTHING = 64


class RuleIn(_Strict):
    """An event rule: ``action_started`` when ``start_n`` of a person's last ``start_m``
    keyframes score ``threshold`` or more for ``action``, ``action_ended`` when ``end_n`` of
    its last ``end_m`` do not."""

    action: str | int = Field(description="the action's name or AVA id")
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    start_n: int = Field(2, ge=1, le=MAX_SMOOTHING)
    start_m: int = Field(3, ge=1, le=MAX_SMOOTHING)
    end_n: int = Field(3, ge=1, le=MAX_SMOOTHING)
    end_m: int = Field(3, ge=1, le=MAX_SMOOTHING)
    name: str | None = Field(None, max_length=100, description="shown in its events")

    @model_validator(mode="after")
    def _n_of_m(self) -> RuleIn:
        if self.start_n > self.start_m or self.end_n > self.end_m:
            raise ValueError("a rule's n is at most its m (start_n <= start_m, end_n <= end_m)")
        return self


class StreamRequest(_Strict):
    """A live source to watch: people from the person detector, keyframes every
    ``keyframe_interval`` seconds, each as ``/detect`` answers it."""

    url: str = Field(
        max_length=2048,
        description="rtsp://, rtmp://, http(s):// (HLS, MPEG-TS): what FFmpeg reads live, "
        "from a host of FBIL_STREAM_ALLOWED_HOSTS",
    )
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    keyframe_interval: float = Field(1.0, ge=MIN_KEYFRAME_INTERVAL_S, le=60.0)
    person_threshold: float | None = Field(None, ge=0.0, le=1.0)
    box_format: Literal["pixels", "normalized"] = "pixels"
    top_k: int = Field(5, ge=0)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    all_scores: bool = False
    rules: list[RuleIn] = Field(default_factory=list, max_length=MAX_RULES)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "url": "rtsp://camera.local:554/stream1",
                    "keyframe_interval": 1.0,
                    "rules": [{"action": "fall down", "threshold": 0.5}],
                }
            ]
        }
    }


class StreamErrorOut(BaseModel):
    code: str
    message: str


class StreamLinks(BaseModel):
    self: str
    events: str


class StreamOut(BaseModel):
    id: str
    url: str = Field(description="the source, without credentials or query values")
    state: StreamState
    created: float
    keyframe_interval: float
    lag_s: float | None = Field(
        description="answer time of the last keyframe minus the arrival of its last frame"
    )
    keyframes: int
    dropped_keyframes: int = Field(description="windows dropped while the model was behind")
    reconnects: int
    last_error: StreamErrorOut | None
    links: StreamLinks


class StreamList(BaseModel):
    streams: list[StreamOut]
