"""``POST /detect``: a video segment's keyframes answered while the client waits, through the
one keyframe pipeline (:mod:`fbil.service.keyframes`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect

from fbil.model.video import segment_end
from fbil.service.api.deps import admit, get_state, ready_engine, require_api_key
from fbil.service.api.openapi import error_responses, multipart_body
from fbil.service.engine import Engine
from fbil.service.errors import ClientDisconnectedError, TooManyKeyframesError
from fbil.service.form import read_detect_form
from fbil.service.keyframes import (
    Answered,
    RunReport,
    needs_end,
    plan_from_settings,
    request_keyframes,
    request_options,
    require_detector,
    run_video,
)
from fbil.service.schemas import (
    EXAMPLE_REQUEST,
    DetectRequest,
    DetectResponse,
    KeyframeOut,
    ModelRef,
    Timing,
    VideoOut,
)
from fbil.service.state import ServiceState

T = TypeVar("T")

router = APIRouter()

DETECT_BODY = multipart_body(
    "the video segment (any container/codec ffmpeg reads)", "DetectRequest", EXAMPLE_REQUEST
)


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses=error_responses(400, 401, 408, 413, 415, 422, 503),
    dependencies=[Depends(require_api_key)],
    openapi_extra=DETECT_BODY,
    tags=["detect"],
)
async def detect(request: Request) -> DetectResponse:
    """Actions of the actors boxed on each keyframe of a video segment.

    Multipart form: `video` (the file) and `request` (JSON, see **DetectRequest**). Times are
    seconds from the segment start; boxes are `[x1, y1, x2, y2]` in pixels of the displayed
    frame (or 0..1 with `"box_format": "normalized"`).
    """
    state = get_state(request)
    started = time.perf_counter()
    ready_engine(state)
    admit(state)  # refused before the upload is read when every slot is taken
    # the upload holds no slot (slow ones cannot starve the others): middleware.UploadGuard
    # bounds how many arrive at once and how slowly
    try:
        data, body = await read_detect_form(
            request, max_json_bytes=state.settings.max_request_json_bytes
        )
    except ClientDisconnect:
        raise ClientDisconnectedError("the client disconnected during the upload") from None
    admit(state)
    state.inflight += 1
    state.metrics.inflight.inc()
    cancel = threading.Event()  # set when nobody waits for decoding or detection: they stop
    try:
        work = answer_segment(state, ready_engine(state), data, body, started, cancel)
        return await _unless_disconnected(request, work)
    finally:
        cancel.set()
        state.inflight -= 1
        state.metrics.inflight.dec()


async def answer_segment(
    state: ServiceState,
    engine: Engine,
    data: bytes,
    body: DetectRequest,
    started: float,
    cancel: threading.Event,
) -> DetectResponse:
    """The answer to ``/detect``: the segment's keyframes run through the pipeline at once
    (their clips batched together), answered in the request's order."""
    s, metrics = state.settings, state.metrics
    require_detector(body, engine.detector)
    limits = s.video_limits()
    loop = asyncio.get_running_loop()
    end, end_s = None, 0.0  # the demux pass that finds the segment's end (when needed)
    if needs_end(body):
        begun = time.perf_counter()
        end = await loop.run_in_executor(engine.decode_pool, segment_end, data, limits)
        end_s = time.perf_counter() - begun
    try:
        times, given = request_keyframes(body, end, s.max_keyframes)
    except TooManyKeyframesError as e:  # the long-video path is the answer a user wants
        e.message += "; for a whole video, submit it as a job (POST /v1/jobs)"
        raise
    plan = plan_from_settings(times, given, s, whole_video=False)
    options = request_options(body, s)
    answers: list[KeyframeOut | None] = [None] * len(plan.times)

    async def collect(done: Answered) -> None:
        answers[plan.order[done.index]] = done.answer
        if plan.given[done.index] is None:
            metrics.people.observe(len(done.actors))

    report = await run_video(  # every keyframe at once: their clips batch together
        engine,
        data,
        plan,
        options,
        collect,
        limits=limits,
        in_flight=len(plan.times),
        wait_if_full=False,
        cancel=cancel,
        executor=engine.decode_pool,
    )
    assert report.video is not None and all(a is not None for a in answers)
    _observe(state, report, end_s, plan.detects, answers)  # type: ignore[arg-type]
    meta, video = engine.metadata, report.video
    return DetectResponse(
        model=ModelRef(name=meta.name, version=meta.version, backend=engine.runtime.backend),
        video=VideoOut(
            width=video.width, height=video.height, fps=video.fps, duration=video.duration
        ),
        keyframes=answers,  # type: ignore[arg-type]
        timing_ms=Timing(
            decode=_ms(report.decode + end_s),
            detect=_ms(report.detect),
            detect_wait=_ms(report.detect_wait),
            queue=_ms(report.queue),
            inference=_ms(report.inference),
            total=_ms(time.perf_counter() - started),
        ),
    )


def _observe(
    state: ServiceState, report: RunReport, end_s: float, detects: bool, answers: list[KeyframeOut]
) -> None:
    metrics = state.metrics
    metrics.decode_latency.observe(report.decode + end_s)
    if detects:
        metrics.detect_latency.observe(report.detect)
    metrics.actors.observe(sum(len(a.actors) for a in answers))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first (then cancel it and stop here).

    Only used once the body has been read: the next ASGI message is the disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # we are cancelled ourselves
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task  # lets it take its clips out of the queue
    raise ClientDisconnectedError("the client disconnected")
