"""Sigmoid Focal Loss (Lin et al. 2017, RetinaNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25
) -> torch.Tensor:
    """FL = α_t · (1 − p_t)^γ · BCE(σ(x), t), element-wise over classes.

    t is the one-hot target of ``labels``; α_t = α on the target class and 1 − α elsewhere. The
    terms are formed as MMDetection's CPU path forms them (its "pt" is 1 − p_t), which keeps the
    values equal to upstream's within float32 rounding.

    Args:
        logits: (..., C) class logits.
        labels: (...) long class index; any value outside [0, C) (e.g. -1 or C) is background,
            i.e. an all-zero target row.
    Returns:
        (..., C) loss; weight, sum and normalise in the caller.
    """
    num_classes = logits.shape[-1]
    foreground = (labels >= 0) & (labels < num_classes)
    target = F.one_hot(torch.where(foreground, labels, num_classes), num_classes + 1)[..., :num_classes]
    target = target.to(logits.dtype)
    prob = logits.sigmoid()
    one_minus_pt = (1 - prob) * target + prob * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * one_minus_pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight
