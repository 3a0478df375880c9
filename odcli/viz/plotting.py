"""matplotlib, the optional dependency of every plot (``pip install "odet[plots]"``).

Plots are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: no display is needed, no global figure state is kept between plots (a training run draws
its curves again at every evaluation), and the backend a user's own code chose is left alone.
matplotlib is imported only inside :func:`new_figure`, so ``odet --help`` and commands that draw no
plot never import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odcli.errors import OdetError

__all__ = ["PLOTS_INSTALL", "PlotsUnavailable", "missing_plots_note", "new_figure", "plots_available", "save"]

#: What installs the plotting dependency.
PLOTS_INSTALL = 'pip install "odet[plots]"'


class PlotsUnavailable(OdetError):
    """matplotlib is not installed; the message says how to install it."""


def _import_figure() -> Any:
    try:
        import matplotlib  # noqa: F401  (first: a hidden or broken matplotlib fails here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotsUnavailable(f"plots need matplotlib, which is not installed: {PLOTS_INSTALL}") from exc
    return Figure, FigureCanvasAgg


def plots_available() -> bool:
    """Whether matplotlib can be imported (imports it when it can)."""
    try:
        _import_figure()
    except PlotsUnavailable:
        return False
    return True


def missing_plots_note(what: str) -> str:
    """The one ``note:`` line a command prints when it goes on without ``what`` (e.g. "training curves")."""
    return f"note: no {what}: matplotlib is not installed ({PLOTS_INSTALL})"


def new_figure(width_in: float, height_in: float, dpi: int = 100) -> Any:
    """A blank ``width_in`` × ``height_in`` inch figure on an Agg canvas (``dpi`` pixels per inch).

    Raises:
        PlotsUnavailable: matplotlib is not installed.
    """
    figure_cls, canvas_cls = _import_figure()
    fig = figure_cls(figsize=(width_in, height_in), dpi=dpi, facecolor="white")
    canvas_cls(fig)
    return fig


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg) at the figure's dpi.

    The file is written beside the target and renamed into place, so a picture refreshed during
    training is never seen half-written.
    """
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=fig.dpi, facecolor="white")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OdetError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
