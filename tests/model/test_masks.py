"""Foreground region rule, exact inference masks, fallback, and training drop fractions."""

from __future__ import annotations

import torch

from fbil.model.config import MaskConfig
from fbil.model.masks import branch_masks, foreground_cells


def grid(mask_row: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return mask_row.view(h, w)


def expected_region(h, w, cols, rows):
    g = torch.zeros(h, w, dtype=torch.bool)
    g[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return g


def test_single_actor_box_doubled_around_centre():
    # cells: x 3.0..5.0 (centre 4, width 2) -> 2..6 ; y 2.0..3.0 (centre 2.5, h 1) -> 1.5..3.5
    rois = torch.tensor([[0, 0.3, 0.25, 0.5, 0.375]])
    fg = foreground_cells(rois, h=8, w=10)
    assert torch.equal(grid(fg[0], 8, 10), expected_region(8, 10, cols=(2, 6), rows=(1, 4)))


def test_single_actor_at_border_is_clamped():
    rois = torch.tensor([[0, 0.0, 0.6, 0.25, 1.0]])  # left/bottom edges
    fg = foreground_cells(rois, h=8, w=10)
    # x: centre 1.25 +- 2.5 -> [0, 3.75 -> 4]; y: centre 6.4 +- 3.2 -> [3.2 -> 3, 8]
    assert torch.equal(grid(fg[0], 8, 10), expected_region(8, 10, cols=(0, 4), rows=(3, 7)))


def test_several_actors_share_the_union_box_inclusive_upper_bound():
    rois = torch.tensor(
        [
            [0, 0.5, 0.5, 0.6, 0.6],  # clip 0: a single actor
            [1, 0.15, 0.15, 0.25, 0.35],
            [1, 0.42, 0.25, 0.55, 0.51],
        ]
    )
    fg = foreground_cells(rois, h=10, w=10)
    union = expected_region(10, 10, cols=(1, 6), rows=(1, 6))  # x 1.5..5.5, y 1.5..5.1
    assert torch.equal(grid(fg[1], 10, 10), union)
    assert torch.equal(fg[1], fg[2])
    assert not torch.equal(fg[0], fg[1])


def test_inference_masks_are_exact_complements():
    rois = torch.tensor([[0, 0.2, 0.2, 0.4, 0.5], [0, 0.5, 0.3, 0.7, 0.9]])
    fg = foreground_cells(rois, 8, 10)
    fg_blocked, bg_blocked = branch_masks(fg, torch.ones_like(fg))
    assert torch.equal(fg_blocked, ~fg)  # foreground branch sees only foreground cells
    assert torch.equal(bg_blocked, fg)  # background branch sees only background cells


def test_empty_background_falls_back_to_all_cells():
    rois = torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]])  # whole frame is foreground
    fg = foreground_cells(rois, 4, 5)
    assert fg.all()
    fg_blocked, bg_blocked = branch_masks(fg, torch.ones_like(fg))
    assert not fg_blocked.any()
    assert not bg_blocked.any()  # published code: NaN; ours attends to every cell


def test_padding_cells_are_never_attended():
    rois = torch.tensor([[0, 0.05, 0.05, 0.15, 0.15]])
    valid = torch.zeros(1, 6, 8, dtype=torch.bool)
    valid[:, :4, :5] = True
    valid = valid.flatten(1)
    fg = foreground_cells(rois, 6, 8)
    fg_blocked, bg_blocked = branch_masks(fg, valid)
    assert (fg_blocked | bg_blocked)[~valid].all()
    assert (~bg_blocked & valid).sum() == (valid & ~fg).sum()


def test_training_drop_fractions_are_exact_and_random():
    h, w = 16, 29
    rois = torch.tensor([[0, 0.2, 0.2, 0.5, 0.6], [0, 0.4, 0.3, 0.6, 0.9], [1, 0.1, 0.1, 0.3, 0.4]])
    fg = foreground_cells(rois, h, w)
    valid = torch.ones_like(fg)
    drops = MaskConfig()  # published: fg branch 0.2/1.0, bg branch 0.9/0.2
    gen = torch.Generator().manual_seed(0)
    clip = rois[:, 0].long()
    fg_blocked, bg_blocked = branch_masks(fg, valid, drops=drops, clip_index=clip, generator=gen)
    for row in range(3):
        n_fg, n_bg = int(fg[row].sum()), int((~fg[row]).sum())
        assert int((fg_blocked[row] & fg[row]).sum()) == int(0.2 * n_fg)
        assert int((fg_blocked[row] & ~fg[row]).sum()) == n_bg  # 1.0: all background
        assert int((bg_blocked[row] & fg[row]).sum()) == int(0.9 * n_fg)
        assert int((bg_blocked[row] & ~fg[row]).sum()) == int(0.2 * n_bg)
    # actors of one clip share the clip's draw; another draw differs
    assert torch.equal(bg_blocked[0], bg_blocked[1])
    again, _ = branch_masks(fg, valid, drops=drops, clip_index=clip, generator=gen)
    assert not torch.equal(again, fg_blocked)


def test_training_mode_head_draws_random_masks_eval_is_deterministic():
    from fbil import model

    config = model.FBILConfig.tiny(attn_dropout=0.0)
    det = model.build_detector(config)
    clips = torch.randn(1, 3, 8, 64, 64)
    rois = torch.tensor([[0, 0.2, 0.2, 0.6, 0.8]])
    with torch.no_grad():
        a, b = det(clips, rois), det(clips, rois)
        assert torch.equal(a, b)
        det.train()
        for m in det.modules():  # keep BN statistics fixed; only the masks are random
            if isinstance(m, torch.nn.BatchNorm3d):
                m.eval()
        torch.manual_seed(1)
        c = det(clips, rois)
        d = det(clips, rois)
    assert not torch.equal(c, d)
