"""ResNet backbone (RetinaNet): torchvision's ResNet trunk, with MMDetection's freezing rules.

The stem and the four stages are torchvision's own modules (``torchvision.models.resnet18/50``),
kept under torchvision's attribute names (``conv1``, ``bn1``, ``layer1`` … ``layer4``). So the
state-dict keys are torchvision's — and MMDetection's ResNet, "pytorch" style (stride on the 3×3
conv), uses the very same keys — which makes ImageNet and MMDetection checkpoints load without
renaming. The classifier (``avgpool``, ``fc``) is dropped: a detector has none.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from odcli.errors import OdetError
from odcli.models.layers import DEFAULT_NORM, BatchNormConfig

_CONSTRUCTORS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
    152: torchvision.models.resnet152,
}


class ResNet(nn.Module):
    """Stem (7×7/2 conv, BN, ReLU, 3×3/2 max-pool) → layer1 … layer4.

    Args:
        depth: 18, 34, 50, 101 or 152.
        frozen_stages: freeze the stem and the first ``frozen_stages`` stages (-1 = nothing, 0 = the
            stem only): their parameters get no gradient and their BN stays in eval mode, also after
            ``model.train()``.
        norm_eval: keep every BN of the backbone in eval mode (running statistics) while training;
            their affine parameters still learn unless frozen.
        zero_init_residual: start each residual branch's last BN at γ = 0 (upstream's random init;
            irrelevant once ImageNet weights are loaded).
        norm: settings of every BatchNorm (torchvision's ``norm_layer``).

    ``forward`` returns C2 … C5: (B, 64·e, H/4, W/4), (B, 128·e, H/8, W/8), (B, 256·e, H/16, W/16),
    (B, 512·e, H/32, W/32) with e = 1 (18/34) or 4 (50/101/152).
    """

    def __init__(
        self,
        depth: int,
        *,
        frozen_stages: int = 1,
        norm_eval: bool = True,
        zero_init_residual: bool = True,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        if depth not in _CONSTRUCTORS:
            raise OdetError(
                f"unsupported ResNet depth {depth}; choose one of {', '.join(map(str, _CONSTRUCTORS))}"
            )
        if not -1 <= frozen_stages <= 4:
            raise OdetError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        net = _CONSTRUCTORS[depth](weights=None, zero_init_residual=zero_init_residual, norm_layer=norm.make)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.depth = depth
        self.arch = f"resnet{depth}"  # named in weight-loading errors
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        return [self.conv1, self.bn1, *stages[: self.frozen_stages]]

    def train(self, mode: bool = True) -> ResNet:
        """Switch train/eval mode, keeping frozen parts (and with ``norm_eval`` every BN) in eval."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) → [C2, C3, C4, C5] (see the class docstring)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """Fold every BN into the conv before it (inference only; the BN becomes Identity).

        torchvision's blocks call ``bn1``/``bn2``/``bn3`` and ``downsample[1]`` by name, so the
        folded conv takes the conv's place and the BN slot keeps an Identity.
        """
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1")]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
        for owner, conv_name, bn_name in pairs:
            bn = getattr(owner, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), bn))
                setattr(owner, bn_name, nn.Identity())
