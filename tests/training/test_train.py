"""End-to-end training on a tiny frame-folder dataset: loss goes down, exact resume, servable
checkpoints, validation, ``fbil-eval checkpoint``, and two gloo ranks under torchrun."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fbil.model.checkpoint import load_model
from fbil.model.training import eval_cli, train_cli
from fbil.model.training.collate import collate
from fbil.model.training.loss import ava_loss
from fbil.model.training.predict import forward_batch
from fbil.model.training.train import Trainer, weights_digest
from fbil.model.training.train_config import train_config_from_dict
from tests.support.training import one_thread, tiny_config, write_tiny_ava  # noqa: F401 (one_thread: autouse fixture)


def write_config(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


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
