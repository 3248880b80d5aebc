"""FBILDetector: SlowFast backbone + FBIL head, clips and rois in, logits out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fbil.model.backbone import SlowFast
from fbil.model.config import FBILConfig
from fbil.model.head import FBILHead


def ava_scores(logits: Tensor, num_pose: int, pose_softmax: bool) -> Tensor:
    """Logits -> AVA scores: softmax over the first ``num_pose`` (pose) classes and sigmoid
    over the rest when ``pose_softmax``, else a plain sigmoid; clamped to [0, 1]."""
    if not pose_softmax:
        return logits.sigmoid()
    pose = logits[:, :num_pose].softmax(dim=1)
    return torch.cat((pose, logits[:, num_pose:].sigmoid()), dim=1).clamp(0.0, 1.0)


def valid_feature_size(sizes_before_padding: Tensor, h: int, w: int) -> Tensor:
    """``(B, 2)`` long ``(eff_h, eff_w)``: ``ceil`` of the map size times each clip's unpadded
    ``[width_fraction, height_fraction]`` (published ``sizes_before_padding``)."""
    eff_h = torch.ceil(sizes_before_padding[:, 1] * h)
    eff_w = torch.ceil(sizes_before_padding[:, 0] * w)
    return torch.stack((eff_h, eff_w), dim=1).long()


class FBILDetector(nn.Module):
    """The FBIL spatio-temporal action detector. Building it loads no weights."""

    def __init__(self, config: FBILConfig, num_pose: int = 13) -> None:
        super().__init__()
        self.config = config
        self.num_pose = num_pose
        self.backbone = SlowFast.from_config(config.backbone)
        self.head = FBILHead(config.head)

    def forward(self, clips: Tensor, rois: Tensor, valid_hw: Tensor | None = None) -> Tensor:
        """Action logits.

        Args:
            clips: float ``(B, 3, T, H, W)``, already normalised; ``T`` a multiple of alpha.
            rois: float ``(N, 5)`` rows ``[clip_index, x1, y1, x2, y2]``, coordinates normalised
                to 0..1 by frame width/height, grouped by ascending clip_index, >= 1 roi a clip.

            valid_hw: training with padded batches only: ``(B, 2)`` long, the unpadded size of
                each clip's feature map in cells (:func:`valid_feature_size`).

        Returns:
            ``(N, num_classes)`` logits in roi order.
        """
        slow, fast = self.backbone(clips)
        return self.head(slow, fast, rois, valid_hw)

    def scores(self, logits: Tensor) -> Tensor:
        """AVA scores ``(N, num_classes)`` in [0, 1] (pose softmax as configured)."""
        return ava_scores(logits, self.num_pose, self.config.pose_softmax)


def build_detector(config: FBILConfig) -> FBILDetector:
    """Build an untrained detector (in eval mode) from a config; loads no weights."""
    return FBILDetector(config).eval()
