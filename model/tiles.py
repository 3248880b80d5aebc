"""Overlapping tiles over a frame, and merging the boxes found in them back into one list.

A detector that sees its input at 300x300 finds people 70-100 px tall in a 768x576 frame only
when it looks at parts of the frame near their own size: :class:`Tiling` cuts the frame into a
grid of equal, overlapping windows (plus, optionally, the whole frame for people too big for a
tile), and :func:`merge_tiles` maps each window's boxes back to the frame, drops boxes that a
tile border cut through (the person is whole in a neighbouring window) and removes duplicates
with non-maximum suppression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tiling:
    """``cols`` x ``rows`` equal windows overlapping by ``overlap`` of a window's side, plus the
    whole frame when ``whole_frame``. ``1 x 1`` without overlap is the whole frame alone."""

    cols: int = 3
    rows: int = 2
    overlap: float = 0.35
    whole_frame: bool = True

    def __post_init__(self) -> None:
        if self.cols < 1 or self.rows < 1 or not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"bad tiling {self}")

    def windows(self, height: int, width: int) -> np.ndarray:
        """``(k, 4)`` int pixel windows ``x1, y1, x2, y2``: the grid row by row, then the whole
        frame (if asked for and not already the only window)."""
        xs, tw = _spans(width, self.cols, self.overlap)
        ys, th = _spans(height, self.rows, self.overlap)
        grid = [(x, y, x + tw, y + th) for y in ys for x in xs]
        if self.whole_frame and (self.cols, self.rows) != (1, 1):
            grid.append((0, 0, width, height))
        return np.asarray(grid, dtype=np.int64)

    def describe(self) -> str:
        whole = " + whole frame" if self.whole_frame and (self.cols, self.rows) != (1, 1) else ""
        return f"{self.cols}x{self.rows} tiles, overlap {self.overlap:g}{whole}"


def _spans(length: int, count: int, overlap: float) -> tuple[list[int], int]:
    """Starts and the common size of ``count`` windows covering ``length``."""
    size = min(length, math.ceil(length / (count - (count - 1) * overlap)))
    if count == 1:
        return [0], length
    step = (length - size) / (count - 1)
    return [round(i * step) for i in range(count)], size


def merge_tiles(
    windows: np.ndarray,
    boxes: list[np.ndarray],
    scores: list[np.ndarray],
    height: int,
    width: int,
    *,
    iou: float = 0.5,
    cut_margin: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame's people from its windows' detections.

    ``boxes[i]`` are window ``i``'s boxes normalised to the window (``x1, y1, x2, y2``) and
    ``scores[i]`` their scores. A box of a grid window that comes within ``cut_margin`` (of the
    window's side) of a border inside the frame is dropped: the person goes on beyond the window
    and a neighbouring window (or the whole frame) sees them whole. The rest are mapped to the
    frame and suppressed at IoU ``iou``. Returns frame-normalised float32 boxes ``(n, 4)`` and
    scores ``(n,)``, best first.
    """
    kept_boxes, kept_scores = [], []
    frame = np.array([0, 0, width, height])
    grid = windows[(windows != frame).any(axis=1)]
    for (x1, y1, x2, y2), b, s in zip(windows, boxes, scores, strict=True):
        if len(s) == 0:
            continue
        if len(grid) and (x1, y1, x2, y2) == (0, 0, width, height):
            # the whole frame is there for people too big for a tile: what fits in one is the
            # tiles' to find (seen from afar, people side by side come out as one box)
            big = ~_fits_a_window(b * np.array([width, height, width, height]), grid)
            b, s = b[big], s[big]
        inner = np.array([x1 > 0, y1 > 0, x2 < width, y2 < height])  # left, top, right, bottom
        if inner.any():
            near = np.stack(
                (b[:, 0] < cut_margin, b[:, 1] < cut_margin,
                 b[:, 2] > 1 - cut_margin, b[:, 3] > 1 - cut_margin), axis=1,
            )  # fmt: skip
            keep = ~(near & inner).any(axis=1)
            b, s = b[keep], s[keep]
        scale = np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1], dtype=np.float32)
        offset = np.array([x1, y1, x1, y1], dtype=np.float32)
        kept_boxes.append(b * scale + offset)
        kept_scores.append(s)
    if not kept_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    pixels = np.concatenate(kept_boxes).astype(np.float32)
    conf = np.concatenate(kept_scores).astype(np.float32)
    keep = nms(pixels, conf, iou)  # sorted by descending score
    size = np.array([width, height, width, height], dtype=np.float32)
    out = (pixels[keep] / size).clip(0.0, 1.0).astype(np.float32)
    return out, conf[keep]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression (torchvision's ``nms``): indices of the kept ``(n, 4)``
    ``x1, y1, x2, y2`` boxes by descending score; a box goes when its IoU with a kept,
    higher-scored one exceeds ``iou``."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1 :]
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(min=0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(min=0)
        inter = w * h
        suppressed[rest[inter / (areas[i] + areas[rest] - inter) > iou]] = True
    return np.asarray(keep, dtype=np.int64)


def _fits_a_window(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Which pixel boxes ``(n, 4)`` lie wholly inside one of ``windows`` ``(k, 4)``."""
    inside = (boxes[:, None, :2] >= windows[None, :, :2]).all(axis=2) & (
        boxes[:, None, 2:] <= windows[None, :, 2:]
    ).all(axis=2)
    return inside.any(axis=1)
