"""IoU-family regression losses."""

from __future__ import annotations

import torch

from odcli.boxes.overlaps import aligned_giou, aligned_giou_eps_added


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 − GIoU of corresponding xyxy boxes (..., 4) → (...)."""
    return 1.0 - aligned_giou(pred, target, eps=eps)


def giou_loss_eps_added(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """1 − GIoU with PaddleDetection's numerics (PP-YOLOE's ``GIoULoss``, ε added to the union and
    the enclosing area: :func:`~odcli.boxes.overlaps.aligned_giou_eps_added`), (..., 4) → (...)."""
    return 1.0 - aligned_giou_eps_added(pred, target, eps=eps)
