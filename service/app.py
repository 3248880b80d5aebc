"""``create_app(settings)``: the FastAPI app; its lifespan loads, warms and drains the runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fbil.service.api import detect, health
from fbil.service.docs import install_docs
from fbil.service.engine import Engine, check_detector_path
from fbil.service.errors import install_error_handlers
from fbil.service.jobs.routes import router as jobs_router
from fbil.service.jobs.worker import JobWorker
from fbil.service.metrics import Metrics
from fbil.service.middleware import (
    BodyLimitMiddleware,
    RequestContextMiddleware,
    UploadGuard,
    UploadLimits,
)
from fbil.service.settings import Settings
from fbil.service.state import ServiceState
from fbil.service.streams.registry import StreamRegistry
from fbil.service.streams.routes import router as streams_router

log = logging.getLogger(__name__)

JOBS_PATH = "/v1/jobs"  # job uploads: their own size and time limits

DESCRIPTION = """
Spatio-temporal action detection (FBIL: SlowFast backbone + attention head, AVA v2.2 classes).

`POST /detect` takes a video segment and actor boxes on one or more keyframes and returns the
most likely actions of each actor. Example with curl:

```
curl -F video=@segment.mp4 \\
     -F 'request={"keyframes": [{"time": 2.0, "boxes": [{"box": [120, 40, 260, 400]}]}]}' \\
     http://localhost:8000/detect
```

Boxes are optional: a keyframe without `boxes` gets the people the person detector finds (each
with a `track_id`, the same for the same person on every keyframe), and a request without
`keyframes` gets keyframes every `keyframe_interval` seconds (`-F 'request={}'`).

Errors share one shape: `{"error": {"code", "message", "details"}}`.
"""


async def _load(state: ServiceState) -> None:
    """Build the engine (model, real warm-up forward, person detector) in a thread; then
    accept requests."""
    s = state.settings
    path = s.resolved_model_path()
    try:
        engine = await asyncio.to_thread(Engine.load, s, metrics=state.metrics)
    except Exception as e:
        state.load_error = f"{type(e).__name__}: {e}"
        # the path and the reason go to the log only: /healthz and /readyz are public
        log.exception("the model %s could not be loaded; the service stays unready", path)
        return
    engine.start()
    state.engine = engine
    state.ready = True
    runtime, detector, meta = engine.runtime, engine.detector, engine.metadata
    log.info("ready: %s %s on %s %s", meta.name, meta.version, runtime.backend, runtime.describe())
    if detector is None:
        log.info("person detection is off (FBIL_DETECTOR=none): every keyframe needs boxes")
    else:
        log.info("person detector: %s", detector.describe())
    if meta.demo:
        log.warning("serving a DEMO model, not a trained AVA model: %s", meta.description)


def _log_auth(settings: Settings) -> None:
    """Whether API keys are on and what stays open without one (never the keys)."""
    keys = settings.api_key_values()
    if not keys:
        log.warning("API keys are off (FBIL_API_KEYS unset): every route answers without a key")
        return
    public = [
        name
        for name, is_public in (
            ("/metrics", settings.public_metrics),
            ("/docs, /redoc, /openapi.json", settings.public_docs),
        )
        if is_public
    ]
    log.info(
        "API keys are on (%d keys); without a key: /healthz, /readyz%s",
        len(keys),
        "".join(", " + name for name in public),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    _log_auth(state.settings)
    state.loading = asyncio.create_task(_load(state))
    jobs: JobWorker = app.state.jobs
    jobs.start()
    try:
        yield
    finally:
        await app.state.streams.stop_all()
        await jobs.stop()  # running jobs stop where they are and resume on the next start
        # uvicorn runs this once every request has been answered, or cancelled (answered 503)
        # when the graceful-shutdown time was over: nobody waits for a result any more, so
        # neither a running decode nor a running batch may hold the process (they end with it)
        state.ready = False
        if not state.loading.done():
            state.loading.cancel()
        if state.engine is not None:
            await state.engine.stop()
        log.info("stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app. Raises :class:`~service.settings.SettingsError` when no model is set
    or ``FBIL_API_KEYS`` is unusable."""
    settings = settings or Settings()
    settings.resolved_model_path()  # fail fast with a clear message
    check_detector_path(settings)
    settings.api_key_values()
    metrics = Metrics(settings.max_batch_size)
    app = FastAPI(
        title="FBIL action detection",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None,  # served by install_docs, behind a key unless FBIL_PUBLIC_DOCS
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = ServiceState(settings=settings, metrics=metrics)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(detect.router)
    app.include_router(jobs_router)
    app.state.jobs = JobWorker(app.state.service)
    app.include_router(streams_router)
    app.state.streams = StreamRegistry(app.state.service)
    install_docs(app)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.upload_limit,
        path_limits={JOBS_PATH: settings.job_max_video_bytes + settings.max_request_json_bytes},
    )
    app.add_middleware(UploadGuard, limits=UploadLimits.from_settings(settings))
    app.add_middleware(  # outermost
        RequestContextMiddleware, metrics=metrics, retry_after_s=settings.retry_after_s
    )
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (settings from ``FBIL_*`` variables)."""
    return create_app(Settings())
