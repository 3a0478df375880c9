"""Precision–recall curves (``<stem>_pr.png``) and precision / recall / F1 against the score threshold
(``<stem>_f1.png``) of one evaluation.

The PR curves are pycocotools' own interpolated precision at its 101 recall points (area "all", the
largest ``maxDets`` cap), per class and their mean over the classes with ground truth, at IoU 0.50
and averaged over 0.50:0.95 — the mean of each curve is the AP printed beside it. The score curves
come from pycocotools' per-detection matches at IoU 0.50 (:mod:`odcli.evaluation.curves`).
Few classes (≤ :data:`LEGEND_CLASSES`) get a colour and a legend entry each; more are drawn as
faint grey lines, one legend entry for all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odcli.evaluation.details import EvalDetails
from odcli.viz.eval_figure import EvalPicture, axes_box
from odcli.viz.plotting import new_figure, save

__all__ = ["LEGEND_CLASSES", "MEAN_COLOR", "draw_pr_curves", "draw_score_curves"]

#: The mean curve over all classes: matplotlib's "tab:blue", a colour no class line takes.
MEAN_COLOR = "#1f77b4"
#: Up to this many classes are drawn in colour, each named in the legend.
LEGEND_CLASSES = 9
_CLASS_COLORS = (
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#7f7f7f",
)
_GREY = "#8a8a8a"
_Y_TOP = 1.03  # headroom: a curve at precision 1 stays visible below the frame


def _class_lines(ax: Any, x: np.ndarray, curves: np.ndarray, names: list[str], values: np.ndarray) -> None:
    """Per-class (N, K) ``curves`` against (N,) ``x``: coloured and named when few, grey when many.
    ``values`` (K,) is the number the legend shows beside each name."""
    k_all = curves.shape[1]
    few = k_all <= LEGEND_CLASSES
    for k in range(k_all):
        if few:
            ax.plot(x, curves[:, k], color=_CLASS_COLORS[k], lw=1.1, label=f"{names[k]} {values[k]:.3f}")
        else:
            ax.plot(
                x,
                curves[:, k],
                color=_GREY,
                lw=0.7,
                alpha=0.35,
                label=f"each class ({k_all})" if k == 0 else None,
            )


def _style(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, _Y_TOP)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(True, color="#e4e4e4", lw=0.6)
    ax.tick_params(labelsize=8)


def _figure(width: float, n_panels: int, n_legend: int) -> tuple[Any, list[Any], float]:
    """A figure of ``n_panels`` square-ish panels in a row, room below each for a legend of up to
    ``n_legend`` entries (3 a row) so that no legend hides a curve. Returns (figure, axes, the legend's
    offset below its panel in axes fractions)."""
    plot_h, head, foot = 3.3, 0.85, 0.5 + 0.2 * -(-n_legend // 3)  # inches
    height = head + plot_h + foot
    fig = new_figure(width, height)
    axes = list(fig.subplots(1, n_panels))
    fig.subplots_adjust(
        left=0.6 / width, right=1 - 0.2 / width, top=1 - head / height, bottom=foot / height, wspace=0.2
    )
    return fig, axes, -0.42 / plot_h


def _legend(ax: Any, offset: float) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, offset), ncol=3, fontsize=7.5, frameon=False)


def _entries(n_classes: int) -> int:
    """Legend entries of a panel: each class when few, else one for all; the mean; a marker."""
    return (n_classes if n_classes <= LEGEND_CLASSES else 1) + 2


def _picture(fig: Any, path: Path, axes: dict[str, Any]) -> EvalPicture:
    save(fig, path)
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    return EvalPicture(
        path=path, size=(int(width), int(height)), panels={k: axes_box(fig, a) for k, a in axes.items()}
    )


def draw_pr_curves(details: EvalDetails, path: Path, *, title: str = "") -> EvalPicture:
    """Two panels, IoU 0.50 and IoU 0.50:0.95: precision against recall per class and their mean,
    with the best-F1 operating point (mean recall, mean precision at that threshold) on the first.

    Args:
        details: the evaluation's curves.
        path: the PNG to write.
        title: first words of the figure title (e.g. the run and epoch).

    Returns:
        :class:`EvalPicture` with panels ``"iou50"`` and ``"iou50_95"``.

    Raises:
        PlotsUnavailable: matplotlib is not installed.
    """
    pr, has_gt = details.pr, details.pr.has_gt
    names = [n for n, g in zip(details.names, has_gt, strict=True) if g]
    fig, (left, right), offset = _figure(11, 2, _entries(len(names)))
    for ax, iou, label in ((left, 0.5, "AP@.50"), (right, None, "AP@[.50:.95]")):
        curves = pr.class_curves(iou)[:, has_gt]  # (R, K with ground truth)
        _class_lines(ax, pr.recall, curves, names, curves.mean(axis=0))
        mean = pr.overall(iou)
        if len(names):
            ax.plot(
                pr.recall, mean, color=MEAN_COLOR, lw=2.4, label=f"all classes, {label} {np.mean(mean):.3f}"
            )
        _style(
            ax, "recall", "precision", "IoU 0.50" if iou is not None else "IoU 0.50:0.95 (mean over 10 IoUs)"
        )
    mp, mr, mf1 = details.sweep.overall_at_best()
    if len(names):
        left.plot(
            [mr], [mp], "o", ms=7, mfc="white", mec="#d62728", mew=2,
            label=f"best F1 {mf1:.3f}: mean R, P at score ≥ {details.sweep.best_threshold:.3f}",
        )  # fmt: skip
    for ax in (left, right):
        _legend(ax, offset)
    head = f"{title} — " if title else ""
    fig.suptitle(
        f"{head}precision–recall, {len(names)} classes with ground truth\n"
        "pycocotools' interpolated precision, area all, all detections; legend: AP (curve mean)",
        fontsize=10.5,
        y=1 - 0.08 / fig.get_figheight(),
        va="top",
    )
    return _picture(fig, path, {"iou50": left, "iou50_95": right})


def draw_score_curves(details: EvalDetails, path: Path, *, title: str = "") -> EvalPicture:
    """Three panels: precision, recall and F1 against the score threshold at IoU 0.50, per class and
    their mean, the best-F1 threshold marked.

    Returns:
        :class:`EvalPicture` with panels ``"precision"``, ``"recall"`` and ``"f1"``.

    Raises:
        PlotsUnavailable: matplotlib is not installed.
    """
    sweep = details.sweep
    has_gt = sweep.has_gt
    names = [n for n, g in zip(details.names, has_gt, strict=True) if g]
    best, thr = sweep.best_index, sweep.best_threshold
    fig, axes, offset = _figure(13, 3, _entries(len(names)) - 1)
    panels = {}
    for ax, (key, label, values) in zip(
        axes,
        (
            ("precision", "precision", sweep.precision),
            ("recall", "recall", sweep.recall),
            ("f1", "F1", sweep.f1),
        ),
        strict=True,
    ):
        curves = values[has_gt].T  # (S, K with ground truth)
        _class_lines(ax, sweep.thresholds, curves, names, curves[best] if len(names) else np.zeros(0))
        if len(names):
            mean = sweep.mean(values)
            ax.plot(
                sweep.thresholds,
                mean,
                color=MEAN_COLOR,
                lw=2.4,
                label=f"all classes {mean[best]:.3f} at {thr:.3f}",
            )
        ax.axvline(thr, color="#d62728", lw=1, ls="--")
        _style(ax, "score threshold (keep score ≥ x)", label, f"{label} at IoU {sweep.iou:.2f}")
        _legend(ax, offset)
        panels[key] = ax
    head = f"{title} — " if title else ""
    fig.suptitle(
        f"{head}precision, recall and F1 against the score threshold\n"
        f"dashed: the best mean F1, {sweep.mean(sweep.f1)[best]:.3f} at score ≥ {thr:.3f}; "
        "legend: the values there",
        fontsize=10.5,
        y=1 - 0.08 / fig.get_figheight(),
        va="top",
    )
    return _picture(fig, path, panels)
