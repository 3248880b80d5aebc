"""HTTP routes: ``POST /detect``, health, readiness, model card and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import torch
from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from fbil.model import LabelMap
from fbil.model.tracking import TrackedPeople
from fbil.model.video import Clip, VideoInfo, decode_clips, segment_end
from fbil.service.batching import ClipResult
from fbil.service.boxes import normalize_boxes
from fbil.service.errors import (
    BoxesRequiredError,
    ClientDisconnectedError,
    ModelFailedError,
    NotReadyError,
    OutsideEngineProfileError,
    OverloadedError,
    TooManyKeyframesError,
    UnauthorizedError,
    codes_with_status,
)
from fbil.service.form import read_detect_form
from fbil.service.people import box_out, detect_people, keyframe_times
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


def multipart_body(video: str, schema: str, example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a form with a ``video`` file and a ``request`` JSON part."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["video", "request"],
                        "properties": {
                            "video": {"type": "string", "format": "binary", "description": video},
                            "request": {
                                "$ref": f"#/components/schemas/{schema}",
                                "description": "the request, a JSON document",
                                "example": example,
                            },
                        },
                    },
                    "encoding": {"request": {"contentType": "application/json"}},
                }
            },
        }
    }


DETECT_BODY = multipart_body(
    "the video segment (any container/codec ffmpeg reads)", "DetectRequest", EXAMPLE_REQUEST
)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: the one error shape, the codes of each status named."""
    return {
        status: {
            "model": ErrorResponse,
            "description": "error codes: " + ", ".join(f"`{c}`" for c in codes_with_status(status)),
        }
        for status in statuses
    }


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


# the two ways to send a key; as dependencies they put the security schemes into the OpenAPI
BEARER = HTTPBearer(
    scheme_name="Bearer",
    auto_error=False,
    description="`Authorization: Bearer <key>` (FBIL_API_KEYS)",
)
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="X-API-Key",
    auto_error=False,
    description="`X-API-Key: <key>` (FBIL_API_KEYS)",
)
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
HeaderKey = Annotated[str | None, Security(API_KEY_HEADER)]

# public bodies never carry the path or the exception: both are in the log
LOAD_FAILED = "the model failed to load (the service log says why)"


async def require_api_key(request: Request, bearer: BearerKey, header: HeaderKey) -> None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` when API keys are configured.

    An ``Authorization`` header, when sent, is the credential: one that is not ``Bearer`` with a
    key (another scheme, an empty token) is refused even next to a valid ``X-API-Key``.
    Compared in constant time with every configured key (no early exit).
    """
    keys = get_state(request).settings.api_key_values()
    if not keys:
        return
    if "authorization" in request.headers:
        presented: str | None = bearer.credentials.strip() if bearer else ""
    else:
        presented = header
    if presented is None:
        raise UnauthorizedError("an API key is required", headers={"WWW-Authenticate": "Bearer"})
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    if not matched:
        raise UnauthorizedError("invalid API key", headers={"WWW-Authenticate": "Bearer"})


def require_api_key_unless(setting: Literal["public_metrics", "public_docs"]) -> Callable:
    """:func:`require_api_key`, skipped when the boolean setting ``setting`` opens the route."""

    async def dependency(request: Request, bearer: BearerKey, header: HeaderKey) -> None:
        if not getattr(get_state(request).settings, setting):
            await require_api_key(request, bearer, header)

    return dependency


def _retry_after(state: ServiceState) -> dict[str, str]:
    return {"Retry-After": str(state.settings.retry_after_s)}


@router.get("/healthz", response_model=Status, responses=_errors(503), tags=["health"])
async def healthz(request: Request) -> Status:
    """The process is alive (503 only when the model failed to load: restart it)."""
    state = get_state(request)
    if state.load_error:
        raise ModelFailedError(LOAD_FAILED)
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses=_errors(503), tags=["health"])
async def readyz(request: Request) -> Status:
    """200 once the model has run a real warm-up forward; 503 before (or if it failed)."""
    state = get_state(request)
    if not state.ready:
        raise NotReadyError(_not_ready_message(state), headers=_retry_after(state))
    return Status(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **_errors(401),
    },
    dependencies=[Depends(require_api_key_unless("public_metrics"))],
    tags=["health"],
)
async def metrics(request: Request) -> Response:
    """Prometheus text format (needs a key when API keys are on, unless FBIL_PUBLIC_METRICS)."""
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
            "max_request_json_bytes": s.max_request_json_bytes,
        },
        batching={
            "max_batch_size": s.max_batch_size,
            "max_batch_delay_ms": s.max_batch_delay_ms,
            "max_queue_size": s.max_queue_size,
            "max_inflight_requests": s.max_inflight_requests,
        },
        person_detector=None
        if state.detector is None
        else {
            **state.detector.describe(),
            "person_threshold": s.person_threshold,
            "track_interval_s": s.track_interval_s,
            "max_detect_frames": s.max_detect_frames,
        },
    )


def _runtime(state: ServiceState) -> Runtime:
    if not state.ready or state.runtime is None:
        raise NotReadyError(_not_ready_message(state), headers=_retry_after(state))
    return state.runtime


def _not_ready_message(state: ServiceState) -> str:
    return LOAD_FAILED if state.load_error else "the model is loading"


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses=_errors(400, 401, 408, 413, 415, 422, 503),
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
    _admit(state)  # refused before the upload is read when every slot is taken
    # the upload holds no slot (slow ones cannot starve the others): middleware.UploadGuard
    # bounds how many arrive at once and how slowly
    data, body = await _read_form(request)
    _admit(state)
    state.inflight += 1
    state.metrics.inflight.inc()
    try:
        return await _detect(request, state, started, data, body)
    finally:
        state.inflight -= 1
        state.metrics.inflight.dec()


def _admit(state: ServiceState) -> None:
    if state.inflight >= state.settings.max_inflight_requests:
        state.metrics.rejected.labels("inflight").inc()
        raise OverloadedError(
            f"{state.inflight} requests in flight, the limit is "
            f"{state.settings.max_inflight_requests}",
            headers=_retry_after(state),
        )


async def _read_form(request: Request) -> tuple[bytes, DetectRequest]:
    try:
        return await _parse_form(request)
    except ClientDisconnect:
        raise ClientDisconnectedError("the client disconnected during the upload") from None


async def _parse_form(request: Request) -> tuple[bytes, DetectRequest]:
    max_json_bytes = get_state(request).settings.max_request_json_bytes
    return await read_detect_form(request, max_json_bytes=max_json_bytes)


async def _detect(
    request: Request, state: ServiceState, started: float, data: bytes, body: DetectRequest
) -> DetectResponse:
    cancel = threading.Event()  # set when nobody waits for decoding or detection: they stop
    try:
        return await _run_detect(request, state, started, data, body, cancel)
    finally:
        cancel.set()


async def _run_detect(
    request: Request,
    state: ServiceState,
    started: float,
    data: bytes,
    body: DetectRequest,
    cancel: threading.Event,
) -> DetectResponse:
    settings, metrics = state.settings, state.metrics
    runtime = _runtime(state)
    if body.keyframes is not None and len(body.keyframes) > settings.max_keyframes:
        raise TooManyKeyframesError(
            f"{len(body.keyframes)} keyframes requested, the limit is {settings.max_keyframes}",
            {"max_keyframes": settings.max_keyframes},
        )
    _require_detector(state, body)
    loop = asyncio.get_running_loop()
    limits = settings.video_limits()
    end_s = 0.0  # the demux pass that finds the segment's end (no keyframes sent)
    if body.keyframes is None:
        end, end_s = await _unless_disconnected(
            request, _timed(loop.run_in_executor(state.decode_pool, segment_end, data, limits))
        )
        times: list[float | None] = list(
            keyframe_times(end, body.keyframe_interval, settings.max_keyframes)
        )
        detect_at = list(range(len(times)))
    else:
        times = [k.time for k in body.keyframes]
        detect_at = [i for i, k in enumerate(body.keyframes) if k.boxes is None]
    decode = functools.partial(
        decode_clips, data, times, runtime.metadata.preprocess, limits, cancel=cancel
    )
    decoding = _timed(loop.run_in_executor(state.decode_pool, decode))
    detecting = _timed(_detection(state, body, data, [times[i] for i in detect_at], cancel))
    ((info, clips), decode_s), (people, detect_s) = await _unless_disconnected(
        request, asyncio.gather(decoding, detecting)
    )
    decode_s += end_s
    detect_s = detect_s if detect_at else 0.0  # no keyframe needed the detector
    metrics.decode_latency.observe(decode_s)
    actors = _actors(body, times, detect_at, people, info, settings.max_boxes_per_keyframe)
    if detect_at:
        metrics.detect_latency.observe(detect_s)
        for i in detect_at:
            metrics.people.observe(len(actors[i].boxes))
    metrics.actors.observe(sum(len(a.boxes) for a in actors))
    used = [i for i, a in enumerate(actors) if len(a.boxes)]
    check_input_shapes(runtime, [(*clips[i].clip.shape[-2:], len(actors[i].boxes)) for i in used])
    assert state.batcher is not None
    results: list[ClipResult] = await _unless_disconnected(
        request,
        state.batcher.submit([clips[i].clip for i in used], [actors[i].boxes for i in used]),
    )
    by_keyframe = dict(zip(used, results, strict=True))
    batches = {r.batch_id: r.inference_ms for r in results}
    return DetectResponse(
        model=ModelRef(
            name=runtime.metadata.name, version=runtime.metadata.version, backend=runtime.backend
        ),
        video=_video_out(info),
        keyframes=[
            _keyframe_out(body, actors[i], clip, by_keyframe.get(i), runtime.metadata.labels)
            for i, clip in enumerate(clips)
        ],
        timing_ms=Timing(
            decode=round(decode_s * 1000, 3),
            detect=round(detect_s * 1000, 3),
            queue=round(max((r.queue_ms for r in results), default=0.0), 3),
            inference=round(sum(batches.values()), 3),
            total=round((time.perf_counter() - started) * 1000, 3),
        ),
    )


def check_input_shapes(runtime: Runtime, clips: Iterable[tuple[int, int, int]]) -> None:
    """422 ``outside_engine_profile`` before inference when a clip ``(height, width, boxes)``
    (its size after resizing) lies outside what the runtime's engine covers (TensorRT's
    profile); the engine would fail on it with an internal error."""
    shapes = runtime.input_shapes()
    if shapes is None:
        return
    for height, width, boxes in clips:
        if (problem := shapes.problem(height, width, boxes)) is not None:
            raise OutsideEngineProfileError(
                problem, {"max_side": shapes.max_side, "max_rois": shapes.max_rois}
            )


def _require_detector(state: ServiceState, body: DetectRequest) -> None:
    """Keyframes without boxes need the person detector (off with ``FBIL_DETECTOR=none``)."""
    if state.detector is not None:
        return
    if body.keyframes is None:
        raise BoxesRequiredError(
            "the request has no keyframes and person detection is off (FBIL_DETECTOR=none): "
            "send keyframes with boxes",
            {"pointer": "/keyframes"},
        )
    for i, keyframe in enumerate(body.keyframes):
        if keyframe.boxes is None:
            raise BoxesRequiredError(
                f"keyframe {i} has no boxes and person detection is off (FBIL_DETECTOR=none)",
                {"pointer": f"/keyframes/{i}/boxes"},
            )


async def _timed(work: Awaitable[T]) -> tuple[T, float]:
    begun = time.perf_counter()
    result = await work
    return result, time.perf_counter() - begun


async def _detection(
    state: ServiceState,
    body: DetectRequest,
    data: bytes,
    times: list[float | None],
    cancel: threading.Event,
) -> list[TrackedPeople]:
    """People on the keyframes at ``times``, tracked (a thread of ``detect_pool``)."""
    if not times:
        return []
    assert state.detector is not None
    settings = state.settings
    threshold = (
        body.person_threshold if body.person_threshold is not None else settings.person_threshold
    )
    work = functools.partial(
        detect_people,
        data,
        times,
        state.detector,
        threshold=threshold,
        settings=settings,
        limits=settings.video_limits(),
        cancel=cancel,
    )
    return await asyncio.get_running_loop().run_in_executor(state.detect_pool, work)


@dataclass(frozen=True)
class _Actors:
    """One keyframe's actors: normalised ``boxes`` for the model and what the answer shows."""

    boxes: torch.Tensor
    ids: list[str | int]
    shown: list[list[int | float]]
    source: Literal["client", "detector"] = "client"
    detection_scores: list[float] | None = None
    track_ids: list[int] | None = None


def _actors(
    body: DetectRequest,
    times: list[float | None],
    detect_at: list[int],
    people: list[TrackedPeople],
    info: VideoInfo,
    max_boxes: int,
) -> list[_Actors]:
    detected = dict(zip(detect_at, people, strict=True))
    out = []
    for i in range(len(times)):
        if i in detected:
            found = detected[i]
            keep = min(len(found.people), max_boxes)  # best first
            boxes = found.people.boxes[:keep]
            track_ids = list(found.track_ids[:keep])
            out.append(
                _Actors(
                    boxes=torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
                    ids=list(track_ids),
                    shown=[box_out(b, body.box_format, info.width, info.height) for b in boxes],
                    source="detector",
                    detection_scores=[round(float(s), 4) for s in found.people.scores[:keep]],
                    track_ids=track_ids,
                )
            )
            continue
        assert body.keyframes is not None
        given = body.keyframes[i].boxes or []
        out.append(
            _Actors(
                boxes=normalize_boxes(
                    [b.box for b in given],
                    body.box_format,
                    info.width,
                    info.height,
                    max_boxes=max_boxes,
                ),
                ids=[b.id if b.id is not None else j for j, b in enumerate(given)],
                shown=[b.box for b in given],
            )
        )
    return out


def _video_out(info: VideoInfo) -> VideoOut:
    return VideoOut(width=info.width, height=info.height, fps=info.fps, duration=info.duration)


def _keyframe_out(
    body: DetectRequest,
    actors: _Actors,
    clip: Clip,
    result: ClipResult | None,
    labels: LabelMap,
) -> KeyframeOut:
    out = []
    for j, box in enumerate(actors.shown):
        assert result is not None  # every keyframe with boxes ran
        scores = result.scores[j]
        order = torch.argsort(scores, descending=True, stable=True)[: body.top_k].tolist()
        actions = [
            ActionOut(id=labels[c].id, name=labels[c].name, score=float(scores[c]))
            for c in order
            if float(scores[c]) >= body.min_score
        ]
        out.append(
            ActorOut(
                id=actors.ids[j],
                box=box,
                source=actors.source,
                detection_score=actors.detection_scores[j] if actors.detection_scores else None,
                track_id=actors.track_ids[j] if actors.track_ids else None,
                actions=actions,
                scores=scores.tolist() if body.all_scores else None,
            )
        )
    return KeyframeOut(time=clip.time, actors=out)


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
