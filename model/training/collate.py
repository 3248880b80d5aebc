"""Batching clips of different sizes: zero padding at the bottom/right, as published.

Boxes stay normalised to their own frame in a :class:`Sample`; in a :class:`Batch` the rois are
normalised to the padded clip tensor (``x * w_frac``, ``y * h_frac``), and
``sizes_before_padding`` ``(B, 2)`` = ``[w_frac, h_frac]`` of each clip is what
:func:`model.detector.valid_feature_size` turns into the unpadded feature-map size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fbil.model.training.ava_data import FrameKey


@dataclass
class Sample:
    """One keyframe: clip ``(3, T, H, W)``, boxes ``(n, 4)`` normalised to its frame,
    multi-hot targets ``(n, C)`` and, for proposals, the detector scores ``(n,)``."""

    key: FrameKey
    clip: Tensor
    boxes: Tensor
    targets: Tensor
    box_scores: Tensor


@dataclass
class Batch:
    """A padded batch. ``rois`` ``(N, 5)`` ``[clip_index, x1, y1, x2, y2]`` normalised to the
    padded tensor, grouped by clip; ``boxes`` the same boxes normalised to their own frame."""

    keys: list[FrameKey]
    clips: Tensor
    rois: Tensor
    sizes_before_padding: Tensor
    targets: Tensor
    boxes: Tensor
    box_scores: Tensor

    @property
    def padded(self) -> bool:
        return bool((self.sizes_before_padding < 1).any())

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return Batch(
            self.keys,
            self.clips.pin_memory(),
            self.rois.pin_memory(),
            self.sizes_before_padding,
            self.targets.pin_memory(),
            self.boxes,
            self.box_scores,
        )

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.keys,
            self.clips.to(device, non_blocking=True),
            self.rois.to(device, non_blocking=True),
            self.sizes_before_padding.to(device),
            self.targets.to(device, non_blocking=True),
            self.boxes,
            self.box_scores,
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Pad clips to the largest height and width of the batch and scale the rois to it."""
    if not samples:
        raise ValueError("empty batch")
    if any(s.boxes.shape[0] == 0 for s in samples):
        raise ValueError("every sample needs at least one box")
    max_h = max(s.clip.shape[-2] for s in samples)
    max_w = max(s.clip.shape[-1] for s in samples)
    clips, rois, sizes = [], [], []
    for i, s in enumerate(samples):
        h, w = s.clip.shape[-2:]
        clips.append(F.pad(s.clip, (0, max_w - w, 0, max_h - h)))
        frac = torch.tensor([w / max_w, h / max_h], dtype=torch.float32)
        sizes.append(frac)
        scaled = s.boxes.float() * frac.repeat(2)
        index = torch.full((scaled.shape[0], 1), float(i))
        rois.append(torch.cat((index, scaled), dim=1))
    return Batch(
        keys=[s.key for s in samples],
        clips=torch.stack(clips),
        rois=torch.cat(rois),
        sizes_before_padding=torch.stack(sizes),
        targets=torch.cat([s.targets for s in samples]),
        boxes=torch.cat([s.boxes for s in samples]),
        box_scores=torch.cat([s.box_scores for s in samples]),
    )
