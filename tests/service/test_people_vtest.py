"""The bundled person detector through /detect on real footage (vtest.avi, 768x576, 10 fps):
two people walking side by side keep their track ids over four keyframes a second apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fbil.model.tracking import iou
from tests.support.serving import TinyModel, detect_files, serve

pytestmark = pytest.mark.anyio

# labelled by hand (pixels, head to feet): a man in a red and navy jacket (left) and a woman in
# a black coat (right) walk left side by side, touching, about 60 px a second with boxes
# 30-37 px wide: at keyframes 1 s apart each one's box lands near where the other's was
PAIR = {
    3.0: ([629, 252, 666, 353], [665, 250, 699, 346]),
    4.0: ([570, 235, 603, 331], [602, 232, 633, 324]),
    5.0: ([506, 217, 541, 310], [554, 215, 588, 300]),
    6.0: ([467, 204, 503, 293], [505, 200, 531, 281]),
}


def pair_ids(keyframe: dict) -> list[int | None]:
    """Track ids of the detected people best overlapping the pair's labels (IoU >= 0.3)."""
    actors = keyframe["actors"]
    boxes = np.array([a["box"] for a in actors], np.float64).reshape(-1, 4)
    overlap = iou(np.array(PAIR[keyframe["time"]], np.float64), boxes)
    best = overlap.argmax(1)
    return [actors[j]["track_id"] if overlap[i, j] >= 0.3 else None for i, j in enumerate(best)]


async def test_people_walking_side_by_side_keep_their_ids(tiny_model: TinyModel, test_videos: Path):
    request = {"keyframes": [{"time": t} for t in PAIR], "top_k": 1}
    async with serve(tiny_model.path, max_duration_s=90) as s:
        r = await s.client.post("/detect", files=detect_files(test_videos / "vtest.avi", request))
        card = (await s.client.get("/v1/model")).json()
    assert r.status_code == 200, r.text
    keyframes = r.json()["keyframes"]
    ids = [pair_ids(k) for k in keyframes]
    first = ids[0]
    assert None not in first and first[0] != first[1], ids
    assert ids == [first] * len(PAIR), ids  # the same two ids, on the same people
    for k in keyframes:
        assert all(a["source"] == "detector" for a in k["actors"])
        assert all(a["detection_score"] >= 0.3 for a in k["actors"])
    assert card["person_detector"]["person_threshold"] == 0.3
    assert r.json()["timing_ms"]["detect"] > 0


async def test_keyframes_alone_swap_them(tiny_model: TinyModel, test_videos: Path):
    """What the frames between keyframes are for: matched on the keyframes only, the pair's
    ids do not stay with them."""
    request = {"keyframes": [{"time": t} for t in PAIR], "top_k": 1}
    async with serve(tiny_model.path, track_interval_s=0, max_duration_s=90) as s:
        r = await s.client.post("/detect", files=detect_files(test_videos / "vtest.avi", request))
    assert r.status_code == 200, r.text
    ids = [pair_ids(k) for k in r.json()["keyframes"]]
    assert ids != [ids[0]] * len(PAIR), ids
