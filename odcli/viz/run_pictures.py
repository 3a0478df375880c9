"""The pictures a training run keeps in its run directory, refreshed as it trains.

:class:`RunPicturesHook` is a :class:`~odcli.engine.hooks.TrainHook` that calls a list of
:class:`RunPicture` drawers after each evaluation and once more after the last epoch. The drawers
``odet train`` gives it:

* :class:`CurvesPicture` — ``curves.png``: losses, lr and evaluation metrics of the whole run (its
  :attr:`~odcli.engine.hooks.RunView.history`, so a resumed run draws what came before it too),
  redrawn each time (≈ 0.4 s on 2 CPU cores, plus ≈ 0.6 s for matplotlib's import once; the
  class says when a drawing is skipped to keep that cost under 5 % of the run's time);
* :class:`BatchPictures` — ``train_batch[_<stage>].jpg``: one training batch of each pipeline
  stage, drawn once, at the first evaluation (the demo: ≈ 0.1 s; a COCO recipe with Mosaic/MixUp
  caches to warm up: ≈ 1 s).

Other drawers (the evaluation's PR curves, say) join by following :class:`RunPicture`. A drawer
that needs matplotlib, which is optional, is skipped when it is missing: the command says so once
(:func:`~odcli.viz.plotting.missing_plots_note`) and the training goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from odcli.engine.hooks import RunView
from odcli.evaluation.report import EvalResult
from odcli.viz.batches import draw_stage_batches
from odcli.viz.curves import draw_curves
from odcli.viz.plotting import plots_available
from odcli.viz.run_logs import curves_of

__all__ = ["CURVES_FILE", "BatchPictures", "CurvesPicture", "RunPicture", "RunPicturesHook"]

CURVES_FILE = "curves.png"


class RunPicture(Protocol):
    """One kind of picture of a run, drawn by :class:`RunPicturesHook`."""

    #: Drawn with matplotlib: skipped when it is not installed.
    needs_plots: bool

    def draw(self, run: RunView, *, final: bool) -> list[Path]:
        """Draw into ``run.run_dir``; ``final``: after the last epoch. Returns the files written now."""
        ...


class CurvesPicture:
    """``curves.png`` of the run's history, redrawn after every evaluation and at the end.

    A drawing takes ~0.4 s. Evaluations minutes apart each redraw it; one that comes sooner after
    the previous drawing (or, for the first, after this object was made) than ``1 / max_share``
    times a drawing's cost is skipped, so that short runs evaluating every few seconds spend at most
    ``max_share`` of their time drawing. The end of the run always draws, unless nothing was logged
    since the last drawing (a run ending right after its evaluation).
    """

    needs_plots = True
    #: What the first drawing is expected to cost, seconds (before one was timed).
    FIRST_COST = 0.5

    def __init__(self, max_share: float = 0.05) -> None:
        self.max_share = max_share
        self._drawn: tuple[int, int, int] | None = None  # record counts drawn last
        # perf_counter time before which an evaluation's drawing is skipped
        self._ready_at = time.perf_counter() + self.FIRST_COST / max_share

    def draw(self, run: RunView, *, final: bool) -> list[Path]:
        history = run.history
        counts = (len(history.iterations), len(history.evaluations), len(history.epochs))
        if counts == self._drawn or (not final and time.perf_counter() < self._ready_at):
            return []
        started = time.perf_counter()
        curves = curves_of(history, run.run_dir.name)
        title = f"{run.run_dir.name} ({run.recipe.name}) — epoch {run.epoch}/{run.recipe.train.epochs}"
        path = draw_curves([curves], run.run_dir / CURVES_FILE, title=title).path
        done = time.perf_counter()
        self._drawn, self._ready_at = counts, done + (done - started) / self.max_share
        return [path]


class BatchPictures:
    """One batch of each pipeline stage (:func:`~odcli.viz.batches.draw_stage_batches`), drawn once.

    Args:
        dataset: the training set the run already loaded (its annotations are reused, not read
            again); None: read from the recipe.
    """

    needs_plots = False

    def __init__(self, dataset: Any = None) -> None:
        self.dataset = dataset
        self.drawn = False

    def draw(self, run: RunView, *, final: bool) -> list[Path]:
        if self.drawn:
            return []
        self.drawn = True
        return draw_stage_batches(run.recipe, run.run_dir, dataset=self.dataset)


class RunPicturesHook:
    """Call each of ``pictures`` after every evaluation and after the last epoch (main process).

    Attributes:
        pictures: the drawers, in order.
        plots: whether matplotlib is available (False: drawers that need it are skipped).
        written: every file drawn so far, in the order first written.
    """

    def __init__(self, pictures: Sequence[RunPicture]) -> None:
        self.pictures = list(pictures)
        self.plots = plots_available()
        self.written: list[Path] = []

    @property
    def skipped(self) -> bool:
        """Whether some drawer is skipped for want of matplotlib."""
        return not self.plots and any(p.needs_plots for p in self.pictures)

    def _draw(self, run: RunView, final: bool) -> None:
        for picture in self.pictures:
            if picture.needs_plots and not self.plots:
                continue
            for path in picture.draw(run, final=final):
                if path not in self.written:
                    self.written.append(path)

    def after_evaluation(self, run: RunView, result: EvalResult) -> None:
        self._draw(run, final=False)

    def after_fit(self, run: RunView, best: Path) -> None:
        self._draw(run, final=True)
