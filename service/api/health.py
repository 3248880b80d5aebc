"""Health, readiness, metrics and the model card: ``/healthz``, ``/readyz``, ``/metrics``,
``/v1/model``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fbil.service.api.deps import (
    LOAD_FAILED,
    get_state,
    not_ready_message,
    ready_engine,
    require_api_key,
    require_api_key_unless,
    retry_after,
)
from fbil.service.api.openapi import error_responses
from fbil.service.errors import ModelFailedError, NotReadyError
from fbil.service.schemas import LabelOut, ModelCard, Status

router = APIRouter()


@router.get("/healthz", response_model=Status, responses=error_responses(503), tags=["health"])
async def healthz(request: Request) -> Status:
    """The process is alive (503 only when the model failed to load: restart it)."""
    state = get_state(request)
    if state.load_error:
        raise ModelFailedError(LOAD_FAILED)
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses=error_responses(503), tags=["health"])
async def readyz(request: Request) -> Status:
    """200 once the model has run a real warm-up forward; 503 before (or if it failed)."""
    state = get_state(request)
    if not state.ready:
        raise NotReadyError(not_ready_message(state), headers=retry_after(state))
    return Status(status="ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(401),
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
    responses=error_responses(401, 503),
    dependencies=[Depends(require_api_key)],
    tags=["model"],
)
async def model_card(request: Request) -> ModelCard:
    """The served model: name, version, labels, preprocessing, runtime and limits."""
    state = get_state(request)
    engine = ready_engine(state)
    runtime, detector = engine.runtime, engine.detector
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
        if detector is None
        else {
            **detector.describe(),
            "person_threshold": s.person_threshold,
            "track_interval_s": s.track_interval_s,
            "max_detect_frames": s.max_detect_frames,
        },
    )
