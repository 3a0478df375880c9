"""Upstream's post-processing written out the plain way, as oracles for the exact, lazy one in
``odcli.boxes``: every candidate thresholded and sorted, then a greedy NMS over all of them.

MMDetection's NMS is torchvision's kernel itself (``torchvision.ops.nms``: the same loop, float32
overlaps, suppress when IoU > thr); PaddleDetection's ``NMSFast`` has no torchvision equivalent (boxes
apart on an axis overlap 0, no clamping, inverted boxes have area 0, keep iff overlap <= thr, so NaN
suppresses), so :func:`paddle_nms` is a plain loop over its definition.

Ties in scores: upstream sorts with ``torch.sort`` (MMDetection, unstable) or ``std::stable_sort``
(Paddle). The oracles sort stably, so equal scores keep upstream's flattening order — the order odet
defines; on the reference images both orders give the same detections (checked when written).
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision


def visiting_order(scores: torch.Tensor) -> torch.Tensor:
    """The order torchvision's kernel visits the boxes in: a stable sort by score, descending (its
    kernel sorts with ``stable=True``; equal scores are visited by index)."""
    return scores.sort(dim=0, descending=True, stable=True)[1]


def mmcv_shift(boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mmcv's / torchvision's class separation: every box moved by ``label × (max coordinate + 1)``,
    in the boxes' dtype."""
    return boxes + (labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes)))[:, None]


def scalar_mmcv_nms(boxes: np.ndarray, order: list[int], thr: float) -> list[int]:
    """mmcv's CPU ``nms`` loop on float32 scalars with its ``float`` threshold: box by box in
    ``order``; a kept box suppresses each later one whose IoU is > thr. Slow: small inputs only."""
    b = boxes.astype(np.float32)
    thr32 = np.float32(thr)
    zero = np.float32(0)
    areas = [(r[2] - r[0]) * (r[3] - r[1]) for r in b]
    gone = [False] * len(order)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, i in enumerate(order):
            if gone[a]:
                continue
            keep.append(i)
            for c in range(a + 1, len(order)):
                j = order[c]
                w = max(zero, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
                h = max(zero, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
                inter = w * h
                if inter / (areas[i] + areas[j] - inter) > thr32:
                    gone[c] = True
    return keep


def paddle_overlaps(cand: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(K, L) float32 ``JaccardOverlap(cand_l, kept_k)`` of PaddleDetection (normalized boxes) for
    boxes (L, 4) and (K, 4): 0 when the boxes are apart on an axis (strict comparisons), else the
    unclamped intersection over ``area_cand + area_kept - inter``, an inverted box having area 0."""
    cx1, cy1, cx2, cy2 = (np.asarray(cand[:, i], dtype=np.float32)[None, :] for i in range(4))
    kx1, ky1, kx2, ky2 = (np.asarray(kept[:, i], dtype=np.float32)[:, None] for i in range(4))

    def area(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
        return np.where((x2 < x1) | (y2 < y1), np.float32(0), (x2 - x1) * (y2 - y1))

    apart = (kx1 > cx2) | (kx2 < cx1) | (ky1 > cy2) | (ky2 < cy1)
    iw = np.where(cx2 < kx2, cx2, kx2) - np.where(cx1 < kx1, kx1, cx1)  # std::min / max(cand, kept)
    ih = np.where(cy2 < ky2, cy2, ky2) - np.where(cy1 < ky1, ky1, cy1)
    inter = iw * ih
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area(cx1, cy1, cx2, cy2) + area(kx1, ky1, kx2, ky2) - inter)
    return np.where(apart, np.float32(0), iou)


def paddle_nms(boxes: np.ndarray, thr: float, limit: int | None = None) -> list[int]:
    """PaddleDetection's ``NMSFast`` (eta 1) over ``boxes`` (n, 4) float32 already in visiting order:
    a box is kept iff its overlap with every box kept before it is <= thr (float32; NaN is not).
    Returns positions; stops after ``limit`` kept (a box's fate depends only on earlier boxes)."""
    thr32 = np.float32(thr)
    alive = np.ones(len(boxes), dtype=bool)
    kept: list[int] = []
    for j in range(len(boxes)):
        if not alive[j]:
            continue
        kept.append(j)
        if len(kept) == limit:
            break
        alive[j + 1 :] &= paddle_overlaps(boxes[j + 1 :], boxes[j : j + 1])[0] <= thr32
    return kept


def mmdet_postprocess(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    level_counts: list[int],
    *,
    score_thr: float,
    nms_pre: int,
    iou_thr: float,
    max_per_img: int,
    min_bbox_size: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MMDetection's test-time steps for one image on final boxes (N, 4) and scores (N, C), levels
    of ``level_counts`` priors: per level every (prior, class) pair > score_thr, sorted, the first
    nms_pre; boxes not wider and higher than min_bbox_size dropped; mmcv's shift by label ×
    (max + 1); greedy NMS by torchvision's kernel; the first max_per_img. Returns (priors, labels).

    The kernel runs on prefixes of the visiting order, doubled until it keeps max_per_img boxes or
    takes them all: a box's fate depends only on the boxes visited before it.
    """
    num_classes = scores.shape[1]
    parts_s, parts_k = [], []
    start = 0
    for count in level_counts:
        flat = scores[start : start + count].reshape(-1)
        above = (flat > score_thr).nonzero()[:, 0]
        vals, order = flat[above].sort(descending=True, stable=True)
        parts_s.append(vals[:nms_pre])
        parts_k.append(above[order][:nms_pre] + start * num_classes)
        start += count
    cand_scores, keys = torch.cat(parts_s), torch.cat(parts_k)
    priors, labels = keys // num_classes, keys % num_classes
    b = boxes[priors]
    ok = (b[:, 2] - b[:, 0] > min_bbox_size) & (b[:, 3] - b[:, 1] > min_bbox_size)
    cand_scores, priors, labels, b = cand_scores[ok], priors[ok], labels[ok], b[ok]
    if len(b) == 0:
        return priors, labels
    shifted = mmcv_shift(b, labels)
    order = cand_scores.sort(descending=True, stable=True)[1]
    rank = torch.arange(len(order), 0, -1, dtype=torch.float32)  # visit in exactly this order
    size = 4 * max_per_img
    while True:
        kept = torchvision.ops.nms(shifted[order[:size]], rank[:size], iou_thr)
        if len(kept) >= max_per_img or size >= len(order):
            break
        size *= 2
    kept = order[kept[:max_per_img]]
    return priors[kept], labels[kept]


def paddle_multiclass_nms(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    *,
    score_thr: float,
    nms_top_k: int,
    iou_thr: float,
    keep_top_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PaddleDetection's ``MultiClassNMS`` for one image: per class the priors scoring > score_thr,
    stably sorted, the first nms_top_k (-1: all), :func:`paddle_nms`; then all survivors class by
    class, stably sorted by score, the first keep_top_k. Returns (priors, labels)."""
    found: list[tuple[float, int, int]] = []
    np_boxes = boxes.float().numpy()
    for c in range(scores.shape[1]):
        col = scores[:, c]
        above = (col > score_thr).nonzero()[:, 0]
        order = above[col[above].sort(descending=True, stable=True)[1]]
        if nms_top_k > -1:
            order = order[:nms_top_k]
        # A class's boxes after its keep_top_k-th kept one can never be among the best keep_top_k.
        kept = paddle_nms(np_boxes[order.numpy()], iou_thr, keep_top_k)
        values = col.numpy()
        found += [(float(values[p]), c, int(p)) for p in order[torch.tensor(kept, dtype=torch.long)].tolist()]
    found.sort(key=lambda t: -t[0])  # stable: ties stay class by class, then in NMS order
    found = found[:keep_top_k]
    priors = torch.tensor([p for _, _, p in found], dtype=torch.long)
    labels = torch.tensor([c for _, c, _ in found], dtype=torch.long)
    return priors, labels
