"""Inference-time conv+BN folding.

Every ``ConvBNAct`` becomes conv(with bias) → act, and the SepBN head's shared convs are folded
once per level (each level has its own BN statistics, so the folded weights differ per level).
RepVGG blocks (PP-YOLOE) are re-parameterised into one 3×3 conv first (their
``fuse_for_inference`` hook). The folded model is for inference only: it has no BN to train.

:func:`reparameterize` does only the RepVGG step: PaddleDetection's deployed architecture, the
one ``odet convert-weights --deploy`` saves. :func:`to_half` makes a model float16 (inference on CUDA).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from odcli.models.layers import ChannelAttention, ConvBNAct


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold BatchNorm into the preceding convs, in place; returns ``model`` (put in eval mode)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
        fuse = getattr(module, "fuse_for_inference", None)
        if callable(fuse):
            fuse()
    return model


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Fold BN into convs and switch to channels-last memory (faster CPU/GPU convolutions).

    Inputs should be made channels-last too (``x.contiguous(memory_format=torch.channels_last)``);
    ``python bench/rtmdet_speed.py`` measures the gain. Inference only.
    """
    return fuse_conv_bn(model).to(memory_format=torch.channels_last)


@torch.no_grad()
def reparameterize(model: nn.Module) -> nn.Module:
    """RepVGG re-parameterisation, in place: every block with ``switch_to_deploy`` (PP-YOLOE's
    :class:`~odcli.models.layers.RepVGGBlock`) becomes a single 3×3 conv; returns ``model``.

    Unlike :func:`fuse_conv_bn` this keeps every other BatchNorm, so the result is PaddleDetection's
    deployed architecture (same state-dict keys) and can still be fine-tuned. Uses the running BN
    statistics: call it on a trained model.
    """
    for module in list(model.modules()):
        switch = getattr(module, "switch_to_deploy", None)
        if callable(switch):
            switch()
    return model


def adopt_deployed_form(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Re-parameterise ``model`` in place if ``state`` holds RepVGG blocks in deployed form.

    A block ``name`` is deployed in ``state`` when ``name.conv.weight`` is there (PaddleDetection's
    and odet's deployed key). Lets the same architecture load trained and deployed checkpoints.
    Returns whether the model was changed.
    """
    blocks = [
        name
        for name, m in model.named_modules()
        if callable(getattr(m, "switch_to_deploy", None)) and not getattr(m, "deployed", True)
    ]
    if not blocks or not all(f"{name}.conv.weight" in state for name in blocks):
        return False
    reparameterize(model)
    return True


def compile_for_inference(model: nn.Module) -> nn.Module:
    """Compile ``model.forward`` with TorchInductor, weights frozen as constants (inference only).

    Inductor fuses the SiLU activations into the convolutions that eager mode runs separately
    (a quarter of RTMDet's CPU time): ~1.3× faster forward on CPU for a one-off compile of ~30 s,
    worth it for videos, folders and benchmarks. Needs a C++ compiler on CPU. Call after
    :func:`optimize_for_inference`; the first forward triggers the compilation.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # weights become constants, which lets conv + SiLU fuse
    model.forward = torch.compile(model.forward, dynamic=False)  # type: ignore[method-assign]
    return model


def to_half(model: nn.Module) -> nn.Module:
    """``model`` in float16, in place, except the layers that compute in float32 by design (RTMDet's
    channel attention pools and gates in float32 even under autocast); returns ``model``."""
    model.half()
    for module in model.modules():
        if isinstance(module, ChannelAttention):
            module.float()
    return model
