"""A person bigger than a tile comes out as one box, not as their head, arm or legs.

The grid windows of :class:`fbil.model.tiles.Tiling` each see a part of a person near the camera,
and a detector boxes that part as a person. Two rules drop such parts: a grid box that fills its
window (``fill``), and a box mostly inside a big, better-scored person's box (``drop_parts``),
also across the two bundled detectors. Checked on frames made from Debian's opencv-doc photos
(people close to the camera, labelled by hand on a 20 px grid) and on small synthetic cases.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbil.model.persons import (
    DEFAULT_THRESHOLD,
    DEFAULT_TILING,
    MergedPersonDetector,
    PersonBoxes,
    load_bundled_detector,
)
from fbil.model.tiles import Tiling, drop_parts, merge_tiles
from tests.support.people_labels import match

# every clearly visible person of each photo, pixels x1, y1, x2, y2, head to feet (or the edge)
PEOPLE = {
    "messi5.jpg": [[68, 62, 457, 335]],
    "basketball1.png": [[35, 80, 160, 478], [435, 22, 640, 480]],
    "basketball2.png": [[35, 80, 165, 480], [428, 20, 640, 480]],
}
# what a user films: crops of the photos (a zoom, a wide shot cut at the knees, a portrait
# phone shot of one person), scaled so their long side is 1280 px
CROPS = [
    ("messi5.jpg", (48, 40, 502, 295)),
    ("messi5.jpg", (0, 0, 548, 342)),
    ("basketball1.png", (0, 120, 640, 480)),
    ("basketball2.png", (0, 120, 640, 480)),
    ("basketball1.png", (300, 0, 640, 480)),
    ("basketball2.png", (300, 0, 640, 480)),
    ("basketball1.png", (0, 0, 340, 480)),
    ("basketball2.png", (330, 60, 640, 300)),
]
NO_PART_RULES = dataclasses.replace(DEFAULT_TILING, fill=2.0, part_inside=2.0)


@pytest.fixture(scope="module")
def scenes(test_videos: Path) -> list[tuple[np.ndarray, dict[str, list[float]]]]:
    """Each crop as an RGB frame and its labelled people in the frame's pixels."""
    out = []
    for name, (x1, y1, x2, y2) in CROPS:
        image = Image.open(test_videos / name).convert("RGB").crop((x1, y1, x2, y2))
        k = 1280 / max(image.size)
        image = image.resize((round(image.size[0] * k), round(image.size[1] * k)))
        people = {}
        for i, (a, b, c, d) in enumerate(PEOPLE[name]):
            a, b, c, d = max(a, x1), max(b, y1), min(c, x2), min(d, y2)
            if c - a > 20 and d - b > 20:  # in the crop
                people[str(i)] = [(a - x1) * k, (b - y1) * k, (c - x1) * k, (d - y1) * k]
        out.append((np.asarray(image), people))
    return out


def score(detector, scenes) -> tuple[int, int, int, int]:
    """(people found, people, false alarms, parts among them) over the scenes."""
    found = people = false_alarms = parts = 0
    for frame, labelled in scenes:
        boxes = detector.detect([frame], DEFAULT_THRESHOLD)[0]
        h, w = frame.shape[:2]
        matched, fa, part = match(labelled, [], boxes.boxes * [w, h, w, h], boxes.scores)
        found, people = found + len(matched), people + len(labelled)
        false_alarms, parts = false_alarms + fa, parts + part
    return found, people, false_alarms, parts


def test_people_near_the_camera_come_out_whole_not_in_parts(scenes) -> None:
    before = score(load_bundled_detector(num_threads=2, tiling=NO_PART_RULES), scenes)
    after = score(load_bundled_detector(num_threads=2), scenes)
    # measured: without the rules 3 part boxes among 4 false alarms; with them no part and 1
    # false alarm (a fan cut by messi5's left edge), and all 10 people still found
    assert before[0] == before[1] == 10 and before[3] >= 3
    assert after[:2] == (10, 10), "a part rule dropped a whole person"
    assert after[3] == 0 and after[2] <= 1


def test_a_box_filling_its_tile_is_left_to_the_whole_frame() -> None:
    # two grid windows and the whole frame, 200x100; a person 8..96 x 5..98 fills window A, whose
    # right border is inside the frame: A's box (a part) goes and the whole frame's is kept,
    # although it fits window A
    windows = np.array([[0, 0, 100, 100], [100, 0, 200, 100], [0, 0, 200, 100]])
    in_a = np.array([[0.05, 0.04, 0.93, 0.97]], np.float32)
    whole = np.array([[0.04, 0.05, 0.48, 0.98]], np.float32)
    empty = np.zeros((0, 4), np.float32)
    one = np.array([0.9], np.float32)
    boxes, scores = merge_tiles(
        windows, [in_a, empty, whole], [one, one[:0], np.array([0.6], np.float32)], 100, 200
    )
    np.testing.assert_allclose(boxes * [200, 100, 200, 100], [[8, 5, 96, 98]], atol=1e-4)
    assert scores.tolist() == pytest.approx([0.6])
    # with the rule off, the tile's box wins and the whole frame's is left to the tile
    off = Tiling(fill=2.0)
    boxes, scores = merge_tiles(
        windows, [in_a, empty, whole], [one, one[:0], np.array([0.6], np.float32)], 100, 200,
        **off.parts,
    )  # fmt: skip
    assert scores.tolist() == pytest.approx([0.9])


def test_parts_inside_a_big_better_scored_person_go_and_other_people_stay() -> None:
    boxes = np.array(
        [
            [100, 0, 600, 700],  # 0: the big person, 0.9
            [300, 20, 500, 200],  # 1: their head, 0.4: a part
            [120, 300, 300, 500],  # 2: an arm, 0.6: a part
            [50, 400, 200, 690],  # 3: someone behind, half outside: stays
            [400, 350, 560, 690],  # 4: someone behind scored higher than 0.9: stays
            [700, 0, 800, 300],  # 5: someone elsewhere: stays
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.4, 0.6, 0.5, 0.95, 0.3], np.float32)
    big = np.array([True, False, False, False, False, False])
    assert drop_parts(boxes, scores, big).tolist() == [0, 3, 4, 5]
    # a big box scored under min_score holds no parts (a loose box round a group, say)
    assert drop_parts(boxes, np.where(big, 0.45, scores), big).tolist() == [0, 1, 2, 3, 4, 5]
    assert drop_parts(boxes, scores, np.zeros(6, bool)).tolist() == [0, 1, 2, 3, 4, 5]


class _Fixed:
    """A detector that finds the same boxes on every frame, with the default tiling."""

    tiling = DEFAULT_TILING

    def __init__(self, boxes: list[list[float]], scores: list[float]) -> None:
        self.found = PersonBoxes(np.asarray(boxes, np.float32), np.asarray(scores, np.float32))

    def detect(self, frames, threshold):
        return [self.found for _ in frames]

    def describe(self):
        return {"model": "fixed"}


def test_merged_detectors_drop_one_detectors_part_of_the_others_whole_person() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    whole = _Fixed([[0.45, 0.05, 1.0, 0.95]], [0.98])  # wider and taller than any tile
    parts = _Fixed([[0.6, 0.02, 0.95, 0.3], [0.2, 0.2, 0.3, 0.6]], [0.4, 0.8])  # head; a person
    found = MergedPersonDetector([whole, parts]).detect([frame], 0.3)[0]
    assert found.scores.tolist() == pytest.approx([0.98, 0.8])
