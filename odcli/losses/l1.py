"""L1 regression loss (RetinaNet: on encoded DeltaXYWH targets)."""

from __future__ import annotations

import torch


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|pred − target| element-wise, (..., K) → (..., K); weight, sum and normalise in the caller."""
    return (pred - target).abs()
