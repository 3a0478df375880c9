"""Quality Focal Loss (Generalized Focal Loss, Li et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """QFL = BCE(σ(x), y) · |y − σ(x)|^β, element-wise.

    Args:
        logits: (..., C) class logits.
        target: (..., C) soft targets in [0, 1]: the localisation quality (e.g. IoU) at the
            positive class, 0 elsewhere (negatives are simply all-zero rows).
    Returns:
        (..., C) loss; sum over classes and priors, then normalise, in the caller.
    """
    target = target.to(logits.dtype)
    modulator = (target - logits.sigmoid()).abs().pow(beta)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * modulator
