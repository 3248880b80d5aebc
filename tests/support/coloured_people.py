"""A synthetic street for the person-detection tests: two "people" (a red and a green upright
block) walking side by side, and a detector that finds them by colour (a real detector for
these frames: it looks at the pixels, nothing else)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from fbil.model.persons import PersonBoxes
from tests.support.synthetic_video import encode

WIDTH, HEIGHT, FPS = 320, 160, 10
PERSON_W, PERSON_H = 24, 60
SPEED = PERSON_W  # pixels per second: in one second each takes its neighbour's place
# colour -> the score the detector gives it
PEOPLE = {(230, 30, 30): 0.9, (30, 200, 30): 0.6}


def person_boxes(t: float) -> list[tuple[int, int, int, int]]:
    """Pixel boxes of the red and the green person at ``t`` seconds (side by side)."""
    x = 40 + round(SPEED * t)
    y = 50
    return [(x + i * PERSON_W, y, x + (i + 1) * PERSON_W, y + PERSON_H) for i in range(2)]


def street_image(t: float) -> np.ndarray:
    img = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for (x1, y1, x2, y2), colour in zip(person_boxes(t), PEOPLE, strict=True):
        img[y1:y2, x1:x2] = colour
    return img


def street_video(seconds: float = 4.0) -> bytes:
    """``seconds`` of the street at ``FPS`` (mpeg4 in AVI), frame ``i`` at ``i / FPS``."""
    count = round(seconds * FPS)
    images = [street_image(i / FPS) for i in range(count)]
    return encode(
        range(count),
        codec="mpeg4",
        fmt="avi",
        time_base=Fraction(1, FPS),
        images=images,
        options={"qscale": "2"},
        rate=FPS,
    )


class ColourDetector:
    """Finds the red and the green person by their colour; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # frames per call

    def detect(self, frames: Sequence[np.ndarray], threshold: float) -> list[PersonBoxes]:
        self.calls.append(len(frames))
        return [self._one(f, threshold) for f in frames]

    def _one(self, frame: np.ndarray, threshold: float) -> PersonBoxes:
        h, w = frame.shape[:2]
        rows, scores = [], []
        for colour, score in PEOPLE.items():
            near = (np.abs(frame.astype(int) - colour).max(axis=2) < 50).nonzero()
            if score < threshold or len(near[0]) < 50:
                continue
            ys, xs = near
            rows.append([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])
            scores.append(score)
        boxes = np.asarray(rows, np.float32).reshape(-1, 4)
        return PersonBoxes(boxes, np.asarray(scores, np.float32))

    def describe(self) -> dict[str, object]:
        return {"model": "colour"}
