"""Padded batches: rois follow the padding ratio, valid feature cells, feature-map size."""

from __future__ import annotations

import pytest
import torch

from fbil.model.backbone import SlowFast, feature_size
from fbil.model.config import BackboneConfig
from fbil.model.training.ava_data import FrameKey
from fbil.model.training.collate import Sample, collate
from fbil.model.training.predict import batch_valid_hw


def sample(h: int, w: int, boxes: list[list[float]], fill: float) -> Sample:
    n = len(boxes)
    return Sample(
        FrameKey("v", 1),
        torch.full((3, 4, h, w), fill),
        torch.tensor(boxes),
        torch.zeros(n, 60),
        torch.ones(n),
    )


def test_padding_and_roi_scaling() -> None:
    a = sample(48, 64, [[0.1, 0.2, 0.5, 1.0]], 1.0)
    b = sample(32, 80, [[0.0, 0.0, 1.0, 1.0], [0.5, 0.25, 0.75, 0.5]], 2.0)
    batch = collate([a, b])
    assert batch.clips.shape == (2, 3, 4, 48, 80)
    assert torch.equal(batch.clips[0, :, :, :, :64], a.clip)  # content top-left
    assert batch.clips[0, :, :, :, 64:].eq(0).all() and batch.clips[1, :, :, 32:].eq(0).all()
    assert torch.allclose(batch.sizes_before_padding, torch.tensor([[0.8, 1.0], [1.0, 2 / 3]]))
    expected = torch.tensor(
        [
            [0, 0.08, 0.2, 0.4, 1.0],
            [1, 0.0, 0.0, 1.0, 2 / 3],
            [1, 0.5, 0.25 * 2 / 3, 0.75, 0.5 * 2 / 3],
        ]
    )
    assert torch.allclose(batch.rois, expected)
    # a roi scaled back by the padded size lands on the same pixels as in the unpadded clip
    x2_pixel = batch.rois[0, 3] * 80
    assert float(x2_pixel) == pytest.approx(0.5 * 64)
    assert torch.equal(batch.boxes[0], a.boxes[0])  # boxes for the CSV stay frame-relative
    assert batch.padded


def test_valid_feature_cells_of_a_padded_batch() -> None:
    batch = collate([sample(48, 64, [[0, 0, 1, 1]], 1.0), sample(32, 80, [[0, 0, 1, 1]], 1.0)])
    assert feature_size(48, 80) == (3, 5)
    valid = batch_valid_hw(batch)
    assert valid is not None and valid.tolist() == [[3, 4], [2, 5]]  # ceil(0.8*5)=4, ceil(2/3*3)=2
    same = collate([sample(48, 64, [[0, 0, 1, 1]], 1.0), sample(48, 64, [[0, 0, 1, 1]], 1.0)])
    assert not same.padded and batch_valid_hw(same) is None


@pytest.mark.parametrize("hw", [(48, 64), (50, 70), (33, 17)])
def test_feature_size_matches_the_backbone(hw: tuple[int, int]) -> None:
    net = SlowFast.from_config(BackboneConfig(layers=(1, 1, 1, 1), width=8)).eval()
    with torch.no_grad():
        slow, fast = net(torch.zeros(1, 3, 4, *hw))
    assert tuple(slow.shape[-2:]) == feature_size(*hw) == tuple(fast.shape[-2:])


def test_rejects_samples_without_boxes() -> None:
    with pytest.raises(ValueError, match="at least one box"):
        collate(
            [
                Sample(
                    FrameKey("v", 1),
                    torch.zeros(3, 4, 8, 8),
                    torch.zeros(0, 4),
                    torch.zeros(0, 60),
                    torch.zeros(0),
                )
            ]
        )
