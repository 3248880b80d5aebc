"""Request and response documents of the long-video jobs API (``/v1/jobs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fbil.service.schemas import KeyframeIn, _Strict

Output = Literal["json", "ava_csv", "video"]

EXAMPLE_JOB_REQUEST: dict[str, Any] = {
    "keyframes": [
        {"time": 0.5, "boxes": [{"box": [120, 40, 260, 400], "id": "person-1"}]},
        {"time": 1.5, "boxes": [{"box": [124, 42, 262, 398], "id": "person-1"}]},
    ],
    "top_k": 3,
    "min_score": 0.05,
    "outputs": ["json", "ava_csv"],
    "video_id": "camera-7",
}


class JobRequest(_Strict):
    """The ``request`` form field of ``POST /v1/jobs`` (a JSON document)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [EXAMPLE_JOB_REQUEST]},
    )

    keyframe_interval: float = Field(
        1.0, ge=0.1, le=3600.0, description="seconds between keyframes (without `keyframes`)"
    )
    keyframes: list[KeyframeIn] | None = Field(
        None,
        min_length=1,
        description="keyframes with their actor boxes, times ascending; without them: "
        "keyframes every `keyframe_interval` s with automatic person boxes",
    )
    box_format: Literal["pixels", "normalized"] = "pixels"
    top_k: int = Field(5, ge=0, description="actions listed per actor")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="actions below are left out")
    person_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="automatic boxes: the person detector's minimum score"
    )
    outputs: list[Output] = Field(
        default_factory=lambda: ["json"],
        min_length=1,
        description="results to offer: `json` lines, the AVA `ava_csv`, the annotated MP4 "
        "`video` (drawn once all keyframes are done)",
    )
    video_id: str = Field(
        "video",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="the first column of the AVA CSV",
    )


class JobLinks(BaseModel):
    self: str
    results: str
    results_csv: str | None = None
    video: str | None = None


class JobProgress(BaseModel):
    done: int = Field(description="keyframes whose results are stored")
    total: int


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    """``GET /v1/jobs/{id}``: a job's state and progress."""

    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: JobProgress
    created: float = Field(description="Unix time")
    started: float | None
    finished: float | None
    error: JobError | None
    video: dict[str, int] = Field(description="width and height of the displayed frame")
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobOut]
