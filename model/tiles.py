"""Overlapping tiles over a frame, and merging the boxes found in them back into one list.

A detector that sees its input at 300x300 finds people 70-100 px tall in a 768x576 frame only
when it looks at parts of the frame near their own size: :class:`Tiling` cuts the frame into a
grid of equal, overlapping windows (plus, optionally, the whole frame for people too big for a
tile), and :func:`merge_tiles` maps each window's boxes back to the frame, drops boxes that a
tile border cut through (the person is whole in a neighbouring window) and removes duplicates
with non-maximum suppression. A person near the camera is bigger than a tile, and each tile sees
a part of them (a head, an arm, the legs) that the detector boxes as a person: such parts are
dropped too (a box filling its tile; a box inside a big person's, :func:`drop_parts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FILL = 0.85  # a grid window's box spanning this much of its width and height is a part
PART_INSIDE = 0.8  # a box this much inside a big, better-scored person's box is a part of them
PART_OF_SCORE = 0.5  # ... when that person's box scored this much or more


@dataclass(frozen=True)
class Tiling:
    """``cols`` x ``rows`` equal windows overlapping by ``overlap`` of a window's side, plus the
    whole frame when ``whole_frame``. ``1 x 1`` without overlap is the whole frame alone.

    ``fill``, ``part_inside`` and ``part_of_score`` say when a box is a part of a person bigger
    than a window (:func:`merge_tiles`, :func:`drop_parts`); ``fill`` or ``part_inside`` above 1
    turns that rule off."""

    cols: int = 3
    rows: int = 2
    overlap: float = 0.35
    whole_frame: bool = True
    fill: float = FILL
    part_inside: float = PART_INSIDE
    part_of_score: float = PART_OF_SCORE

    def __post_init__(self) -> None:
        if self.cols < 1 or self.rows < 1 or not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"bad tiling {self}")
        if self.fill <= 0.0 or self.part_inside <= 0.0 or not 0.0 <= self.part_of_score <= 1.0:
            raise ValueError(f"bad part rules {self}")

    @property
    def parts(self) -> dict[str, float]:
        """The part rules as :func:`merge_tiles` keywords."""
        return {"fill": self.fill, "part_inside": self.part_inside,
                "part_of_score": self.part_of_score}  # fmt: skip

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
    fill: float = FILL,
    part_inside: float = PART_INSIDE,
    part_of_score: float = PART_OF_SCORE,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame's people from its windows' detections.

    ``boxes[i]`` are window ``i``'s boxes normalised to the window (``x1, y1, x2, y2``) and
    ``scores[i]`` their scores. A box of a grid window that comes within ``cut_margin`` (of the
    window's side) of a border inside the frame is dropped: the person goes on beyond the window
    and a neighbouring window (or the whole frame) sees them whole. So is one spanning ``fill``
    of its window's width and height: a window filled by a person is a part of someone bigger
    (near the camera), whom the whole frame sees. The whole frame's boxes are kept only for
    people no grid window holds without being filled. The rest are mapped to the frame,
    suppressed at IoU ``iou``, and parts of a big person are dropped (:func:`drop_parts`).
    Returns frame-normalised float32 boxes ``(n, 4)`` and scores ``(n,)``, best first.
    """
    kept_boxes, kept_scores = [], []
    grid = grid_windows(windows, height, width)
    for (x1, y1, x2, y2), b, s in zip(windows, boxes, scores, strict=True):
        if len(s) == 0:
            continue
        if len(grid) and (x1, y1, x2, y2) == (0, 0, width, height):
            # the whole frame is there for people too big for a tile: what fits in one is the
            # tiles' to find (seen from afar, people side by side come out as one box)
            big = ~fits_a_window(b * np.array([width, height, width, height]), grid, fill)
            b, s = b[big], s[big]
        inner = np.array([x1 > 0, y1 > 0, x2 < width, y2 < height])  # left, top, right, bottom
        if inner.any():
            near = np.stack(
                (b[:, 0] < cut_margin, b[:, 1] < cut_margin,
                 b[:, 2] > 1 - cut_margin, b[:, 3] > 1 - cut_margin), axis=1,
            )  # fmt: skip
            filled = (b[:, 2] - b[:, 0] >= fill) & (b[:, 3] - b[:, 1] >= fill)
            keep = ~((near & inner).any(axis=1) | filled)
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
    pixels, conf = pixels[keep], conf[keep]
    if len(grid):
        big = ~fits_a_window(pixels, grid, fill)
        keep = drop_parts(pixels, conf, big, inside=part_inside, min_score=part_of_score)
        pixels, conf = pixels[keep], conf[keep]
    size = np.array([width, height, width, height], dtype=np.float32)
    out = (pixels / size).clip(0.0, 1.0).astype(np.float32)
    return out, conf


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


def drop_parts(
    boxes: np.ndarray,
    scores: np.ndarray,
    big: np.ndarray,
    *,
    inside: float = PART_INSIDE,
    min_score: float = PART_OF_SCORE,
) -> np.ndarray:
    """Indices (in order) of the boxes that are not parts of a big person.

    A window smaller than a person near the camera shows only their head, arm or legs, and a
    detector boxes such a part as a person. A box lying at least ``inside`` of its area within
    a ``big`` box (one no grid window holds) that scored ``min_score`` or more, and more than it
    did, is taken for such a part. A person standing behind keeps their box when scored higher
    than the one in front, or when less of them is hidden behind it than ``inside``.
    """
    keep = np.ones(len(scores), bool)
    holders = np.flatnonzero(big & (scores >= min_score))
    if len(holders) == 0:
        return np.flatnonzero(keep)
    x1, y1, x2, y2 = (v[:, None] for v in boxes.T)
    hx1, hy1, hx2, hy2 = (v[None, holders] for v in boxes.T)
    w = (np.minimum(x2, hx2) - np.maximum(x1, hx1)).clip(min=0)
    h = (np.minimum(y2, hy2) - np.maximum(y1, hy1)).clip(min=0)
    area = ((x2 - x1) * (y2 - y1)).clip(min=1e-9)
    within = (w * h / area >= inside) & (scores[:, None] < scores[None, holders])
    keep &= ~within.any(axis=1)
    keep[holders] = True
    return np.flatnonzero(keep)


def grid_windows(windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """The windows other than the whole ``height x width`` frame."""
    return windows[(windows != np.array([0, 0, width, height])).any(axis=1)]


def fits_a_window(boxes: np.ndarray, windows: np.ndarray, fill: float = FILL) -> np.ndarray:
    """Which pixel boxes ``(n, 4)`` lie wholly inside one of ``windows`` ``(k, 4)`` without
    spanning ``fill`` of its width and height."""
    inside = (boxes[:, None, :2] >= windows[None, :, :2]).all(axis=2) & (
        boxes[:, None, 2:] <= windows[None, :, 2:]
    ).all(axis=2)
    size = (windows[None, :, 2:] - windows[None, :, :2]).astype(np.float64)
    filled = ((boxes[:, None, 2:] - boxes[:, None, :2]) >= fill * size).all(axis=2)
    return (inside & ~filled).any(axis=1)
