"""COCO box evaluation through pycocotools, with MMDetection's settings (the tables: ``report.py``).

The numbers match MMDetection's ``CocoMetric`` (``metric='bbox'``):

* ``params.maxDets = [100, 300, 1000]`` (mmdet's ``proposal_nums``). pycocotools then computes
  ``mAP`` at 100 detections per image (its first summary line is fixed to 100) and ``mAP_50`` …
  ``mAP_l`` and the per-class APs at 1000, i.e. with all detections (RTMDet keeps up to 300).
* result boxes are ``[x, y, w, h]`` with ``w = x2 - x1`` (no +1), scores unrounded.
* per-class AP is the mean of ``eval['precision'][:, :, k, area=all, maxDets=last]`` over the
  entries that are not -1; a class without ground truth in the evaluated images gets NaN.
* metric names: ``mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l, AR@100, AR@300, AR@1000,
  AR_s@1000, AR_m@1000, AR_l@1000``; values are fractions in [0, 1], and -1 where pycocotools
  has nothing to average (e.g. ``mAP_s`` when no ground-truth box is small).

Crowd annotations (``iscrowd=1``) are never counted as misses; a detection matching one is
ignored rather than counted as a false positive (pycocotools' rule).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from odcli.errors import OdetError
from odcli.evaluation.details import EvalDetails, evaluation_details
from odcli.evaluation.report import EvalResult

__all__ = ["MMDET_MAX_DETS", "detections_to_coco", "evaluate_coco"]

MMDET_MAX_DETS: tuple[int, int, int] = (100, 300, 1000)


def _stat_names(max_dets: Sequence[int]) -> list[str]:
    """Names of pycocotools' 12 box statistics, in ``COCOeval.stats`` order."""
    d0, d1, d2 = max_dets
    return [
        "mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l",
        f"AR@{d0}", f"AR@{d1}", f"AR@{d2}", f"AR_s@{d2}", f"AR_m@{d2}", f"AR_l@{d2}",
    ]  # fmt: skip


def detections_to_coco(
    dets: Sequence[Mapping[str, Any]],
    metas: Sequence[Mapping[str, Any]],
    cat_ids: Sequence[int],
    *,
    decimals: int | None = None,
) -> list[dict[str, Any]]:
    """Convert per-image detections into COCO result dicts.

    Args:
        dets: per image ``boxes`` (N, 4) xyxy in original-image pixels, ``scores`` (N,),
            ``labels`` (N,) contiguous class indices; tensors (any device) or arrays.
        metas: per image, at least ``image_id`` (the COCO image id).
        cat_ids: COCO category id of each contiguous label.
        decimals: round box coordinates to this many decimals (smaller result files); None keeps
            them exact, as mmdet does. Scores are never rounded: ties would reorder detections.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
    """
    if len(dets) != len(metas):
        raise ValueError(f"got {len(dets)} detection sets for {len(metas)} images")
    out: list[dict[str, Any]] = []
    for det, meta in zip(dets, metas, strict=True):
        image_id = int(meta["image_id"])
        boxes = torch.as_tensor(det["boxes"]).detach().cpu().reshape(-1, 4).tolist()
        scores = torch.as_tensor(det["scores"]).detach().cpu().reshape(-1).tolist()
        labels = torch.as_tensor(det["labels"]).detach().cpu().reshape(-1).tolist()
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels, strict=True):
            label = int(label)
            if not 0 <= label < len(cat_ids):
                raise ValueError(f"image {image_id}: label {label} outside 0..{len(cat_ids) - 1}")
            # Width/height in float64 after conversion, like mmdet (it subtracts Python floats).
            xywh = [x1, y1, x2 - x1, y2 - y1]
            if decimals is not None:
                xywh = [round(v, decimals) for v in xywh]
            out.append(
                {"image_id": image_id, "category_id": int(cat_ids[label]), "bbox": xywh, "score": score}
            )
    return out


def _class_ap(precision: np.ndarray) -> float:
    """Mean of the defined (not -1) precision entries; NaN when there are none (no ground truth)."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def _run_cocoeval(
    coco_gt: COCO, coco_dt: COCO, img_ids: list[int], cats: list[int], max_dets: list[int]
) -> COCOeval:
    """pycocotools' evaluate + accumulate with MMDetection's settings (its narration swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = img_ids
        ev.params.catIds = cats
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
    return ev


def _no_detections(coco_gt: COCO) -> COCO:
    """A result set with no detections (``loadRes`` cannot load an empty list)."""
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": [dict(c) for c in coco_gt.dataset.get("categories", [])],
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def _details(ev: COCOeval, coco_gt: COCO, confusion_score_thr: float | None) -> EvalDetails:
    """PR curves, P/R/F1 and confusion matrix of ``ev`` (its classes in pycocotools' ascending order)."""
    names = [coco_gt.loadCats(int(c))[0]["name"] for c in ev.params.catIds]
    return evaluation_details(ev, names, confusion_score_thr=confusion_score_thr)


def evaluate_coco(
    coco_gt: COCO,
    results: Sequence[Mapping[str, Any]],
    *,
    image_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
    max_dets: Sequence[int] = MMDET_MAX_DETS,
    confusion_score_thr: float | None = None,
) -> EvalResult:
    """Score COCO box results against ground truth with pycocotools.

    Args:
        coco_gt: ground truth.
        results: COCO result dicts (see :func:`detections_to_coco`); not modified.
        image_ids: images to evaluate (default: all images of ``coco_gt``). Images without any
            result count as having no detections.
        cat_ids: categories to evaluate (default: all of ``coco_gt``, ascending id).
        max_dets: three per-image detection caps; must contain 100 (pycocotools' mAP line is
            computed at 100).
        confusion_score_thr: score threshold of the confusion matrix (None: the best-F1 one).

    Returns:
        :class:`EvalResult`; with no results at all, every statistic is 0. Its ``details`` hold the
        PR curves, P/R/F1 and confusion matrix (:mod:`odcli.evaluation.details`); None when no image
        is evaluated.

    Raises:
        OdetError: results refer to images that are not in the ground truth.
    """
    max_dets = [int(d) for d in max_dets]
    if len(max_dets) != 3 or 100 not in max_dets:
        raise ValueError(f"max_dets must be three caps including 100, got {max_dets}")
    img_ids = list(image_ids) if image_ids is not None else sorted(coco_gt.getImgIds())
    cats = list(cat_ids) if cat_ids is not None else sorted(coco_gt.getCatIds())
    names = [coco_gt.loadCats(c)[0]["name"] for c in cats]
    stat_names = _stat_names(max_dets)

    if not results:
        # pycocotools cannot load an empty result list; nothing detected means zero recall.
        # A class "has ground truth" as pycocotools sees it: a non-crowd box in an evaluated image.
        # (getAnnIds treats an empty image list as "all images", hence the guard.)
        ann_ids = coco_gt.getAnnIds(imgIds=img_ids, catIds=cats, iscrowd=False) if img_ids else []
        gt_cats = {a["category_id"] for a in coco_gt.loadAnns(ann_ids)}
        per_class = [
            (n, 0.0, 0.0) if c in gt_cats else (n, math.nan, math.nan)
            for n, c in zip(names, cats, strict=True)
        ]
        details = None
        if img_ids:
            ev = _run_cocoeval(coco_gt, _no_detections(coco_gt), img_ids, cats, max_dets)
            details = _details(ev, coco_gt, confusion_score_thr)
        return EvalResult(
            stats=dict.fromkeys(stat_names, 0.0),
            per_class=per_class,
            num_images=len(img_ids),
            details=details,
        )

    unknown = {int(r["image_id"]) for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise OdetError(
            f"{len(unknown)} result image ids (e.g. {min(unknown)}) are not in the annotation file: "
            "evaluate against the annotations the predictions were made for"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates every phase on stdout
        # loadRes adds keys (area, id) to each dict: give it copies, not the caller's objects.
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
    ev = _run_cocoeval(coco_gt, coco_dt, img_ids, cats, max_dets)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()

    precision = ev.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    per_class = [
        (name, _class_ap(precision[:, :, k, 0, -1]), _class_ap(precision[0, :, k, 0, -1]))
        for k, name in enumerate(names)
    ]
    stats = {name: float(v) for name, v in zip(stat_names, ev.stats, strict=True)}
    return EvalResult(
        stats=stats,
        per_class=per_class,
        summary_text=summary.getvalue(),
        num_images=len(img_ids),
        num_detections=len(results),
        details=_details(ev, coco_gt, confusion_score_thr) if img_ids else None,
    )
