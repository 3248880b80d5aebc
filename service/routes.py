"""HTTP routes: ``POST /detect``, health, readiness, model card and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import torch
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from fbil.model import LabelMap
from fbil.model.video import Clip, VideoInfo, VideoTooLargeError, decode_clips
from fbil.service.batching import ClipResult
from fbil.service.boxes import normalize_boxes
from fbil.service.errors import (
    BadRequestError,
    ClientDisconnectedError,
    ModelFailedError,
    NotReadyError,
    OverloadedError,
    UnauthorizedError,
)
from fbil.service.runtimes import Runtime
from fbil.service.schemas import (
    EXAMPLE_REQUEST,
    ActionOut,
    ActorOut,
    DetectRequest,
    DetectResponse,
    ErrorResponse,
    KeyframeOut,
    LabelOut,
    ModelCard,
    ModelRef,
    Status,
    Timing,
    VideoOut,
)
from fbil.service.state import ServiceState

T = TypeVar("T")

router = APIRouter()

DETECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video", "request"],
                    "properties": {
                        "video": {
                            "type": "string",
                            "format": "binary",
                            "description": "the video segment (any container/codec ffmpeg reads)",
                        },
                        "request": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "description": "a JSON document (schema: DetectRequest)",
                            "example": json.dumps(EXAMPLE_REQUEST),
                        },
                    },
                }
            }
        },
    }
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key")


async def require_api_key(request: Request) -> None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` when API keys are configured.

    Compared in constant time with every configured key (no early exit).
    """
    keys = get_state(request).settings.api_key_values()
    if not keys:
        return
    presented = _presented_key(request)
    if presented is None:
        raise UnauthorizedError("an API key is required", headers={"WWW-Authenticate": "Bearer"})
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    if not matched:
        raise UnauthorizedError("invalid API key", headers={"WWW-Authenticate": "Bearer"})


def _retry_after(state: ServiceState) -> dict[str, str]:
    return {"Retry-After": str(state.settings.retry_after_s)}


@router.get("/healthz", response_model=Status, tags=["health"])
async def healthz(request: Request) -> Status:
    """The process is alive (503 only when the model failed to load: restart it)."""
    state = get_state(request)
    if state.load_error:
        raise ModelFailedError(f"the model failed to load: {state.load_error}")
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses=_errors(503), tags=["health"])
async def readyz(request: Request) -> Status:
    """200 once the model has run a real warm-up forward; 503 before (or if it failed)."""
    state = get_state(request)
    if not state.ready:
        message = state.load_error or "the model is loading"
        raise NotReadyError(message, headers=_retry_after(state))
    return Status(status="ready")


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = get_state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/model",
    response_model=ModelCard,
    responses=_errors(401, 503),
    dependencies=[Depends(require_api_key)],
    tags=["model"],
)
async def model_card(request: Request) -> ModelCard:
    """The served model: name, version, labels, preprocessing, runtime and limits."""
    state = get_state(request)
    runtime = _runtime(state)
    meta = runtime.metadata
    s = state.settings
    return ModelCard(
        name=meta.name,
        version=meta.version,
        description=meta.description,
        demo=meta.demo,
        backend=runtime.backend,
        runtime=runtime.describe(),
        labels=[
            LabelOut(index=i, id=c.id, name=c.name, type=c.type) for i, c in enumerate(meta.labels)
        ],
        preprocess=meta.preprocess.to_dict(),
        limits={
            **vars(s.video_limits()),
            "max_keyframes": s.max_keyframes,
            "max_boxes_per_keyframe": s.max_boxes_per_keyframe,
            "max_upload_bytes": s.upload_limit,
        },
        batching={
            "max_batch_size": s.max_batch_size,
            "max_batch_delay_ms": s.max_batch_delay_ms,
            "max_queue_size": s.max_queue_size,
            "max_inflight_requests": s.max_inflight_requests,
        },
    )


def _runtime(state: ServiceState) -> Runtime:
    if not state.ready or state.runtime is None:
        raise NotReadyError(state.load_error or "the model is loading", headers=_retry_after(state))
    return state.runtime


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses=_errors(400, 401, 413, 415, 422, 503),
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
    _runtime(state)
    if state.inflight >= state.settings.max_inflight_requests:
        state.metrics.rejected.labels("inflight").inc()
        raise OverloadedError(
            f"{state.inflight} requests in flight, the limit is "
            f"{state.settings.max_inflight_requests}",
            headers=_retry_after(state),
        )
    state.inflight += 1
    try:
        return await _detect(request, state, started)
    finally:
        state.inflight -= 1


async def _read_form(request: Request) -> tuple[bytes, DetectRequest]:
    try:
        return await _parse_form(request)
    except ClientDisconnect:
        raise ClientDisconnectedError("the client disconnected during the upload") from None


async def _parse_form(request: Request) -> tuple[bytes, DetectRequest]:
    async with request.form(max_files=1, max_fields=1) as form:
        video, text = form.get("video"), form.get("request")
        if not isinstance(video, UploadFile):
            raise BadRequestError("the form needs a file part named 'video'")
        if isinstance(text, UploadFile):
            text = (await text.read()).decode("utf-8", errors="replace")
        if text is None:
            raise BadRequestError("the form needs a part named 'request' holding JSON")
        data = await video.read()
    try:
        return data, DetectRequest.model_validate_json(text)
    except ValidationError as e:
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"]}
            for err in e.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise BadRequestError("invalid request JSON", {"errors": errors}) from None


async def _detect(request: Request, state: ServiceState, started: float) -> DetectResponse:
    settings, metrics = state.settings, state.metrics
    runtime = _runtime(state)
    data, body = await _read_form(request)
    if len(body.keyframes) > settings.max_keyframes:
        raise VideoTooLargeError(
            f"{len(body.keyframes)} keyframes requested, the limit is {settings.max_keyframes}"
        )
    loop = asyncio.get_running_loop()
    cancel = threading.Event()  # set when nobody waits for the decode: it stops at once
    decode = functools.partial(
        decode_clips,
        data,
        [k.time for k in body.keyframes],
        runtime.metadata.preprocess,
        settings.video_limits(),
        cancel=cancel,
    )
    decode_started = time.perf_counter()
    try:
        info, clips = await _unless_disconnected(
            request, loop.run_in_executor(state.decode_pool, decode)
        )
    finally:
        cancel.set()
    decode_s = time.perf_counter() - decode_started
    metrics.decode_latency.observe(decode_s)
    boxes = [
        normalize_boxes(
            [b.box for b in k.boxes],
            body.box_format,
            info.width,
            info.height,
            max_boxes=settings.max_boxes_per_keyframe,
        )
        for k in body.keyframes
    ]
    metrics.actors.observe(sum(len(b) for b in boxes))
    used = [i for i, b in enumerate(boxes) if len(b)]
    assert state.batcher is not None
    results: list[ClipResult] = await _unless_disconnected(
        request,
        state.batcher.submit([clips[i].clip for i in used], [boxes[i] for i in used]),
    )
    by_keyframe = dict(zip(used, results, strict=True))
    batches = {r.batch_id: r.inference_ms for r in results}
    return DetectResponse(
        model=ModelRef(
            name=runtime.metadata.name, version=runtime.metadata.version, backend=runtime.backend
        ),
        video=_video_out(info),
        keyframes=[
            _keyframe_out(body, i, clip, by_keyframe.get(i), runtime.metadata.labels)
            for i, clip in enumerate(clips)
        ],
        timing_ms=Timing(
            decode=round(decode_s * 1000, 3),
            queue=round(max((r.queue_ms for r in results), default=0.0), 3),
            inference=round(sum(batches.values()), 3),
            total=round((time.perf_counter() - started) * 1000, 3),
        ),
    )


def _video_out(info: VideoInfo) -> VideoOut:
    return VideoOut(width=info.width, height=info.height, fps=info.fps, duration=info.duration)


def _keyframe_out(
    body: DetectRequest,
    index: int,
    clip: Clip,
    result: ClipResult | None,
    labels: LabelMap,
) -> KeyframeOut:
    boxes = body.keyframes[index].boxes
    actors = []
    for j, box in enumerate(boxes):
        assert result is not None  # every keyframe with boxes ran
        scores = result.scores[j]
        order = torch.argsort(scores, descending=True, stable=True)[: body.top_k].tolist()
        actions = [
            ActionOut(id=labels[c].id, name=labels[c].name, score=float(scores[c]))
            for c in order
            if float(scores[c]) >= body.min_score
        ]
        actors.append(
            ActorOut(
                id=box.id if box.id is not None else j,
                box=box.box,
                actions=actions,
                scores=scores.tolist() if body.all_scores else None,
            )
        )
    return KeyframeOut(time=clip.time, actors=actors)


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
