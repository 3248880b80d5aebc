"""Issue 27: the person detector's frames are held at the size it needs, not the video's (a 4K
request without boxes held up to FBIL_MAX_DETECT_FRAMES full 4K frames), and the answer's
boxes are still in the video's pixels; ``timing_ms`` shows the wait for the detector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.serving import TinyModel, detect_files, serve
from tests.support.synthetic_video import encode

pytestmark = pytest.mark.anyio

HEIGHT, WIDTH = 2160, 3840


def _uhd_video() -> bytes:
    """2 s of 4K MJPEG: a dark figure on a light background, moving right."""
    images = []
    for i in range(20):
        image = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
        x = 1200 + 20 * i
        image[700:1700, x : x + 350] = (40, 40, 60)
        images.append(image)
    return encode(list(range(0, 2000, 100)), codec="mjpeg", fmt="avi", images=images, rate=10)


async def test_a_4k_request_without_boxes_holds_small_frames(tiny_model: TinyModel, tmp_path):
    video = _uhd_video()
    async with serve(tiny_model.path, data_dir=tmp_path, max_duration_s=10) as s:
        detector = s.state.engine.detector
        wanted = detector.needed_size(HEIGHT, WIDTH)
        assert wanted[0] * wanted[1] * 15 < HEIGHT * WIDTH  # the point: 4K is 19 times bigger
        seen: list[tuple[int, ...]] = []
        detect = detector.detect

        def recording(frames, threshold):
            seen.extend(f.shape for f in frames)
            return detect(frames, threshold)

        detector.detect = recording
        try:
            request = {"keyframes": [{"time": 1.0}], "box_format": "pixels"}
            r = await s.client.post("/detect", files=detect_files(video, json.dumps(request)))
        finally:
            detector.detect = detect
    assert r.status_code == 200, r.text
    answer = r.json()
    assert seen and all(shape == (*wanted, 3) for shape in seen), (seen, wanted)  # before: 4K
    assert (answer["video"]["width"], answer["video"]["height"]) == (WIDTH, HEIGHT)
    for actor in answer["keyframes"][0]["actors"]:  # boxes in the video's pixels
        x1, y1, x2, y2 = actor["box"]
        assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
    assert {"detect", "detect_wait"} <= answer["timing_ms"].keys()
    assert answer["timing_ms"]["detect"] > 0


def test_needed_size_keeps_small_frames_and_the_aspect():
    from fbil.model.persons import load_person_detector

    detector = load_person_detector()
    assert detector.needed_size(240, 320) == (240, 320)  # already small: unchanged
    h, w = detector.needed_size(HEIGHT, WIDTH)
    assert abs(w / h - WIDTH / HEIGHT) < 0.01
    for member in getattr(detector, "detectors", [detector]):  # the default merges two
        tiles = member.tiling.windows(h, w)
        tile_h, tile_w = tiles[0, 3] - tiles[0, 1], tiles[0, 2] - tiles[0, 0]
        in_h, in_w = member.input_size
        assert tile_h >= in_h or tile_w >= in_w  # each tile still scaled down to its model input
