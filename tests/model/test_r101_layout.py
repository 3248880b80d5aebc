"""The paper's model maps one-to-one onto the published R101 checkpoint layout."""

from __future__ import annotations

import json

import pytest
import torch

from fbil import model
from fbil.model.checkpoint import remap_keys


@pytest.fixture(scope="module")
def layout(reference) -> dict:
    return json.loads(reference("fbil_r101_checkpoint_keys.json").read_text())


@pytest.fixture(scope="module")
def r101(reference) -> model.FBILDetector:
    config = model.load_config(reference("published_configs", "SLOWFAST_R101_FBIL.yaml"))
    with torch.device("meta"):  # shapes only: no 670 MB of random init
        return model.FBILDetector(config)


def test_every_key_and_shape_in_order(r101, layout):
    ours = {k: list(v.shape) for k, v in r101.state_dict().items()}
    published = remap_keys({e["key"]: e["key"] for e in layout["state_dict"]})
    theirs = {
        ours_key: e["shape"] for ours_key, e in zip(published, layout["state_dict"], strict=True)
    }
    assert list(ours) == list(theirs)  # same keys, same order (optimizer indices line up)
    assert ours == theirs


def test_parameters_and_buffers_split(r101, layout):
    params = {n for n, _ in r101.named_parameters()}
    for entry, key in zip(
        layout["state_dict"], remap_keys({e["key"]: 0 for e in layout["state_dict"]}), strict=True
    ):
        assert (key in params) == (entry["kind"] == "parameter"), key


def test_parameter_counts(r101, layout):
    assert sum(p.numel() for p in r101.parameters()) == 167_291_050
    assert sum(p.numel() for p in r101.backbone.parameters()) == 61_904_040
    assert sum(p.numel() for p in r101.head.parameters()) == 105_387_010
    assert layout["total_parameter_count"] == 167_291_050


def test_backbone_pretrain_keys(r101, layout):
    keys = [
        k["key"] if isinstance(k, dict) else k for k in layout["backbone_pretrain_keys"]["keys"]
    ]
    assert sorted(r101.backbone.state_dict()) == sorted(keys)
    assert len(keys) == 1252


def test_output_shapes_at_width_64():
    """Stride 16 on both pathways; 2048 slow and 256 fast channels (R50 depth for speed)."""
    config = model.FBILConfig(backbone=model.config.BackboneConfig(layers=(1, 1, 1, 1)))
    backbone = model.build_detector(config).backbone
    with torch.inference_mode():
        slow, fast = backbone(torch.randn(1, 3, 8, 64, 96))
    assert slow.shape == (1, 2048, 2, 4, 6)
    assert fast.shape == (1, 256, 8, 4, 6)


@pytest.mark.parametrize(("depth", "blocks"), [(50, 16), (101, 33), (152, 50), (200, 66)])
def test_depth_presets(depth, blocks):
    config = model.config.BackboneConfig(depth=depth)
    assert sum(config.block_counts) == blocks
