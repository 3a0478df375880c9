"""What a COCO evaluation reports: the numbers (:class:`EvalResult`, written as JSON by ``odet eval``)
and the console tables ``odet eval`` and training print (:func:`render_eval_table`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

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
    """

    stats: dict[str, float]
    per_class: list[tuple[str, float, float]] = field(default_factory=list)
    summary_text: str = ""
    num_images: int = 0
    num_detections: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: NaN becomes None."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "stats": {k: clean(v) for k, v in self.stats.items()},
            "per_class": [
                {"name": n, "AP": clean(ap), "AP50": clean(ap50)} for n, ap, ap50 in self.per_class
            ],
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        }


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


def render_eval_table(
    result: EvalResult, console: Console, *, columns: int = 3, all_classes: bool = False
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
    console.print(summary)

    shown = [c for c in result.per_class if all_classes or not math.isnan(c[1])]
    if not shown:
        return
    # One group is the name, two 5-character numbers and rich's padding and borders (3 per column).
    name_width = max(len(name) for name, _, _ in shown)
    group_width = name_width + 2 * 5 + 3 * 3
    fit = max(1, (console.width - 1) // group_width)
    columns = max(1, min(columns, fit, len(shown)))
    table = Table(title="Per-class AP", title_justify="left")
    for _ in range(columns):
        table.add_column("class", no_wrap=True, min_width=name_width)
        table.add_column("AP", justify="right", no_wrap=True)
        table.add_column("AP50", justify="right", no_wrap=True)
    rows = [shown[i : i + columns] for i in range(0, len(shown), columns)]
    for row in rows:
        cells: list[str] = []
        for name, ap, ap50 in row:
            cells += [name, _fmt(ap), _fmt(ap50)]
        cells += [""] * (3 * columns - len(cells))
        table.add_row(*cells)
    console.print(table)
    if len(shown) < len(result.per_class):
        console.print(
            f"{len(shown)} of {len(result.per_class)} classes occur (--all-classes lists all)",
            style="dim",
            soft_wrap=True,
        )
