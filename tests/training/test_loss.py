"""The AVA criterion (published pose-softmax BCE, or BCE on sigmoid logits)."""

from __future__ import annotations

import math

import pytest
import torch

from fbil.model.training.loss import ava_loss


def test_pose_softmax_loss_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, -2.0], [0.0, 1.0, 0.0, -0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]])
    loss = ava_loss(logits, targets, "pose_softmax", num_pose=3)
    expected = 0.0
    for row, t in zip(logits.tolist(), targets.tolist(), strict=True):
        z = sum(math.exp(v) for v in row[:3])
        probs = [math.exp(v) / z for v in row[:3]] + [1 / (1 + math.exp(-v)) for v in row[3:]]
        expected += sum(
            -(ti * math.log(p) + (1 - ti) * math.log(1 - p)) for p, ti in zip(probs, t, strict=True)
        )
    assert float(loss) == pytest.approx(expected / 10, rel=1e-6)


def test_sigmoid_loss_and_gradient_direction() -> None:
    logits = torch.zeros(2, 4, requires_grad=True)
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 1.0]])
    loss = ava_loss(logits, targets, "sigmoid")
    assert float(loss) == pytest.approx(math.log(2))
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad < 0, targets.bool())  # descent raises positives, lowers others


def test_pose_softmax_saturated_probabilities_stay_finite() -> None:
    logits = torch.tensor([[80.0, -80.0, 0.0, 90.0]], requires_grad=True)
    loss = ava_loss(logits, torch.tensor([[0.0, 1.0, 0.0, 0.0]]), "pose_softmax", num_pose=2)
    loss.backward()
    # p = [1, 0 | 0.5, 1] against [0, 1 | 0, 0]: three saturated terms, BCE clamps log at -100
    assert float(loss) == pytest.approx((3 * 100 + math.log(2)) / 4, rel=1e-6)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_rejects_bad_shapes_and_kinds() -> None:
    with pytest.raises(ValueError, match="differ"):
        ava_loss(torch.zeros(2, 3), torch.zeros(2, 4), "sigmoid")
    with pytest.raises(ValueError, match="unknown loss"):
        ava_loss(torch.zeros(1, 3), torch.zeros(1, 3), "focal")  # type: ignore[arg-type]
