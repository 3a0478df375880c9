"""``curves.png``: a run's losses, learning rate and evaluation metrics, or several runs overlaid.

One figure, a grid of small panels sharing the x axis (iterations below, epochs above when the runs
agree on the epoch length). Losses are drawn raw (faint) and smoothed (a debiased exponential moving
average, as TensorBoard smooths); metrics are drawn per evaluation with a marker. One run: each panel
may hold several series (AP, AP50, AP75), coloured apart and named in its legend with the last and
best values. Several runs: one series per panel, one colour per run, runs named in the figure's legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odcli.errors import OdetError
from odcli.viz.plotting import new_figure, save
from odcli.viz.run_logs import METRIC_ORDER, RunCurves

__all__ = ["COLORS", "DrawnCurves", "Panel", "default_panels", "draw_curves", "smooth", "smoothing_sigma"]

#: matplotlib's "tab10" colours: series i of a panel (one run) or run i (several runs).
COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

_NAMES = {
    "loss": "total loss",
    "lr": "learning rate",
    "mAP": "AP@[.50:.95]",
    "mAP_50": "AP@.50",
    "mAP_75": "AP@.75",
    "mAP_s": "AP small",
    "mAP_m": "AP medium",
    "mAP_l": "AP large",
}
_PANEL_W, _PANEL_H, _HEADER = 3.6, 2.6, 0.7  # inches: one panel, the title (+ legend) band


@dataclass(frozen=True)
class Panel:
    """One panel: ``title`` and the series ``keys`` it draws (a loss, ``lr`` or metrics)."""

    title: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class DrawnCurves:
    """What :func:`draw_curves` wrote.

    Attributes:
        path: the picture.
        size: (width, height) pixels.
        panels: first key of each panel → its plotting area as (x0, y0, x1, y1) image pixels
            (origin top left), the axes' frame included.
        limits: first key of each panel → its axes' data limits (xmin, xmax, ymin, ymax): a value
            (x, y) lies at pixel (x0 + (x - xmin) / (xmax - xmin) · (x1 - x0), y0 + (ymax - y) /
            (ymax - ymin) · (y1 - y0)).
    """

    path: Path
    size: tuple[int, int]
    panels: dict[str, tuple[int, int, int, int]]
    limits: dict[str, tuple[float, float, float, float]]


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted moving average of (N,) ``values``, centred (no lag), NaN entries skipped.

    Near the ends, and next to NaN entries, the weights of the points that exist are renormalised,
    so the curve neither bends towards 0 nor stops short. ``sigma`` (in points) ≤ 0 returns a copy.
    """
    n = len(values)
    radius = min(int(3 * sigma), (n - 1) // 2)  # np.convolve "same" needs the kernel ≤ the data
    if sigma <= 0 or radius < 1:
        return values.astype(np.float64, copy=True)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    finite = np.isfinite(values)
    total = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    weight = np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight
    out[~finite] = np.nan
    return out


def smoothing_sigma(n: int) -> float:
    """The smoothing of an ``n``-point loss curve, in points: 1/60 of the curve (a few hundred points
    need a few points' worth, 10k points of a long run ~50 points), none below 60 points."""
    return float(np.clip(n / 60.0, 0.0, 50.0)) if n >= 60 else 0.0


def _name(key: str) -> str:
    return _NAMES.get(key, key)


def default_panels(runs: Sequence[RunCurves]) -> list[Panel]:
    """The panels drawn when none are asked for.

    One run: each loss, the lr, then AP (IoU 0.5:0.95, 0.5, 0.75), AP by object size and AR. Several
    runs: each loss, the lr, mAP and mAP_50, one per panel.
    """
    keys = _union(run.keys for run in runs)
    losses = [k for k in keys if any(k in run.losses for run in runs)]
    panels = [Panel(_name(k), (k,)) for k in losses]
    if "lr" in keys:
        panels.append(Panel("learning rate", ("lr",)))
    if len(runs) > 1:
        return panels + [Panel(f"{k} ({_name(k)})", (k,)) for k in ("mAP", "mAP_50") if k in keys]
    groups = [
        ("COCO AP", [k for k in METRIC_ORDER[:3] if k in keys]),
        ("AP by object size", [k for k in METRIC_ORDER[3:] if k in keys]),
        ("AR (max detections per image)", [k for k in keys if k.startswith("AR@")]),
    ]
    return panels + [Panel(title, tuple(group)) for title, group in groups if group]


def _union(key_lists: Any) -> list[str]:
    seen: dict[str, None] = {}
    for keys in key_lists:
        seen.update(dict.fromkeys(keys))
    return list(seen)


def panels_for(runs: Sequence[RunCurves], keys: Sequence[str] | None) -> list[Panel]:
    """The panels for the asked ``keys`` (one each), or :func:`default_panels` when None.

    Raises:
        OdetError: a key that none of the runs logged (the message lists those they did).
    """
    if not keys:
        return default_panels(runs)
    known = _union(run.keys for run in runs)
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise OdetError(
            f"--metric {', '.join(unknown)}: no values in the logs of "
            f"{'the run' if len(runs) == 1 else 'any of the runs'}; choose from {', '.join(known)}"
        )
    return [Panel(f"{k} ({_name(k)})" if k in _NAMES else k, (k,)) for k in dict.fromkeys(keys)]


def _limits(lows: list[float], highs: list[float]) -> tuple[float, float] | None:
    if not lows:
        return None
    lo, hi = min(lows), max(highs)
    pad = 0.06 * (hi - lo) if hi > lo else 0.06 * max(abs(hi), 1e-12)
    return lo - pad, hi + pad


def _draw_panel(ax: Any, panel: Panel, runs: Sequence[RunCurves]) -> None:
    """Draw ``panel``'s series of every run on ``ax`` (colours: per series for one run, per run else)."""
    several = len(runs) > 1
    lows: list[float] = []
    highs: list[float] = []
    for r, run in enumerate(runs):
        for s, key in enumerate(panel.keys):
            series = run.series(key)
            if series is None or not np.isfinite(series[1]).any():
                continue
            x, y = series
            color = COLORS[(r if several else s) % len(COLORS)]
            if key in run.metrics:
                finite = np.isfinite(y)
                last, best = y[finite][-1], np.nanmax(y)
                label = run.label if several else f"{_name(key)}: {last:.3f} (best {best:.3f})"
                ax.plot(x[finite], y[finite], "-o", color=color, lw=1.6, ms=3.5, label=label)
                lows.append(0.0)  # metrics: from 0, so runs and evaluations compare by height
                # Headroom: the legend (one run) sits in the top 30 %, above every point.
                highs.append(float(np.nanmax(y)) * (1.0 if several else 1.35))
                continue
            if key == "lr":  # a schedule, not a noisy measurement: drawn as it is
                ax.plot(x, y, color=color, lw=1.6, label=run.label)
                lows.append(float(np.nanmin(y)))
                highs.append(float(np.nanmax(y)))
                continue
            smoothed = smooth(y, smoothing_sigma(len(y)))
            ax.plot(x, y, color=color, lw=0.8, alpha=0.3)
            ax.plot(x, smoothed, color=color, lw=1.8, label=run.label if several else "smoothed")
            # A first-iterations spike would squash the rest of the curve: cap at the 99th percentile.
            lows.append(float(np.nanmin(y)))
            highs.append(max(float(np.nanpercentile(y, 99)), float(np.nanmax(smoothed))))
    ax.set_title(panel.title, fontsize=10)
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.tick_params(labelsize=8)
    limits = _limits(lows, highs)
    if limits is not None:
        ax.set_ylim(*limits)
    if panel.keys == ("lr",):  # 0.004, 1e-05: no "1e-3" offset text above the panel
        from matplotlib.ticker import FormatStrFormatter

        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    if not several and (len(panel.keys) > 1 or panel.keys[0] in runs[0].metrics) and ax.lines:
        ax.legend(fontsize=7.5, loc="upper left", framealpha=0.85)


def _columns(n: int) -> int:
    """Panels per row: all of up to 4, else 3 or 4, whichever leaves fewer empty cells (4 on a tie)."""
    if n <= 4:
        return n
    return min((4, 3), key=lambda c: -(-n // c) * c - n)


def draw_curves(
    runs: Sequence[RunCurves],
    path: Path,
    *,
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> DrawnCurves:
    """Draw the curves of ``runs`` (one, or several to compare) into ``path`` (.png, .pdf or .svg).

    Args:
        runs: what to draw; with several, one colour per run, named by :attr:`RunCurves.label`.
        path: the file written.
        keys: series to draw, one panel each (losses, ``lr``, metrics); None: :func:`default_panels`.
        title: the figure's title (default: the run's label, or "N runs").

    Returns:
        the :class:`DrawnCurves` written, at 100 dpi: (360 · max(2, columns), 260 · rows + 70) pixels
        (up to 4 columns, 3 where that fills the rows better: 5 panels are 3 + 2; 25 more pixels of
        height per row of the runs' legend, 5 runs a row).

    Raises:
        OdetError: no run, a ``keys`` entry that no run logged, or nothing logged to draw.
        PlotsUnavailable: matplotlib is not installed.
    """
    if not runs:
        raise OdetError("no run to draw")
    panels = [
        p for p in panels_for(runs, keys) if any(run.series(k) is not None for run in runs for k in p.keys)
    ]
    if not panels:
        raise OdetError(f"{runs[0].label}: no losses, lr or metrics logged yet (nothing to plot)")
    cols = _columns(len(panels))
    rows = -(-len(panels) // cols)
    legend_rows = -(-len(runs) // 5) if len(runs) > 1 else 0
    header = _HEADER + 0.25 * legend_rows  # title, the runs' legend, the epoch axis above the panels
    width_in, height_in = max(cols, 2) * _PANEL_W, rows * _PANEL_H + header
    fig = new_figure(width_in, height_in)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
    fig.subplots_adjust(
        left=0.6 / width_in,
        right=1 - 0.12 / width_in,
        top=1 - (header + 0.3) / height_in,
        bottom=0.45 / height_in,
        wspace=0.36,
        hspace=0.42,
    )
    ipes = {run.iters_per_epoch for run in runs}
    ipe = ipes.pop() if len(ipes) == 1 else None
    used = []
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.remove()
            continue
        used.append(ax)
        _draw_panel(ax, panels[i], runs)
        row = i // cols
        if i + cols >= len(panels):  # the lowest panel of its column: its x axis is labelled
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("iteration", fontsize=9)
        if row == 0 and ipe:
            top = ax.secondary_xaxis("top", functions=(lambda x, n=ipe: x / n, lambda e, n=ipe: e * n))
            top.tick_params(labelsize=7.5, pad=1)
            top.set_xlabel("epoch", fontsize=8, labelpad=2)
    iters = max(
        (int(run.losses[k][0][-1]) for run in runs for k in run.losses if len(run.losses[k][0])), default=0
    )
    if title is None:
        title = runs[0].label if len(runs) == 1 else f"{len(runs)} runs compared"
        if len(runs) == 1:
            epochs = f", {iters / ipe:.0f} epochs" if ipe else ""
            title += f" — {iters} iterations{epochs}"
    fig.suptitle(title, fontsize=12, y=1 - 0.12 / height_in)
    if len(runs) > 1:
        handles = [
            used[0].plot([], [], color=COLORS[r % len(COLORS)], lw=2.2, label=run.label)[0]
            for r, run in enumerate(runs)
        ]
        fig.legend(
            handles=handles,
            loc="upper center",
            ncol=min(len(runs), 5),
            fontsize=9,
            frameon=False,
            bbox_to_anchor=(0.5, 1 - 0.4 / height_in),
        )
    elif any(k in runs[0].losses for k in panels[0].keys):
        used[0].plot([], [], color=COLORS[0], lw=0.8, alpha=0.3, label="raw")
        used[0].legend(fontsize=7.5, loc="upper right", framealpha=0.85)
    save(fig, path)
    width, height = fig.canvas.get_width_height()
    boxes, limits = {}, {}
    for ax, panel in zip(used, panels, strict=True):  # the axes' place, set by subplots_adjust above
        limits[panel.keys[0]] = (*map(float, ax.get_xlim()), *map(float, ax.get_ylim()))
        x0, y0, x1, y1 = ax.get_position().extents
        boxes[panel.keys[0]] = (
            round(x0 * width),
            round((1 - y1) * height),
            round(x1 * width),
            round((1 - y0) * height),
        )
    return DrawnCurves(path=path, size=(width, height), panels=boxes, limits=limits)
