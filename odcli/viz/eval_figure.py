"""What an evaluation picture reports about itself once written: the file, its size and where its
plotting areas are, in image pixels (so tests, and anyone annotating the picture, find the data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalPicture", "axes_box"]


@dataclass(frozen=True)
class EvalPicture:
    """A picture written by :mod:`odcli.viz.pr_curves` or :mod:`odcli.viz.confusion`.

    Attributes:
        path: the PNG.
        size: (width, height) pixels.
        panels: panel name → its plotting area (x0, y0, x1, y1), image pixels, origin top left,
            the axes' frame included.
        labels: the class labels along the axes, where the picture has them (confusion matrix:
            rows top to bottom, the same for the columns left to right).
    """

    path: Path
    size: tuple[int, int]
    panels: dict[str, tuple[int, int, int, int]]
    labels: list[str] = field(default_factory=list)


def axes_box(fig: Any, ax: Any) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) image pixels of ``ax`` in ``fig`` as saved at the figure's dpi (drawn first)."""
    height = fig.canvas.get_width_height()[1]
    x0, y0, x1, y1 = ax.get_window_extent().extents
    return round(x0), round(height - y1), round(x1), round(height - y0)
