"""Train on your own classes: a tiny AVA model fine-tuned to a 4-class custom label map on a
small synthetic world, exported, served; /detect answers with the custom names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml

from fbil.client import Client
from fbil.client.local import local_service
from fbil.export.cli import main as export_main
from fbil.model import ModelMetadata, build_detector, save_model
from fbil.model.checkpoint import load_model
from fbil.model.labels import ava_v22, read_label_map
from fbil.model.training import train_cli
from fbil.model.training.synth import generate
from fbil.model.training.train import Trainer
from fbil.model.training.train_config import load_train_config
from tests.support.training import one_thread, tiny_config  # noqa: F401 (one_thread: autouse fixture)

CUSTOM = {5: "slip and fall", 14: "walk about", 17: "carry a box", 64: "brawl"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 videos of 4 s (keyframe 2) with only the CUSTOM classes, under their custom names."""
    root = tmp_path_factory.mktemp("world")
    generate(root, seed=5, num_videos=4, seconds_per_video=4, val_fraction=0, classes=CUSTOM)
    return root


def test_synth_subset_with_custom_names(world: Path) -> None:
    labels = read_label_map(world / "annotations" / "labelmap.pbtxt")
    assert [(c.id, c.name) for c in labels] == list(CUSTOM.items())
    assert labels.num_pose == 2  # fall down and walk keep their AVA type: pose classes first
    ids = {int(line.split(",")[6]) for line in (world / "annotations" / "train.csv").open()}
    assert ids and ids <= set(CUSTOM)


def test_finetune_export_serve(world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ann = world / "annotations"
    paths = {"root": world / "videos", "annotations": ann / "train.csv"}
    paths |= {"labelmap": ann / "labelmap.pbtxt", "exclusions": ann / "exclusions.csv"}
    paths["proposals"] = ann / "train.csv"  # the val split is dropped below
    doc = tiny_config(paths, tmp_path / "run", n_epochs=1, max_steps_per_epoch=2)
    doc["train"]["data"] = {
        "kind": "video",
        **{k: str(paths[k]) for k in ("root", "annotations", "exclusions")},
    }
    del doc["val"]
    # 16 frames: the ONNX exporter's dynamic frame axis needs more than 2 slow frames
    doc["train"]["augmentation"]["temporal"]["kwargs"]["size"] = 32  # 16 frames, step 2
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(doc))

    # the starting point: a tiny model of the 60 AVA classes, in our format
    model_cfg = load_train_config(config).model
    assert model_cfg.head.num_classes == 60 and model_cfg.preprocess.num_frames == 16
    torch.manual_seed(0)
    start = build_detector(model_cfg)
    start_path = tmp_path / "start.safetensors"
    save_model(start, ModelMetadata(config=model_cfg, name="start"), start_path)

    caplog.set_level(logging.INFO, logger="fbil.train")
    argv = ["--config", str(config), "--labels", str(ann / "labelmap.pbtxt")]
    argv += ["--init-from", str(start_path), "--freeze-backbone", "--device", "cpu"]
    assert train_cli.main(argv) == 0
    assert "1 re-initialised: head.fc.weight" in caplog.text

    tuned_path = tmp_path / "run" / "checkpoints" / "epoch_001.safetensors"
    tuned, meta = load_model(tuned_path)
    assert [(c.id, c.name) for c in meta.labels] == list(CUSTOM.items())
    old, new = start.state_dict(), tuned.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in new if k.startswith("backbone."))
    assert new["head.fc.weight"].shape == (4, old["head.fc.weight"].shape[1])
    rows = [ava_v22().index_of(i) for i in CUSTOM]
    assert not torch.allclose(new["head.fc.weight"], old["head.fc.weight"][rows], atol=1e-2)
    trained = [k for k in new if k.startswith("head.") and not torch.equal(old[k], new[k])]
    assert len(trained) > 1  # the head trained beyond its new classifier

    out = tmp_path / "export"
    assert export_main(["--checkpoint", str(tuned_path), "--out", str(out)]) == 0
    line = (ann / "train.csv").read_text().splitlines()[0].split(",")
    video = world / "videos" / f"{line[0]}.mp4"
    box = [float(v) for v in line[2:6]]
    with local_service(out / "model.onnx", hermetic=True) as service, Client(service.url) as c:
        info = c.model_info()
        result = c.detect(
            video, [{"time": float(line[1]), "boxes": [{"box": box}]}], box_format="normalized"
        )
    assert [(label.id, label.name) for label in info.labels] == list(CUSTOM.items())
    (actor,) = result.keyframes[0].actors
    assert sorted(a.name for a in actor.actions) == sorted(CUSTOM.values())


def test_backbone_lr_mult_and_freeze_from_the_command_line(world: Path, tmp_path: Path) -> None:
    ann = world / "annotations"
    paths = {"root": world / "videos", "annotations": ann / "train.csv"}
    paths |= {"exclusions": ann / "exclusions.csv", "labelmap": ann / "labelmap.pbtxt"}
    paths["proposals"] = ann / "train.csv"
    doc = tiny_config(paths, tmp_path / "run")
    doc["train"]["data"] = {"kind": "video", **{k: str(paths[k]) for k in ("root", "annotations")}}
    del doc["val"]
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(doc))
    args = train_cli.build_parser().parse_args(
        ["-c", str(config), "--labels", str(ann / "labelmap.pbtxt"), "--backbone-lr-mult", "0.1"]
    )
    cfg = load_train_config(config, train_cli.overrides(args))
    assert cfg.model.head.num_classes == 4 and cfg.backbone_lr_mult == 0.1
    assert cfg.backbone_learnable
    trainer = Trainer(cfg)
    trainer.scheduler.step()
    backbone, head = trainer.optimizer.param_groups
    assert backbone["params"] == list(trainer.detector.backbone.parameters())
    assert backbone["lr"] == pytest.approx(0.1 * head["lr"])
    args = train_cli.build_parser().parse_args(["-c", str(config), "--freeze-backbone"])
    frozen = load_train_config(config, train_cli.overrides(args))
    assert not frozen.backbone_learnable and frozen.model.head.num_classes == 60
