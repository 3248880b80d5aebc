"""Actor boxes of a request: validated and normalised to the displayed frame."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fbil.service.errors import BadBoxError, TooManyBoxesError


def normalize_boxes(
    boxes: Sequence[Sequence[float]],
    box_format: Literal["pixels", "normalized"],
    width: int,
    height: int,
    *,
    max_boxes: int | None = None,
    tolerance: float = 0.02,
) -> np.ndarray:
    """Validate boxes ``x1, y1, x2, y2`` and return them normalised, ``(n, 4)`` float32 in 0..1.

    ``pixels`` are coordinates in the displayed frame of ``width`` x ``height``; ``normalized``
    are already fractions of it. Row ``i`` is box ``i``. Boxes may exceed the frame by
    ``tolerance`` (a fraction of its size) and are then clipped; anything else raises
    :class:`BadBoxError` naming the box. More than ``max_boxes`` boxes are refused
    (:class:`TooManyBoxesError`, HTTP 413).
    """
    if box_format not in ("pixels", "normalized"):
        raise BadBoxError(f"unknown box format {box_format!r} (pixels or normalized)")
    if max_boxes is not None and len(boxes) > max_boxes:
        raise TooManyBoxesError(
            f"{len(boxes)} boxes given, the limit is {max_boxes} per keyframe",
            {"max_boxes_per_keyframe": max_boxes},
        )
    scale = np.array([width, height, width, height], dtype=np.float64)
    rows = []
    for i, box in enumerate(boxes):
        values = _box_values(i, box)
        norm = values / scale if box_format == "pixels" else values
        _check_box(i, box, norm, tolerance)
        rows.append(np.clip(norm, 0.0, 1.0))
    out = np.stack(rows) if rows else np.zeros((0, 4))
    return out.astype(np.float32)


def _box_values(i: int, box: Sequence[float]) -> np.ndarray:
    try:
        values = np.asarray(box, dtype=np.float64)
    except OverflowError as e:  # an integer beyond float64 (JSON has no size limit)
        raise BadBoxError(f"box {i} has a coordinate too large for a number: {_short(box)}") from e
    except (TypeError, ValueError) as e:
        raise BadBoxError(f"box {i} is not 4 numbers: {_short(box)}") from e
    if values.shape != (4,):
        raise BadBoxError(f"box {i} needs 4 numbers x1, y1, x2, y2, got {_short(box)}")
    if not np.isfinite(values).all():
        raise BadBoxError(f"box {i} has a non-finite coordinate: {_short(box)}")
    return values


def _check_box(i: int, box: Sequence[float], norm: np.ndarray, tolerance: float) -> None:
    x1, y1, x2, y2 = norm
    if not (x1 < x2 and y1 < y2):
        raise BadBoxError(
            f"box {i} is empty or inverted (needs x1 < x2 and y1 < y2): {_short(box)}"
        )
    if norm.min() < -tolerance or norm.max() > 1 + tolerance:
        raise BadBoxError(f"box {i} lies outside the frame: {_short(box)}")
    clipped = np.clip(norm, 0.0, 1.0)
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise BadBoxError(f"box {i} has no area inside the frame: {_short(box)}")


def _short(box: Sequence[float], limit: int = 80) -> str:
    text = repr(box)
    return text if len(text) <= limit else text[: limit - 3] + "..."
