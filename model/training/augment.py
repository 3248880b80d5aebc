"""Published augmentation and temporal sampling for training clips.

Clips are float32 ``(3, T, H, W)`` normalised as :class:`~fbil.model.preprocess.PreprocessSpec`
says (by :func:`fbil.model.preprocess.frames_to_clip` or the video decoder); boxes are
``(n, 4)`` float ``[x1, y1, x2, y2]`` normalised to the frame. Random choices come from a
``numpy.random.Generator`` made per sample from ``(seed, epoch, index)``
(:func:`sample_rng`), so they do not depend on worker processes or on where a run resumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from fbil.model.preprocess import PreprocessSpec


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent, reproducible random stream for one sample of one epoch."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def keyframe_offsets(spec: PreprocessSpec, fps: float) -> list[int]:
    """Frame offsets from the keyframe of the ``num_frames`` samples, on a ``fps`` timeline:
    the spec's sample times rounded to frames (-32, -30, ..., 30 by default)."""
    return [round(fps * t) for t in spec.sample_offsets()]


def temporal_center_crop(frame_indices: Sequence[int], size: int, step: int) -> list[int]:
    """The published ``TemporalCenterCrop(size, step)``: the ``size`` indices centred on the
    middle one (looped when too few), then every ``step``-th."""
    center = len(frame_indices) // 2
    begin = max(0, center - size // 2)
    out = list(frame_indices[begin : min(begin + size, len(frame_indices))])
    if not out:
        raise ValueError("no frames to crop")
    i = 0
    while len(out) < size:
        out.append(out[i])
        i += 1
    return out[0:size:step]


def hflip(clip: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror a clip ``(3, T, H, W)`` and its normalised boxes: ``x1' = 1 - x2, x2' = 1 - x1``."""
    flipped = boxes.clone()
    flipped[:, 0] = 1.0 - boxes[:, 2]
    flipped[:, 2] = 1.0 - boxes[:, 0]
    return clip.flip(-1), flipped


def jitter_boxes(boxes: Tensor, scale: float, rng: np.random.Generator) -> Tensor:
    """Published box jitter: each coordinate moves by ``U(-scale, scale)`` times the box width
    (x) or height (y), then is clipped to [0, 1]; a box that would collapse is kept as it was."""
    if scale <= 0 or boxes.numel() == 0:
        return boxes
    wh = torch.stack((boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), dim=1).repeat(1, 2)
    noise = torch.from_numpy(rng.uniform(-scale, scale, size=tuple(boxes.shape))).to(boxes.dtype)
    moved = (boxes + noise * wh).clamp(0.0, 1.0)
    ok = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return torch.where(ok.unsqueeze(1), moved, boxes)


class TrainAugment:
    """Random horizontal flip (p = 0.5, boxes too) and box jitter, as published."""

    def __init__(self, flip: bool = True, jitter_scale: float = 0.075) -> None:
        self.flip = flip
        self.jitter_scale = jitter_scale

    def __call__(
        self, clip: Tensor, boxes: Tensor, rng: np.random.Generator
    ) -> tuple[Tensor, Tensor]:
        if self.flip and rng.random() < 0.5:
            clip, boxes = hflip(clip, boxes)
        return clip, jitter_boxes(boxes, self.jitter_scale, rng)
