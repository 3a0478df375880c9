"""Test-time post-processing steps: score filter, top-k, rescale, class-aware NMS (per image)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms


@dataclass(frozen=True)
class NMSConfig:
    """Post-processing settings (upstream ``test_cfg``).

    Attributes:
        score_thr: keep (prior, class) pairs with score strictly above this.
        nms_pre: candidates kept before NMS, best scores first: (prior, class) pairs per *level*
            (:func:`select_topk`, MMDetection) or priors per *class* (:func:`multiclass_nms`,
            PaddleDetection's ``nms_top_k``; there ≤ 0 keeps all).
        iou_thr: class-aware NMS IoU threshold (suppress when IoU > thr).
        max_per_img: detections kept per image after NMS.
        min_bbox_size: drop boxes whose width or height is not above this (after rescaling).
    """

    score_thr: float
    nms_pre: int
    iou_thr: float
    max_per_img: int
    min_bbox_size: float = 0.0


def select_topk(
    scores: torch.Tensor, score_thr: float, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten (N, C) scores prior-major, keep those > ``score_thr``, then the best ``k``.

    One prior can contribute several (prior, class) pairs. Returns (scores (K,), labels (K,),
    prior indices (K,)), best first.

    Upstream thresholds first and then sorts every surviving pair; the same ``k`` best come out of
    one partial ``topk`` over all pairs followed by the threshold. That skips compacting and
    sorting up to N·C pairs — an untrained or low-threshold model keeps all of them (RTMDet at 640:
    512,000 per level, ~17 ms of sorting per image on 2 CPU cores).
    """
    flat = scores.reshape(-1)
    top, pos = flat.topk(min(k, flat.numel()))  # sorted, best first
    keep = top > score_thr
    top, pos = top[keep], pos[keep]
    num_classes = scores.shape[1]
    return top, pos % num_classes, pos // num_classes


def rescale_boxes(
    boxes: torch.Tensor, scale_factor: tuple[float, float], *, divide: bool = False
) -> torch.Tensor:
    """Map (..., 4) xyxy input-pixel boxes to original pixels, undoing the resize by ``scale_factor``
    (sx, sy) = input / original size.

    Upstreams differ in the last bit: MMDetection (RTMDet, RetinaNet) multiplies by the reciprocal
    1/s (the default), PaddleDetection (PP-YOLOE) divides by s in float32 (``divide=True``).
    """
    sx, sy = scale_factor
    if divide:
        return boxes / boxes.new_tensor([sx, sy, sx, sy])
    inv = boxes.new_tensor([1.0 / sx, 1.0 / sy, 1.0 / sx, 1.0 / sy])
    return boxes * inv


def finalize_detections(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cfg: NMSConfig
) -> dict[str, torch.Tensor]:
    """Drop boxes not larger than ``min_bbox_size``, run class-aware NMS, keep ``max_per_img``.

    Args:
        boxes: (K, 4) xyxy; scores: (K,); labels: (K,) long.
    Returns:
        ``{"boxes": (M, 4), "scores": (M,), "labels": (M,)}`` sorted by score, descending.
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
    boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    if boxes.numel() == 0:
        return {"boxes": boxes.reshape(0, 4), "scores": scores, "labels": labels}
    keep = batched_nms(boxes, scores, labels, cfg.iou_thr)[: cfg.max_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSConfig) -> dict[str, torch.Tensor]:
    """PaddleDetection's ``MultiClassNMS`` (PP-YOLOE) for one image, vectorised over classes.

    Per class: scores strictly above ``cfg.score_thr``, the best ``cfg.nms_pre`` of them (upstream
    ``nms_top_k``: per *class*, not per level), NMS at ``cfg.iou_thr`` (suppress when IoU > thr, no
    +1 in the areas); then the best ``cfg.max_per_img`` over all classes (``keep_top_k``). No box
    size filter.

    Args:
        boxes: (N, 4) xyxy, shared by all classes.
        scores: (N, C) probabilities.
    Returns:
        ``{"boxes": (M, 4), "scores": (M,), "labels": (M,)}`` sorted by score, descending.
    """
    n, num_classes = scores.shape
    per_class = scores.t()  # (C, N)
    k = min(cfg.nms_pre, n) if cfg.nms_pre > 0 else n
    top_scores, top_idx = per_class.topk(k, dim=1)  # (C, k), best first
    keep = top_scores > cfg.score_thr
    cls = torch.arange(num_classes, device=scores.device)[:, None].expand(-1, k)
    cand_scores, cand_idx, cand_labels = top_scores[keep], top_idx[keep], cls[keep]
    cand_boxes = boxes[cand_idx]
    if cand_scores.numel() == 0:
        return {"boxes": boxes.new_zeros((0, 4)), "scores": cand_scores, "labels": cand_labels}
    # float64: batched_nms separates classes by offsetting boxes by label × (max coordinate + 1); in
    # float32 those offsets (~10⁵ px) would round the coordinates and move IoUs near the threshold.
    kept = batched_nms(cand_boxes.double(), cand_scores.double(), cand_labels, cfg.iou_thr)[: cfg.max_per_img]
    return {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]}
