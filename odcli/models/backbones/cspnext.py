"""CSPNeXt backbone (RTMDet): a 3-conv stem and four CSP stages, the last with SPP.

Output: stage 2, 3 and 4 features at strides 8, 16 and 32.
"""

from __future__ import annotations

import torch
from torch import nn

from odcli.models.layers import DEFAULT_NORM, BatchNormConfig, ConvBNAct, CSPLayer, SPPBottleneck

# (in_channels, out_channels, num_blocks, residual, use_spp) at widen = deepen = 1 ("P5" arch).
_P5_STAGES = (
    (64, 128, 3, True, False),
    (128, 256, 6, True, False),
    (256, 512, 6, True, False),
    (512, 1024, 3, False, True),
)


class CSPNeXt(nn.Module):
    """CSPNeXt backbone.

    Args:
        deepen_factor: multiplies the number of blocks per stage (rounded, at least 1).
        widen_factor: multiplies every channel count.
        expand_ratio: hidden-channel ratio inside each CSP layer.
        channel_attention: add a channel-attention gate to each CSP layer.
        norm: BatchNorm settings of every layer.

    Input (B, 3, H, W) → list of 3 maps (B, C_i, H/s, W/s) for s = 8, 16, 32 with
    C_i = 256, 512, 1024 × widen_factor.
    """

    def __init__(
        self,
        *,
        deepen_factor: float,
        widen_factor: float,
        expand_ratio: float = 0.5,
        channel_attention: bool = True,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        stem_out = int(_P5_STAGES[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_out // 2, 3, stride=2, norm=norm),
            ConvBNAct(stem_out // 2, stem_out // 2, 3, norm=norm),
            ConvBNAct(stem_out // 2, stem_out, 3, norm=norm),
        )
        self.out_channels: list[int] = []
        for i, (c_in, c_out, n, residual, use_spp) in enumerate(_P5_STAGES, start=1):
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            layers: list[nn.Module] = [ConvBNAct(c_in, c_out, 3, stride=2, norm=norm)]
            if use_spp:
                layers.append(SPPBottleneck(c_out, c_out, norm=norm))
            layers.append(
                CSPLayer(
                    c_out,
                    c_out,
                    num_blocks=max(round(n * deepen_factor), 1),
                    expand_ratio=expand_ratio,
                    residual=residual,
                    channel_attention=channel_attention,
                    norm=norm,
                )
            )
            self.add_module(f"stage{i}", nn.Sequential(*layers))
            if i >= 2:
                self.out_channels.append(c_out)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        x = self.stage1(x)
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return [c3, c4, c5]
