"""Building blocks shared by the backbones, necks and heads.

Module attribute names (`conv`, `bn`, `depthwise`, ...) are part of odet's checkpoint format:
renaming one changes every state-dict key below it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → activation; MMDetection's ``ConvModule`` with BN.

    Args:
        in_channels / out_channels: channel counts.
        kernel_size: square kernel; padding is ``kernel_size // 2`` (same-size output at stride 1).
        stride, groups: as in ``nn.Conv2d``.
        act: activation module, or ``None`` for none (default SiLU).
        bn_eps / bn_momentum: BatchNorm settings (PyTorch momentum convention).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        act: nn.Module | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = act if act is not None else nn.SiLU(inplace=True)


class DepthwiseSeparableConv(nn.Sequential):
    """k×k depth-wise ConvBNAct followed by a 1×1 point-wise ConvBNAct."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, bn_eps: float, bn_momentum: float
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(
            in_channels, in_channels, kernel_size, groups=in_channels, bn_eps=bn_eps, bn_momentum=bn_momentum
        )
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, bn_eps=bn_eps, bn_momentum=bn_momentum)


class ChannelAttention(nn.Module):
    """Squeeze-style channel gate: global average pool → 1×1 conv (with bias) → Hardsigmoid → scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The pooled statistics are computed in float32 even under autocast: the mean over a large
        # map in fp16 loses precision that the gate is sensitive to.
        with torch.autocast(device_type=x.device.type, enabled=False):
            weight = self.gate(self.fc(F.adaptive_avg_pool2d(x.float(), 1)))
        return x * weight.to(x.dtype)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: 1×1 reduce → [x, maxpool5(x), maxpool9(x), maxpool13(x)] → 1×1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_sizes: tuple[int, ...] = (5, 9, 13),
        bn_eps: float,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.reduce = ConvBNAct(in_channels, mid, 1, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.expand = ConvBNAct(
            mid * (len(kernel_sizes) + 1), out_channels, 1, bn_eps=bn_eps, bn_momentum=bn_momentum
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(torch.cat([x, *(pool(x) for pool in self.pools)], dim=1))


class CSPNeXtBlock(nn.Module):
    """3×3 ConvBNAct → 5×5 depth-wise separable conv, with an optional residual connection."""

    def __init__(
        self, channels: int, *, residual: bool, kernel_size: int = 5, bn_eps: float, bn_momentum: float
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv2 = DepthwiseSeparableConv(
            channels, channels, kernel_size, bn_eps=bn_eps, bn_momentum=bn_momentum
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.residual else out


class CSPLayer(nn.Module):
    """Cross-stage-partial layer with CSPNeXt blocks.

    The input is split into two 1×1 projections of ``out_channels * expand_ratio`` channels; one
    goes through ``num_blocks`` CSPNeXt blocks, the other is a shortcut. Both are concatenated
    (blocks first), optionally re-weighted by channel attention, and fused by a 1×1 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_blocks: int,
        expand_ratio: float = 0.5,
        residual: bool = True,
        channel_attention: bool = False,
        bn_eps: float,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.main_conv = ConvBNAct(in_channels, mid, 1, **bn)
        self.short_conv = ConvBNAct(in_channels, mid, 1, **bn)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, residual=residual, **bn) for _ in range(num_blocks)))
        self.attention = ChannelAttention(2 * mid) if channel_attention else None
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.attention is not None:
            y = self.attention(y)
        return self.final_conv(y)
