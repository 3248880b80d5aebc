"""/detect without boxes: detected people with track ids, keyframes every keyframe_interval,
mixed client/detected keyframes, FBIL_DETECTOR=none. The detector here finds the coloured
people of :mod:`coloured_people` by their colour (the bundled detector on vtest.avi:
tests/service/test_people_vtest.py)."""

from __future__ import annotations

import pytest

from fbil.service.keyframes import keyframe_times
from tests.support.coloured_people import HEIGHT, WIDTH, ColourDetector, person_boxes, street_video
from tests.support.serving import TinyModel, detect_files, metric_value, serve

pytestmark = pytest.mark.anyio

STREET = street_video(4.0)


def near(box: list[float], expected: tuple[int, ...], tolerance: float = 3.0) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box, expected, strict=True))


async def detect(tiny_model: TinyModel, request: dict, **settings) -> tuple[int, dict, str, list]:
    detector = ColourDetector()
    async with serve(tiny_model.path, detector="none", **settings) as s:
        s.state.engine.detector = detector  # the lifespan loaded none: this one stands in
        r = await s.client.post("/detect", files=detect_files(STREET, request))
        metrics = await s.metrics_text()
    return r.status_code, r.json(), metrics, detector.calls


async def test_request_without_keyframes_gets_people_every_second_with_stable_ids(
    tiny_model: TinyModel,
):
    status, body, metrics, calls = await detect(tiny_model, {"top_k": 2})
    assert status == 200, body
    keyframes = body["keyframes"]
    assert [k["time"] for k in keyframes] == [0.5, 1.5, 2.5, 3.5]  # 4 s, the middle of each
    for k in keyframes:
        red, green = k["actors"]
        assert [a["source"] for a in (red, green)] == ["detector", "detector"]
        assert (red["detection_score"], green["detection_score"]) == (0.9, 0.6)
        assert near(red["box"], person_boxes(k["time"])[0])
        assert near(green["box"], person_boxes(k["time"])[1])
        assert [red["track_id"], green["track_id"]] == [1, 2]  # same people, same ids
        assert [red["id"], green["id"]] == [1, 2]
        assert len(red["actions"]) == 2
    # keyframes 1 s apart, frames every 0.25 s between them: 13 frames, one detector call per
    # keyframe as its window comes (the first keyframe's frame, then the 4 frames up to each)
    assert calls == [1, 4, 4, 4]
    assert body["timing_ms"]["detect"] > 0
    assert metric_value(metrics, "fbil_detected_people_count") == 4
    assert metric_value(metrics, "fbil_detected_people_sum") == 8
    assert metric_value(metrics, "fbil_detect_seconds_count") == 1


async def test_keyframes_alone_swap_the_ids_the_frames_between_keep(tiny_model: TinyModel):
    """FBIL_TRACK_INTERVAL_S=0 looks at the keyframes only: in a second each person takes the
    other's place and the left one inherits the right one's id (what the frames between fix)."""
    status, body, _, calls = await detect(tiny_model, {}, track_interval_s=0)
    assert status == 200, body
    ids = [[a["track_id"] for a in k["actors"]] for k in body["keyframes"]]
    assert ids[1][0] == ids[0][1]
    assert calls == [1, 1, 1, 1]


async def test_mixed_client_and_detected_keyframes(tiny_model: TinyModel):
    client_box = {"box": [10, 10, 40, 80], "id": "me"}
    request = {
        "keyframes": [
            {"time": 1.0, "boxes": [client_box]},
            {"time": 2.0},
            {"time": 3.0, "boxes": []},
            {"time": 3.5},
        ],
    }
    status, body, _, calls = await detect(tiny_model, request)
    assert status == 200, body
    first, second, third, fourth = body["keyframes"]
    assert first["actors"][0]["id"] == "me"
    assert first["actors"][0]["box"] == [10, 10, 40, 80]
    assert first["actors"][0]["source"] == "client"
    assert "track_id" not in first["actors"][0] and "detection_score" not in first["actors"][0]
    assert third["actors"] == []
    assert [a["track_id"] for a in second["actors"]] == [1, 2]
    assert [a["track_id"] for a in fourth["actors"]] == [1, 2]
    assert near(fourth["actors"][0]["box"], person_boxes(3.5)[0])
    assert sum(calls) == 7  # 2.0 and 3.5 and the frames between (0.25 s apart), not 1.0, 3.0


async def test_normalized_boxes_and_person_threshold(tiny_model: TinyModel):
    request = {"keyframes": [{"time": 2.0}], "box_format": "normalized", "person_threshold": 0.7}
    status, body, _, _ = await detect(tiny_model, request)
    assert status == 200, body
    (red,) = body["keyframes"][0]["actors"]  # the green one (0.6) is under the threshold
    x1, y1, x2, y2 = person_boxes(2.0)[0]
    assert red["box"] == pytest.approx([x1 / WIDTH, y1 / HEIGHT, x2 / WIDTH, y2 / HEIGHT], abs=0.02)
    # the service's default threshold (0.3) applies when the request has none
    status, body, _, _ = await detect(tiny_model, {"keyframes": [{"time": 2.0}]})
    assert len(body["keyframes"][0]["actors"]) == 2
    status, body, _, _ = await detect(
        tiny_model, {"keyframes": [{"time": 2.0}]}, person_threshold=0.95
    )
    assert body["keyframes"][0]["actors"] == []


async def test_detected_people_are_capped_per_keyframe_best_first(tiny_model: TinyModel):
    status, body, _, _ = await detect(
        tiny_model, {"keyframes": [{"time": 2.0}]}, max_boxes_per_keyframe=1
    )
    assert status == 200, body
    assert [a["detection_score"] for a in body["keyframes"][0]["actors"]] == [0.9]


@pytest.mark.parametrize(
    "request_doc, pointer",
    [
        ({}, "/keyframes"),
        ({"keyframes": [{"time": 1.0, "boxes": []}, {"time": 2.0}]}, "/keyframes/1/boxes"),
    ],
)
async def test_detector_none_requires_boxes(tiny_model: TinyModel, request_doc, pointer):
    async with serve(tiny_model.path, detector="none") as s:
        r = await s.client.post("/detect", files=detect_files(STREET, request_doc))
        card = (await s.client.get("/v1/model")).json()
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "boxes_required"
    assert r.json()["error"]["details"] == {"pointer": pointer}
    assert card["person_detector"] is None


async def test_too_many_keyframes_from_the_interval(tiny_model: TinyModel):
    status, body, _, _ = await detect(
        tiny_model, {"keyframe_interval": 0.25}, max_keyframes=8, max_queue_size=64
    )
    assert status == 413
    assert body["error"]["code"] == "too_many_keyframes"
    assert body["error"]["details"] == {"max_keyframes": 8, "keyframes": 16}


@pytest.mark.parametrize(
    "field, value",
    [
        ("keyframe_interval", 0),
        ("keyframe_interval", "1"),
        ("person_threshold", 1.5),
        ("person_threshold", True),
        ("keyframes", []),
    ],
)
async def test_new_fields_are_strict(tiny_model: TinyModel, field, value):
    status, body, _, _ = await detect(tiny_model, {field: value})
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["details"]["errors"][0]["pointer"] == f"/{field}"


def test_keyframe_times_cover_the_segment():
    assert keyframe_times(4.0, 1.0, 16) == [0.5, 1.5, 2.5, 3.5]
    assert keyframe_times(3.5, 1.0, 16) == [0.5, 1.5, 2.5, 3.25]  # the last interval is short
    assert keyframe_times(0.4, 1.0, 16) == [0.2]  # shorter than one interval: its middle
    assert keyframe_times(79.5, 5.0, 16) == pytest.approx(
        [2.5 + 5 * i for i in range(15)] + [77.25]
    )
