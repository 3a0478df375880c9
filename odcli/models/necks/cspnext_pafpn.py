"""CSPNeXtPAFPN neck (RTMDet): YOLOX-style top-down + bottom-up path with CSPNeXt blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odcli.models.layers import DEFAULT_NORM, BatchNormConfig, ConvBNAct, CSPLayer


class CSPNeXtPAFPN(nn.Module):
    """Path-aggregation FPN over three backbone levels.

    Top-down: the coarser map is reduced by a 1×1 conv to the finer level's channels, upsampled
    ×2 (nearest), concatenated with the finer map and fused by a CSP layer. Bottom-up: the finer
    output is downsampled by a 3×3/2 conv, concatenated with the coarser top-down map and fused.
    A 3×3 conv then maps every level to ``out_channels``.

    Input: 3 maps with ``in_channels`` (strides 8, 16, 32) → 3 maps with ``out_channels``. ``norm``:
    settings of every BatchNorm.
    """

    def __init__(
        self,
        *,
        in_channels: tuple[int, int, int] | list[int],
        out_channels: int,
        num_csp_blocks: int,
        expand_ratio: float = 0.5,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        csp = {"num_blocks": num_csp_blocks, "expand_ratio": expand_ratio, "residual": False, "norm": norm}
        c = list(in_channels)
        n = len(c)
        # Index j of the top-down lists works on level n-1-j (coarsest first).
        self.reduce_layers = nn.ModuleList(
            ConvBNAct(c[i], c[i - 1], 1, norm=norm) for i in range(n - 1, 0, -1)
        )
        self.top_down_blocks = nn.ModuleList(
            CSPLayer(2 * c[i - 1], c[i - 1], **csp) for i in range(n - 1, 0, -1)
        )
        self.downsamples = nn.ModuleList(ConvBNAct(c[i], c[i], 3, stride=2, norm=norm) for i in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(CSPLayer(2 * c[i], c[i + 1], **csp) for i in range(n - 1))
        self.out_convs = nn.ModuleList(ConvBNAct(c[i], out_channels, 3, norm=norm) for i in range(n))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        # Top-down: walk from the coarsest level to the finest.
        top = feats[-1]
        lateral: list[torch.Tensor] = []  # reduced coarse maps, coarsest first
        for j, i in enumerate(range(n - 1, 0, -1)):
            top = self.reduce_layers[j](top)
            lateral.append(top)
            up = F.interpolate(top, scale_factor=2.0, mode="nearest")
            top = self.top_down_blocks[j](torch.cat([up, feats[i - 1]], dim=1))
        # `top` is now the finest fused map; `lateral` holds the coarser ones, coarsest first.
        inner = [top, *reversed(lateral)]
        outs = [inner[0]]
        for i in range(n - 1):
            down = self.downsamples[i](outs[-1])
            outs.append(self.bottom_up_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return [conv(x) for conv, x in zip(self.out_convs, outs, strict=True)]
