"""IoU-family regression losses."""

from __future__ import annotations

import torch

from odcli.boxes.overlaps import aligned_giou


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 − GIoU of corresponding xyxy boxes (..., 4) → (...)."""
    return 1.0 - aligned_giou(pred, target, eps=eps)
