"""The lazy, early-stopping post-processing (``per_level_nms``, ``multiclass_nms``, the heads'
``postprocess``) equals upstream's pipelines written out in full (``tests/nms_oracles.py``) bit for bit,
and with a caller's ``min_score`` / ``max_dets`` it returns exactly the full result filtered to
score >= min_score and cut to max_dets — on synthetic scores full of ties and on the real outputs of
the reference RTMDet-tiny, RetinaNet-R18 and PP-YOLOE-s weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from odcli.boxes.postprocess import NMSConfig, multiclass_nms, per_level_nms, select_topk
from tests.nms_oracles import mmdet_postprocess, paddle_multiclass_nms
from tests.test_exact_nms import float32_iou

Result = dict[str, torch.Tensor]


def assert_same(
    ours: Result, boxes: torch.Tensor, scores: torch.Tensor, priors: torch.Tensor, labels: torch.Tensor
) -> None:
    """``ours`` holds exactly the oracle's detections (priors, labels), in its order, bit for bit."""
    assert torch.equal(ours["labels"], labels)
    assert torch.equal(ours["boxes"], boxes[priors])
    assert torch.equal(ours["scores"], scores[priors, labels])


def assert_filtered(limited: Result, full: Result, min_score: float | None, max_dets: int | None) -> None:
    """``limited`` = ``full`` restricted to scores >= min_score (float32 comparison), first max_dets."""
    keep = (
        torch.ones(len(full["scores"]), dtype=torch.bool)
        if min_score is None
        else full["scores"] >= min_score
    )
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(limited[key], full[key][keep][:max_dets]), key


def limits(full: Result, *, few: bool = False) -> list[tuple[float | None, int | None]]:
    """(min_score, max_dets) pairs that cut inside the result: a threshold equal to a detection's own
    score (ties at it included), one between scores, one above them all, and limits below, at and
    above the number of detections (``few``: a handful of those, for the big real outputs)."""
    s = full["scores"]
    n = len(s)
    assert n > 20
    exact = float(s[n // 3])
    between = (float(s[n // 2]) + float(s[n // 2 + 1])) / 2
    if few:
        return [(exact, None), (between, None), (float(s[0]) + 1e-3, None), (None, n // 4), (exact, n // 5)]
    return [
        (exact, None),
        (between, None),
        (float(s[0]) + 1e-3, None),
        (None, 0),
        (None, 1),
        (None, n // 4),
        (None, n),
        (None, n + 50),
        (exact, n // 5),
        (between, 3),
    ]


def synthetic(seed: int, counts: list[int], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (N, C) on a coarse grid (ties at every cut) and crowded boxes (N, 4), some tiny."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(counts)
    scores = torch.randint(0, 40, (n, num_classes), generator=gen).float() / 40
    xy = torch.randint(0, 800, (n, 2), generator=gen).float() / 4
    wh = torch.randint(0, 240, (n, 2), generator=gen).float() / 4
    return scores, torch.cat([xy, xy + wh], dim=1)


MMDET_CFG = NMSConfig(score_thr=0.3, nms_pre=150, iou_thr=0.65, max_per_img=120, min_bbox_size=2.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_level_nms_equals_mmdet_on_ties(seed: int) -> None:
    counts = [1600, 400, 100]  # every level has more than nms_pre pairs above score_thr: all capped
    scores, boxes = synthetic(seed, counts, 7)
    full = per_level_nms(scores, boxes, tuple(counts), MMDET_CFG)
    priors, labels = mmdet_postprocess(
        scores, boxes, counts, score_thr=0.3, nms_pre=150, iou_thr=0.65, max_per_img=120, min_bbox_size=2.0
    )
    assert len(labels) == 120
    assert_same(full, boxes, scores, priors, labels)
    for min_score, max_dets in limits(full):
        limited = per_level_nms(
            scores, boxes, tuple(counts), MMDET_CFG, min_score=min_score, max_dets=max_dets
        )
        assert_filtered(limited, full, min_score, max_dets)


def test_per_level_nms_equals_mmdet_without_caps_and_few_survivors() -> None:
    """Few pairs above the threshold (no level capped, fewer than max_per_img kept)."""
    counts = [300, 80, 20]
    scores, boxes = synthetic(5, counts, 3)
    scores = scores**6
    cfg = NMSConfig(score_thr=0.5, nms_pre=1000, iou_thr=0.5, max_per_img=300, min_bbox_size=0.0)
    full = per_level_nms(scores, boxes, tuple(counts), cfg)
    priors, labels = mmdet_postprocess(
        scores, boxes, counts, score_thr=0.5, nms_pre=1000, iou_thr=0.5, max_per_img=300
    )
    assert 20 < len(labels) < 300
    assert_same(full, boxes, scores, priors, labels)


def test_per_level_nms_runs_the_kernel_on_mmcv_shifted_boxes() -> None:
    """mmcv separates classes by moving boxes by label × (max + 1) in float32, which rounds them: two
    boxes of class 79 with IoU 0.6499998 unshifted overlap 0.6501 shifted, so mmcv suppresses the
    second at 0.65 where a per-class NMS on the unshifted boxes would keep it."""
    a = [100.3, 100.7, 110.1, 120.9]
    b = [102.37879180908203, 100.69999694824219, 112.17878723144531, 120.9000015258789]
    boxes = torch.tensor([a, b, [600.0, 600.0, 639.5, 639.5]] + [[0.0, 0.0, 5.0, 5.0]] * 7)
    scores = torch.zeros(10, 80)
    scores[0, 79], scores[1, 79], scores[2, 3] = 0.9, 0.8, 0.5
    shift = 79 * (639.5 + 1)
    assert float32_iou(boxes[0], boxes[1]) <= 0.65 < float32_iou(boxes[0] + shift, boxes[1] + shift)
    cfg = NMSConfig(score_thr=0.05, nms_pre=1000, iou_thr=0.65, max_per_img=100)
    full = per_level_nms(scores, boxes, (8, 2), cfg)
    priors, labels = mmdet_postprocess(
        scores, boxes, [8, 2], score_thr=0.05, nms_pre=1000, iou_thr=0.65, max_per_img=100
    )
    assert labels.tolist() == [79, 3]
    assert_same(full, boxes, scores, priors, labels)


@pytest.mark.parametrize("k", [1, 50, 333, 5000])
def test_select_topk_cuts_ties_by_flattened_order(k: int) -> None:
    """Upstream's threshold, stable sort of every pair, first k: ties at the cut go by lower key."""
    scores, _ = synthetic(3, [400], 10)
    flat = scores.reshape(-1)
    above = (flat > 0.2).nonzero()[:, 0]
    values, order = flat[above].sort(descending=True, stable=True)
    top, labels, priors = select_topk(scores, 0.2, k)
    assert torch.equal(top, values[:k])
    assert torch.equal(priors * 10 + labels, above[order][:k])


@pytest.mark.parametrize(("nms_top_k", "seed"), [(25, 0), (-1, 1)])
def test_multiclass_nms_equals_paddle_on_ties(nms_top_k: int, seed: int) -> None:
    scores, boxes = synthetic(seed, [900], 5)
    cfg = NMSConfig(score_thr=0.2, nms_pre=nms_top_k, iou_thr=0.6, max_per_img=100)
    full = multiclass_nms(boxes, scores, cfg)
    priors, labels = paddle_multiclass_nms(
        scores, boxes, score_thr=0.2, nms_top_k=nms_top_k, iou_thr=0.6, keep_top_k=100
    )
    assert len(labels) > 60  # nms_top_k 25 binds: 5 classes × at most 25 candidates
    assert_same(full, boxes, scores, priors, labels)
    for min_score, max_dets in limits(full):
        limited = multiclass_nms(boxes, scores, cfg, min_score=min_score, max_dets=max_dets)
        assert_filtered(limited, full, min_score, max_dets)


def final_mmdet_boxes(boxes: torch.Tensor, meta: dict) -> torch.Tensor:
    """MMDetection's boxes before NMS: clamped to ``img_shape``, times 1 / ``scale_factor``."""
    h, w = meta["img_shape"]
    sx, sy = meta["scale_factor"]
    x = boxes[:, 0::2].clamp(min=0, max=w)
    y = boxes[:, 1::2].clamp(min=0, max=h)
    clipped = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
    return clipped * boxes.new_tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy])


def check_limits(model: torch.nn.Module, decoded, metas: list[dict], fulls: list[Result]) -> None:
    """The head's postprocess with a handful of (min_score, max_dets) gives the filtered ``fulls``."""
    for min_score, max_dets in limits(fulls[0], few=True):
        limited = model.head.postprocess(decoded, metas, min_score=min_score, max_dets=max_dets)
        for lim, full in zip(limited, fulls, strict=True):
            assert_filtered(lim, full, min_score, max_dets)


def check_mmdet_head(model: torch.nn.Module, decoded, metas: list[dict]) -> None:
    cfg = model.head.nms
    fulls = model.head.postprocess(decoded, metas)
    for i, (meta, full) in enumerate(zip(metas, fulls, strict=True)):
        scores, boxes = decoded.scores[i], final_mmdet_boxes(decoded.boxes[i], meta)
        priors, labels = mmdet_postprocess(
            scores, boxes, list(decoded.level_counts), **dataclasses.asdict(cfg)
        )
        assert_same(full, boxes, scores, priors, labels)
    check_limits(model, decoded, metas, fulls)


def test_rtmdet_reference_outputs(rtmdet_ref: dict) -> None:
    model = rtmdet_ref["model"].eval()
    with torch.no_grad():
        decoded = model.decode(rtmdet_ref["inputs"])
    metas = [
        {"img_shape": m["img_shape"], "scale_factor": m["scale_factor"]} for m in rtmdet_ref["meta"]["images"]
    ]
    check_mmdet_head(model, decoded, metas)


def test_retinanet_reference_outputs(retinanet_ref: dict) -> None:
    model = retinanet_ref["model"].eval()
    decoded = model.head.decode(retinanet_ref["cls_scores"], retinanet_ref["bbox_preds"])
    metas = [
        {"img_shape": m["img_shape"], "scale_factor": m["scale_factor"]}
        for m in retinanet_ref["meta"]["images"]
    ]
    check_mmdet_head(model, decoded, metas)


def test_ppyoloe_reference_outputs(ppyoloe_ref: dict) -> None:
    model = ppyoloe_ref["model"]
    cfg = model.head.nms
    decoded = model.head.decode(ppyoloe_ref["cls_logits"], ppyoloe_ref["reg_dists"])
    # Upstream's scale_factor is (scale_y, scale_x); odet's (sx, sy). Paddle divides by it.
    metas = [
        {"img_shape": (640, 640), "scale_factor": (float(s[1]), float(s[0]))}
        for s in ppyoloe_ref["inputs"]["scale_factor"]
    ]
    fulls = model.head.postprocess(decoded, metas)
    for i, (meta, full) in enumerate(zip(metas, fulls, strict=True)):
        sx, sy = meta["scale_factor"]
        boxes = decoded.boxes[i] / decoded.boxes.new_tensor([sx, sy, sx, sy])
        scores = decoded.scores[i]
        priors, labels = paddle_multiclass_nms(
            scores,
            boxes,
            score_thr=cfg.score_thr,
            nms_top_k=cfg.nms_pre,
            iou_thr=cfg.iou_thr,
            keep_top_k=cfg.max_per_img,
        )
        assert_same(full, boxes, scores, priors, labels)
    check_limits(model, decoded, metas, fulls)
