"""AVA frame-mAP@0.5IoU, computed the way the official AVA evaluator computes it.

Definition (``shared/reference/README.md`` section 3):

1. Only label-map ids count; other rows are dropped (ground truth and detections).
2. Frames are keyed by :func:`~model.training.ava_data.image_key` (``902`` == ``0902``); excluded
   keys are dropped from both inputs.
3. Per frame, at most 50 detection rows over all classes are kept: a min-heap on the score, a
   later row replaces the minimum only if its score is strictly larger. Ground truth is not capped.
4. Per frame and class, detections with ``x2 <= x1`` or ``y2 <= y1`` are discarded; the others, in
   descending score order, each take the ground-truth box of their class with the highest IoU
   (first one on ties). True positive iff that IoU >= 0.5 and that box is not matched yet.
5. Per class, pooled over frames by descending score: VOC all-point AP. No ground truth -> NaN;
   ground truth but no detections -> 0.0. mAP is the mean over classes ignoring NaN.

Equal scores are resolved in a fixed, stable order (file order); the original uses a non-stable
sort there, so its result for tied true/false positives is implementation-defined.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from fbil.model.training.ava_data import (
    AvaFormatError,
    Box,
    image_key,
    iter_box_csv,
    read_exclusions,
    read_labelmap,
)

__all__ = [
    "CLASS_KEY_PREFIX",
    "IOU_THRESHOLD",
    "MAP_KEY",
    "MAX_DETECTIONS_PER_FRAME",
    "ClassResult",
    "EvalRow",
    "FrameMapResult",
    "average_precision",
    "evaluate_csv",
    "evaluate_rows",
    "pairwise_iou",
    "read_eval_csv",
    "run_evaluation",
]

MAP_KEY = "PascalBoxes_Precision/mAP@0.5IOU"
CLASS_KEY_PREFIX = "PascalBoxes_PerformanceByCategory/AP@0.5IOU/"
IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_FRAME = 50


class EvalRow(NamedTuple):
    """One CSV row: frame key (:func:`image_key`), box ``(x1, y1, x2, y2)``, action id, score."""

    key: str
    box: Box
    action_id: int
    score: float = 1.0


@dataclass(frozen=True)
class ClassResult:
    """Per-class outcome; ``ap`` is NaN when the class has no ground truth."""

    class_id: int
    name: str
    num_gt: int
    num_detections: int
    num_true_positives: int
    ap: float


@dataclass(frozen=True)
class FrameMapResult:
    """mAP plus one :class:`ClassResult` per label-map class, in ascending id order."""

    mean_ap: float
    per_class: tuple[ClassResult, ...]

    def metrics(self) -> dict[str, float]:
        """The original evaluator's dict: mAP first, then one AP per class by ascending id."""
        out = {MAP_KEY: self.mean_ap}
        out.update({CLASS_KEY_PREFIX + c.name: c.ap for c in self.per_class})
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``metrics``, ``mAP``, ``per_class``) with NaN written as ``None``."""
        return {
            "metrics": {k: _nan_to_none(v) for k, v in self.metrics().items()},
            "mAP": _nan_to_none(self.mean_ap),
            "per_class": [
                {
                    "id": c.class_id,
                    "name": c.name,
                    "num_gt": c.num_gt,
                    "num_detections": c.num_detections,
                    "num_true_positives": c.num_true_positives,
                    "ap": _nan_to_none(c.ap),
                }
                for c in self.per_class
            ],
        }


# --------------------------------------------------------------------------------------------
# Reading


def read_eval_csv(path: str | Path) -> list[EvalRow]:
    """Read a ground-truth or detection CSV (7 or 8 columns) into :class:`EvalRow` in file order.

    The 8th column is read as the score, as the official reader does (for ground truth it holds
    the person id and only orders the boxes of a frame); without it the score is 1.0.
    """
    rows = []
    for row in iter_box_csv(path):
        if row.action_id is None:
            raise AvaFormatError(f"{path}:{row.lineno}: missing action id")
        score = 1.0
        if row.last is not None:
            try:
                score = float(row.last)
            except ValueError:
                raise AvaFormatError(f"{path}:{row.lineno}: bad score {row.last!r}") from None
        rows.append(EvalRow(image_key(row.video_id, row.timestamp), row.box, row.action_id, score))
    return rows


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate_csv(
    labelmap: str | Path,
    groundtruth: str | Path,
    detections: str | Path,
    exclusions: str | Path | None = None,
) -> FrameMapResult:
    """Frame-mAP from files in the official formats (see :mod:`model.training.ava_data`)."""
    return evaluate_rows(
        read_labelmap(labelmap),
        read_eval_csv(groundtruth),
        read_eval_csv(detections),
        read_exclusions(exclusions) if exclusions is not None else (),
    )


def run_evaluation(
    labelmap: str | Path,
    groundtruth: str | Path,
    detections: str | Path,
    exclusions: str | Path | None = None,
) -> dict[str, float]:
    """Like the original ``run_evaluation``: the metrics dict of :func:`evaluate_csv`."""
    return evaluate_csv(labelmap, groundtruth, detections, exclusions).metrics()


def evaluate_rows(
    labelmap: Sequence[tuple[int, str]],
    groundtruth: Iterable[EvalRow],
    detections: Iterable[EvalRow],
    excluded_keys: Collection[str] = (),
) -> FrameMapResult:
    """Frame-mAP of in-memory rows; ``labelmap`` is ``[(id, name), ...]`` (last name wins)."""
    names = dict(labelmap)
    if not names:
        raise ValueError("the label map is empty")
    gt = _group_frames(groundtruth, names.keys(), excluded_keys, capacity=0)
    det = _group_frames(detections, names.keys(), excluded_keys, MAX_DETECTIONS_PER_FRAME)

    num_gt = dict.fromkeys(names, 0)
    for rows in gt.values():
        for row in rows:
            num_gt[row.action_id] += 1

    scores: dict[int, list[float]] = {c: [] for c in names}
    is_tp: dict[int, list[bool]] = {c: [] for c in names}
    for key, rows in det.items():
        for class_id, frame_scores, frame_tp in _match_frame(rows, gt.get(key, [])):
            scores[class_id].extend(frame_scores)
            is_tp[class_id].extend(frame_tp)

    per_class = tuple(
        _class_result(c, names[c], num_gt[c], scores[c], is_tp[c]) for c in sorted(names)
    )
    return FrameMapResult(_mean_ap(per_class), per_class)


def _group_frames(
    rows: Iterable[EvalRow], whitelist: Collection[int], excluded: Collection[str], capacity: int
) -> dict[str, list[EvalRow]]:
    """Whitelist, exclude and (if ``capacity`` > 0) cap rows per frame; sort each by score desc.

    Heap entries are ``(score, action_id, y1, x1, y2, x2)`` as in the official reader, so the
    row that gets replaced at the cap on equal scores is the same one.
    """
    heaps: dict[str, list[tuple[float, int, float, float, float, float]]] = {}
    for row in rows:
        if row.action_id not in whitelist or row.key in excluded:
            continue
        x1, y1, x2, y2 = row.box
        entry = (row.score, row.action_id, y1, x1, y2, x2)
        heap = heaps.setdefault(row.key, [])
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, entry)
        elif row.score > heap[0][0]:
            heapq.heapreplace(heap, entry)
    return {
        key: [
            EvalRow(key, (x1, y1, x2, y2), action_id, score)
            for score, action_id, y1, x1, y2, x2 in sorted(heap, key=lambda e: -e[0])
        ]
        for key, heap in heaps.items()
    }


def _match_frame(
    detections: Sequence[EvalRow], groundtruth: Sequence[EvalRow]
) -> list[tuple[int, list[float], list[bool]]]:
    """Greedy matching in one frame: ``(class_id, scores, is_true_positive)`` per detected class.

    ``detections`` must be sorted by descending score.
    """
    out = []
    for class_id in dict.fromkeys(r.action_id for r in detections):
        dets = [r for r in detections if r.action_id == class_id and _is_valid(r.box)]
        if not dets:
            continue
        gt_boxes = np.array([r.box for r in groundtruth if r.action_id == class_id], dtype=float)
        tp = [False] * len(dets)
        if len(gt_boxes):
            iou = pairwise_iou([r.box for r in dets], gt_boxes)
            best = np.argmax(iou, axis=1)
            matched = np.zeros(len(gt_boxes), dtype=bool)
            for i, j in enumerate(best):
                if iou[i, j] >= IOU_THRESHOLD and not matched[j]:
                    tp[i] = matched[j] = True
        out.append((class_id, [r.score for r in dets], tp))
    return out


def _is_valid(box: Box) -> bool:
    x1, y1, x2, y2 = box
    return x1 < x2 and y1 < y2


def pairwise_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> np.ndarray:
    """IoU matrix ``[N, M]`` of ``(x1, y1, x2, y2)`` boxes; area = (x2 - x1)(y2 - y1), no +1."""
    boxes1 = np.asarray(boxes1, dtype=float).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=float).reshape(-1, 4)
    x1a, y1a, x2a, y2a = (boxes1[:, i : i + 1] for i in range(4))
    x1b, y1b, x2b, y2b = (boxes2[:, i] for i in range(4))
    heights = np.maximum(0.0, np.minimum(y2a, y2b) - np.maximum(y1a, y1b))
    widths = np.maximum(0.0, np.minimum(x2a, x2b) - np.maximum(x1a, x1b))
    intersection = heights * widths
    area_a = (y2a - y1a) * (x2a - x1a)
    area_b = (y2b - y1b) * (x2b - x1b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area_a + area_b - intersection)


def _class_result(
    class_id: int, name: str, num_gt: int, scores: list[float], is_tp: list[bool]
) -> ClassResult:
    ap = average_precision(scores, is_tp, num_gt) if num_gt > 0 else math.nan
    return ClassResult(class_id, name, num_gt, len(scores), sum(is_tp), ap)


def average_precision(scores: Sequence[float], is_tp: Sequence[bool], num_gt: int) -> float:
    """VOC all-point AP of detections ranked by descending score (stable on ties).

    Precision/recall are prefixed with (recall 0, precision 0) and suffixed with
    (recall 1, precision 0); precision is made non-increasing from the right and
    summed as ``sum(delta recall * precision)`` where recall changes.
    """
    if num_gt <= 0:
        raise ValueError("average precision needs at least one ground-truth instance")
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    tp = np.asarray(is_tp, dtype=bool)[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(~tp)
    precision = np.concatenate([[0.0], cum_tp / (cum_tp + cum_fp), [0.0]])
    recall = np.concatenate([[0.0], cum_tp / num_gt, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    changed = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[changed] - recall[changed - 1]) * precision[changed]))


def _mean_ap(per_class: Sequence[ClassResult]) -> float:
    """NaN-ignoring mean over an array indexed by ``class id - 1`` (the original's sum order)."""
    aps = np.full(max(c.class_id for c in per_class), np.nan)
    for c in per_class:
        aps[c.class_id - 1] = c.ap
    return float(np.nanmean(aps)) if not np.isnan(aps).all() else math.nan


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
