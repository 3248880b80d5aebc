"""The service's shared state, built by the app's lifespan (``app.state.service``)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fbil.model.persons import PersonDetector
from fbil.service.batching import Batcher
from fbil.service.metrics import Metrics
from fbil.service.runtimes import Runtime
from fbil.service.settings import Settings


@dataclass
class ServiceState:
    """What the routes need: settings, metrics, the runtime and its batcher, and the person
    detector, once ready."""

    settings: Settings
    metrics: Metrics
    runtime: Runtime | None = None
    batcher: Batcher | None = None
    decode_pool: ThreadPoolExecutor | None = None
    detector: PersonDetector | None = None  # None: FBIL_DETECTOR=none (or not loaded yet)
    detect_pool: ThreadPoolExecutor | None = None
    ready: bool = False
    load_error: str | None = None
    inflight: int = 0
    loading: asyncio.Task[None] | None = field(default=None, repr=False)
