"""The exported graph: clips and rois in, logits and scores out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fbil.model.detector import FBILDetector

INPUT_NAMES = ("clips", "rois")
OUTPUT_NAMES = ("logits", "scores")


class ExportedDetector(nn.Module):
    """``forward(clips, rois) -> (logits, scores)`` with the activation inside the graph.

    ``fp16`` casts the network to half precision while the inputs and outputs stay float32
    (GPU deployments).
    """

    def __init__(self, detector: FBILDetector, fp16: bool = False) -> None:
        super().__init__()
        self.detector = detector.eval()
        self.fp16 = fp16
        if fp16:
            self.detector.half()

    def forward(self, clips: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        if self.fp16:
            logits = self.detector(clips.half(), rois.half()).float()
        else:
            logits = self.detector(clips, rois)
        return logits, self.detector.scores(logits)


def example_inputs(
    num_frames: int, height: int = 128, width: int = 160, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Two clips with 2 and 1 actors: sizes above 1 so no dimension is specialised on export."""
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(2, 3, num_frames, height, width, generator=gen)
    rois = torch.tensor(
        [[0, 0.10, 0.15, 0.45, 0.90], [0, 0.50, 0.20, 0.80, 0.85], [1, 0.30, 0.10, 0.60, 0.95]]
    )
    return clips, rois


def random_inputs(
    num_clips: int,
    num_rois: int,
    num_frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Fresh random clips and rois (every clip gets >= 1 roi, rois grouped by clip)."""
    if num_rois < num_clips:
        raise ValueError("every clip needs at least one roi")
    clips = torch.randn(num_clips, 3, num_frames, height, width, generator=generator)
    extra = torch.randint(0, num_clips, (num_rois - num_clips,), generator=generator)
    index = torch.sort(torch.cat((torch.arange(num_clips), extra))).values
    xy = torch.rand(num_rois, 2, generator=generator) * 0.6
    wh = torch.rand(num_rois, 2, generator=generator) * 0.35 + 0.03
    return clips, torch.cat((index.unsqueeze(1).float(), xy, xy + wh), dim=1)
