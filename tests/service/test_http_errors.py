"""Every error status of the API, each produced by a real bad input, in the one error shape."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from fbil.service.metrics import Metrics
from fbil.service.middleware import RequestContextMiddleware
from tests.support.serving import (
    GOOD,
    TinyModel,
    asgi_call,
    assert_error,
    detect_files,
    multipart,
    serve,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("request_text", "code", "where"),
    [
        ("{not json", "bad_json", None),
        ('{"keyframes": []}', "invalid_request", "keyframes"),
        ('{"keyframes": [{"time": 1, "boxes": []}], "top_k": -1}', "invalid_request", "top_k"),
        ('{"keyframes": [{"boxes": []}], "box_format": "pc"}', "invalid_request", "box_format"),
        ('{"keyframes": [{"time": 1, "boxes": []}], "extra": 1}', "invalid_request", "extra"),
    ],
)
async def test_malformed_request_json_is_400(
    tiny_model: TinyModel, megamind: Path, request_text: str, code: str, where: str | None
):
    async with serve(tiny_model.path) as s:
        r = await s.client.post("/detect", files=detect_files(megamind, request_text))
    error = assert_error(r, 400, code)
    if where:
        assert any(where in e["loc"] for e in error["details"]["errors"])


async def test_missing_form_parts_are_400(tiny_model: TinyModel, megamind: Path):
    async with serve(tiny_model.path) as s:
        no_video = await s.client.post("/detect", files={"request": (None, "{}")})
        no_request = await s.client.post("/detect", files={"video": ("v.avi", b"x")})
        not_multipart = await s.client.post("/detect", json=GOOD)
    assert "video" in assert_error(no_video, 400, "missing_part")["message"]
    assert "request" in assert_error(no_request, 400, "missing_part")["message"]
    assert "application/json" in assert_error(not_multipart, 415, "not_multipart")["message"]


@pytest.mark.parametrize(
    "box",
    [[300, 40, 100, 500], [100, 40, 300], [-200, 0, 100, 100], [0, 0, 10000, 400]],
)
async def test_bad_boxes_are_400(tiny_model: TinyModel, megamind: Path, box: list):
    request = {"keyframes": [{"time": 3.0, "boxes": [{"box": box}]}]}
    async with serve(tiny_model.path) as s:
        r = await s.client.post("/detect", files=detect_files(megamind, request))
    assert "box 0" in assert_error(r, 400, "bad_box")["message"]


async def test_api_keys(tiny_model: TinyModel, megamind: Path):
    async with serve(tiny_model.path, api_keys="key-one-0123456789, key-two-0123456789") as s:
        missing = await s.client.post("/detect", files=detect_files(megamind, GOOD))
        wrong = await s.client.get("/v1/model", headers={"Authorization": "Bearer nope"})
        bearer = await s.client.post(
            "/detect",
            files=detect_files(megamind, GOOD),
            headers={"Authorization": "Bearer key-two-0123456789"},
        )
        header = await s.client.get("/v1/model", headers={"X-API-Key": "key-one-0123456789"})
        health = await s.client.get("/healthz")
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(wrong, 401, "unauthorized")
    assert bearer.status_code == 200 and header.status_code == 200
    assert health.status_code == 200  # probes need no key


async def test_too_long_video_is_413(tiny_model: TinyModel, test_videos: Path):
    request = {"keyframes": [{"time": 3.0, "boxes": [{"box": [100, 40, 300, 500]}]}]}
    async with serve(tiny_model.path) as s:  # vtest.avi lasts 79.5 s, the limit is 60 s
        r = await s.client.post("/detect", files=detect_files(test_videos / "vtest.avi", request))
    assert "79.50 s" in assert_error(r, 413, "video_too_large")["message"]


async def test_too_many_keyframes_or_boxes_are_413(tiny_model: TinyModel, megamind: Path):
    box = {"box": [100, 40, 300, 500]}
    keyframes = {"keyframes": [{"time": t, "boxes": [box]} for t in (1.0, 2.0, 3.0)]}
    boxes = {"keyframes": [{"time": 1.0, "boxes": [box] * 3}]}
    at_limit = {"keyframes": [{"time": t, "boxes": [box] * 2} for t in (1.0, 2.0)]}
    async with serve(tiny_model.path, max_keyframes=2, max_boxes_per_keyframe=2) as s:
        r_keyframes = await s.client.post("/detect", files=detect_files(megamind, keyframes))
        r_boxes = await s.client.post("/detect", files=detect_files(megamind, boxes))
        # the keyframe count is checked before the video is looked at
        r_not_video = await s.client.post("/detect", files=detect_files(b"text" * 99, keyframes))
        r_at_limit = await s.client.post("/detect", files=detect_files(megamind, at_limit))
    error = assert_error(r_keyframes, 413, "too_many_keyframes")
    assert "3 keyframes" in error["message"] and error["details"] == {
        "max_keyframes": 2,
        "keyframes": 3,
    }
    error = assert_error(r_boxes, 413, "too_many_boxes")
    assert "3 boxes" in error["message"] and error["details"] == {"max_boxes_per_keyframe": 2}
    assert "3 keyframes" in assert_error(r_not_video, 413, "too_many_keyframes")["message"]
    assert r_at_limit.status_code == 200, r_at_limit.text
    assert [len(k["actors"]) for k in r_at_limit.json()["keyframes"]] == [2, 2]


async def test_declared_oversize_upload_is_413_before_reading(
    tiny_model: TinyModel, megamind: Path
):
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async with serve(tiny_model.path, max_upload_bytes=50_000) as s:
        status, headers, body = await asgi_call(
            s.app,
            "POST",
            "/detect",
            [
                (b"content-type", b"multipart/form-data; boundary=x"),
                (b"content-length", b"10000000"),
            ],
            receive,
        )
    assert status == 413 and b"payload_too_large" in body and b"x-request-id" in headers
    assert reads == 0


async def test_streamed_oversize_upload_is_413_before_fully_read(
    tiny_model: TinyModel, megamind: Path
):
    body, content_type = multipart(megamind.read_bytes(), GOOD)
    sent = 0
    chunk = 16 * 1024

    async def stream():
        nonlocal sent
        for start in range(0, len(body), chunk):
            sent += len(body[start : start + chunk])
            yield body[start : start + chunk]

    async with serve(tiny_model.path, max_upload_bytes=100_000) as s:
        r = await s.client.post("/detect", content=stream(), headers={"content-type": content_type})
    assert "content-length" not in r.request.headers  # chunked: only counting can stop it
    error = assert_error(r, 413, "payload_too_large")
    assert error["details"]["max_upload_bytes"] == 100_000
    assert sent <= 100_000 + chunk < len(body)


async def test_not_a_video_is_415(tiny_model: TinyModel):
    text = Path(__file__).read_bytes()
    async with serve(tiny_model.path) as s:
        r = await s.client.post("/detect", files=detect_files(text, GOOD))
    assert_error(r, 415, "not_a_video")


async def test_undecodable_video_is_422(tiny_model: TinyModel, megamind: Path):
    data = megamind.read_bytes()
    damaged = data[:12000] + bytes(len(data) - 12000)  # header intact, frames zeroed
    async with serve(tiny_model.path) as s:
        r = await s.client.post("/detect", files=detect_files(damaged, GOOD))
    assert_error(r, 422, "undecodable_video")


@pytest.mark.parametrize("time", [20.0, 61.0])
async def test_keyframe_outside_the_segment_is_422(
    tiny_model: TinyModel, megamind: Path, time: float
):
    request = {"keyframes": [{"time": time, "boxes": [{"box": [100, 40, 300, 500]}]}]}
    async with serve(tiny_model.path) as s:  # Megamind.avi lasts 11.3 s
        r = await s.client.post("/detect", files=detect_files(megamind, request))
    assert_error(r, 422, "keyframe_out_of_range")


async def test_unloadable_model_is_503_not_ready(tmp_path: Path, megamind: Path, caplog):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"these are not weights")
    caplog.set_level(logging.ERROR, logger="fbil.service.app")
    async with serve(broken, wait_ready=False) as s:
        while s.state.load_error is None:
            await asyncio.sleep(0.01)
        ready = await s.client.get("/readyz")
        health = await s.client.get("/healthz")
        detect = await s.client.post("/detect", files=detect_files(megamind, GOOD))
    assert_error(ready, 503, "not_ready")
    assert_error(health, 503, "model_failed")
    assert_error(detect, 503, "not_ready")
    # the public bodies say the model failed and where to look; path and reason are in the log
    reason = str(s.state.load_error)
    for r in (ready, health, detect):
        assert "broken" not in r.text and str(tmp_path) not in r.text
        assert reason.split(":")[0] not in r.text and "service log" in r.text
    assert str(broken) in caplog.text and reason.split(":")[0] in caplog.text
    assert detect.headers["retry-after"] == "1"


async def test_unknown_route_is_404_in_the_error_shape(tiny_model: TinyModel):
    async with serve(tiny_model.path) as s:
        assert_error(await s.client.get("/nope"), 404, "not_found")
        assert_error(await s.client.get("/detect"), 405, "method_not_allowed")


async def test_unexpected_failure_is_a_bare_500_logged_with_request_id(caplog):
    async def broken_app(scope, receive, send):
        raise RuntimeError("secret internals")

    app = RequestContextMiddleware(broken_app, Metrics())
    transport = httpx.ASGITransport(app=app)
    caplog.set_level(logging.ERROR, logger="service")
    async with httpx.AsyncClient(transport=transport, base_url="http://fbil") as client:
        r = await client.get("/detect", headers={"X-Request-ID": "req-42"})
    error = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and error["details"] == {"request_id": "req-42"}
    (record,) = [rec for rec in caplog.records if rec.exc_info]
    assert "secret internals" in str(record.exc_info[1])
