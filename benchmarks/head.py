"""Head speed: our once-per-clip FBIL head vs. the published per-actor computation.

The reference below recomputes, for every actor, what the published code recomputes: it copies
the clip's feature map, re-runs the feature encoder, and re-projects the cross-attention keys and
values, using ``torch.nn.functional.multi_head_attention_forward`` (what
``nn.MultiheadAttention`` runs) with the same weights. Outputs are compared before timing.

    python -m benchmarks.head [--actors 1 4 8 16] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.timing import median_seconds
from fbil.model.config import HeadConfig
from fbil.model.device import default_device
from fbil.model.head import FBILHead, MultiheadAttention, sine_position_embedding
from fbil.model.masks import branch_masks, foreground_cells


def _mha(attn: MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, blocked: Tensor | None):
    """Sequence-first (L, 1, D) attention exactly as nn.MultiheadAttention computes it."""
    out, _ = F.multi_head_attention_forward(
        q, k, v, attn.dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
        None, None, False, 0.0, attn.out_proj.weight, attn.out_proj.bias,
        training=False, key_padding_mask=blocked, need_weights=False,
    )  # fmt: skip
    return out


def published_style_head(head: FBILHead, slow: Tensor, fast: Tensor, rois: Tensor) -> Tensor:
    """Per-actor loop as in the published code (one clip)."""
    feats = head.reduce(slow, fast)
    roi_feats = head.roi_features(feats, rois)
    h, w = feats.shape[-2:]
    fg_blocked, bg_blocked = branch_masks(*(lambda f: (f, torch.ones_like(f)))(
        foreground_cells(rois, h, w)))  # fmt: skip
    outputs = []
    for i in range(rois.shape[0]):
        mem = feats[0].flatten(1).T.unsqueeze(1).clone()  # the per-actor copy of the map
        pos = sine_position_embedding(h, w, mem.shape[-1], mem)[0].unsqueeze(1)
        for layer, ffn in zip(head.feature_encoder.self_atten, head.feature_encoder.ffn,
                              strict=True):  # fmt: skip
            y = _mha(layer.self_attn, mem + pos, mem + pos, mem, None)
            mem = ffn(layer.norm(mem + y))
        branches = []
        for branch, blocked in ((head.local_atten, fg_blocked), (head.context_atten, bg_blocked)):
            x = roi_feats[i].view(1, 1, -1)
            for s, c, ffn in zip(branch.self_atten, branch.cross_atten, branch.ffn, strict=True):
                x = s.norm(x + _mha(s.self_attn, x, x, x, None))
                x = c.norm(x + _mha(c.multihead_attn, x, mem, mem, blocked[i : i + 1]))
                x = ffn(x)
            branches.append(x.view(1, -1))
        fused = head.fuse(roi_feats[i : i + 1], *branches)
        outputs.append(head.fc(torch.cat((roi_feats[i : i + 1], fused), dim=1)))
    return torch.cat(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=str(default_device()))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    head = FBILHead(HeadConfig()).eval().to(device)  # the paper's head: D=1024, 8 heads, 3+3+3
    h, w = 16, 29  # 256x464 input at stride 16
    slow = torch.rand(1, 2048, 8, h, w, device=device)
    fast = torch.rand(1, 256, 32, h, w, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"FBIL head, feature map {h}x{w}, D=1024, device {device}, threads {args.threads}")
    print(
        f"{'actors':>6} | {'published-style ms':>18} | {'ours ms':>9} | {'speed-up':>8} | max|diff|"
    )
    print("-" * 66)
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for n in args.actors:
            xy = torch.rand(n, 2, generator=gen) * 0.6
            wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
            rois = torch.cat((torch.zeros(n, 1), xy, xy + wh), dim=1).to(device)
            ours = head(slow, fast, rois)
            ref = published_style_head(head, slow, fast, rois)
            diff = (ours - ref).abs().max().item()

            def run_ours(rois=rois):
                head(slow, fast, rois)
                sync()

            def run_ref(rois=rois):
                published_style_head(head, slow, fast, rois)
                sync()

            t_ref = median_seconds(run_ref, args.repeats)
            t_ours = median_seconds(run_ours, args.repeats)
            print(
                f"{n:>6} | {t_ref * 1e3:>18.1f} | {t_ours * 1e3:>9.1f} | "
                f"{t_ref / t_ours:>7.1f}x | {diff:.1e}"
            )


if __name__ == "__main__":
    main()
