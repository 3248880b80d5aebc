"""A tiny AVA-style frame-folder dataset and a training config for it (the training tests')."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.io import write_jpeg

FPS = 5
SIZES = {"vidA": (48, 64), "vidB": (48, 56)}  # (H, W): the two videos get padded together
PERSONS = {  # box -> AVA ids (99 is not an AVA v2.2 class and is dropped)
    (0.1, 0.2, 0.45, 0.9): (12, 80),
    (0.55, 0.1, 0.9, 0.8): (11, 17, 99),
}
LABELMAP = "".join(f'item {{\n  name: "c{i}"\n  id: {i}\n}}\n' for i in (11, 12, 17, 80))


def write_tiny_ava(root: Path) -> dict[str, Path]:
    """2 videos of 5 s extracted at 5 fps, 4 keyframes each, 2 persons a keyframe."""
    rng = np.random.default_rng(0)
    for vid, (h, w) in SIZES.items():
        folder = root / "frames" / vid
        folder.mkdir(parents=True)
        for i in range(1, 5 * FPS + 2):
            img = rng.integers(0, 80, size=(3, h, w), dtype=np.uint8)
            img[:, int(0.2 * h) : int(0.9 * h), int(0.1 * w) : int(0.45 * w)] = 200
            img[1, int(0.1 * h) : int(0.8 * h), int(0.55 * w) : int(0.9 * w)] = 250
            write_jpeg(torch.from_numpy(img), str(folder / f"img_{i:05d}.jpg"), quality=90)
    ann = root / "annotations"
    ann.mkdir()
    gt, props = [], []
    for vid in SIZES:
        for t in range(1, 5):
            for pid, (box, ids) in enumerate(PERSONS.items()):
                coords = ",".join(f"{v:.3f}" for v in box)
                gt += [f"{vid},{t:04d},{coords},{a},{pid}" for a in ids]
                props.append(f"{vid},{t:04d},{coords},,0.95")
            props.append(f"{vid},{t:04d},0.300,0.300,0.400,0.400,,0.2")  # below min_score
    (ann / "train.csv").write_text("\n".join(gt) + "\n")
    (ann / "proposals.csv").write_text("\n".join(props) + "\n")
    (ann / "exclusions.csv").write_text("vidB,0004\n")
    (ann / "labelmap.pbtxt").write_text(LABELMAP)
    return {
        "root": root / "frames",
        "annotations": ann / "train.csv",
        "proposals": ann / "proposals.csv",
        "exclusions": ann / "exclusions.csv",
        "labelmap": ann / "labelmap.pbtxt",
    }


def tiny_config(paths: dict[str, Path], out: Path, **train: Any) -> dict[str, Any]:
    data = {
        "kind": "frames",
        "root": str(paths["root"]),
        "annotations": str(paths["annotations"]),
        "labelmap": str(paths["labelmap"]),
        "exclusions": str(paths["exclusions"]),
        "frame_fps": FPS,
        "first_timestamp": 0,
        "index_base": 1,
    }
    normalize = {
        "type": "Normalize",
        "kwargs": {"mean": [110.6, 103.2, 96.3], "std": [38.8, 37.9, 40.0]},
    }
    temporal = {"type": "TemporalCenterCrop", "kwargs": {"size": 8, "step": 2}}
    return {
        "result_path": str(out),
        "manual_seed": 3,
        "print_freq": 1,
        "model": {
            "freeze_bn": True,
            "backbone": {
                "arch": "slowfast50",
                "learnable": True,
                "kwargs": {"alpha": 4, "beta": 0.125, "layers": [1, 1, 1, 1], "width": 8},
            },
            "neck": {"type": "basic", "kwargs": {"bbox_jitter": {"num": 1, "scale": 0.075}}},
            "head": {
                "type": "fbil",
                "kwargs": {
                    "width": 288,
                    "roi_spatial": 7,
                    "num_classes": 60,
                    "reduce_dim": 16,
                    "head": 2,
                    "act": "softmax",
                    "e_depth": 1,
                    "c_depth": 1,
                    "l_depth": 1,
                    "local_beta": 0.9,
                    "local_delta": 0.2,
                    "global_beta": 0.2,
                    "global_delta": 1.0,
                },
            },
        },
        "loss": {"type": "ava_criterion", "kwargs": {"pose_softmax": True}},
        "train": {
            "data": data,
            "batch_size": 2,
            "workers": 0,
            "augmentation": {
                "spatial": [
                    {"type": "Scale", "kwargs": {"resize": 48}},
                    {"type": "RandomHorizontalFlip"},
                    {"type": "ToTensor", "kwargs": {"norm_value": 1.0}},
                    normalize,
                ],
                "temporal": temporal,
            },
            "n_epochs": 2,
            "val_freq": 1,
            "save_freq": 1,
            "optimizer": {
                "type": "SGD",
                "kwargs": {"momentum": 0.9, "weight_decay": 1e-7, "nesterov": True},
            },
            "scheduler": {
                "type": "step",
                "milestone_epochs": [1],
                "lr_mults": [0.5],
                "base_lr": 0.01,
                "warmup_lr": 0.05,
                "warmup_epochs": 1,
            },
            **train,
        },
        "val": {
            "data": {**data, "proposals": str(paths["proposals"]), "min_score": 0.5},
            "batch_size": 2,
            "workers": 0,
            "augmentation": {
                "spatial": [{"type": "Scale", "kwargs": {"resize": 48}}, normalize],
                "temporal": temporal,
            },
        },
        "metadata": {"name": "tiny", "version": "test", "description": "", "demo": True},
    }


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and the CPUs are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
