"""CSPRepResNet: PP-YOLOE's backbone (PaddleDetection ``CSPResNet``).

Layout (module names are the upstream ones, so converted checkpoints map key for key):

* ``stem``: three 3×3 ConvBNAct (the "large stem": stride 2, then two stride-1 convs) taking the
  image to ``channels[0]`` at stride 2;
* ``stages.0..3``: :class:`CSPResStage`, each halving the resolution, giving strides 4, 8, 16, 32.
  The outputs of stages 1, 2, 3 (strides 8, 16, 32) feed the neck.

Widths and depths scale with ``width_mult`` / ``depth_mult`` exactly as upstream: every channel
count is ``max(round(c · width_mult), 1)`` and every block count ``max(round(n · depth_mult), 1)``
(Python's ``round``, i.e. half to even). Activations are SiLU (Paddle's ``swish``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from odcli.models.layers import (
    DEFAULT_NORM,
    BatchNormConfig,
    ChannelAttention,
    ConvBNAct,
    RepVGGBlock,
    paddle_default_init,
)


class RepResBlock(nn.Module):
    """3×3 ConvBNAct → :class:`RepVGGBlock`, with an optional identity shortcut (upstream ``BasicBlock``).

    Args:
        channels: input = output channels.
        shortcut: add the input to the output (backbone) or not (neck).
        alpha: learnable scale on the RepVGG 1×1 branch (PP-YOLOE+ backbone).
        deploy: build the RepVGG block re-parameterised.
        norm: BatchNorm settings.
    """

    def __init__(
        self,
        channels: int,
        *,
        shortcut: bool,
        alpha: bool = False,
        deploy: bool = False,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3, norm=norm)
        self.conv2 = RepVGGBlock(channels, channels, alpha=alpha, deploy=deploy, norm=norm)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPResStage(nn.Module):
    """One backbone stage: stride-2 3×3 down-sampling, then a cross-stage-partial block.

    With ``mid = (in_channels + out_channels) // 2``: ``conv_down`` (3×3, stride 2) → ``mid``;
    two 1×1 projections to ``mid // 2`` (``conv1`` the shortcut, ``conv2`` into ``num_blocks``
    residual :class:`RepResBlock`); concatenation [shortcut, blocks] → Effective-SE attention
    (global average → 1×1 conv with bias → hardsigmoid → scale) → 1×1 ``conv3`` to ``out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        *,
        alpha: bool = False,
        deploy: bool = False,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        mid = (in_channels + out_channels) // 2
        self.conv_down = ConvBNAct(in_channels, mid, 3, stride=2, norm=norm)
        self.conv1 = ConvBNAct(mid, mid // 2, 1, norm=norm)
        self.conv2 = ConvBNAct(mid, mid // 2, 1, norm=norm)
        self.blocks = nn.Sequential(
            *(
                RepResBlock(mid // 2, shortcut=True, alpha=alpha, deploy=deploy, norm=norm)
                for _ in range(num_blocks)
            )
        )
        # Effective SE: the same gate as RTMDet's channel attention (1×1 conv + hardsigmoid).
        self.attn = ChannelAttention(mid)
        self.conv3 = ConvBNAct(mid, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_down(x)
        y = torch.cat([self.conv1(x), self.blocks(self.conv2(x))], dim=1)
        return self.conv3(self.attn(y))


def scaled_channels(channels: list[int], width_mult: float) -> list[int]:
    """Upstream width scaling: ``max(round(c · width_mult), 1)`` per entry."""
    return [max(round(c * width_mult), 1) for c in channels]


def scaled_depths(depths: list[int], depth_mult: float) -> list[int]:
    """Upstream depth scaling: ``max(round(n · depth_mult), 1)`` per entry."""
    return [max(round(n * depth_mult), 1) for n in depths]


class CSPResNet(nn.Module):
    """CSPRepResNet backbone; ``forward`` returns the stage outputs at strides 8, 16, 32.

    Args:
        width_mult / depth_mult: model-size multipliers (s: 0.50 / 0.33 … x: 1.25 / 1.33).
        layers: blocks per stage before depth scaling (upstream [3, 6, 6, 3]).
        channels: stem width then stage widths before width scaling ([64, 128, 256, 512, 1024]).
        return_idx: which stages' outputs are returned (upstream [1, 2, 3]).
        alpha: PP-YOLOE+ learnable scale on the RepVGG 1×1 branches.
        deploy: build the RepVGG blocks re-parameterised.
        norm: settings of every BatchNorm.
    """

    def __init__(
        self,
        *,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        layers: tuple[int, ...] = (3, 6, 6, 3),
        channels: tuple[int, ...] = (64, 128, 256, 512, 1024),
        return_idx: tuple[int, ...] = (1, 2, 3),
        alpha: bool = False,
        deploy: bool = False,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        chans = scaled_channels(list(channels), width_mult)
        depths = scaled_depths(list(layers), depth_mult)
        half = chans[0] // 2
        self.stem = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", ConvBNAct(3, half, 3, stride=2, norm=norm)),
                    ("conv2", ConvBNAct(half, half, 3, norm=norm)),
                    ("conv3", ConvBNAct(half, chans[0], 3, norm=norm)),
                ]
            )
        )
        self.stages = nn.Sequential(
            *(
                CSPResStage(chans[i], chans[i + 1], depths[i], alpha=alpha, deploy=deploy, norm=norm)
                for i in range(len(chans) - 1)
            )
        )
        self.return_idx = tuple(return_idx)
        self.out_channels = [chans[i + 1] for i in self.return_idx]
        self.out_strides = [4 * 2**i for i in self.return_idx]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paddle's default init: convs N(0, √(2 / fan_in)), biases 0; BN weight 1, bias 0."""
        paddle_default_init(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised images → feature maps at strides 8, 16, 32 (ascending)."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs
