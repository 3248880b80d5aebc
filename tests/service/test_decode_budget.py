"""Decoding work per request is bounded (issue 14, item 2): a budget answered with 413
``decode_budget_exceeded``, a decode that stops when its client disconnects, and ordinary
requests answered while a costly decode runs.

The costly request: a 60 s video with a single key frame and a keyframe near its end, so every
frame must be decoded. A wrapper around the decoder counts its frames and makes each of that
video's frames slow (its 96x64 size tells them apart), so the decode lasts long enough to
disconnect or to serve another request in the middle of it.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from fbil.model.video import decode
from tests.support.serving import TinyModel, asgi_call, detect_files, multipart, serve

pytestmark = pytest.mark.anyio

FPS, SECONDS, WIDTH, HEIGHT = 30, 60, 96, 64
HEAVY_FRAMES = FPS * SECONDS
HEAVY = {"keyframes": [{"time": 59.0, "boxes": [{"box": [10, 10, 50, 50]}]}]}
ORDINARY = {"keyframes": [{"time": 3.0, "boxes": [{"box": [100, 40, 300, 500]}]}]}


@pytest.fixture(scope="module")
def heavy_video() -> bytes:
    """60 s of 96x64 H.264 at 30 fps with one key frame: a square moving over black."""
    buf = io.BytesIO()
    options = {"g": "100000", "keyint_min": "100000", "sc_threshold": "0", "preset": "ultrafast"}
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(HEAVY_FRAMES):
            img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            img[16:32, i % (WIDTH - 16) :][:, :16] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


class SlowHeavyDecoding:
    """Counts the heavy video's decoded frames, makes each take ``delay`` s, and records
    when a decode of it has started and ended."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
        self.frames = 0
        self.started, self.ended = threading.Event(), threading.Event()
        real = decode.decoded_frames

        def slow(*args):
            heavy = False
            try:
                for frame in real(*args):
                    if frame.width == WIDTH:
                        heavy = True
                        self.frames += 1
                        self.started.set()
                        time.sleep(delay)
                    yield frame
            finally:
                if heavy:
                    self.ended.set()

        monkeypatch.setattr(decode, "decoded_frames", slow)


def _receive(body: bytes, gone: asyncio.Event):
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


def _headers(content_type: str, body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]


async def test_decode_budget_exceeded_is_413(tiny_model: TinyModel, megamind: Path):
    # Megamind (720x528, a key frame every 10 s): 3.0 s needs its frames from 0 to 4 s
    files = detect_files(megamind, ORDINARY)
    async with serve(tiny_model.path, max_decoded_pixels=720 * 528 * 24) as s:
        r = await s.client.post("/detect", files=files)
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "decode_budget_exceeded"
    assert "decoded pixels" in error["message"]
    async with serve(tiny_model.path, max_decoded_pixels=720 * 528 * 200) as s:
        assert (await s.client.post("/detect", files=files)).status_code == 200


async def test_decode_seconds_budget_is_413(tiny_model: TinyModel, heavy_video, monkeypatch):
    decoding = SlowHeavyDecoding(monkeypatch, delay=0.01)  # the whole video: 18 s
    async with serve(tiny_model.path, max_decode_s=0.5) as s:
        r = await s.client.post("/detect", files=detect_files(heavy_video, HEAVY))
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "decode_budget_exceeded"
    assert decoding.frames < HEAVY_FRAMES / 2


async def test_disconnect_stops_the_decode(tiny_model: TinyModel, heavy_video, monkeypatch):
    decoding = SlowHeavyDecoding(monkeypatch, delay=0.01)  # the whole video: 18 s
    body, content_type = multipart(heavy_video, HEAVY)
    gone = asyncio.Event()
    async with serve(tiny_model.path) as s:
        call = asyncio.create_task(
            asgi_call(s.app, "POST", "/detect", _headers(content_type, body), _receive(body, gone))
        )
        assert await asyncio.to_thread(decoding.started.wait, 30)
        gone.set()
        status, _, _ = await call
        assert await asyncio.to_thread(decoding.ended.wait, 30)  # the decode thread stopped
        stopped_at = decoding.frames
    assert status == 499
    assert stopped_at < HEAVY_FRAMES / 4


async def test_ordinary_request_answered_while_a_costly_decode_runs(
    tiny_model: TinyModel, heavy_video, megamind: Path, monkeypatch
):
    decoding = SlowHeavyDecoding(monkeypatch, delay=0.02)  # the whole video: 36 s
    body, content_type = multipart(heavy_video, HEAVY)
    gone = asyncio.Event()
    async with serve(tiny_model.path) as s:  # decode_workers: 2
        heavy = asyncio.create_task(
            asgi_call(s.app, "POST", "/detect", _headers(content_type, body), _receive(body, gone))
        )
        assert await asyncio.to_thread(decoding.started.wait, 30)
        started = time.monotonic()
        r = await s.client.post("/detect", files=detect_files(megamind, ORDINARY))
        elapsed = time.monotonic() - started
        still_decoding = not decoding.ended.is_set()
        gone.set()
        status, _, _ = await heavy
    assert r.status_code == 200, r.text
    assert still_decoding  # answered in the middle of the costly decode, not after it
    assert elapsed < 30  # generous: the shared test machine; the costly decode lasts 36 s
    assert status == 499
