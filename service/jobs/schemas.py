"""Request and response documents of the long-video jobs API (``/v1/jobs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fbil.service.schemas import KeyframeRequest

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


class JobRequest(KeyframeRequest):
    """The ``request`` form field of ``POST /v1/jobs`` (a JSON document): the fields of
    ``/detect``'s request, and the files to offer."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_JOB_REQUEST]})

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
