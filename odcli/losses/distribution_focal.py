"""Distribution Focal Loss (Generalized Focal Loss, Li et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL: cross-entropy towards the two bins around a continuous target, weighted by proximity.

    With ``l = floor(y)`` and ``r = l + 1``: ``CE(x, l) · (r − y) + CE(x, r) · (1 − (r − y))``.

    Args:
        logits: (..., n_bins) unnormalised bin logits (PP-YOLOE: 17 bins per box side).
        target: (...) continuous targets in [0, n_bins − 1) — callers clamp (PP-YOLOE: to
            ``reg_max − 0.01``), so that ``r`` is a valid bin.
    Returns:
        (...) loss per target, float32.
    """
    n_bins = logits.shape[-1]
    flat = logits.float().reshape(-1, n_bins)
    t = target.float().reshape(-1)
    left = t.floor().long()
    right = left + 1
    weight_left = right.float() - t
    weight_right = 1 - weight_left
    loss = (
        F.cross_entropy(flat, left, reduction="none") * weight_left
        + F.cross_entropy(flat, right, reduction="none") * weight_right
    )
    return loss.reshape(target.shape)
