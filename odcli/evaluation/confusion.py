"""Confusion matrix of a detection set at one IoU and score threshold (the picture:
:mod:`odcli.viz.confusion`).

The matching rule, applied to the detections scoring at least the threshold, per image:

1. **Same class** — pycocotools' own matches at that IoU (``COCOeval.evalImgs``, area "all", the
   last ``maxDets`` cap): greedy by score, each detection taking the unmatched ground-truth box of
   its class it overlaps most (IoU ≥ the threshold). A detection matching only a crowd region of
   its class is ignored, as pycocotools ignores it. These are the diagonal, and they are exactly the
   true positives behind the AP and :mod:`~odcli.evaluation.curves`' precision and recall.
2. **Other class** — each detection still unmatched, by descending score, takes the unmatched
   non-crowd ground-truth box of any class it overlaps most (IoU ≥ the threshold): a confusion,
   counted in (true class, predicted class).
3. A detection left over is a false positive (row *background*); a ground-truth box left over is
   missed (column *background*). Crowd regions are never counted.

Rows are the true class (last row: background), columns the predicted class (last column:
background); the (background, background) cell is always 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from odcli.evaluation.curves import iou_index

__all__ = ["ConfusionMatrix", "confusion_matrix"]


@dataclass
class ConfusionMatrix:
    """Counts of (true class, predicted class) pairs.

    Attributes:
        counts: (K + 1, K + 1) int64; row = true class, column = predicted class, index K =
            background (row K: false positives, column K: missed ground truth).
        iou: the IoU a detection needs to match a ground-truth box.
        score_thr: detections scoring below this were left out.
    """

    counts: np.ndarray
    iou: float
    score_thr: float

    def normalised(self) -> np.ndarray:
        """(K + 1, K + 1) float: each row divided by its sum (the share of a true class's boxes
        detected as each class, or missed; row K: the share of false positives per predicted class);
        NaN for an empty row."""
        rows = self.counts.sum(axis=1, keepdims=True).astype(np.float64)
        return np.divide(self.counts, rows, out=np.full(self.counts.shape, np.nan), where=rows > 0)


def _xyxy(boxes: list[list[float]]) -> torch.Tensor:
    """(N, 4) float64 xyxy from COCO ``[x, y, w, h]`` lists."""
    t = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)


def _greedy_other_class(ious: np.ndarray, thr: float) -> np.ndarray:
    """(D,) ground-truth index each detection (rows, best score first) takes, -1 for none.

    Greedy in row order: a detection takes the free box it overlaps most with IoU ≥ ``thr``. The
    loop is over the few detections step 1 left unmatched in one image; each step is vectorised.
    """
    taken = np.zeros(ious.shape[1], dtype=bool)
    match = np.full(ious.shape[0], -1, dtype=np.int64)
    for d in range(ious.shape[0]):
        row = np.where(taken, -1.0, ious[d])
        g = int(row.argmax())
        if row[g] >= thr:
            match[d], taken[g] = g, True
    return match


def confusion_matrix(ev: COCOeval, *, score_thr: float, iou: float = 0.5) -> ConfusionMatrix:
    """Confusion matrix of an evaluated :class:`COCOeval` (rule: module docstring).

    Args:
        ev: after ``evaluate()``; its classes (``params.catIds``, ascending) give the rows.
        score_thr: keep detections scoring ≥ this.
        iou: one of the evaluation's IoU thresholds.
    """
    t = iou_index(ev, iou)
    cat_ids, img_ids = list(ev.params.catIds), list(ev.params.imgIds)
    n_cls, n_area, n_img = len(cat_ids), len(ev.params.areaRng), len(img_ids)
    counts = np.zeros((n_cls + 1, n_cls + 1), dtype=np.int64)
    # Leftovers of step 1, per image index: (detection ids, scores, classes) and (gt ids, classes).
    left_dt: dict[int, list[tuple[int, float, int]]] = {}
    left_gt: dict[int, list[tuple[int, int]]] = {}
    for k in range(n_cls):
        base = k * n_area * n_img  # evalImgs order: (category, area, image); area 0 is "all"
        for i in range(n_img):
            e = ev.evalImgs[base + i]
            if e is None:
                continue
            scores = np.asarray(e["dtScores"], dtype=np.float64)
            kept = scores >= score_thr
            matches = np.asarray(e["dtMatches"])[t]
            ignored = np.asarray(e["dtIgnore"])[t] > 0
            hit = kept & (matches > 0) & ~ignored
            counts[k, k] += int(hit.sum())
            gt_ids = np.asarray(e["gtIds"], dtype=np.int64)
            free = gt_ids[(np.asarray(e["gtIgnore"]) == 0) & ~np.isin(gt_ids, matches[hit])]
            stray = kept & (matches == 0) & ~ignored
            if stray.any():
                left_dt.setdefault(i, []).extend(
                    (int(d), float(s), k)
                    for d, s in zip(np.asarray(e["dtIds"])[stray], scores[stray], strict=True)
                )
            if free.size:
                left_gt.setdefault(i, []).extend((int(g), k) for g in free)

    for i in set(left_dt) | set(left_gt):
        # Best score first; ties keep class order, and pycocotools' order within a class.
        dts = sorted(left_dt.get(i, []), key=lambda x: -x[1])
        gts = left_gt.get(i, [])
        dt_cls = np.array([c for _, _, c in dts], dtype=np.int64)
        gt_cls = np.array([c for _, c in gts], dtype=np.int64)
        match = np.full(len(dts), -1, dtype=np.int64)
        if dts and gts:
            ious = box_iou(
                _xyxy([ev.cocoDt.anns[d]["bbox"] for d, _, _ in dts]),
                _xyxy([ev.cocoGt.anns[g]["bbox"] for g, _ in gts]),
            ).numpy()
            match = _greedy_other_class(ious, float(ev.params.iouThrs[t]))
        got = match >= 0
        np.add.at(counts, (gt_cls[match[got]], dt_cls[got]), 1)
        np.add.at(counts, (np.full(int((~got).sum()), n_cls), dt_cls[~got]), 1)
        missed = np.ones(len(gts), dtype=bool)
        missed[match[got]] = False
        np.add.at(counts, (gt_cls[missed], np.full(int(missed.sum()), n_cls)), 1)
    return ConfusionMatrix(counts=counts, iou=float(ev.params.iouThrs[t]), score_thr=float(score_thr))
