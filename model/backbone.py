"""SlowFast ResNet backbone (bottleneck blocks), with the published module and key names.

Both pathways leave at stride 16: res4 is dilated (2) instead of strided. The slow pathway sees
every ``alpha``-th frame starting at frame 0; lateral fast->slow connections are single
``(fuse_kernel, 1, 1)`` convolutions with temporal stride ``alpha`` (named ``Tconv1..4``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fbil.model.config import DEPTH_LAYERS, BackboneConfig


class Bottleneck(nn.Module):
    """ResNet bottleneck; ``temporal_kernel`` 3 makes the first conv ``3x1x1`` (else ``1x1x1``).

    The residual projection is ``downsample`` (a Sequential holding one 1x1x1 conv) followed by a
    separate ``downsample_bn``, as in the published checkpoints.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        temporal_kernel: int = 1,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv3d(
            in_channels,
            planes,
            kernel_size=(temporal_kernel, 1, 1),
            padding=(temporal_kernel // 2, 0, 0),
            bias=False,
        )
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(
            planes,
            planes,
            kernel_size=(1, 3, 3),
            stride=(1, stride, stride),
            padding=(0, dilation, dilation),
            dilation=(1, dilation, dilation),
            bias=False,
        )
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        self.downsample_bn: nn.BatchNorm3d | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(
                    in_channels,
                    out_channels,
                    kernel_size=1,
                    stride=(1, stride, stride),
                    bias=False,
                )
            )
            self.downsample_bn = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x
        if self.downsample is not None and self.downsample_bn is not None:
            residual = self.downsample_bn(self.downsample(x))
        return self.relu(out + residual)


def _stage(
    in_channels: int,
    planes: int,
    blocks: int,
    *,
    stride: int,
    dilation: int,
    temporal_kernel: int,
) -> nn.Sequential:
    layers = [
        Bottleneck(
            in_channels,
            planes,
            stride=stride,
            dilation=dilation,
            temporal_kernel=temporal_kernel,
        )
    ]
    for _ in range(1, blocks):
        layers.append(
            Bottleneck(
                planes * Bottleneck.expansion,
                planes,
                dilation=dilation,
                temporal_kernel=temporal_kernel,
            )
        )
    return nn.Sequential(*layers)


# per stage: spatial stride, dilation, slow temporal kernel (the fast pathway always uses 3)
_STAGES = ((1, 1, 1), (2, 1, 1), (2, 1, 3), (1, 2, 3))
# stride-2 layers between the clip and the feature map: conv1, max pool, the strided stages
FEATURE_STRIDE_STEPS = 2 + sum(stride == 2 for stride, _, _ in _STAGES)


def feature_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size of both pathways' feature maps for a ``height x width`` clip: each stride-2
    layer (padded) rounds up, so ``ceil(H / 16)``, ``ceil(W / 16)`` step by step."""
    for _ in range(FEATURE_STRIDE_STEPS):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


class SlowFast(nn.Module):
    """SlowFast network.

    Input ``(B, 3, T, H, W)``; output ``(slow, fast)`` with slow
    ``(B, 32*width, T/alpha, H/16, W/16)`` and fast ``(B, 32*width*beta, T, H/16, W/16)``
    (2048 and 256 channels at width 64). ``T`` must be a multiple of ``alpha``.
    """

    def __init__(
        self,
        layers: Sequence[int] = DEPTH_LAYERS[101],
        *,
        alpha: int = 4,
        beta: float = 0.125,
        width: int = 64,
        fuse_kernel: int = 5,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers needs 4 block counts, got {layers}")
        self.alpha = alpha
        fast_width = int(width * beta)

        # registration order = the published state_dict order (fast, slow, laterals), so that
        # parameter indices of published optimizer states line up
        self.fast_conv1 = nn.Conv3d(
            3, fast_width, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False
        )
        self.fast_bn1 = nn.BatchNorm3d(fast_width)
        fast_in, fast_inputs = fast_width, []
        for i, (blocks, (stride, dilation, _)) in enumerate(
            zip(layers, _STAGES, strict=True), start=1
        ):
            planes = int(width * beta * 2 ** (i - 1))
            fast_inputs.append(fast_in)
            stage = _stage(
                fast_in, planes, blocks, stride=stride, dilation=dilation, temporal_kernel=3
            )
            self.add_module(f"fast_res{i}", stage)
            fast_in = planes * Bottleneck.expansion

        self.slow_conv1 = nn.Conv3d(
            3, width, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False
        )
        self.slow_bn1 = nn.BatchNorm3d(width)
        slow_in, laterals = width, []
        for i, (blocks, (stride, dilation, temporal_kernel)) in enumerate(
            zip(layers, _STAGES, strict=True), start=1
        ):
            planes = width * 2 ** (i - 1)
            laterals.append(2 * int(slow_in * beta))
            stage = _stage(
                slow_in + laterals[-1],
                planes,
                blocks,
                stride=stride,
                dilation=dilation,
                temporal_kernel=temporal_kernel,
            )
            self.add_module(f"slow_res{i}", stage)
            slow_in = planes * Bottleneck.expansion

        for i, (c_in, c_out) in enumerate(zip(fast_inputs, laterals, strict=True), start=1):
            conv = nn.Conv3d(
                c_in,
                c_out,
                kernel_size=(fuse_kernel, 1, 1),
                stride=(alpha, 1, 1),
                padding=(fuse_kernel // 2, 0, 0),
                bias=False,
            )
            self.add_module(f"Tconv{i}", conv)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.slow_channels, self.fast_channels = slow_in, fast_in

    @classmethod
    def from_config(cls, cfg: BackboneConfig) -> SlowFast:
        return cls(
            cfg.block_counts,
            alpha=cfg.alpha,
            beta=cfg.beta,
            width=cfg.width,
            fuse_kernel=cfg.fuse_kernel,
        )

    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        fast = self.maxpool(self.relu(self.fast_bn1(self.fast_conv1(clips))))
        slow = self.maxpool(self.relu(self.slow_bn1(self.slow_conv1(clips[:, :, :: self.alpha]))))
        stages = (
            (self.Tconv1, self.fast_res1, self.slow_res1),
            (self.Tconv2, self.fast_res2, self.slow_res2),
            (self.Tconv3, self.fast_res3, self.slow_res3),
            (self.Tconv4, self.fast_res4, self.slow_res4),
        )
        for lateral, fast_stage, slow_stage in stages:
            slow = slow_stage(torch.cat([slow, lateral(fast)], dim=1))
            fast = fast_stage(fast)
        return slow, fast
