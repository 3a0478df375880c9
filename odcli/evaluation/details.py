"""What an evaluation shows beyond the COCO statistics: precision–recall curves, precision / recall /
F1 at the best-F1 score threshold and a confusion matrix (how: :mod:`~odcli.evaluation.curves`,
:mod:`~odcli.evaluation.confusion`), gathered while pycocotools' evaluation object is at hand."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pycocotools.cocoeval import COCOeval

from odcli.evaluation.confusion import ConfusionMatrix, confusion_matrix
from odcli.evaluation.curves import PRCurves, ScoreSweep, pr_curves, score_sweep

__all__ = ["CONFUSION_IOU", "PRF1_IOU", "EvalDetails", "evaluation_details"]

#: IoU of the precision / recall / F1 numbers and of the confusion matrix (Ultralytics' and VOC's).
PRF1_IOU = 0.5
CONFUSION_IOU = 0.5


def _num(x: float) -> float | None:
    """JSON-ready float: 6 decimals, NaN → None."""
    return None if math.isnan(x) else round(float(x), 6)


@dataclass
class EvalDetails:
    """Curves, operating point and confusion matrix of one evaluation.

    Attributes:
        names: class names, in category-id order (the order of ``EvalResult.per_class``).
        pr: pycocotools' precision–recall curves.
        sweep: precision / recall / F1 against the score threshold at IoU :data:`PRF1_IOU`.
        confusion: at IoU :data:`CONFUSION_IOU` and ``confusion.score_thr``.
        confusion_rule: how ``confusion.score_thr`` was chosen (``"best F1"`` or ``"fixed"``).
    """

    names: list[str]
    pr: PRCurves
    sweep: ScoreSweep
    confusion: ConfusionMatrix
    confusion_rule: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers: the overall PR curves, P/R/F1 at the best threshold (overall and per
        class with ground truth) and the full confusion matrix with its labels."""
        p, r, f1 = self.sweep.at_best()
        mp, mr, mf1 = self.sweep.overall_at_best()
        per_class = [
            {"name": n, "num_gt": int(g), "P": _num(p[k]), "R": _num(r[k]), "F1": _num(f1[k])}
            for k, (n, g) in enumerate(zip(self.names, self.sweep.num_gt, strict=True))
            if g > 0
        ]
        return {
            "pr_curves": {
                "recall": [round(float(x), 2) for x in self.pr.recall],
                "precision_50": [_num(x) for x in self.pr.overall(0.5)],
                "precision_50_95": [_num(x) for x in self.pr.overall(None)],
            },
            "prf1": {
                "iou": self.sweep.iou,
                "score_thr": round(self.sweep.best_threshold, 6),
                "threshold_rule": "highest mean F1 over the classes with ground truth",
                "P": _num(mp),
                "R": _num(mr),
                "F1": _num(mf1),
                "per_class": per_class,
            },
            "confusion": {
                "iou": self.confusion.iou,
                "score_thr": round(self.confusion.score_thr, 6),
                "threshold_rule": self.confusion_rule,
                "rows": "ground truth (last: background = false positives)",
                "columns": "prediction (last: background = missed)",
                "labels": [*self.names, "background"],
                "counts": self.confusion.counts.tolist(),
            },
        }


def evaluation_details(
    ev: COCOeval, names: list[str], *, confusion_score_thr: float | None = None
) -> EvalDetails:
    """Gather :class:`EvalDetails` from an evaluated and accumulated :class:`COCOeval`.

    Args:
        ev: after ``evaluate()`` and ``accumulate()``.
        names: class name of each of ``ev.params.catIds`` (ascending id).
        confusion_score_thr: score threshold of the confusion matrix; None takes the best-F1
            threshold, so the matrix shows the operating point whose P / R / F1 are reported.
    """
    if len(names) != len(ev.params.catIds):
        raise ValueError(f"{len(names)} names for {len(ev.params.catIds)} categories")
    sweep = score_sweep(ev, iou=PRF1_IOU)
    thr = sweep.best_threshold if confusion_score_thr is None else float(confusion_score_thr)
    return EvalDetails(
        names=list(names),
        pr=pr_curves(ev),
        sweep=sweep,
        confusion=confusion_matrix(ev, score_thr=thr, iou=CONFUSION_IOU),
        confusion_rule="best F1" if confusion_score_thr is None else "fixed",
    )
