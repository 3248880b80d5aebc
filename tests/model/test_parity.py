"""The published tiny checkpoint reproduces the published outputs (reference README §2)."""

from __future__ import annotations

import pytest
import torch

from fbil import model
from fbil.model.detector import FBILDetector

TOL = 1e-4


@pytest.fixture(scope="module")
def detector(reference) -> FBILDetector:
    torch.set_num_threads(2)  # the fixture was produced with 2 threads
    config = model.load_config(reference("parity_tiny", "config.yaml"))
    det = model.build_detector(config)
    info = model.load_checkpoint(det, reference("parity_tiny", "checkpoint.pth.tar"))
    assert info.kind == "published"
    return det


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@torch.inference_mode()
def test_backbone_features_match(detector, parity_inputs, parity_outputs):
    slow, fast = detector.backbone(parity_inputs["clips"])
    assert _max_diff(slow, parity_outputs["slow_features"]) < TOL
    assert _max_diff(fast, parity_outputs["fast_features"]) < TOL


@torch.inference_mode()
def test_logits_and_scores_match(detector, parity_inputs, parity_outputs):
    logits = detector(parity_inputs["clips"], parity_inputs["rois"])
    assert _max_diff(logits, parity_outputs["logits"]) < TOL
    assert _max_diff(detector.scores(logits), parity_outputs["scores"]) < TOL
    # same logits through the plain sigmoid activation (pose_softmax off)
    plain = model.ava_scores(logits, 13, pose_softmax=False)
    assert _max_diff(plain, parity_outputs["scores_sigmoid"]) < TOL


@torch.inference_mode()
def test_head_intermediates_match(detector, parity_inputs, parity_outputs):
    """Each published head step, so a mismatch points at the step that causes it."""
    inter = parity_outputs["intermediates"]
    head = detector.head
    rois = parity_inputs["rois"]
    feats = head.reduce(parity_outputs["slow_features"], parity_outputs["fast_features"])
    assert _max_diff(feats, inter["reduced_feats"]) < TOL
    roi_feats = head.roi_features(feats, rois)
    assert _max_diff(roi_feats, inter["roi_feats"]) < TOL
    memory = head.encode(feats)  # (B, h*w, D), once per clip
    b, d, h, w = feats.shape
    for i in range(b):
        assert _max_diff(memory[i].T.reshape(d, h, w), inter["encoder_out"][i]) < TOL
    fused = torch.cat(inter["fused_feats"])
    assert (
        _max_diff(
            head.fuse(
                roi_feats,
                torch.cat(inter["local_atten_out"]),
                torch.cat(inter["context_atten_out"]),
            ),
            fused,
        )
        < TOL
    )
    weights = head.weight_linear(roi_feats)
    assert _max_diff(weights, torch.cat(inter["afa_weight_logits"])) < TOL


@torch.inference_mode()
def test_branch_outputs_match(detector, parity_inputs, parity_outputs):
    from fbil.model.masks import branch_masks, foreground_cells

    inter = parity_outputs["intermediates"]
    head = detector.head
    rois = parity_inputs["rois"]
    feats = inter["reduced_feats"]
    memory = head.encode(feats)
    h, w = feats.shape[-2:]
    fg = foreground_cells(rois, h, w)
    fg_blocked, bg_blocked = branch_masks(fg, torch.ones_like(fg))
    clip_index = rois[:, 0].long()
    fg_out = head.local_atten(inter["roi_feats"], memory, clip_index, fg_blocked)
    bg_out = head.context_atten(inter["roi_feats"], memory, clip_index, bg_blocked)
    assert _max_diff(fg_out, torch.cat(inter["local_atten_out"])) < TOL
    assert _max_diff(bg_out, torch.cat(inter["context_atten_out"])) < TOL


@torch.inference_mode()
def test_published_masks_reproduced(parity_inputs, parity_outputs):
    """Foreground branch blocks exactly masks_global, background branch masks_local."""
    from fbil.model.masks import branch_masks, foreground_cells

    rois = parity_inputs["rois"]
    fg = foreground_cells(rois, 8, 10)
    fg_blocked, bg_blocked = branch_masks(fg, torch.ones_like(fg))
    for row, clip in enumerate(rois[:, 0].long().tolist()):
        assert torch.equal(fg_blocked[row], parity_outputs["masks_global"][clip].flatten())
        assert torch.equal(bg_blocked[row], parity_outputs["masks_local"][clip].flatten())


@torch.inference_mode()
def test_batch_of_one(detector, parity_inputs, parity_outputs):
    single = parity_outputs["single_clip"]
    clips = parity_inputs["clips"][:1]
    logits = detector(clips, single["rois"])
    assert _max_diff(logits, single["logits"]) < TOL
    assert _max_diff(detector.scores(logits), single["scores"]) < TOL
    # and it equals the batched run's row for that clip
    assert _max_diff(logits, parity_outputs["logits"][:1]) < TOL


@torch.inference_mode()
def test_second_run_bit_identical(detector, parity_inputs):
    a = detector(parity_inputs["clips"], parity_inputs["rois"])
    b = detector(parity_inputs["clips"], parity_inputs["rois"])
    assert torch.equal(a, b)


@torch.inference_mode()
def test_roi_order_is_preserved(detector, parity_inputs, parity_outputs):
    """Actors of a clip in another order: the same logits, permuted the same way."""
    rois = parity_inputs["rois"][[0, 3, 1, 2]]
    logits = detector(parity_inputs["clips"], rois)
    assert _max_diff(logits, parity_outputs["logits"][[0, 3, 1, 2]]) < TOL
