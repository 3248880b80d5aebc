"""Dynamic batching: across concurrent requests, by shape, bounded, drained, cancellable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import torch

from fbil.service.app import create_app
from fbil.service.batching import Batcher
from fbil.service.errors import OverloadedError
from fbil.service.settings import Settings
from tests.support.serving import TinyModel, asgi_call, detect_files, metric_value, multipart, serve

pytestmark = pytest.mark.anyio

REQUESTS = [
    {"keyframes": [{"time": t, "boxes": [{"box": box} for box in boxes]}], "all_scores": True}
    for t, boxes in [
        (1.0, [[100, 40, 300, 500]]),
        (3.5, [[10, 10, 200, 300], [300, 50, 700, 520]]),
        (6.0, [[200, 100, 500, 500]]),
        (9.0, [[0, 0, 720, 528], [50, 50, 150, 250], [400, 10, 600, 300]]),
    ]
]


def all_scores(response: httpx.Response) -> torch.Tensor:
    assert response.status_code == 200, response.text
    actors = response.json()["keyframes"][0]["actors"]
    return torch.tensor([a["scores"] for a in actors])


async def test_concurrent_requests_are_batched_with_unbatched_results(
    tiny_model: TinyModel, megamind: Path
):
    async with serve(tiny_model.path, max_batch_size=1) as s:
        unbatched = [
            all_scores(await s.client.post("/detect", files=detect_files(megamind, r)))
            for r in REQUESTS
        ]
    # a batch runs when 4 clips wait (the delay is far longer than the test)
    async with serve(tiny_model.path, max_batch_size=4, max_batch_delay_ms=600_000) as s:
        responses = await asyncio.gather(
            *(s.client.post("/detect", files=detect_files(megamind, r)) for r in REQUESTS)
        )
        metrics = await s.metrics_text()
    assert metric_value(metrics, "fbil_batch_size_count") == 1
    assert metric_value(metrics, "fbil_batch_size_sum") == 4
    assert metric_value(metrics, 'fbil_batch_size_bucket{le="2.0"}') == 0
    for response, expected in zip(responses, unbatched, strict=True):
        assert torch.allclose(all_scores(response), expected, atol=1e-5)


async def test_queue_overflow_is_503_and_shutdown_drains_in_flight(
    tiny_model: TinyModel, megamind: Path
):
    settings = Settings(
        model_path=tiny_model.path,
        max_batch_size=8,
        max_batch_delay_ms=600_000,
        max_queue_size=2,
        max_keyframes=2,
    )
    app = create_app(settings)
    state = app.state.service
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fbil") as client:
        while not state.ready:
            await asyncio.sleep(0.02)
        waiting = [
            asyncio.create_task(client.post("/detect", files=detect_files(megamind, r)))
            for r in REQUESTS[:2]
        ]
        while state.engine.batcher.depth < 2:  # both clips queued, the batch waits to fill
            await asyncio.sleep(0.02)
        refused = await client.post("/detect", files=detect_files(megamind, REQUESTS[2]))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        await lifespan.__aexit__(None, None, None)  # graceful shutdown runs what is queued
        done = await asyncio.gather(*waiting)
    assert [r.status_code for r in done] == [200, 200]
    assert state.engine.batcher.depth == 0


async def test_disconnected_client_leaves_no_work_queued(tiny_model: TinyModel, megamind: Path):
    body, content_type = multipart(megamind.read_bytes(), REQUESTS[0])
    gone = asyncio.Event()
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    async with serve(tiny_model.path, max_batch_size=8, max_batch_delay_ms=600_000) as s:
        call = asyncio.create_task(asgi_call(s.app, "POST", "/detect", headers, receive))
        while s.state.engine.batcher.depth < 1:
            await asyncio.sleep(0.02)
        gone.set()
        status, _, _ = await call
        assert s.state.engine.batcher.depth == 0
        metrics = await s.metrics_text()
    assert status == 499  # nobody reads it; counted as the client closing the request
    assert metric_value(metrics, "fbil_queue_depth") == 0
    assert metric_value(metrics, 'fbil_requests_total{route="/detect",status="499"}') == 1
    assert "fbil_batch_size_count 0.0" in metrics


async def test_batcher_groups_by_shape_and_rebases_rois(tiny_model: TinyModel):
    detector = tiny_model.detector
    calls: list[tuple[tuple[int, ...], list[int]]] = []

    def predict(clips: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        calls.append((tuple(clips.shape), rois[:, 0].int().tolist()))
        with torch.inference_mode():
            return detector.scores(detector(clips, rois))

    torch.manual_seed(1)
    small, large = (3, 8, 64, 85), (3, 8, 64, 113)
    clips = [torch.randn(small), torch.randn(large), torch.randn(small)]
    boxes = [torch.tensor([[0.1, 0.1, 0.5, 0.9]]), torch.rand(2, 2) * 0.5, torch.rand(3, 2) * 0.5]
    boxes[1:] = [torch.cat((b, b + 0.4), dim=1) for b in boxes[1:]]
    batcher = Batcher(predict, max_batch_size=8, max_batch_delay_ms=50)
    batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.submit([c], [b]) for c, b in zip(clips, boxes, strict=True))
        )
        with pytest.raises(OverloadedError):
            await Batcher(predict, max_queue_size=2).submit(clips, boxes)
    finally:
        await batcher.stop()
    assert calls == [((2, *small), [0, 1, 1, 1]), ((1, *large), [0, 0])]
    for clip, b, (result,) in zip(clips, boxes, results, strict=True):
        rois = torch.cat((torch.zeros(len(b), 1), b), dim=1)
        with torch.inference_mode():
            expected = detector.scores(detector(clip[None], rois))
        assert torch.allclose(result.scores, expected, atol=1e-5)
