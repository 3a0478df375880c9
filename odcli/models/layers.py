"""Building blocks shared by the backbones, necks and heads.

Module attribute names (`conv`, `bn`, `depthwise`, ...) are part of odet's checkpoint format:
renaming one changes every state-dict key below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BatchNormConfig:
    """BatchNorm settings shared by every normalised layer of a model (recipe ``model.bn_eps`` /
    ``model.bn_momentum``).

    Attributes:
        eps: added to the variance before the square root.
        momentum: PyTorch convention, the weight of the *new* batch statistic in the running
            average (Paddle's momentum 0.9 is PyTorch's 0.1).
    """

    eps: float = 1e-5
    momentum: float = 0.1

    def make(self, channels: int) -> nn.BatchNorm2d:
        """A ``BatchNorm2d`` over ``channels`` with these settings."""
        return nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)


#: PyTorch's BatchNorm defaults (ε 1e-5, momentum 0.1): upstream's for every odet model.
DEFAULT_NORM = BatchNormConfig()


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → activation; MMDetection's ``ConvModule`` with BN.

    Args:
        in_channels / out_channels: channel counts.
        kernel_size: square kernel; padding is ``kernel_size // 2`` (same-size output at stride 1).
        stride, groups: as in ``nn.Conv2d``.
        act: activation module, or ``None`` for none (default SiLU).
        norm: BatchNorm settings.
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
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = norm.make(out_channels)
        self.act = act if act is not None else nn.SiLU(inplace=True)


class DepthwiseSeparableConv(nn.Sequential):
    """k×k depth-wise ConvBNAct followed by a 1×1 point-wise ConvBNAct."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, norm: BatchNormConfig
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel_size, groups=in_channels, norm=norm)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, norm=norm)


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
        norm: BatchNormConfig,
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.reduce = ConvBNAct(in_channels, mid, 1, norm=norm)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.expand = ConvBNAct(mid * (len(kernel_sizes) + 1), out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(torch.cat([x, *(pool(x) for pool in self.pools)], dim=1))


class CSPNeXtBlock(nn.Module):
    """3×3 ConvBNAct → 5×5 depth-wise separable conv, with an optional residual connection."""

    def __init__(self, channels: int, *, residual: bool, kernel_size: int = 5, norm: BatchNormConfig) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3, norm=norm)
        self.conv2 = DepthwiseSeparableConv(channels, channels, kernel_size, norm=norm)
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
        norm: BatchNormConfig,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvBNAct(in_channels, mid, 1, norm=norm)
        self.short_conv = ConvBNAct(in_channels, mid, 1, norm=norm)
        self.blocks = nn.Sequential(
            *(CSPNeXtBlock(mid, residual=residual, norm=norm) for _ in range(num_blocks))
        )
        self.attention = ChannelAttention(2 * mid) if channel_attention else None
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.attention is not None:
            y = self.attention(y)
        return self.final_conv(y)


class RepVGGBlock(nn.Module):
    """RepVGG block: a 3×3 conv+BN branch and a 1×1 conv+BN branch, summed, then the activation.

    PP-YOLOE+ scales the 1×1 branch by a learnable scalar ``alpha`` (shape (1,)). Because every
    branch is linear until the sum, the block is equivalent to a single 3×3 conv with bias:
    :meth:`switch_to_deploy` computes it (RepVGG "re-parameterisation") and drops the branches.
    Built with ``deploy=True`` the block holds only that conv (``conv``), ready to load deployed
    weights.

    Args:
        in_channels / out_channels: channel counts (stride 1, same spatial size).
        alpha: learnable scale on the 1×1 branch (PP-YOLOE+ backbone).
        deploy: build the re-parameterised form directly.
        act: activation after the sum (default SiLU).
        norm: BatchNorm settings of both branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        alpha: bool = False,
        deploy: bool = False,
        act: nn.Module | None = None,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1: ConvBNAct | None = None
        self.conv2: ConvBNAct | None = None
        self.alpha: nn.Parameter | None = None
        self.conv: nn.Conv2d | None = None
        if deploy:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)
        else:
            self.conv1 = ConvBNAct(in_channels, out_channels, 3, act=nn.Identity(), norm=norm)
            self.conv2 = ConvBNAct(in_channels, out_channels, 1, act=nn.Identity(), norm=norm)
            if alpha:
                self.alpha = nn.Parameter(torch.ones(1))
        self.act = act if act is not None else nn.SiLU(inplace=True)

    @property
    def deployed(self) -> bool:
        """True once the block is a single 3×3 conv."""
        return self.conv is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.act(self.conv(x))
        assert self.conv1 is not None and self.conv2 is not None
        branch = self.conv2(x)
        if self.alpha is not None:
            branch = self.alpha * branch
        return self.act(self.conv1(x) + branch)

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (out, in, 3, 3) kernel and (out,) bias of the single conv equal to both branches.

        BN is folded into each branch (running statistics: inference semantics), the 1×1 kernel is
        zero-padded to 3×3 (its tap is the centre), and branches add. Computed in float64 so that
        the fused model stays within float32 rounding of the original.
        """
        if self.conv is not None:
            return self.conv.weight.detach().clone(), self.conv.bias.detach().clone()
        assert self.conv1 is not None and self.conv2 is not None
        k3, b3 = _fold_bn(self.conv1)
        k1, b1 = _fold_bn(self.conv2)
        k1 = F.pad(k1, [1, 1, 1, 1])
        if self.alpha is not None:
            a = self.alpha.detach().double()
            k1, b1 = k1 * a, b1 * a
        return k3 + k1, b3 + b1

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace both branches (and ``alpha``) by the equivalent single 3×3 conv, in place."""
        if self.conv is not None:
            return
        assert self.conv1 is not None
        weight = self.conv1.conv.weight
        kernel, bias = self.equivalent_kernel_bias()
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, padding=1, bias=True)
        conv.weight.copy_(kernel.to(weight.dtype))
        conv.bias.copy_(bias.to(weight.dtype))
        self.conv = conv.to(weight.device)
        self.conv1 = None
        self.conv2 = None
        self.alpha = None

    def fuse_for_inference(self) -> None:
        """Hook of :func:`odcli.models.fuse.fuse_conv_bn`: re-parameterise before BN folding."""
        self.switch_to_deploy()


def _fold_bn(block: ConvBNAct) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias (float64) of ``conv`` followed by eval-mode ``bn`` as one biased conv."""
    bn = block.bn
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / std
    kernel = block.conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = bn.bias.double() - bn.running_mean.double() * scale
    return kernel, bias


def paddle_default_init(module: nn.Module) -> None:
    """Initialise like Paddle's layer defaults (what PP-YOLOE trains from when not pre-trained).

    Paddle's ``Conv2D`` draws weights from N(0, √(2 / fan_in)) (fan_in = in/groups · k · k) and zeroes
    biases; ``BatchNorm2D`` starts at weight 1, bias 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, std=(2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
