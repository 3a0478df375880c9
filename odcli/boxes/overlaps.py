"""Box math on xyxy pixel boxes.

These follow MMDetection's ``bbox_overlaps`` numerics exactly (union clamped to ``eps``, no +1,
degenerate boxes allowed) because label assignment is discrete: torchvision's ``box_iou`` differs in
the ε handling and would flip near-tie assignments against the upstream reference.
"""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy → (...) area; negative for inverted boxes (kept, as upstream does)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of every box in ``boxes1`` (..., N, 4) with every box in ``boxes2`` (..., M, 4) → (..., N, M)."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area1[..., :, None] + area2[..., None, :] - overlap).clamp(min=eps)
    return overlap / union


def _aligned_overlap_union(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and ε-clamped union areas of corresponding boxes (..., 4) → (...), (...)."""
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    return overlap, (box_area(boxes1) + box_area(boxes2) - overlap).clamp(min=eps)


def aligned_giou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalised IoU of corresponding boxes (..., 4) → (...), in [-1, 1]."""
    overlap, union = _aligned_overlap_union(boxes1, boxes2, eps)
    iou = overlap / union
    enclose_wh = (
        torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)
    enclose = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return iou - (enclose - union) / enclose


def points_inside_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each point (N, 2) lies strictly inside each box (..., M, 4) → (..., N, M) bool."""
    lt = points[:, None, :] - boxes[..., None, :, :2]
    rb = boxes[..., None, :, 2:] - points[:, None, :]
    return torch.cat([lt, rb], dim=-1).amin(dim=-1) > 0


# ----------------------------------------------------------------------------------------------
# PaddleDetection's conventions (PP-YOLOE): areas clipped at 0 and ε *added* to the union, instead
# of MMDetection's raw areas with the union *clamped* to ε. Both agree on ordinary boxes; these
# keep PP-YOLOE's assigners and losses faithful on degenerate ones too.


def _clipped_area(boxes: torch.Tensor) -> torch.Tensor:
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def pairwise_iou_eps_added(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float) -> torch.Tensor:
    """IoU of every box in ``boxes1`` (..., N, 4) with every box in ``boxes2`` (..., M, 4) → (..., N, M).

    ``overlap / (area1 + area2 − overlap + eps)`` with areas of inverted boxes counted as 0
    (PaddleDetection's ``iou_similarity`` / ``batch_iou_similarity``; they use ε 1e-10 / 1e-9).
    """
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = _clipped_area(boxes1)[..., :, None] + _clipped_area(boxes2)[..., None, :] - overlap + eps
    return overlap / union


def aligned_iou_eps_added(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`pairwise_iou_eps_added` for corresponding boxes: (..., 4) and (..., 4) → (...)."""
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    return overlap / (_clipped_area(boxes1) + _clipped_area(boxes2) - overlap + eps)


def aligned_giou_eps_added(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Generalised IoU of corresponding boxes (..., 4) → (...), PaddleDetection's ``GIoULoss`` numerics.

    Raw (unclipped) areas, ε added to the union and to the enclosing area:
    ``iou − (enclose − union) / enclose``.
    """
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - overlap + eps
    iou = overlap / union
    enclose_wh = torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])
    enclose = enclose_wh[..., 0] * enclose_wh[..., 1] + eps
    return iou - (enclose - union) / enclose


def points_inside_boxes_eps(points: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Whether each point (N, 2) is inside each box (..., M, 4) by more than ``eps`` → (..., M, N) bool.

    Note the GT-major layout (PaddleDetection's ``check_points_inside_bboxes``), unlike
    :func:`points_inside_boxes`.
    """
    lt = points[None, :, :] - boxes[..., :, None, :2]
    rb = boxes[..., :, None, 2:] - points[None, :, :]
    return torch.cat([lt, rb], dim=-1).amin(dim=-1) > eps
