"""What a COCO evaluation reports: the numbers (:class:`EvalResult`, written as JSON by ``odet eval``)
and the console tables ``odet eval`` and training print (:func:`render_eval_table`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from odcli.evaluation.details import EvalDetails

__all__ = ["EvalResult", "render_eval_table"]


@dataclass
class EvalResult:
    """Outcome of :func:`~odcli.evaluation.coco.evaluate_coco`.

    Attributes:
        stats: metric name → value (names and conventions: :mod:`odcli.evaluation.coco`).
        per_class: ``(class name, AP@[.5:.95], AP@.5)`` per evaluated category in category-id order;
            NaN for a class without ground truth.
        summary_text: pycocotools' 12-line summary as it prints it (empty when nothing was scored).
        num_images: images evaluated.
        num_detections: detections given.
        details: PR curves, P/R/F1 at the best-F1 threshold and the confusion matrix (None when
            nothing was evaluated).
    """

    stats: dict[str, float]
    per_class: list[tuple[str, float, float]] = field(default_factory=list)
    summary_text: str = ""
    num_images: int = 0
    num_detections: int = 0
    details: EvalDetails | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: NaN becomes None."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        out: dict[str, Any] = {
            "stats": {k: clean(v) for k, v in self.stats.items()},
            "per_class": [
                {"name": n, "AP": clean(ap), "AP50": clean(ap50)} for n, ap, ap50 in self.per_class
            ],
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        }
        if self.details is not None:
            out.update(self.details.to_dict())
        return out


_STAT_LABELS = {
    "mAP": "AP  IoU=0.50:0.95",
    "mAP_50": "AP  IoU=0.50",
    "mAP_75": "AP  IoU=0.75",
    "mAP_s": "AP  small (< 32²)",
    "mAP_m": "AP  medium",
    "mAP_l": "AP  large (> 96²)",
}


def _describe(key: str) -> str:
    """Human label of a metric name (``AR_s@1000`` → ``AR  small, ≤1000 dets/image``)."""
    if key in _STAT_LABELS:
        return _STAT_LABELS[key]
    head, _, dets = key.partition("@")
    area = {"AR_s": "small, ", "AR_m": "medium, ", "AR_l": "large, "}.get(head, "")
    return f"AR  {area}≤{dets} dets/image"


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "[dim]-[/dim]"
    if x < 0:
        return "[dim]n/a[/dim]"  # pycocotools' -1: nothing to average
    return f"{x:.3f}"


def _group_width(rows: list[tuple[str, list[str]]], numbers: int) -> int:
    """Characters one (class, numbers…) group takes: the longest name, 5-character numbers and
    rich's padding and borders (3 per column)."""
    return max(len(name) for name, _ in rows) + numbers * 5 + 3 * (numbers + 1)


def _grouped_table(
    title: str, numbers: list[str], rows: list[tuple[str, list[str]]], console: Console, columns: int
) -> Table:
    """A table of (class, numbers…) groups side by side, as many as fit without wrapping a name."""
    name_width = max(len(name) for name, _ in rows)
    fit = max(1, (console.width - 1) // _group_width(rows, len(numbers)))
    columns = max(1, min(columns, fit, len(rows)))
    table = Table(title=title, title_justify="left")
    for _ in range(columns):
        table.add_column("class", no_wrap=True, min_width=name_width)
        for head in numbers:
            table.add_column(head, justify="right", no_wrap=True)
    width = 1 + len(numbers)
    for start in range(0, len(rows), columns):
        cells: list[str] = []
        for name, values in rows[start : start + columns]:
            cells += [name, *values]
        cells += [""] * (width * columns - len(cells))
        table.add_row(*cells)
    return table


def render_eval_table(
    result: EvalResult,
    console: Console,
    *,
    columns: int = 3,
    all_classes: bool = False,
    prf1: bool = False,
) -> None:
    """Print the summary metrics and the per-class AP table.

    Args:
        result: output of :func:`~odcli.evaluation.coco.evaluate_coco`.
        console: where to print.
        columns: at most this many (class, AP, AP50) column groups side by side; fewer when the
            console is too narrow to show every class name on one line.
        all_classes: list every class of the model, also those without ground truth in the
            evaluated images (their AP is undefined, shown as ``-``); by default only classes that
            occur are listed.
        prf1: also print a per-class table of precision, recall and F1 at the best-F1 threshold
            (the overall ones are rows of the summary whenever ``result.details`` has them).
    """
    summary = Table(
        title=f"COCO box metrics — {result.num_images} images, {result.num_detections} detections",
        title_justify="left",
    )
    summary.add_column("metric")
    summary.add_column("what", style="dim")
    summary.add_column("value", justify="right")
    for key, value in result.stats.items():
        summary.add_row(key, _describe(key), _fmt(value), style="bold" if key == "mAP" else None)
    details = result.details
    if details is not None and details.sweep.has_gt.any():
        thr, iou = details.sweep.best_threshold, details.sweep.iou
        for key, value in zip(("P", "R", "F1"), details.sweep.overall_at_best(), strict=True):
            summary.add_row(key, f"{key:<3} IoU={iou:.2f}, score ≥ {thr:.3f} (best F1)", _fmt(value))
    console.print(summary)

    shown = [c for c in result.per_class if all_classes or not math.isnan(c[1])]
    if not shown:
        return
    rows = [(name, [_fmt(ap), _fmt(ap50)]) for name, ap, ap50 in shown]
    extra = _prf1_cells(details, [name for name, _, _ in shown]) if prf1 and details is not None else None
    where = ""
    if details is not None:
        where = f"score ≥ {details.sweep.best_threshold:.3f} (best mean F1), IoU {details.sweep.iou:.2f}"
    wide = ["AP", "AP50", "P", "R", "F1"]
    if extra is not None and _group_width(rows, len(wide)) <= console.width - 1:
        rows = [(name, [*cells, *more]) for (name, cells), more in zip(rows, extra, strict=True)]
        title = f"Per-class AP, and P / R / F1 at {where}"
        console.print(_grouped_table(title, wide, rows, console, columns))
    else:
        console.print(_grouped_table("Per-class AP", ["AP", "AP50"], rows, console, columns))
        if extra is not None:
            prf1_rows = [(name, more) for (name, _), more in zip(rows, extra, strict=True)]
            title = f"Per-class precision / recall / F1 at {where}"
            console.print(_grouped_table(title, ["P", "R", "F1"], prf1_rows, console, columns))
    if len(shown) < len(result.per_class):
        console.print(
            f"{len(shown)} of {len(result.per_class)} classes occur (--all-classes lists all)",
            style="dim",
            soft_wrap=True,
        )


def _prf1_cells(details: EvalDetails, names: list[str]) -> list[list[str]]:
    """Formatted P, R, F1 at the best-F1 threshold of each class in ``names`` ("-" without ground truth)."""
    p, r, f1 = details.sweep.at_best()
    index = {name: k for k, name in enumerate(details.names)}
    cells = []
    for name in names:
        k = index.get(name)
        ok = k is not None and bool(details.sweep.has_gt[k])
        cells.append([_fmt(v[k]) if ok else _fmt(math.nan) for v in (p, r, f1)])
    return cells
