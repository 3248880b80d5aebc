"""The FBIL head: actor features, a shared feature encoder, foreground/background masked
cross-attention branches and actor-guided fusion.

Module and parameter names follow the published checkpoints (``conv_reduce``,
``feature_encoder``, ``local_atten`` = foreground branch, ``context_atten`` = background
branch, ``weight_linear``, ``norm``, ``fc``). Unlike the published code, everything that is the
same for all actors of a clip (the encoded feature map) is computed once per clip, and the
cross-attention key/value projections are folded into the actor queries rather than applied to
every cell (see :meth:`MultiheadAttention.attend_memory`); there is no Python loop over actors
or cells.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from fbil.model.config import HeadConfig, MaskConfig
from fbil.model.masks import branch_masks, foreground_cells, valid_cells


class MultiheadAttention(nn.Module):
    """Parameters laid out as ``torch.nn.MultiheadAttention`` (packed ``in_proj`` q; k; v).

    Split into projection and attention so keys/values can be projected once and shared.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = dropout
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x: Tensor, which: int) -> Tensor:
        """Project ``(..., L, D)`` with the q (0), k (1) or v (2) rows; out ``(..., H, L, d)``."""
        d = self.dim
        w = self.in_proj_weight[which * d : (which + 1) * d]
        b = self.in_proj_bias[which * d : (which + 1) * d]
        y = F.linear(x, w, b)
        return y.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, blocked: Tensor | None) -> Tensor:
        """Scaled dot-product attention over projected ``(..., H, L, d)`` tensors.

        ``blocked``: broadcastable to the scores ``(..., H, Lq, Lk)``, True = may not attend.
        Returns ``(..., Lq, D)`` after the output projection.
        """
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        out = (weights @ v).transpose(-3, -2).flatten(-2)
        return self.out_proj(out)

    def attend_memory(self, query: Tensor, memory: Tensor, blocked: Tensor) -> Tensor:
        """Cross-attention of one query token per row to that row's memory, ``(N, D)``.

        ``query`` ``(N, D)``; ``memory`` ``(N, L, D)``; ``blocked`` ``(N, L)``, True = may not
        attend. The key and value projections are folded into the query side instead of being
        applied to all ``L`` cells: ``q.(Wk m + bk) = (Wk^T q).m + const`` (the constant
        cancels in the softmax) and ``sum_l a_l (Wv m_l + bv) = Wv (sum_l a_l m_l) + bv``.
        That costs O(N*H*L*D) instead of O(L*D*D) per clip: exact, and far cheaper for the
        few actors of a clip.
        """
        d, heads, dh = self.dim, self.num_heads, self.head_dim
        q = self.project(query.unsqueeze(-2), 0).squeeze(-2) * dh**-0.5  # (N, H, dh)
        w_k = self.in_proj_weight[d : 2 * d].view(heads, dh, d)
        w_v = self.in_proj_weight[2 * d :].view(heads, dh, d)
        b_v = self.in_proj_bias[2 * d :].view(heads, dh)
        scores = torch.einsum("nhe,hed->nhd", q, w_k) @ memory.transpose(1, 2)  # (N, H, L)
        scores = scores.masked_fill(blocked.unsqueeze(1), float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        context = weights @ memory  # (N, H, D)
        values = torch.einsum("nhd,hed->nhe", context, w_v) + b_v  # (N, H, dh)
        return self.out_proj(values.flatten(1))

    def single_token(self, x: Tensor) -> Tensor:
        """Self-attention over one token ``(N, D)``: softmax over one key is 1, so only the
        value and output projections (and attention dropout, in training) remain."""
        v = self.project(x.unsqueeze(-2), 2)  # (N, H, 1, d)
        weights = F.dropout(torch.ones_like(v[..., :1]), self.dropout, self.training)
        return self.out_proj((weights * v).transpose(-3, -2).flatten(-2)).squeeze(-2)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = MultiheadAttention(dim, num_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)


class FFNLayer(nn.Module):
    """Post-norm feed-forward block: ``norm(x + linear2(relu(linear1(x))))``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm(x + self.dropout(y))


def sine_position_embedding(
    h: int, w: int, dim: int, like: Tensor, eff_hw: Tensor | None = None
) -> Tensor:
    """DETR-style normalised sine embedding, ``(B, h*w, dim)`` (``B`` = 1 without ``eff_hw``).

    Row/column counts 1..h, 1..w divided by (eff_h + 1e-6) / (eff_w + 1e-6), times 2*pi;
    frequencies ``10000 ** (2*floor(i/2) / (dim/2))``; channels interleaved sin, cos; y half
    first. ``eff_hw`` ``(B, 2)``: the unpadded map size of each clip (default: h, w).
    """
    half = dim // 2
    dtype, device = like.dtype, like.device
    y = torch.arange(1, h + 1, dtype=dtype, device=device).view(1, h, 1)
    x = torch.arange(1, w + 1, dtype=dtype, device=device).view(1, 1, w)
    if eff_hw is None:
        y = y / (y[:, -1:] + 1e-6)
        x = x / (x[:, :, -1:] + 1e-6)
    else:
        y = y / (eff_hw[:, 0].to(dtype).view(-1, 1, 1) + 1e-6)
        x = x / (eff_hw[:, 1].to(dtype).view(-1, 1, 1) + 1e-6)
    y, x = torch.broadcast_tensors(y * (2 * math.pi), x * (2 * math.pi))
    i = torch.arange(half, dtype=dtype, device=device)
    freq = 10000 ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def embed(t: Tensor) -> Tensor:
        t = t.unsqueeze(-1) / freq
        return torch.stack((t[..., 0::2].sin(), t[..., 1::2].cos()), dim=-1).flatten(-2)

    return torch.cat((embed(y), embed(x)), dim=-1).flatten(1, 2)


class FeatureEncoder(nn.Module):
    """Post-norm transformer encoder over the clip's cells (position embedding on q and k)."""

    def __init__(self, dim: int, num_heads: int, depth: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_atten = nn.ModuleList(
            SelfAttentionLayer(dim, num_heads, dropout) for _ in range(depth)
        )
        self.ffn = nn.ModuleList(FFNLayer(dim, ffn_dim, dropout) for _ in range(depth))

    def forward(self, x: Tensor, pos: Tensor, blocked: Tensor | None) -> Tensor:
        """``x``, ``pos``: ``(B, L, D)``; ``blocked``: ``(B, L)`` padded cells or None."""
        key_blocked = None if blocked is None else blocked[:, None, None, :]
        for attn_layer, ffn in zip(self.self_atten, self.ffn, strict=True):
            attn = attn_layer.self_attn
            qk = x + pos
            y = attn.attend(
                attn.project(qk, 0), attn.project(qk, 1), attn.project(x, 2), key_blocked
            )
            x = attn_layer.norm(x + attn_layer.dropout(y))
            x = ffn(x)
        return x


class MaskedBranch(nn.Module):
    """Actor token -> (self-attention, masked cross-attention to the encoded map, FFN) x depth."""

    def __init__(self, dim: int, num_heads: int, depth: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_atten = nn.ModuleList(
            SelfAttentionLayer(dim, num_heads, dropout) for _ in range(depth)
        )
        self.cross_atten = nn.ModuleList(
            CrossAttentionLayer(dim, num_heads, dropout) for _ in range(depth)
        )
        self.ffn = nn.ModuleList(FFNLayer(dim, ffn_dim, dropout) for _ in range(depth))

    def forward(self, actors: Tensor, memory: Tensor, clip_index: Tensor, blocked: Tensor):
        """``actors`` ``(N, D)``; ``memory`` ``(B, L, D)`` encoded maps; ``blocked`` ``(N, L)``."""
        actor_memory = memory.index_select(0, clip_index)  # (N, L, D): a view per actor's clip
        x = actors
        for self_layer, cross_layer, ffn in zip(
            self.self_atten, self.cross_atten, self.ffn, strict=True
        ):
            x = self_layer.norm(x + self_layer.dropout(self_layer.self_attn.single_token(x)))
            y = cross_layer.multihead_attn.attend_memory(x, actor_memory, blocked)
            x = cross_layer.norm(x + cross_layer.dropout(y))
            x = ffn(x)
        return x


class MLP(nn.Module):
    """Linear layers with ReLU between them (the fusion-weight predictor)."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FBILHead(nn.Module):
    """FBIL head: ``(slow, fast, rois) -> logits (N, num_classes)``."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        d, p = cfg.reduce_dim, cfg.attn_dropout
        self.cfg = cfg
        self.conv_reduce = nn.Conv2d(cfg.in_channels, d, kernel_size=1, bias=False)
        self.feature_encoder = FeatureEncoder(d, cfg.num_heads, cfg.encoder_depth, cfg.ffn_dim, p)
        self.context_atten = MaskedBranch(d, cfg.num_heads, cfg.bg_depth, cfg.ffn_dim, p)
        self.local_atten = MaskedBranch(d, cfg.num_heads, cfg.fg_depth, cfg.ffn_dim, p)
        self.weight_linear = MLP([d, d, d, 2])
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(2 * d, cfg.num_classes, bias=cfg.classifier_bias)

    # -- steps, in the order the forward pass runs them -------------------------------------
    def reduce(self, slow: Tensor, fast: Tensor) -> Tensor:
        """Temporal mean of each pathway, channel concat (slow first), 1x1 conv: ``(B,D,h,w)``."""
        return self.conv_reduce(torch.cat((slow.mean(dim=2), fast.mean(dim=2)), dim=1))

    def roi_features(self, feats: Tensor, rois: Tensor) -> Tensor:
        """RoIAlign 7x7 (adaptive sampling, aligned False) + 7x7 max pool: ``(N, D)``."""
        h, w = feats.shape[-2:]
        boxes = torch.cat(
            (rois[:, 0:1], rois[:, 1:2] * w, rois[:, 2:3] * h, rois[:, 3:4] * w, rois[:, 4:5] * h),
            dim=1,
        )
        pooled = roi_align(feats, boxes, self.cfg.roi_size, 1.0, -1, False)
        return F.max_pool2d(pooled, self.cfg.roi_size).flatten(1)

    def encode(self, feats: Tensor, valid_hw: Tensor | None = None) -> Tensor:
        """Feature encoder over each clip's cells, once per clip: ``(B, h*w, D)``."""
        h, w = feats.shape[-2:]
        tokens = feats.flatten(2).transpose(1, 2)
        pos = sine_position_embedding(h, w, tokens.shape[-1], tokens, valid_hw)
        padded = None if valid_hw is None else ~valid_cells(h, w, valid_hw, feats)
        return self.feature_encoder(tokens, pos, padded)

    def fuse(self, roi_feats: Tensor, fg_out: Tensor, bg_out: Tensor) -> Tensor:
        """Actor-guided weights (MLP on the actor feature) mix the two branches, then norm."""
        logits = self.weight_linear(roi_feats)
        softmax = self.cfg.fusion_act == "softmax"
        weights = logits.softmax(dim=-1) if softmax else logits.sigmoid()
        return self.norm(weights[:, 0:1] * fg_out + weights[:, 1:2] * bg_out)

    def forward(
        self,
        slow: Tensor,
        fast: Tensor,
        rois: Tensor,
        valid_hw: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Logits ``(N, num_classes)`` in roi order.

        ``rois``: ``(N, 5)`` ``[clip_index, x1, y1, x2, y2]`` normalised to the clip tensor's
        frame (padding included). ``valid_hw``: optional ``(B, 2)`` long, the unpadded
        feature-map size ``(eff_h, eff_w)`` of each clip (training with padded batches); cells
        outside it are never attended and the position embedding is normalised by it. The
        default is the full map. In training mode the branch masks are
        drawn at random (published drops), in eval mode they are exact.
        """
        feats = self.reduce(slow, fast)
        h, w = feats.shape[-2:]
        clip_index = rois[:, 0].long()
        roi_feats = self.roi_features(feats, rois)

        memory = self.encode(feats, valid_hw)

        foreground = foreground_cells(rois, h, w)
        if valid_hw is None:
            valid = torch.ones_like(foreground)
        else:
            valid = valid_cells(h, w, valid_hw.index_select(0, clip_index), feats)
        drops: MaskConfig | None = self.cfg.masks if self.training else None
        fg_blocked, bg_blocked = branch_masks(
            foreground, valid, drops=drops, clip_index=clip_index, generator=generator
        )
        fg_out = self.local_atten(roi_feats, memory, clip_index, fg_blocked)
        bg_out = self.context_atten(roi_feats, memory, clip_index, bg_blocked)
        fused = self.fuse(roi_feats, fg_out, bg_out)
        return self.fc(self.dropout(torch.cat((roi_feats, fused), dim=1)))
