"""The preprocessing code next to the spec: size rule, antialiased resize, normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fbil.model.preprocess import PreprocessSpec, frames_to_clip, normalize, resize, scaled_size


def test_scaled_size_short_side_and_floored_long_side() -> None:
    assert scaled_size(48, 80, 24) == (24, 40)
    assert scaled_size(100, 60, 256) == (426, 256)  # 256 * 100 / 60 = 426.67
    assert scaled_size(576, 768, 256) == (256, 341)  # 341.33
    assert scaled_size(64, 64, 32) == (32, 32)


def test_frames_to_clip_short_side_and_values() -> None:
    spec = PreprocessSpec(short_side=24, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    frames = torch.full((2, 3, 48, 80), 50, dtype=torch.uint8)
    clip = frames_to_clip(frames, spec)
    assert clip.shape == (3, 2, 24, 40) and clip.dtype == torch.float32
    assert clip.is_contiguous()
    assert clip[:, 0, 5, 5].tolist() == pytest.approx([20.0, 7.5, 4.0])


def test_resize_is_antialiased_bilinear_per_frame_and_batched() -> None:
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 3, 97, 131), dtype=torch.uint8, generator=gen)
    batched = resize(frames, (40, 54))
    assert batched.dtype == torch.uint8 and batched.shape == (3, 3, 40, 54)
    for frame, out in zip(frames, batched, strict=True):
        assert torch.equal(resize(frame, (40, 54)), out)  # one frame or many: the same pixels
        ref = F.interpolate(frame[None].double(), size=(40, 54), mode="bilinear", antialias=True)[0]
        assert (out.double() - ref).abs().max() <= 1.0  # uint8 rounding only
    assert resize(frames, (97, 131)) is frames  # already that size: untouched


def test_normalize_per_channel() -> None:
    spec = PreprocessSpec(mean=(0.0, 64.0, 128.0), std=(1.0, 2.0, 4.0))
    rgb = torch.tensor([255, 0, 128], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    out = normalize(rgb, spec)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2)
    assert out[:, 0, 0].tolist() == [255.0, -32.0, 0.0]
    assert torch.equal(normalize(rgb[None].expand(4, 3, 2, 2), spec)[2], out)  # (T, 3, H, W)
