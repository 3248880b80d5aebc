"""End-to-end training on a tiny frame-folder dataset: loss goes down, exact resume, servable
checkpoints, validation, ``fbil-eval checkpoint``, and two gloo ranks under torchrun."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torchvision.io import write_jpeg

from fbil.model.checkpoint import load_model
from fbil.model.training import eval_cli, train_cli
from fbil.model.training.collate import collate
from fbil.model.training.loss import ava_loss
from fbil.model.training.predict import forward_batch
from fbil.model.training.train import Trainer, weights_digest
from fbil.model.training.train_config import train_config_from_dict

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


def write_config(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and the CPUs are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ava(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_ava(tmp_path_factory.mktemp("tiny_ava"))


def eval_loss(trainer: Trainer) -> float:
    """Loss of the whole (unaugmented) training set in eval mode."""
    ds = trainer.train_set
    augment, ds.augment = ds.augment, None
    batch = collate([ds[i] for i in range(len(ds))])
    ds.augment = augment
    trainer.detector.eval()
    with torch.no_grad():
        logits = forward_batch(trainer.detector, batch)
    return float(ava_loss(logits, batch.targets, trainer.cfg.loss))


def test_loss_decreases_and_frozen_batchnorm(tiny_ava: dict[str, Path], tmp_path: Path) -> None:
    doc = tiny_config(tiny_ava, tmp_path / "run", n_epochs=3)
    del doc["val"]
    trainer = Trainer(train_config_from_dict(doc))
    assert len(trainer.train_set) == 7  # 8 keyframes, one excluded
    assert trainer.steps_per_epoch == 4
    bn = trainer.detector.backbone.fast_bn1
    bn_before = {k: v.clone() for k, v in bn.state_dict().items()}
    before = eval_loss(trainer)
    trainer.fit()
    after = eval_loss(trainer)
    print(f"eval loss before {before:.4f} after {after:.4f}")
    assert after < 0.9 * before
    for k, v in bn.state_dict().items():  # frozen: statistics and affine weights unchanged
        assert torch.equal(v, bn_before[k]), k
    assert trainer.scheduler.last_iter == 11
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert (tmp_path / "run" / "train.log").read_text().count("mean loss") == 3
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_matches_uninterrupted_run(tiny_ava: dict[str, Path], tmp_path: Path) -> None:
    straight = write_config(
        tiny_config(tiny_ava, tmp_path / "a", grad_accum=2), tmp_path / "a.yaml"
    )
    assert train_cli.main(["--config", str(straight)]) == 0

    first = tiny_config(tiny_ava, tmp_path / "b", grad_accum=2, n_epochs=1)
    assert train_cli.main(["--config", str(write_config(first, tmp_path / "b1.yaml"))]) == 0
    second = write_config(tiny_config(tiny_ava, tmp_path / "b", grad_accum=2), tmp_path / "b.yaml")
    assert train_cli.main(["--config", str(second), "--resume"]) == 0

    a = load_file(tmp_path / "a" / "checkpoints" / "epoch_002.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "epoch_002.safetensors")
    assert a.keys() == b.keys()
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert diff == 0.0
    assert all(torch.equal(a[k], b[k]) for k in a)
    one = load_file(tmp_path / "a" / "checkpoints" / "epoch_001.safetensors")
    assert not all(torch.equal(one[k], a[k]) for k in a)  # epoch 2 did train
    sa = torch.load(tmp_path / "a/checkpoints/epoch_002.state.pth", weights_only=True)
    sb = torch.load(tmp_path / "b/checkpoints/epoch_002.state.pth", weights_only=True)
    assert sa["scheduler"] == sb["scheduler"]
    assert sa["scheduler"]["last_iter"] == 3  # 4 batches, 2 per step, 2 epochs
    for i, s in sa["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
    assert weights_digest(a) == weights_digest(b)


def test_checkpoint_is_servable_and_evaluable(
    tiny_ava: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = write_config(
        tiny_config(tiny_ava, tmp_path / "run", n_epochs=1), tmp_path / "c.yaml"
    )
    assert train_cli.main(["--config", str(cfg_path)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_001.safetensors"
    detector, meta = load_model(ckpt)
    assert (meta.name, meta.version, meta.demo) == ("tiny", "test", True)
    assert meta.preprocess.num_frames == 4 and meta.preprocess.short_side == 48
    state = torch.load(tmp_path / "run/checkpoints/epoch_001.state.pth", weights_only=True)
    assert set(state) == {"epoch", "state_dict", "optimizer", "scheduler", "scaler"}
    assert state["epoch"] == 1
    assert len(state["optimizer"]["param_groups"][0]["params"]) == len(list(detector.parameters()))
    # validation during training wrote and scored the proposals' detections
    val_csv = tmp_path / "run" / "detections" / "epoch_001.csv"
    assert len(val_csv.read_text().splitlines()) == 7 * 2 * 60
    assert "val mAP@0.5IOU" in (tmp_path / "run" / "train.log").read_text()

    out = tmp_path / "det.csv"
    metrics = tmp_path / "m.json"
    argv = ["checkpoint", "--checkpoint", str(ckpt), "--data-config", str(cfg_path)]
    code = eval_cli.main([*argv, "--out", str(out), "--json", str(metrics)])
    assert code == 0
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert len(rows) == 7 * 2 * 60  # 7 keyframes (one excluded), 2 proposals above 0.5, 60 classes
    assert {r[0] for r in rows} == {"vidA", "vidB"}
    assert rows[0][1] == "0001" and all(0.0 <= float(r[7]) <= 1.0 for r in rows)
    assert out.read_text() == val_csv.read_text()  # same model, same keyframes, same order
    result = json.loads(metrics.read_text())
    assert [c["num_gt"] for c in result["per_class"]] == [7, 7, 7, 7]  # ids 11, 12, 17, 80
    assert 0.0 < result["mAP"] <= 1.0
    assert "mAP@0.5IOU" in capsys.readouterr().out


REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_gloo_ranks_agree(tmp_path: Path) -> None:
    paths = write_tiny_ava(tmp_path / "data")
    doc = tiny_config(paths, tmp_path / "run", n_epochs=1, max_steps_per_epoch=2)
    del doc["val"]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "fbil.model.training.train_cli",
        "--config",
        str(cfg),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (tmp_path / "run" / "train.log").read_text()
    match = re.search(r"weights of all 2 ranks agree, sha256 ([0-9a-f]{64})", log)
    assert match, log
    saved = load_file(tmp_path / "run" / "checkpoints" / "epoch_001.safetensors")
    assert weights_digest(saved) == match.group(1)
    state_log = re.findall(r"epoch 1 step (\d+): loss", log)
    assert state_log == ["1", "2"]  # 7 keyframes over 2 ranks, batch 2: 2 steps each
