"""Upload deadlines and the pending-upload bound, in process (the real sockets are in
test_slow_clients.py): a stalled body is 408 with its own code, a body beyond
``max_pending_uploads`` is 503 before it is read, and a cancelled request is 503."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.serving import TinyModel, asgi_call, multipart, serve

pytestmark = pytest.mark.anyio

REQUEST = {"keyframes": [{"time": 1.0, "boxes": [{"box": [0, 0, 10, 10]}]}]}


def _headers(content_type: str, length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"content-length", str(length).encode())]


async def test_a_stalled_body_is_408_and_closes(tiny_model: TinyModel) -> None:
    body, content_type = multipart(bytes(10_000), REQUEST)
    parts = [body[:1000]]

    async def receive() -> dict:
        if parts:
            return {"type": "http.request", "body": parts.pop(), "more_body": True}
        await asyncio.Event().wait()  # the client stalls
        raise AssertionError

    async with serve(tiny_model.path, upload_idle_timeout_s=0.2) as s:
        status, headers, raw = await asgi_call(
            s.app, "POST", "/detect", _headers(content_type, len(body)), receive
        )
        assert s.state.inflight == 0
    assert status == 408
    error = json.loads(raw)["error"]
    assert error["code"] == "upload_idle_timeout"
    assert error["details"] == {"upload_idle_timeout_s": 0.2}
    assert headers[b"connection"] == b"close"


async def test_uploads_beyond_the_pending_limit_are_503_unread(tiny_model: TinyModel) -> None:
    body, content_type = multipart(bytes(10_000), REQUEST)
    stalled = asyncio.Event()
    reads = 0

    async def stalling() -> dict:
        stalled.set()
        await asyncio.Event().wait()
        raise AssertionError

    async def counting() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async with serve(tiny_model.path, max_pending_uploads=1, retry_after_s=3) as s:
        first = asyncio.create_task(
            asgi_call(s.app, "POST", "/detect", _headers(content_type, len(body)), stalling)
        )
        await stalled.wait()
        status, headers, raw = await asgi_call(
            s.app, "POST", "/detect", _headers(content_type, len(body)), counting
        )
        first.cancel()  # answered 503 shutting_down: what uvicorn does past the grace
        cancelled_status, cancelled_headers, cancelled_raw = await first
    assert (status, json.loads(raw)["error"]["code"]) == (503, "overloaded")
    assert headers[b"retry-after"] == b"3" and reads == 0
    assert cancelled_status == 503
    assert json.loads(cancelled_raw)["error"]["code"] == "shutting_down"
    assert cancelled_headers[b"retry-after"] == b"3"
