"""Test-time post-processing steps: score filter, top-k, rescale, class-aware NMS (per image)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from odcli.boxes.nms import GreedyNMS
from odcli.boxes.ranking import capped_candidates, visit_candidates


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
    prior indices (K,)), best first, ties in flattened order — what upstream's threshold followed by a
    stable sort of every surviving pair gives, without sorting more than the ``k`` chosen
    (:func:`~odcli.boxes.ranking.capped_candidates`). The post-processing itself never builds this
    list (:func:`per_level_nms` visits the pairs lazily); it is the definition, for callers and tests.
    """
    flat = scores.reshape(-1)
    keys = capped_candidates(flat, score_thr, k).nonzero()[:, 0]
    top, order = flat[keys].sort(descending=True, stable=True)
    pos = keys[order]
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


def _empty(boxes: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "boxes": boxes.new_zeros((0, 4)),
        "scores": scores.new_zeros((0,)),
        "labels": torch.zeros(0, dtype=torch.long, device=scores.device),
    }


def _starts(counts: list[int]) -> list[int]:
    """The first index of each of consecutive runs of ``counts``."""
    return [sum(counts[:i]) for i in range(len(counts))]


def _keep_count(cfg: NMSConfig, max_dets: int | None) -> int:
    """Detections to keep: ``max_per_img``, or fewer when the caller shows fewer (the first
    ``max_dets`` of the best ``max_per_img`` are the first ``max_dets`` kept)."""
    return cfg.max_per_img if max_dets is None else min(cfg.max_per_img, max_dets)


def _reach(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) each box's largest coordinate (three small ops rather than one reduction that a
    (N, 4) tensor of 8400 boxes would already hand to a second thread)."""
    return torch.maximum(torch.maximum(boxes[:, 0], boxes[:, 1]), torch.maximum(boxes[:, 2], boxes[:, 3]))


def _largest_coordinate(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    usable: torch.Tensor,
    best: torch.Tensor,
    level_counts: list[int],
    cfg: NMSConfig,
    capped: torch.Tensor,
) -> torch.Tensor | None:
    """The largest coordinate of the candidate boxes (mmcv's ``boxes.max()``), None without any.

    Args:
        scores: (N, C); boxes: (N, 4) final; usable: (N,) priors with a valid box and a pair above
            ``score_thr``; best: (N,) each prior's best score;
            capped: (L,) levels with more than ``nms_pre`` pairs above ``score_thr``.

    Only candidates count, and on a capped level knowing them means a top-k. Avoided in the usual
    case: the largest coordinate of the usable priors bounds it from above, and is it as soon as
    one prior reaching it is a candidate — which a prior is iff its best pair (lowest key among its
    best) ranks below ``nms_pre`` on its level.
    """
    if not bool(usable.any()):
        return None
    num_classes = scores.shape[1]
    reach = _reach(boxes)
    bound = reach[usable].max()
    attains = usable & (reach == bound)
    start = 0
    for level, count in enumerate(level_counts):
        at = attains[start : start + count].nonzero()[:, 0]
        if at.numel():
            if not bool(capped[level]):
                return bound
            pick = int(best[start + at].argmax())  # the first maximum: the lowest prior
            prior = start + int(at[pick])
            score = best[prior]
            key = (prior - start) * num_classes + int(scores[prior].argmax())  # argmax: the lowest class
            pairs = scores[start : start + count].reshape(-1)
            if int((pairs >= score).sum()) <= cfg.nms_pre:  # one pass settles it, ties or not
                return bound
            if int((pairs > score).sum()) + int((pairs[:key] == score).sum()) < cfg.nms_pre:
                return bound
        start += count
    largest = None  # no prior at the bound is a candidate (rare): find the candidates
    start = 0
    for level, count in enumerate(level_counts):
        chosen = usable[start : start + count]
        if bool(capped[level]):
            pairs = scores[start : start + count].reshape(-1)
            top = capped_candidates(pairs, cfg.score_thr, cfg.nms_pre)
            chosen = chosen & top.view(count, num_classes).any(dim=1)
        if bool(chosen.any()):
            level_max = reach[start : start + count][chosen].max()
            largest = level_max if largest is None else torch.maximum(largest, level_max)
        start += count
    return largest


def per_level_nms(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    level_counts: tuple[int, ...],
    cfg: NMSConfig,
    *,
    min_score: float | None = None,
    max_dets: int | None = None,
) -> dict[str, torch.Tensor]:
    """MMDetection's candidates and class-aware NMS for one image, exactly as upstream computes them.

    Upstream: per level the (prior, class) pairs above ``score_thr``, sorted, the first ``nms_pre``;
    boxes not larger than ``min_bbox_size`` dropped; then mmcv's ``batched_nms``, which separates the
    classes by shifting every box by ``label × (largest coordinate + 1)`` in float32 and runs the
    greedy kernel on the shifted boxes; the first ``max_per_img``. Here the pairs are visited best
    first (:func:`~odcli.boxes.ranking.visit_candidates`) and the greedy NMS, on the same shifted
    float32 boxes, stops after ``max_per_img`` kept boxes (:class:`~odcli.boxes.nms.GreedyNMS`).

    Args:
        scores: (N, C) probabilities, priors level-major (``level_counts`` per level).
        boxes: (N, 4) xyxy, already clipped and rescaled (every prior: both are elementwise).
        min_score: keep only detections scoring at least this — the same as filtering the full
            result, as a pair is only ever suppressed by a better one.
        max_dets: keep at most this many (the best).
    Returns:
        ``{"boxes": (K, 4), "scores": (K,), "labels": (K,)}``, best first (ties: lower key).
    """
    counts = list(level_counts)
    best = scores.amax(dim=1)
    capped = torch.stack([(part > cfg.score_thr).sum() for part in scores.split(counts)]) > cfg.nms_pre
    valid = (boxes[:, 2] - boxes[:, 0] > cfg.min_bbox_size) & (boxes[:, 3] - boxes[:, 1] > cfg.min_bbox_size)
    usable = valid & (best > cfg.score_thr)
    largest = _largest_coordinate(scores, boxes, usable, best, counts, cfg, capped)
    if largest is None:
        return _empty(boxes, scores)
    unit = largest + torch.tensor(1).to(boxes)  # mmcv's offset step, in the boxes' dtype
    nms = GreedyNMS(cfg.iou_thr, _keep_count(cfg, max_dets))
    for prior, label, value in visit_candidates(
        scores,
        best,
        score_thr=cfg.score_thr,
        cap=cfg.nms_pre,
        capped=capped,
        level_starts=_starts(counts),
        min_score=min_score,
        first=max(2 * nms.max_keep, 128),
    ):
        ok = valid[prior]
        prior, label, value = prior[ok], label[ok], value[ok]
        nms.feed(boxes[prior] + (label.to(boxes) * unit)[:, None], label, prior * scores.shape[1] + label)
        if nms.done:
            break
    kept = nms.kept().to(scores.device)
    prior, label = kept // scores.shape[1], kept % scores.shape[1]
    return {"boxes": boxes[prior], "scores": scores[prior, label], "labels": label}


def multiclass_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    cfg: NMSConfig,
    *,
    min_score: float | None = None,
    max_dets: int | None = None,
) -> dict[str, torch.Tensor]:
    """PaddleDetection's ``MultiClassNMS`` (PP-YOLOE) for one image, exactly as upstream computes it.

    Upstream, per class: scores strictly above ``cfg.score_thr``, stably sorted, the first
    ``cfg.nms_pre`` (``nms_top_k``: per *class*; ≤ 0 keeps all), greedy NMS on the unshifted float32
    boxes (keep a box iff its IoU with every kept one is ≤ ``iou_thr``, no +1 in the areas); then the
    best ``cfg.max_per_img`` over all classes (``keep_top_k``, stable: ties by class, then prior).
    No box size filter. Here the classes' candidates are visited together best first, classes masked
    apart, and the NMS stops after ``max_per_img`` kept boxes (see :func:`per_level_nms`).

    Args:
        boxes: (N, 4) xyxy, shared by all classes.
        scores: (N, C) probabilities.
        min_score / max_dets: as in :func:`per_level_nms`.
    Returns:
        ``{"boxes": (M, 4), "scores": (M,), "labels": (M,)}`` sorted by score, descending.
    """
    n = scores.shape[0]
    cap = cfg.nms_pre if cfg.nms_pre > 0 else n
    capped = (scores > cfg.score_thr).sum(dim=0) > cap
    nms_boxes = boxes.float()  # upstream's kernel runs in float32
    nms = GreedyNMS(cfg.iou_thr, _keep_count(cfg, max_dets), paddle=True)
    for prior, label, _ in visit_candidates(
        scores,
        scores.amax(dim=1),
        score_thr=cfg.score_thr,
        cap=cap,
        capped=capped,
        min_score=min_score,
        first=max(2 * nms.max_keep, 128),
    ):
        nms.feed(nms_boxes[prior], label, label * n + prior)
        if nms.done:
            break
    kept = nms.kept().to(scores.device)
    prior, label = kept % n, kept // n
    return {"boxes": boxes[prior], "scores": scores[prior, label], "labels": label}
