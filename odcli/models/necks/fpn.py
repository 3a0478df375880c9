"""Feature Pyramid Network (Lin et al. 2017) as MMDetection's ``FPN`` builds it for RetinaNet.

Backbone levels ``start_level`` … last get a 1×1 lateral conv; from the top down each lateral
adds the nearest-neighbour upsampling of the one above, resized to the lateral's **exact** size
(odd sizes: 13 → 25, 7 → 13, not a plain ×2); a 3×3 conv then smooths each sum. Extra levels
(P6, P7 for RetinaNet) come from 3×3 stride-2 convs: the first on the chosen source
(``add_extra_convs``: ``on_input`` = the last backbone map C5, ``on_lateral``, ``on_output``), each
next one on the previous extra level — with a ReLU before it only if ``relu_before_extra_convs``
(RetinaNet: no ReLU). With ``add_extra_convs = "none"`` extra levels are 1×1 max-pools of stride 2.
No normalisation, no activation otherwise; convs are Xavier-uniform initialised with zero bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odcli.errors import OdetError

_EXTRA_SOURCES = ("on_input", "on_lateral", "on_output", "none")


class FPN(nn.Module):
    """See the module docstring.

    Args:
        in_channels: channels of every backbone output (RetinaNet R18: 64, 128, 256, 512).
        out_channels: channels of every pyramid level (256).
        start_level: first backbone output used (1 = C3).
        num_outs: pyramid levels produced (5 = P3 … P7).
        add_extra_convs: source of the extra levels, one of ``on_input``, ``on_lateral``,
            ``on_output``, ``none``.
        relu_before_extra_convs: apply ReLU to the input of the 2nd, 3rd … extra conv.

    ``forward`` takes the backbone outputs and returns ``num_outs`` maps (B, out_channels, H_l, W_l),
    strides ascending.
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int = 256,
        *,
        start_level: int = 1,
        num_outs: int = 5,
        add_extra_convs: str = "on_input",
        relu_before_extra_convs: bool = False,
    ) -> None:
        super().__init__()
        if add_extra_convs not in _EXTRA_SOURCES:
            raise OdetError(
                f"add_extra_convs must be one of {', '.join(_EXTRA_SOURCES)}, got {add_extra_convs!r}"
            )
        used = len(in_channels) - start_level
        if used < 1 or num_outs < used:
            raise OdetError(
                f"FPN needs 0 <= start_level < {len(in_channels)} and num_outs >= the levels used ({used})"
            )
        self.start_level = start_level
        self.num_outs = num_outs
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels[start_level:])
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(used)
        )
        if add_extra_convs != "none":
            for i in range(num_outs - used):
                source = in_channels[-1] if i == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(nn.Conv2d(source, out_channels, 3, stride=2, padding=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream init: Xavier-uniform weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone maps (strides ascending) → ``num_outs`` pyramid maps (strides ascending)."""
        feats = inputs[self.start_level :]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            # Resize to the exact lateral size: odd sizes do not halve evenly.
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.add_extra_convs == "none":
            while len(outs) < self.num_outs:
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            return outs
        source = {"on_input": inputs[-1], "on_lateral": laterals[-1], "on_output": outs[-1]}
        x = source[self.add_extra_convs]
        for i in range(used, self.num_outs):
            if i > used and self.relu_before_extra_convs:
                x = F.relu(x)
            x = self.fpn_convs[i](x)
            outs.append(x)
        return outs
