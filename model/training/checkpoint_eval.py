"""Evaluate a model checkpoint on a dataset split (the ``fbil-eval checkpoint`` mode)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from fbil.model.checkpoint import load_model
from fbil.model.device import resolve_device
from fbil.model.training.ava_eval import FrameMapResult, evaluate_csv
from fbil.model.training.collate import collate
from fbil.model.training.datasets import KeyframeDataset, build_entries, clip_reader
from fbil.model.training.predict import predict, write_detections_csv
from fbil.model.training.train_config import load_train_config


def run_checkpoint(
    checkpoint: Path,
    data_config: Path,
    *,
    split: str = "val",
    out: Path,
    model_config: Path | None = None,
    gt_boxes: bool = False,
    batch_size: int | None = None,
    device: str | None = None,
) -> FrameMapResult | None:
    """Run the model over the split's keyframes, write ``out`` and score it (None when the split
    has no ground truth). ``model_config`` (a published-format YAML) is needed only for weights
    that embed no config. Preprocessing is the model's (its metadata), not the split's."""
    cfg = load_train_config(data_config)
    section = cfg.val if split == "val" else cfg.train
    if section is None:
        raise ValueError(f"{data_config} has no {split} section")
    detector, metadata = load_model(checkpoint, model_config)
    dev = resolve_device(device)
    detector.to(dev)
    pre = metadata.preprocess
    entries = build_entries(section.data, metadata.labels, pre, use_proposals=not gt_boxes)
    dataset = KeyframeDataset(entries, clip_reader(section.data, pre), len(metadata.labels))
    loader = DataLoader(
        dataset,
        batch_size=batch_size or section.batch_size,
        num_workers=section.workers,
        collate_fn=collate,
    )
    write_detections_csv(predict(detector, loader, metadata.labels, dev), out)
    files = section.eval_files
    if files is None:
        return None
    return evaluate_csv(files.labelmap, files.groundtruth, out, files.exclusions)
