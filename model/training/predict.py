"""Run a detector over keyframe batches and write the AVA detections CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fbil.model.backbone import feature_size
from fbil.model.detector import FBILDetector, valid_feature_size
from fbil.model.labels import LabelMap
from fbil.model.training.collate import Batch


class Detection(NamedTuple):
    """One row of the detections CSV: a box (normalised to its frame) and one class score."""

    video_id: str
    timestamp: int
    box: tuple[float, float, float, float]
    action_id: int
    score: float


def batch_valid_hw(batch: Batch) -> Tensor | None:
    """``valid_hw`` for a padded batch (None when no clip is padded)."""
    if not batch.padded:
        return None
    h, w = feature_size(*batch.clips.shape[-2:])
    return valid_feature_size(batch.sizes_before_padding, h, w).to(batch.clips.device)


def forward_batch(model: nn.Module, batch: Batch) -> Tensor:
    """Logits ``(N, C)`` of a batch already on the model's device."""
    return model(batch.clips, batch.rois, batch_valid_hw(batch))


@torch.inference_mode()
def predict(
    detector: FBILDetector,
    batches: Iterable[Batch],
    labels: LabelMap,
    device: torch.device,
    amp: bool = False,
) -> list[Detection]:
    """Scores of every box for every class, one :class:`Detection` per (box, class)."""
    detector.eval()
    rows: list[Detection] = []
    ids = labels.ids
    for batch in batches:
        on_device = batch.to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = forward_batch(detector, on_device)
        scores = detector.scores(logits.float()).cpu()
        clip_of_roi = batch.rois[:, 0].long().tolist()
        for r, clip in enumerate(clip_of_roi):
            key = batch.keys[clip]
            box = tuple(float(v) for v in batch.boxes[r])
            for c, action_id in enumerate(ids):
                rows.append(
                    Detection(key.video_id, key.timestamp, box, action_id, float(scores[r, c]))
                )  # type: ignore[arg-type]
    return rows


def write_detections_csv(rows: Sequence[Detection], path: str | Path) -> None:
    """``video_id,timestamp,x1,y1,x2,y2,action_id,score``, sorted by frame, box and class (so
    the file does not depend on batching or ranks); timestamp ``%04d``, boxes with 3 decimals
    as the published code writes them, scores with 6."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for d in sorted(rows, key=lambda r: (r.video_id, r.timestamp, r.box, r.action_id)):
            writer.writerow(
                [
                    d.video_id,
                    f"{d.timestamp:04d}",
                    *(f"{v:.3f}" for v in d.box),
                    d.action_id,
                    f"{d.score:.6f}",
                ]
            )
