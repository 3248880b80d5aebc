"""The reference answer the decode benchmarks compare against: every frame decoded, then each
sample takes the frame nearest its time."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fbil.model.preprocess import PreprocessSpec


def nearest_clips(
    frames: Sequence[tuple[float, torch.Tensor]], times: Sequence[float], spec: PreprocessSpec
) -> list[torch.Tensor]:
    """Clips ``(3, T, H, W)`` of ``times`` from ``(time, converted frame)`` pairs."""
    clips = []
    for t in times:
        picks = [
            min(frames, key=lambda f, s=t + off: abs(f[0] - s))[1] for off in spec.sample_offsets()
        ]
        clips.append(torch.stack(picks, dim=1))
    return clips
