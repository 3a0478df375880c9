"""Varifocal Loss (VarifocalNet, Zhang et al. 2021), as PP-YOLOE computes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def varifocal_loss(
    pred_score: torch.Tensor,
    gt_score: torch.Tensor,
    label: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
) -> torch.Tensor:
    """VFL = BCE(p, q) · w with w = α·p^γ on negatives and q on positives, element-wise.

    Args:
        pred_score: (..., C) predicted probabilities (after sigmoid).
        gt_score: (..., C) soft targets q: the assigner's quality at the assigned class, 0 elsewhere.
        label: (..., C) one-hot of the assigned class (all zero for background priors).
        alpha / gamma: down-weighting of negatives (upstream 0.75 / 2).
    Returns:
        (..., C) loss, float32; the caller sums and normalises (PP-YOLOE: by the sum of ``gt_score``).

    BCE is taken on probabilities with logs clamped at −100 (PyTorch's and Paddle's convention); it
    always runs in float32 — ``binary_cross_entropy`` is unsafe in half precision.
    """
    with torch.autocast(device_type=pred_score.device.type, enabled=False):
        p = pred_score.float()
        q = gt_score.float()
        lab = label.float()
        weight = alpha * p.pow(gamma) * (1 - lab) + q * lab
        # The weight is multiplied afterwards (not passed to BCE) so that, as upstream, gradients
        # also flow through α·p^γ.
        return F.binary_cross_entropy(p, q, reduction="none") * weight
