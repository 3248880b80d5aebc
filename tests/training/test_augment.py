"""Published augmentation: flip with boxes, box jitter, temporal centre crop."""

from __future__ import annotations

import pytest
import torch

from fbil.model.preprocess import PreprocessSpec
from fbil.model.training.augment import (
    TrainAugment,
    hflip,
    jitter_boxes,
    keyframe_offsets,
    sample_rng,
    temporal_center_crop,
)


def test_hflip_mirrors_pixels_and_boxes() -> None:
    clip = torch.zeros(3, 2, 4, 10)
    clip[:, :, :, 1:3] = 1.0  # a bright band at x in [0.1, 0.3)
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.0, 0.0, 1.0, 1.0]])
    flipped, fboxes = hflip(clip, boxes)
    assert torch.equal(fboxes, torch.tensor([[0.7, 0.2, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]]))
    assert flipped[0, 0, 0].tolist() == [0.0] * 7 + [1.0, 1.0, 0.0]
    # the band is still inside its (flipped) box
    x1, x2 = (fboxes[0, [0, 2]] * 10).round().long().tolist()
    assert flipped[0, 0, 0, x1:x2].eq(1).all()
    again, back = hflip(flipped, fboxes)
    assert torch.equal(again, clip) and torch.allclose(back, boxes)


def test_train_augment_flips_about_half_the_time_reproducibly() -> None:
    clip = torch.arange(10.0).view(1, 1, 1, 10).expand(3, 2, 1, 10)
    boxes = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
    augment = TrainAugment(flip=True, jitter_scale=0.0)
    flips = []
    for index in range(200):
        out, b = augment(clip, boxes, sample_rng(5, 0, index))
        flipped = bool(out[0, 0, 0, 0] == 9)
        assert torch.allclose(b, torch.tensor([[0.6, 0.2, 0.9, 0.8]]) if flipped else boxes)
        flips.append(flipped)
    assert 70 < sum(flips) < 130
    again = [
        bool(augment(clip, boxes, sample_rng(5, 0, i))[0][0, 0, 0, 0] == 9) for i in range(200)
    ]
    assert again == flips
    other_epoch = [
        bool(augment(clip, boxes, sample_rng(5, 1, i))[0][0, 0, 0, 0] == 9) for i in range(200)
    ]
    assert other_epoch != flips


def test_box_jitter_is_bounded_by_scale_times_size() -> None:
    boxes = torch.tensor([[0.2, 0.1, 0.6, 0.9]] * 500, dtype=torch.float64)
    out = jitter_boxes(boxes, 0.075, sample_rng(0, 0, 0))
    size = torch.tensor([0.4, 0.8, 0.4, 0.8], dtype=torch.float64)
    moved = (out - boxes).abs() / size
    assert moved.max() <= 0.075 + 1e-12
    assert moved.max() > 0.07  # actually moves, over the whole range
    assert not torch.equal(out, boxes)
    edge = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    jittered = jitter_boxes(edge, 0.075, sample_rng(0, 0, 1))
    assert ((jittered >= 0) & (jittered <= 1)).all()
    assert torch.equal(jitter_boxes(boxes, 0.0, sample_rng(0, 0, 0)), boxes)


def test_temporal_center_crop_published_indices() -> None:
    # a published record: 91 frames around the keyframe (start 1, keyframe at index 46)
    out = temporal_center_crop(range(1, 92), 64, 2)
    assert len(out) == 32 and out[0] == 1 + 45 - 32 and out[-1] == 1 + 45 + 30
    assert out[16] == 46  # sample 16 is the keyframe
    short = temporal_center_crop([7, 8, 9], 8, 2)  # too few frames: looped, then strided
    assert short == [7, 9, 8, 7]


def test_keyframe_offsets_match_the_video_sampler() -> None:
    spec = PreprocessSpec()
    assert keyframe_offsets(spec, 30) == list(range(-32, 32, 2))
    assert keyframe_offsets(spec, 30) == [round(30 * t) for t in spec.sample_offsets()]


@pytest.mark.parametrize(
    ("num_frames", "interval", "first", "last"),
    [(32, 2, -32, 30), (16, 4, -32, 28), (8, 8, -32, 24)],
)
def test_sample_window_is_centred_on_the_keyframe(num_frames, interval, first, last) -> None:
    """As the published TemporalCenterCrop: the num_frames*interval window starts half of it
    before the keyframe, whatever the interval (16x4 used to run from -16 to +44 frames)."""
    spec = PreprocessSpec(num_frames=num_frames, frame_interval=interval)
    offsets = spec.sample_frame_offsets()
    assert offsets == list(range(first, last + 1, interval))
    assert keyframe_offsets(spec, 30) == offsets
    frames = list(range(1000 - 64, 1000 + 64))  # frame numbers around keyframe 1000
    crop = temporal_center_crop(frames[64 - 32 : 64 + 32], num_frames * interval, interval)
    assert [f - 1000 for f in crop] == offsets
