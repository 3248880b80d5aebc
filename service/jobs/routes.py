"""HTTP routes of long-video jobs: ``/v1/jobs`` (submit, list), ``/v1/jobs/{id}`` (state,
cancel), ``/v1/jobs/{id}/results`` (JSON lines), ``/v1/jobs/{id}/results.csv`` (AVA) and
``/v1/jobs/{id}/video`` (the annotated MP4).

Same keys and error shape as ``/detect``. With API keys on, a job belongs to the key that
created it: any other key gets 404 ``job_not_found``, as for an id that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import IO, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from fbil.model.preprocess import scaled_size
from fbil.model.video import KeyframeOutOfRangeError, probe, segment_end
from fbil.service.api.deps import Owner, get_state, ready_engine
from fbil.service.api.openapi import error_responses, multipart_body
from fbil.service.errors import (
    ClientDisconnectedError,
    JobNotFoundError,
    JobVideoUnavailableError,
)
from fbil.service.form import parse_request_json, read_form
from fbil.service.jobs.schemas import (
    EXAMPLE_JOB_REQUEST,
    JobError,
    JobLinks,
    JobList,
    JobOut,
    JobProgress,
    JobRequest,
)
from fbil.service.jobs.store import ANNOTATED_FILE, VIDEO_FILE, Job, new_job_id
from fbil.service.jobs.worker import JobWorker, Reservation
from fbil.service.keyframes import client_actors, request_keyframes, require_detector
from fbil.service.outputs import ava_csv

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# the id is read from the path (no validated parameter: FastAPI would document a 422 never sent)
JOB_ID: dict[str, Any] = {
    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
}

QUOTA_STEP_BYTES = 1024 * 1024  # an upload reserves quota in steps of this many bytes

JOB_BODY = multipart_body(
    "the whole video (any container/codec ffmpeg reads), streamed to disk",
    "JobRequest",
    EXAMPLE_JOB_REQUEST,
)


def _worker(request: Request) -> JobWorker:
    return request.app.state.jobs


def _job_out(job: Job) -> JobOut:
    base = f"/v1/jobs/{job.id}"
    outputs = job.request.get("outputs", ["json"])
    return JobOut(
        id=job.id,
        state=job.state,
        progress=JobProgress(done=job.done, total=job.total),
        created=job.created,
        started=job.started,
        finished=job.finished,
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        video={"width": job.width, "height": job.height},
        links=JobLinks(
            self=base,
            results=f"{base}/results",
            results_csv=f"{base}/results.csv" if "ava_csv" in outputs else None,
            video=f"{base}/video" if "video" in outputs else None,
        ),
    )


async def _find(request: Request, job_id: str, owner: str) -> Job:
    """The caller's job (404 otherwise), read off the event loop (a row holds up to
    ``FBIL_JOB_MAX_KEYFRAMES`` times and keyframes to parse)."""
    store = _worker(request).ready_store()
    job = await asyncio.to_thread(store.get, job_id, owner)
    if job is None:
        raise JobNotFoundError(f"no job {job_id[:64]!r}")
    return job


class _QuotaFile:
    """The upload's file: its bytes are reserved against the jobs' disk quota before they
    are written (in steps of ``QUOTA_STEP_BYTES``)."""

    def __init__(self, file: IO[bytes], reservation: Reservation) -> None:
        self.file, self.reservation = file, reservation
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.reservation.bytes:
            self.reservation.grow(max(self.written - self.reservation.bytes, QUOTA_STEP_BYTES))
        return self.file.write(data)


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses=error_responses(400, 401, 408, 413, 415, 422, 503, 507),
    openapi_extra=JOB_BODY,
)
async def submit_job(request: Request, response: Response, owner: Owner) -> JobOut:
    """Submit a whole video as a job (multipart `video` and `request`, see **JobRequest**).

    Answers 202 at once with the job's id and links (`Location`); follow it with
    `GET /v1/jobs/{id}` and read `GET /v1/jobs/{id}/results` while it runs.
    """
    state = get_state(request)
    ready_engine(state)
    worker = _worker(request)
    s = state.settings
    with worker.reserve() as reservation:  # a queue place, then bytes, before accepting
        declared = request.headers.get("content-length", "")
        reservation.grow(int(declared) if declared.isdigit() else 0)
        job_id = new_job_id()
        folder = worker.store.job_dir(job_id)
        folder.mkdir(parents=True)
        path = folder / VIDEO_FILE
        try:
            with path.open("wb") as file:
                counted = _QuotaFile(file, reservation)
                try:
                    raw = await read_form(
                        request,
                        counted,  # type: ignore[arg-type]
                        max_json_bytes=s.max_request_json_bytes,
                    )
                except ClientDisconnect:
                    raise ClientDisconnectedError(
                        "the client disconnected during the upload"
                    ) from None
                file.flush()
                await asyncio.to_thread(os.fsync, file.fileno())
            body = parse_request_json(raw, JobRequest)
            job = await asyncio.to_thread(_create, worker, job_id, owner, body, path)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        reservation.accept(counted.written)
    worker.wake()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _job_out(job)


def _create(worker: JobWorker, job_id: str, owner: str, body: JobRequest, path) -> Job:
    """Check the video and the request (the errors of ``/detect``), then store the job."""
    s = worker.settings
    limits = s.job_video_limits()
    info = probe(path, limits)
    engine = worker.state.engine
    assert engine is not None  # submit_job checked that the model is ready
    height, width = scaled_size(info.height, info.width, engine.metadata.preprocess.short_side)
    engine.check_input(height, width, 1)  # before the job is queued
    duration = segment_end(path, limits)
    times, given = request_keyframes(body, duration, s.job_max_keyframes)
    if any(b < a for a, b in zip(times, times[1:], strict=False)):
        raise KeyframeOutOfRangeError("job keyframe times must be ascending")
    for t in times:
        if not 0 <= t <= duration:
            raise KeyframeOutOfRangeError(f"keyframe time {t} s is outside 0..{duration:.3f} s")
    for boxes in given:  # 400 bad_box, 413 too_many_boxes now, not when the job runs
        if boxes is not None:
            client_actors(boxes, body.box_format, info.width, info.height, s.max_boxes_per_keyframe)
    require_detector(body, engine.detector)  # 400 boxes_required
    request = body.model_dump(mode="json")
    return worker.store.create(job_id, owner, request, times, info.width, info.height)


@router.get("", response_model=JobList, responses=error_responses(401, 503))
async def list_jobs(request: Request, owner: Owner) -> JobList:
    """The caller's jobs, newest first."""
    store = _worker(request).ready_store()
    jobs = await asyncio.to_thread(store.list, owner)  # rows to parse: off the event loop
    return JobList(jobs=[_job_out(j) for j in jobs])


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses=error_responses(401, 404, 503),
    openapi_extra=JOB_ID,
)
async def get_job(request: Request, owner: Owner) -> JobOut:
    """A job's state, progress (keyframes done / total), times and error."""
    return _job_out(await _find(request, request.path_params["job_id"], owner))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses=error_responses(401, 404, 503),
    openapi_extra=JOB_ID,
)
async def delete_job(request: Request, owner: Owner) -> JobOut:
    """Cancel the job if it has not finished, and delete it with its files (then 404)."""
    job = await _find(request, request.path_params["job_id"], owner)
    worker = _worker(request)
    if job.state in ("queued", "running"):
        await worker.cancel(job)
    final = await asyncio.to_thread(worker.store.get, job.id) or job
    await asyncio.to_thread(worker.store.delete, job.id)
    with contextlib.suppress(Exception):
        worker.usage = await asyncio.to_thread(worker.store.disk_usage)
    worker.update_gauges()
    return _job_out(final)


@router.get(
    "/{job_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "one JSON object per keyframe in time order (a keyframe of /detect)",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 404, 500, 503),
    },
    openapi_extra=JOB_ID,
)
async def job_results(request: Request, owner: Owner) -> StreamingResponse:
    """The keyframes done so far (all of them once the job succeeded), one JSON line each."""
    job = await _find(request, request.path_params["job_id"], owner)
    store = _worker(request).store
    await asyncio.to_thread(store.verify, job)  # a damaged file: an error, not a cut body
    return StreamingResponse(store.lines(job), media_type="application/x-ndjson")


@router.get(
    "/{job_id}/results.csv",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "AVA detections: video_id, timestamp, x1, y1, x2, y2 (0..1), "
            "action_id, score, track_id; no header",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 404, 500, 503),
    },
    openapi_extra=JOB_ID,
)
async def job_results_csv(request: Request, owner: Owner) -> StreamingResponse:
    """The results so far in the AVA detections CSV format (plus the track id)."""
    job = await _find(request, request.path_params["job_id"], owner)
    store = _worker(request).store
    await asyncio.to_thread(store.verify, job)  # a damaged file: an error, not a cut body
    rows = ava_csv(
        store.lines(job),
        job.request.get("video_id", "video"),
        job.request.get("box_format", "pixels"),
        job.width,
        job.height,
    )
    return StreamingResponse(rows, media_type="text/csv")


@router.get(
    "/{job_id}/video",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the annotated MP4: boxes, track ids and top actions drawn",
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(401, 404, 503),
    },
    openapi_extra=JOB_ID,
)
async def job_video(request: Request, owner: Owner) -> FileResponse:
    """The annotated video of a job that asked for `video` in `outputs`, once it succeeded."""
    job = await _find(request, request.path_params["job_id"], owner)
    path = _worker(request).store.job_dir(job.id) / ANNOTATED_FILE
    if "video" not in job.request.get("outputs", []):
        raise JobVideoUnavailableError("the job did not ask for `video` in its `outputs`")
    if job.state != "succeeded" or not path.is_file():
        raise JobVideoUnavailableError(
            f"the job is {job.state}: its video is drawn once all keyframes are done"
        )
    return FileResponse(path, media_type="video/mp4", filename=f"{job.request['video_id']}.mp4")
