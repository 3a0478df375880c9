"""Precision–recall numbers of one pycocotools evaluation: the curves AP is the area under, and
precision, recall and F1 against the score threshold (the pictures: :mod:`odcli.viz.pr_curves`).

Both read what :class:`~pycocotools.cocoeval.COCOeval` computed, at area "all" and the last (largest)
``maxDets`` cap, the setting of the per-class APs (:mod:`odcli.evaluation.coco`); nothing is matched
or integrated a second time:

* :func:`pr_curves` keeps ``eval['precision']`` — pycocotools' *interpolated* precision (the best
  precision at any recall ≥ r) at its 101 recall points. The mean of a class's curve is its AP.
* :func:`score_sweep` reads pycocotools' own per-detection matches (``evalImgs``: ``dtMatches``,
  ``dtIgnore``, ``gtIgnore`` at IoU 0.5) and counts, for each score threshold, the true and false
  positives among the detections scoring at least that much — the cumulative sums
  ``COCOeval.accumulate`` forms before it interpolates. Not the ``eval['precision']`` /
  ``eval['scores']`` arrays, because their envelope reports, at a threshold, the best precision
  of any *lower* threshold, on a grid of recall steps of 0.01: what a detector set to that threshold
  does not achieve. The matching (greedy by score, crowd regions absorbing detections, the per-image
  cap) is pycocotools', so these numbers agree with the AP beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

__all__ = ["PRCurves", "ScoreSweep", "iou_index", "pr_curves", "score_sweep"]

#: Score thresholds of :class:`ScoreSweep`: 0, 0.001, …, 1 (keep a detection when score ≥ threshold).
SWEEP_THRESHOLDS = np.linspace(0.0, 1.0, 1001)


def iou_index(ev: COCOeval, iou: float) -> int:
    """Index of ``iou`` among the evaluation's IoU thresholds (pycocotools matched only at those)."""
    thrs = np.asarray(ev.params.iouThrs, dtype=np.float64)
    hits = np.flatnonzero(np.isclose(thrs, iou))
    if hits.size == 0:
        raise ValueError(f"IoU {iou} is not one of the evaluated thresholds {thrs.round(2).tolist()}")
    return int(hits[0])


@dataclass
class PRCurves:
    """pycocotools' precision–recall curves, area "all", the last ``maxDets`` cap.

    Attributes:
        iou_thrs: (T,) IoU thresholds, 0.50:0.05:0.95.
        recall: (R,) recall points 0, 0.01, …, 1.
        precision: (T, R, K) interpolated precision of each class, ``eval['precision'][..., 0, -1]``;
            -1 for a class without (non-crowd) ground truth.
    """

    iou_thrs: np.ndarray
    recall: np.ndarray
    precision: np.ndarray

    @property
    def has_gt(self) -> np.ndarray:
        """(K,) bool: the class has ground truth, so a curve."""
        return (self.precision > -1).any(axis=(0, 1))

    def class_curves(self, iou: float | None) -> np.ndarray:
        """(R, K) precision at recall at IoU ``iou`` (None: the mean over 0.50:0.95, as AP averages);
        NaN for classes without ground truth. Each column's mean is that class's AP."""
        prec = self.precision.astype(np.float64)
        if iou is None:
            curves = prec.mean(axis=0)
        else:
            hits = np.flatnonzero(np.isclose(self.iou_thrs, iou))
            if hits.size == 0:
                raise ValueError(f"IoU {iou} is not one of {self.iou_thrs.round(2).tolist()}")
            curves = prec[hits[0]]
        curves[:, ~self.has_gt] = np.nan
        return curves

    def overall(self, iou: float | None) -> np.ndarray:
        """(R,) the mean curve over the classes with ground truth (its mean is mAP at this cap);
        NaN everywhere when no class has any."""
        curves = self.class_curves(iou)[:, self.has_gt]
        return curves.mean(axis=1) if curves.shape[1] else np.full(len(self.recall), np.nan)


def pr_curves(ev: COCOeval) -> PRCurves:
    """The precision arrays of an accumulated evaluation (area "all", last ``maxDets``), copied."""
    precision = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    return PRCurves(
        iou_thrs=np.asarray(ev.params.iouThrs, dtype=np.float64).copy(),
        recall=np.asarray(ev.params.recThrs, dtype=np.float64).copy(),
        precision=precision.astype(np.float32),
    )


@dataclass
class ScoreSweep:
    """Precision, recall and F1 of each class against the score threshold, at one IoU.

    Overall numbers are macro means over the classes with ground truth (like mAP): the best
    threshold is the one of highest mean F1 (the highest such threshold on ties, i.e. the fewest
    detections for the same F1), and the overall P / R / F1 are the class means there (so the overall
    F1 is a mean of F1s, not the F1 of the mean P and R). A class keeping no detection at a threshold
    has no precision there (NaN: left out of the mean precision, rather than counted as 0 or 1), recall
    0 and F1 0.

    Attributes:
        iou: the IoU a detection needs to count as a true positive.
        thresholds: (S,) score thresholds; a detection is kept when its score ≥ the threshold.
        precision, recall: (K, S) per class; precision NaN where the class keeps no detection.
        num_gt: (K,) non-crowd ground-truth boxes of each class.
    """

    iou: float
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_gt: np.ndarray

    @property
    def has_gt(self) -> np.ndarray:
        """(K,) bool."""
        return self.num_gt > 0

    @property
    def f1(self) -> np.ndarray:
        """(K, S) harmonic mean of precision and recall (0 where both are 0 or nothing is kept)."""
        precision = np.nan_to_num(self.precision, nan=0.0)
        denom = precision + self.recall
        return np.divide(2 * precision * self.recall, denom, out=np.zeros_like(denom), where=denom > 0)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """(S,) mean of (K, S) ``values`` over the classes with ground truth, NaN entries left out
        (NaN where nothing is left)."""
        kept = values[self.has_gt]
        defined = ~np.isnan(kept)
        n = defined.sum(axis=0)
        total = np.where(defined, kept, 0.0).sum(axis=0)
        return np.divide(total, n, out=np.full(values.shape[1], np.nan), where=n > 0)

    @property
    def best_index(self) -> int:
        """Threshold index of the highest mean F1 (the last of equal maxima); 0 without ground truth."""
        mean_f1 = self.mean(self.f1)
        if np.isnan(mean_f1).all():
            return 0
        return int(len(mean_f1) - 1 - np.nanargmax(mean_f1[::-1]))

    @property
    def best_threshold(self) -> float:
        return float(self.thresholds[self.best_index])

    def at_best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K,) precision, recall and F1 of each class at :attr:`best_threshold`."""
        i = self.best_index
        return self.precision[:, i], self.recall[:, i], self.f1[:, i]

    def overall_at_best(self) -> tuple[float, float, float]:
        """Mean precision, recall and F1 over the classes with ground truth at :attr:`best_threshold`."""
        i = self.best_index
        return (
            float(self.mean(self.precision)[i]),
            float(self.mean(self.recall)[i]),
            float(self.mean(self.f1)[i]),
        )


def score_sweep(ev: COCOeval, *, iou: float = 0.5, thresholds: np.ndarray = SWEEP_THRESHOLDS) -> ScoreSweep:
    """Precision and recall of each class for every score threshold, from pycocotools' matches.

    Args:
        ev: an evaluated :class:`COCOeval` (``evaluate()`` run; ``accumulate()`` need not be).
        iou: one of the evaluation's IoU thresholds.
        thresholds: (S,) ascending score thresholds.

    Returns:
        :class:`ScoreSweep` over ``ev.params.catIds`` (ascending category id).
    """
    t = iou_index(ev, iou)
    cat_ids, img_ids = ev.params.catIds, ev.params.imgIds
    n_area, n_img = len(ev.params.areaRng), len(img_ids)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    precision = np.full((len(cat_ids), len(thresholds)), np.nan)
    recall = np.zeros_like(precision)
    num_gt = np.zeros(len(cat_ids), dtype=np.int64)
    for k in range(len(cat_ids)):
        # evalImgs is ordered (category, area, image); area index 0 is "all".
        entries = [e for e in ev.evalImgs[k * n_area * n_img : k * n_area * n_img + n_img] if e is not None]
        if not entries:
            continue
        num_gt[k] = sum(int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)) for e in entries)
        scores = np.concatenate([np.asarray(e["dtScores"], dtype=np.float64) for e in entries])
        matched = np.concatenate([np.asarray(e["dtMatches"])[t] for e in entries]) > 0
        ignored = np.concatenate([np.asarray(e["dtIgnore"])[t] for e in entries]) > 0
        scores, matched = scores[~ignored], matched[~ignored]  # crowd matches count neither way
        order = np.argsort(-scores, kind="mergesort")  # accumulate's order, ties kept stable
        scores = scores[order]
        tp_cum = np.concatenate([[0], np.cumsum(matched[order])])  # true positives among the first n
        # Detections kept at threshold s: those scoring ≥ s, a prefix of the sorted list.
        kept = len(scores) - np.searchsorted(scores[::-1], thresholds, side="left")
        tp = tp_cum[kept]
        precision[k] = np.divide(tp, kept, out=np.full(len(thresholds), np.nan), where=kept > 0)
        if num_gt[k]:
            recall[k] = tp / num_gt[k]
    return ScoreSweep(
        iou=float(iou), thresholds=thresholds, precision=precision, recall=recall, num_gt=num_gt
    )
