"""The published AVA criterion: binary cross-entropy on pose-softmax scores or on logits."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fbil.model.detector import ava_scores

LossKind = Literal["pose_softmax", "sigmoid"]


def ava_loss(logits: Tensor, targets: Tensor, kind: LossKind, num_pose: int = 13) -> Tensor:
    """Mean binary cross-entropy over all ``(N, C)`` entries.

    ``pose_softmax`` (published ``pose_softmax: True``): BCE on :func:`model.ava_scores`
    (softmax over the ``num_pose`` pose classes, sigmoid elsewhere, clamped to [0, 1]);
    ``sigmoid``: ``binary_cross_entropy_with_logits``. Computed in float32 outside autocast
    (BCE on probabilities is not autocast-safe). ``targets``: multi-hot ``(N, C)`` in {0, 1}.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    device_type = logits.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        logits, targets = logits.float(), targets.float()
        if kind == "pose_softmax":
            return F.binary_cross_entropy(ava_scores(logits, num_pose, True), targets)
        if kind == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits, targets)
    raise ValueError(f"unknown loss {kind!r}: expected 'pose_softmax' or 'sigmoid'")
