"""The service's shared state, built by the app's lifespan (``app.state.service``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fbil.service.engine import Engine
from fbil.service.metrics import Metrics
from fbil.service.settings import Settings


@dataclass
class ServiceState:
    """What the routes need: settings, metrics and, once ready, the engine."""

    settings: Settings
    metrics: Metrics
    engine: Engine | None = None
    ready: bool = False
    load_error: str | None = None
    inflight: int = 0
    loading: asyncio.Task[None] | None = field(default=None, repr=False)
