"""Helpers to serve the app in-process and talk to it (imported by the service tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fbil.model import FBILDetector, ModelMetadata
from fbil.model.config import FBILConfig
from fbil.model.preprocess import PreprocessSpec
from fbil.service.app import create_app
from fbil.service.settings import Settings
from fbil.service.state import ServiceState

TINY_CONFIG = FBILConfig.tiny(
    preprocess=PreprocessSpec(num_frames=8, frame_interval=2, short_side=64)
)


@dataclass(frozen=True)
class TinyModel:
    path: Path
    detector: FBILDetector
    metadata: ModelMetadata


@dataclass
class Served:
    app: Any
    client: httpx.AsyncClient

    @property
    def state(self) -> ServiceState:
        return self.app.state.service

    async def metrics_text(self) -> str:
        return (await self.client.get("/metrics")).text


@asynccontextmanager
async def serve(
    model_path: Path, wait_ready: bool = True, **overrides: Any
) -> AsyncIterator[Served]:
    """Run the app's lifespan and give an httpx client speaking ASGI to it."""
    settings = Settings(model_path=model_path, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: ServiceState = app.state.service
        while wait_ready and not state.ready:
            assert state.load_error is None, state.load_error
            await asyncio.sleep(0.02)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fbil") as client:
            yield Served(app, client)


def detect_files(video: Path | bytes, request: dict[str, Any] | str) -> dict[str, Any]:
    """httpx ``files=`` for a /detect call."""
    content = video.read_bytes() if isinstance(video, Path) else video
    text = request if isinstance(request, str) else json.dumps(request)
    return {
        "video": ("segment.avi", content, "video/x-msvideo"),
        "request": (None, text),
    }


def metric_value(text: str, name: str) -> float:
    """The value of one sample line (``name`` includes labels) of Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


async def asgi_call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], receive: Any
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Call the ASGI app with a hand-made ``receive``: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"fbil"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("fbil", 80),
    }
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    if start is None:
        return 0, {}, b""
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def multipart(video: bytes, request: dict[str, Any]) -> tuple[bytes, str]:
    """A /detect multipart body and its content type."""
    built = httpx.Request("POST", "http://fbil/detect", files=detect_files(video, request))
    return built.read(), built.headers["content-type"]


GOOD = {"keyframes": [{"time": 3.0, "boxes": [{"box": [100, 40, 300, 500]}]}]}


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert r.headers["x-request-id"]
    return body["error"]
