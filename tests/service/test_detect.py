"""POST /detect through the ASGI app with real videos: the documented JSON and the scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fbil.model.video import decode_clips
from fbil.service.boxes import normalize_boxes
from tests.support.serving import TinyModel, detect_files, metric_value, serve

pytestmark = pytest.mark.anyio

BOXES = [{"box": [100, 40, 300, 500], "id": "p1"}, {"box": [380, 60, 700, 520], "id": 7}]


def direct_scores(tiny: TinyModel, video: Path, time: float, boxes: list) -> torch.Tensor:
    """The model run directly on the clip tensors the video module makes."""
    spec = tiny.metadata.preprocess
    info, (keyframe,) = decode_clips(video, [time], spec)
    norm = normalize_boxes(boxes, "pixels", info.width, info.height)
    rois = torch.cat((torch.zeros(len(norm), 1), torch.from_numpy(norm)), dim=1)
    with torch.inference_mode():
        return tiny.detector.scores(tiny.detector(keyframe.clip[None], rois))


async def test_valid_request_returns_documented_json(tiny_model: TinyModel, megamind: Path):
    request = {"keyframes": [{"time": 3.0, "boxes": BOXES}], "top_k": 3, "all_scores": True}
    async with serve(tiny_model.path) as s:
        r = await s.client.post(
            "/detect", files=detect_files(megamind, request), headers={"X-Request-ID": "abc-1"}
        )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "abc-1"
    body = r.json()
    assert set(body) == {"model", "video", "keyframes", "timing_ms"}
    assert body["model"] == {"name": "fbil-tiny", "version": "test", "backend": "eager"}
    assert body["video"]["width"] == 720 and body["video"]["height"] == 528
    assert body["video"]["fps"] == pytest.approx(23.976, abs=1e-3)
    assert set(body["timing_ms"]) == {
        "decode",
        "detect",
        "detect_wait",
        "queue",
        "inference",
        "total",
    }
    assert body["timing_ms"]["detect"] == 0  # every keyframe came with boxes
    (keyframe,) = body["keyframes"]
    assert keyframe["time"] == 3.0
    assert [a["id"] for a in keyframe["actors"]] == ["p1", 7]
    assert [a["source"] for a in keyframe["actors"]] == ["client", "client"]
    assert all("track_id" not in a and "detection_score" not in a for a in keyframe["actors"])
    assert [a["box"] for a in keyframe["actors"]] == [b["box"] for b in BOXES]

    expected = direct_scores(tiny_model, megamind, 3.0, [b["box"] for b in BOXES])
    labels = tiny_model.metadata.labels
    for actor, scores in zip(keyframe["actors"], expected, strict=True):
        assert torch.allclose(torch.tensor(actor["scores"]), scores, atol=1e-5)
        top = torch.argsort(scores, descending=True)[:3].tolist()
        assert [a["id"] for a in actor["actions"]] == [labels[i].id for i in top]
        assert [a["name"] for a in actor["actions"]] == [labels[i].name for i in top]
        got = [a["score"] for a in actor["actions"]]
        assert got == sorted(got, reverse=True)
        assert got == pytest.approx([float(scores[i]) for i in top], abs=1e-5)


async def test_defaults_min_score_and_scores_left_out(tiny_model: TinyModel, megamind: Path):
    box = {"box": [100, 40, 300, 500]}
    async with serve(tiny_model.path) as s:
        r = await s.client.post(
            "/detect", files=detect_files(megamind, {"keyframes": [{"time": 3, "boxes": [box]}]})
        )
        (actor,) = r.json()["keyframes"][0]["actors"]
        assert actor["id"] == 0  # index when no id is given
        assert len(actor["actions"]) == 5 and "scores" not in actor
        cut = actor["actions"][2]["score"]
        request = {"keyframes": [{"time": 3, "boxes": [box]}], "top_k": 60, "min_score": cut}
        r = await s.client.post("/detect", files=detect_files(megamind, request))
    actions = r.json()["keyframes"][0]["actors"][0]["actions"]
    assert len(actions) >= 3 and all(a["score"] >= cut for a in actions)


async def test_single_keyframe_without_time_is_the_middle(tiny_model: TinyModel, megamind: Path):
    request = {
        "keyframes": [{"boxes": [{"box": [0.1, 0.1, 0.5, 0.9]}]}],
        "box_format": "normalized",
    }
    async with serve(tiny_model.path) as s:
        r = await s.client.post("/detect", files=detect_files(megamind, request))
    assert r.status_code == 200, r.text
    time = r.json()["keyframes"][0]["time"]
    assert time == pytest.approx(11.26 / 2, abs=0.1)


async def test_several_keyframes_and_one_without_boxes(tiny_model: TinyModel, megamind: Path):
    request = {
        "keyframes": [
            {"time": 2.0, "boxes": BOXES[:1]},
            {"time": 5.0, "boxes": []},
            {"time": 8.0, "boxes": BOXES},
        ],
        "all_scores": True,
    }
    async with serve(tiny_model.path) as s:
        r = await s.client.post("/detect", files=detect_files(megamind, request))
        metrics = await s.metrics_text()
    assert r.status_code == 200, r.text
    keyframes = r.json()["keyframes"]
    assert [k["time"] for k in keyframes] == [2.0, 5.0, 8.0]
    assert [len(k["actors"]) for k in keyframes] == [1, 0, 2]
    expected = direct_scores(tiny_model, megamind, 8.0, [b["box"] for b in BOXES])
    got = torch.tensor([a["scores"] for a in keyframes[2]["actors"]])
    assert torch.allclose(got, expected, atol=1e-5)
    assert metric_value(metrics, "fbil_actors_per_request_sum") == 3
    assert metric_value(metrics, 'fbil_requests_total{route="/detect",status="200"}') == 1


async def test_health_readiness_model_card_and_docs(tiny_model: TinyModel):
    async with serve(tiny_model.path) as s:
        assert (await s.client.get("/healthz")).json() == {"status": "ok"}
        assert (await s.client.get("/readyz")).status_code == 200
        card = (await s.client.get("/v1/model")).json()
        docs = await s.client.get("/docs")
        openapi = (await s.client.get("/openapi.json")).json()
    assert card["name"] == "fbil-tiny" and card["backend"] == "eager"
    assert card["runtime"] == {"device": "cpu", "precision": "fp32"}
    assert len(card["labels"]) == 60 and card["labels"][0]["id"] == 1
    assert card["preprocess"]["num_frames"] == 8 and card["preprocess"]["short_side"] == 64
    assert card["limits"]["max_keyframes"] == 16
    assert docs.status_code == 200
    body = openapi["paths"]["/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(body["schema"]["required"]) == {"video", "request"}
    assert "keyframes" in body["schema"]["properties"]["request"]["example"]
