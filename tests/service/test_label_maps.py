"""Models of any label set: an 80-class published checkpoint exported and served, a published
checkpoint of another class count served with FBIL_LABELMAP_PATH."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fbil.export.cli import main as export_main
from fbil.model import build_detector
from fbil.model.checkpoint import load_model
from fbil.model.config import ConfigError, load_config
from fbil.model.labels import LabelMapError, ava_v22_actions, read_label_map
from tests.support.serving import serve

pytestmark = pytest.mark.anyio

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "parity_tiny"


def published(tmp_path: Path, num_classes: int) -> tuple[Path, Path]:
    """The tiny reference config with ``num_classes``, and a random checkpoint in the published
    layout (``{'epoch', 'state_dict'}`` with DistributedDataParallel key prefixes)."""
    text = (REFERENCE / "config.yaml").read_text()
    assert text.count("num_classes: 60") == 2
    config = tmp_path / f"config_{num_classes}.yaml"
    config.write_text(text.replace("num_classes: 60", f"num_classes: {num_classes}"))
    torch.manual_seed(num_classes)
    detector = build_detector(load_config(config))
    state = {
        f"module.{part}.module.{key[len(part) + 1 :]}": value
        for key, value in detector.state_dict().items()
        for part in ("backbone", "head")
        if key.startswith(part + ".")
    }
    checkpoint = tmp_path / f"published_{num_classes}.pth.tar"
    torch.save({"epoch": 1, "state_dict": state}, checkpoint)
    return checkpoint, config


async def test_80_class_published_checkpoint_exports_and_serves(tmp_path: Path) -> None:
    checkpoint, config = published(tmp_path, 80)
    out = tmp_path / "export"
    argv = ["--checkpoint", str(checkpoint), "--config", str(config), "--triton", "--no-check"]
    assert export_main([*argv, "--out", str(out)]) == 0
    expected = [{"index": i, **c} for i, c in enumerate(ava_v22_actions().to_list())]
    for model in (out / "model.onnx", checkpoint):
        extra = {"config_path": config} if model == checkpoint else {}
        async with serve(model, **extra) as s:
            card = (await s.client.get("/v1/model")).json()
        assert card["labels"] == expected, model
        assert [(c["id"], c["name"]) for c in card["labels"]][-1] == (80, "watch (a person)")
    triton = next((out / "triton").iterdir())
    assert (triton / "labels.txt").read_text().splitlines() == [c.name for c in ava_v22_actions()]
    assert 'label_filename: "labels.txt"' in (triton / "config.pbtxt").read_text()
    assert "dims: [ -1, 80 ]" in (triton / "config.pbtxt").read_text()


async def test_other_class_counts_need_a_label_map(tmp_path: Path) -> None:
    checkpoint, config = published(tmp_path, 3)
    with pytest.raises(LabelMapError, match="3 classes.*--labelmap FILE"):
        load_model(checkpoint, config, labels_option="--labelmap FILE")
    assert export_main(["--checkpoint", str(checkpoint), "--config", str(config),
                        "--no-check", "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    labelmap = tmp_path / "mine.pbtxt"
    labelmap.write_text(
        "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n  label_type: OTHER\n}}\n'
                for i, n in ((1, "smoke"), (2, "fall"), (3, "fight")))
    )  # fmt: skip
    async with serve(checkpoint, config_path=config, labelmap_path=labelmap) as s:
        card = (await s.client.get("/v1/model")).json()
    assert [(c["id"], c["name"]) for c in card["labels"]] == [
        (1, "smoke"),
        (2, "fall"),
        (3, "fight"),
    ]
    labelmap.write_text('item {\n  name: "one"\n  id: 1\n}\n')  # 1 class for a 3-class model
    with pytest.raises(ConfigError, match="label map has 1 classes, the model 3"):
        load_model(checkpoint, config, labels=read_label_map(labelmap))
