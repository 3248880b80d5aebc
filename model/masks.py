"""Foreground/background cell masks for the two attention branches (vectorised, exportable).

All masks are per roi, shape ``(N, h*w)``, cells flattened row-major (``row*w + col``).
The foreground region is shared by all actors of a clip:

* clip with >= 2 actors: the union box of its actors;
* clip with 1 actor: the actor box doubled around its centre (clamped to the map);
* lower bounds truncated, upper bounds rounded up, both inclusive (published rule).

Nothing here branches on tensor values or on the actor count, so it traces and exports.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fbil.model.config import MaskConfig


def valid_cells(h: int, w: int, valid_hw: Tensor, like: Tensor) -> Tensor:
    """``(B, h*w)`` True where a cell lies inside the clip's unpadded ``(eff_h, eff_w)`` area."""
    rows = torch.arange(h, device=like.device).view(1, h, 1)
    cols = torch.arange(w, device=like.device).view(1, 1, w)
    eff_h = valid_hw[:, 0].view(-1, 1, 1)
    eff_w = valid_hw[:, 1].view(-1, 1, 1)
    return ((rows < eff_h) & (cols < eff_w)).flatten(1)


def foreground_cells(rois: Tensor, h: int, w: int) -> Tensor:
    """``(N, h*w)`` True for the foreground cells of each roi's clip.

    ``rois``: ``(N, 5)`` rows ``[clip_index, x1, y1, x2, y2]`` normalised to 0..1 of the map.
    """
    x1, y1, x2, y2 = rois[:, 1] * w, rois[:, 2] * h, rois[:, 3] * w, rois[:, 4] * h

    same_clip = rois[:, 0].unsqueeze(1) == rois[:, 0].unsqueeze(0)  # (N, N)
    inf = torch.full_like(same_clip, float("inf"), dtype=rois.dtype)
    union_x1 = torch.where(same_clip, x1.unsqueeze(0), inf).amin(dim=1)
    union_y1 = torch.where(same_clip, y1.unsqueeze(0), inf).amin(dim=1)
    union_x2 = torch.where(same_clip, x2.unsqueeze(0), -inf).amax(dim=1)
    union_y2 = torch.where(same_clip, y2.unsqueeze(0), -inf).amax(dim=1)

    # single actor: box doubled around its centre, lower bounds >= 0, upper bounds <= map size
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    single_x1, single_y1 = (cx - bw).clamp(min=0), (cy - bh).clamp(min=0)
    single_x2, single_y2 = (cx + bw).clamp(max=w), (cy + bh).clamp(max=h)

    alone = same_clip.sum(dim=1) == 1
    lo_x = torch.floor(torch.where(alone, single_x1, union_x1))
    lo_y = torch.floor(torch.where(alone, single_y1, union_y1))
    hi_x = torch.ceil(torch.where(alone, single_x2, union_x2))
    hi_y = torch.ceil(torch.where(alone, single_y2, union_y2))

    cols = torch.arange(w, device=rois.device, dtype=rois.dtype).view(1, 1, w)
    rows = torch.arange(h, device=rois.device, dtype=rois.dtype).view(1, h, 1)
    in_x = (cols >= lo_x.view(-1, 1, 1)) & (cols <= hi_x.view(-1, 1, 1))
    in_y = (rows >= lo_y.view(-1, 1, 1)) & (rows <= hi_y.view(-1, 1, 1))
    return (in_x & in_y).flatten(1)


def _random_drop(candidates: Tensor, fraction: float, noise: Tensor) -> Tensor:
    """Mark ``floor(fraction * count)`` randomly chosen True cells of each row of ``candidates``.

    ``noise`` is uniform in [0, 1) with the shape of ``candidates``; cells are ranked by it.
    """
    count = candidates.sum(dim=1, keepdim=True)
    k = torch.floor(count.to(noise.dtype) * fraction)
    keyed = torch.where(candidates, noise, torch.full_like(noise, 2.0))
    rank = keyed.argsort(dim=1).argsort(dim=1)
    return candidates & (rank < k)


def branch_masks(
    foreground: Tensor,
    valid: Tensor,
    *,
    drops: MaskConfig | None = None,
    clip_index: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Key masks (True = may not attend) of the foreground and the background branch.

    ``foreground``, ``valid``: ``(N, h*w)``. Without ``drops`` (inference) the foreground
    branch attends exactly to the valid foreground cells and the background branch exactly to
    the valid background cells. With ``drops`` (training) each branch additionally draws the
    published random masks: it blocks a ``*_fg_drop`` fraction of foreground cells and a
    ``*_bg_drop`` fraction of background cells, drawn once per clip (``clip_index`` ``(N,)``).
    A branch left with no cell to attend to attends to every valid cell instead.
    """
    background = valid & ~foreground
    fg = valid & foreground
    if drops is None:
        fg_blocked, bg_blocked = ~fg, ~background
    else:
        if clip_index is None:
            raise ValueError("training masks need the clip index of each roi")
        num_clips = int(clip_index.max()) + 1 if clip_index.numel() else 0
        noise = torch.rand(
            (2, num_clips, foreground.shape[1]), generator=generator, device=foreground.device
        )[:, clip_index]
        fg_blocked = (
            ~valid
            | _random_drop(fg, drops.fg_branch_fg_drop, noise[0])
            | _random_drop(background, drops.fg_branch_bg_drop, noise[0])
        )
        bg_blocked = (
            ~valid
            | _random_drop(fg, drops.bg_branch_fg_drop, noise[1])
            | _random_drop(background, drops.bg_branch_bg_drop, noise[1])
        )
    return _attend_all_if_empty(fg_blocked, valid), _attend_all_if_empty(bg_blocked, valid)


def _attend_all_if_empty(blocked: Tensor, valid: Tensor) -> Tensor:
    """Rows with no attendable cell attend to every valid cell (boolean ops only: exportable)."""
    empty = blocked.all(dim=1, keepdim=True)
    return (blocked & ~empty) | (~valid & empty)
