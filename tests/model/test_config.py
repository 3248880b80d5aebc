"""Config reading: published YAML, our extensions, crossed mask names, clear errors."""

from __future__ import annotations

import pytest

from fbil import model
from fbil.model.config import ConfigError, FBILConfig, parse_augmentation
from fbil.model.preprocess import PreprocessSpec
from fbil.model.training.train_config import load_train_config


def test_published_r101_config(reference):
    c = model.load_config(reference("published_configs", "SLOWFAST_R101_FBIL.yaml"))
    assert c.backbone.block_counts == (3, 4, 23, 3)
    assert (c.backbone.alpha, c.backbone.beta, c.backbone.width) == (4, 0.125, 64)
    assert (c.head.reduce_dim, c.head.num_heads, c.head.encoder_depth) == (1024, 8, 3)
    assert c.head.fusion_act == "softmax" and c.pose_softmax
    # crossed published names: global_* drive the foreground branch, local_* the background
    m = c.head.masks
    assert (m.fg_branch_fg_drop, m.fg_branch_bg_drop) == (0.2, 1.0)
    assert (m.bg_branch_fg_drop, m.bg_branch_bg_drop) == (0.9, 0.2)
    p = c.preprocess
    assert (p.num_frames, p.frame_interval, p.short_side) == (32, 2, 256)
    assert p.mean == (110.63666788, 103.16065604, 96.29023126)


def test_extensions_and_roundtrip(reference):
    c = model.load_config(reference("parity_tiny", "config.yaml"))
    assert c.backbone.block_counts == (1, 1, 1, 1)
    assert (c.head.reduce_dim, c.head.num_heads) == (64, 4)
    assert FBILConfig.from_dict(c.to_dict()) == c


def test_config_is_frozen():
    c = FBILConfig()
    with pytest.raises(AttributeError):
        c.pose_softmax = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("arch: slowfast34", "unsupported backbone arch"),
        ("e_depth: 1\n            shiny: 3", "unknown head kwargs"),
        ("width: 1000", "does not match the backbone"),
        ("local_beta: 1.5", "must be in"),
    ],
)
def test_bad_configs(tmp_path, reference, patch, message):
    text = reference("parity_tiny", "config.yaml").read_text()
    key = patch.split(":")[0]
    lines = [
        f"{line[: len(line) - len(line.lstrip())]}{patch}"
        if line.strip().startswith(key + ":")
        else line
        for line in text.splitlines()
    ]
    path = tmp_path / "bad.yaml"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=message):
        model.load_config(path)


def test_labels_match_ava_ids(reference):
    labels = model.ava_v22()
    assert len(labels) == 60 and labels.num_pose == 13
    fixture = reference("ava_map_case1", "labelmap.pbtxt").read_text().split("item {")[1:]
    for item in fixture:
        name = item.split('name: "')[1].split('"')[0]
        ava_id = int(item.split("id:")[1].split()[0])
        assert labels[labels.index_of(ava_id)].name == name


def test_published_augmentation_section():
    base = PreprocessSpec()
    aug = {
        "spatial": [
            {"type": "Scale", "kwargs": {"resize": 224}},
            {"type": "RandomHorizontalFlip"},
            {"type": "Normalize", "kwargs": {"mean": [1, 2, 3], "std": [4, 5, 6]}},
            {"type": "ToTensor"},
        ],
        "temporal": {"type": "TemporalCenterCrop", "kwargs": {"size": 48, "step": 3}},
    }
    pre, flip = parse_augmentation(aug, base)
    assert flip
    assert (pre.short_side, pre.num_frames, pre.frame_interval) == (224, 16, 3)
    assert (pre.mean, pre.std) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert parse_augmentation(None, base) == (base, False)
    with pytest.raises(ConfigError, match="size"):
        parse_augmentation({"temporal": {"type": "TemporalCenterCrop", "kwargs": {}}}, base)


def test_model_and_training_read_the_augmentation_alike(reference):
    """The model config takes its preprocessing from the val section, as training's val split."""
    path = reference("published_configs", "SLOWFAST_R101_FBIL.yaml")
    assert load_train_config(path).val.preprocess == model.load_config(path).preprocess
