"""CustomCSPPAN: PP-YOLOE's neck (PaddleDetection ``CustomCSPPAN``), an FPN followed by a PAN.

Top-down (``fpn_stages`` / ``fpn_routes``, index 0 = the coarsest level): the stride-32 input goes
through a :class:`CSPStage` (with SPP inside); its output is reduced by a 1×1 route conv to half its
width, up-sampled ×2 (nearest) and concatenated **before** the next finer backbone feature, and so
on down to stride 8. Bottom-up (``pan_stages`` / ``pan_routes``): the stride-8 result is
down-sampled by a 3×3 stride-2 route conv and concatenated **before** the FPN output of the next
coarser level, then a :class:`CSPStage`; and again. The neck has no residual shortcuts.

Every stage is wrapped in a ``Sequential`` of ``stage_num`` CSPStages (upstream keys carry that
extra ``.0``). Widths: ``out_channels`` (coarsest first, upstream [768, 384, 192]) × width_mult;
blocks per stage: ``max(round(block_num · depth_mult), 1)``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from odcli.models.backbones.cspresnet import RepResBlock, scaled_channels
from odcli.models.layers import DEFAULT_NORM, BatchNormConfig, ConvBNAct, paddle_default_init


class SPP(nn.Module):
    """Spatial pyramid pooling: [x, maxpool5(x), maxpool9(x), maxpool13(x)] (stride 1) → 1×1 ConvBNAct.

    Unlike YOLOX's SPP bottleneck there is no 1×1 reduction before the pooling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_sizes: tuple[int, ...] = (5, 9, 13),
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv = ConvBNAct(in_channels, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, *(pool(x) for pool in self.pools)], dim=1))


class CSPStage(nn.Module):
    """Cross-stage-partial stage of the neck.

    ``conv1`` (shortcut) and ``conv2`` are 1×1 projections to ``out_channels // 2``; ``convs`` runs
    ``num_blocks`` :class:`RepResBlock` without shortcut on the ``conv2`` branch, with an :class:`SPP`
    after block ``(num_blocks - 1) // 2`` when ``spp``; [shortcut, convs] are concatenated and fused
    by the 1×1 ``conv3``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        *,
        spp: bool = False,
        deploy: bool = False,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = ConvBNAct(in_channels, mid, 1, norm=norm)
        self.conv2 = ConvBNAct(in_channels, mid, 1, norm=norm)
        blocks: list[tuple[str, nn.Module]] = []
        for i in range(num_blocks):
            blocks.append((str(i), RepResBlock(mid, shortcut=False, deploy=deploy, norm=norm)))
            if spp and i == (num_blocks - 1) // 2:
                blocks.append(("spp", SPP(mid * 4, mid, norm=norm)))
        self.convs = nn.Sequential(OrderedDict(blocks))
        self.conv3 = ConvBNAct(mid * 2, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat([self.conv1(x), self.convs(self.conv2(x))], dim=1))


class CustomCSPPAN(nn.Module):
    """FPN + PAN neck of PP-YOLOE.

    Args:
        in_channels: backbone output widths, strides ascending (8, 16, 32).
        out_channels: neck output widths **coarsest first** before width scaling (upstream
            [768, 384, 192]).
        width_mult / depth_mult: model-size multipliers.
        stage_num: CSPStages per neck stage (upstream 1).
        block_num: blocks per CSPStage before depth scaling (upstream 3).
        spp: SPP inside the coarsest FPN stage.
        deploy: build the RepVGG blocks re-parameterised.
        norm: settings of every BatchNorm.

    ``forward`` takes and returns features with strides ascending; the outputs have
    :attr:`out_channels` (ascending order too).
    """

    def __init__(
        self,
        in_channels: list[int],
        *,
        out_channels: tuple[int, ...] = (768, 384, 192),
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        stage_num: int = 1,
        block_num: int = 3,
        spp: bool = True,
        deploy: bool = False,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        outs = scaled_channels(list(out_channels), width_mult)  # coarsest first
        blocks = max(round(block_num * depth_mult), 1)
        ins = list(in_channels)[::-1]  # coarsest first, as upstream builds it
        n = len(ins)
        if len(outs) != n:
            raise ValueError(f"{n} input levels but {len(outs)} output widths")

        def stage(cin: int, cout: int, with_spp: bool) -> nn.Sequential:
            return nn.Sequential(
                *(
                    CSPStage(cin if j == 0 else cout, cout, blocks, spp=with_spp, deploy=deploy, norm=norm)
                    for j in range(stage_num)
                )
            )

        self.fpn_stages = nn.ModuleList()
        self.fpn_routes = nn.ModuleList()
        prev = 0
        for i, (cin, cout) in enumerate(zip(ins, outs, strict=True)):
            self.fpn_stages.append(stage(cin + (prev // 2 if i > 0 else 0), cout, spp and i == 0))
            if i < n - 1:
                self.fpn_routes.append(ConvBNAct(cout, cout // 2, 1, norm=norm))
            prev = cout
        # Index i of the PAN lists joins FPN level i (coarse-first) with the down-sampled level i + 1.
        self.pan_stages = nn.ModuleList(stage(outs[i] + outs[i + 1], outs[i], False) for i in range(n - 1))
        self.pan_routes = nn.ModuleList(
            ConvBNAct(outs[i + 1], outs[i + 1], 3, stride=2, norm=norm) for i in range(n - 1)
        )
        self.out_channels = outs[::-1]
        paddle_default_init(self)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone features (strides ascending) → neck features (strides ascending)."""
        blocks = feats[::-1]
        fpn: list[torch.Tensor] = []
        route = blocks[0]
        for i, block in enumerate(blocks):
            x = block if i == 0 else torch.cat([route, block], dim=1)
            out = self.fpn_stages[i](x)
            fpn.append(out)
            if i < len(blocks) - 1:
                route = F.interpolate(self.fpn_routes[i](out), scale_factor=2.0, mode="nearest")
        pan = [fpn[-1]]
        route = fpn[-1]
        for i in reversed(range(len(blocks) - 1)):
            route = self.pan_stages[i](torch.cat([self.pan_routes[i](route), fpn[i]], dim=1))
            pan.append(route)
        return pan  # finest first: strides ascending
