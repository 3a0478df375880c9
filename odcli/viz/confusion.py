"""The confusion matrix picture (``<stem>_confusion.png``): rows the true class, columns the predicted
one, each with a *background* entry (row: false positives, column: missed ground truth). How the
counts are made: :mod:`odcli.evaluation.confusion`.

A cell's colour is its share of its row (the true class's boxes, or all false positives), so rare
and frequent classes read alike; its number is the count. Only the classes that occur (ground truth
or a counted detection) are drawn; beyond ``max_classes`` of them, the most frequent
``max_classes - 1`` keep their row and column and the rest are summed into one *other* entry (the
title says so). Zero cells stay white, any other cell is tinted at least lightly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odcli.evaluation.details import EvalDetails
from odcli.viz.eval_figure import EvalPicture, axes_box
from odcli.viz.plotting import new_figure, save

__all__ = ["MAX_CLASSES", "draw_confusion", "reduce_confusion"]

#: Classes drawn with their own row and column, "other" included.
MAX_CLASSES = 20


def reduce_confusion(
    counts: np.ndarray, names: list[str], max_classes: int = MAX_CLASSES
) -> tuple[np.ndarray, list[str], int]:
    """The matrix to draw: the classes that occur, the rarest summed as "other" beyond ``max_classes``.

    Args:
        counts: (K + 1, K + 1) rows true class, columns predicted, index K background.
        names: K class names.
        max_classes: rows (and columns) for classes at most, "other" included; ≥ 2.

    Returns:
        ((S + 1, S + 1) counts, S + 1 labels ending in "background", number of classes summed
        into "other" (0: none)). Kept classes stay in category order, "other" after them.
    """
    k_all = len(names)
    total = counts[:k_all, :].sum(axis=1) + counts[:, :k_all].sum(axis=0)  # (K,) as true + as predicted
    present = np.flatnonzero(total > 0)
    if len(present) > max_classes:
        top = present[np.argsort(-total[present], kind="stable")[: max_classes - 1]]
        kept, rest = np.sort(top), np.setdiff1d(present, top)
    else:
        kept, rest = present, np.zeros(0, dtype=np.int64)
    # Every full index → its row in the drawn matrix; absent classes (all zero) go to "other" harmlessly.
    n_kept = len(kept)
    other = n_kept if len(rest) else -1
    target = np.full(k_all + 1, other if other >= 0 else n_kept, dtype=np.int64)
    target[kept] = np.arange(n_kept)
    size = n_kept + (1 if len(rest) else 0) + 1
    target[k_all] = size - 1  # background last
    out = np.zeros((size, size), dtype=np.int64)
    np.add.at(out, (target[:, None], target[None, :]), counts)
    labels = [names[k] for k in kept] + ([f"other ({len(rest)})"] if len(rest) else []) + ["background"]
    return out, labels, len(rest)


def _count_text(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10000 else str(n)


def draw_confusion(
    details: EvalDetails, path: Path, *, max_classes: int = MAX_CLASSES, title: str = ""
) -> EvalPicture:
    """Draw the confusion matrix of ``details`` (see the module docstring).

    Args:
        details: the evaluation's confusion matrix and class names.
        path: the PNG to write.
        max_classes: classes with a row of their own, "other" included.
        title: first words of the figure title (e.g. the run and epoch).

    Returns:
        :class:`EvalPicture` with panel ``"matrix"`` (the cells: ``len(labels)`` equal rows and
        columns) and ``labels`` in drawing order.

    Raises:
        PlotsUnavailable: matplotlib is not installed.
    """
    cm = details.confusion
    counts, labels, summed = reduce_confusion(cm.counts, details.names, max_classes)
    n = len(labels)
    rows = counts.sum(axis=1, keepdims=True).astype(np.float64)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)

    # Inches: the cells, then margins for the row labels (left), column labels (below), the title.
    cells, left, bottom, top, right = 0.36 * max(n, 6), 1.45, 1.3, 0.95, 0.25
    fig_w, fig_h = max(left + cells + right, 7.4), bottom + cells + top  # wide enough for the title
    fig = new_figure(fig_w, fig_h)
    left += (fig_w - (left + cells + right)) / 2  # a small matrix sits in the middle
    ax = fig.add_axes((left / fig_w, bottom / fig_h, cells / fig_w, cells / fig_h))
    import matplotlib as mpl  # new_figure imported it

    cmap = mpl.colormaps["Blues"].with_extremes(bad="white")
    # A floor of 0.12: a cell holding a few boxes of a large row stays visibly tinted.
    tint = np.ma.masked_where(counts == 0, 0.12 + 0.88 * share)
    ax.imshow(tint, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    font = max(5.0, min(9.0, 150 / n))
    ys, xs = np.nonzero(counts)
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        ink = "white" if share[y, x] > 0.55 else "#1a1a1a"
        ax.text(x, y, _count_text(int(counts[y, x])), ha="center", va="center", fontsize=font, color=ink)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font + 0.5)
    ax.set_yticks(range(n), labels, fontsize=font + 0.5)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    ax.tick_params(length=2)
    # Thin separators make rows easy to follow across a wide matrix.
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="#e8e8e8", lw=0.5)
    ax.tick_params(which="minor", length=0)

    rule = "best F1" if details.confusion_rule == "best F1" else "fixed"
    lines = [
        f"{title} — confusion matrix" if title else "Confusion matrix",
        f"IoU ≥ {cm.iou:.2f}, score ≥ {cm.score_thr:.3f} ({rule}); colour: share of the row, number: count",
    ]
    if summed:
        lines.append(f"the {n - 2} most frequent classes; {summed} more summed as “other”")
    fig.suptitle("\n".join(lines), fontsize=10, y=1 - 0.1 / fig_h, va="top")
    save(fig, path)
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    return EvalPicture(
        path=path, size=(int(width), int(height)), panels={"matrix": axes_box(fig, ax)}, labels=labels
    )
