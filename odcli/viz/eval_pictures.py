"""The pictures of one evaluation, beside its metrics JSON: ``<stem>_pr.png`` (precision–recall
curves), ``<stem>_f1.png`` (precision / recall / F1 against the score threshold) and
``<stem>_confusion.png`` — for ``odet eval`` and, through :class:`EvalPicturesHook`, for the
evaluations of a training run (``RUN_DIR/eval/``, refreshed as it trains).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from odcli.engine.hooks import RunView
from odcli.errors import OdetError
from odcli.evaluation.report import EvalResult
from odcli.runtime.paths import ensure_output_dir
from odcli.viz.confusion import draw_confusion
from odcli.viz.eval_figure import EvalPicture
from odcli.viz.plotting import PlotsUnavailable, missing_plots_note
from odcli.viz.pr_curves import draw_pr_curves, draw_score_curves
from odcli.weights.checkpoint import write_json_atomic

__all__ = ["EVAL_PICTURES", "EvalPicturesHook", "draw_evaluation_pictures", "picture_prefix"]

#: What the pictures are, in the words of the note printed when matplotlib is missing.
EVAL_PICTURES = "PR curves or confusion matrix"


def picture_prefix(metrics_path: Path) -> str:
    """The file-name start the pictures share with the metrics JSON: ``x_metrics.json`` → ``x_``,
    ``metrics.json`` → ``""``, any other ``x.json`` → ``x_``."""
    stem = metrics_path.stem
    if stem == "metrics":
        return ""
    return stem[: -len("metrics")] if stem.endswith("_metrics") else f"{stem}_"


def draw_evaluation_pictures(
    result: EvalResult, out_dir: Path, *, prefix: str = "", title: str = ""
) -> list[EvalPicture]:
    """Draw the PR curves, the score curves and the confusion matrix of ``result`` into ``out_dir``.

    Args:
        result: an evaluation with ``details`` (every :func:`~odcli.evaluation.coco.evaluate_coco`
            result over at least one image has them).
        out_dir: where the PNGs go (created).
        prefix: start of each file name (:func:`picture_prefix` of the metrics JSON).
        title: first words of each picture's title.

    Returns:
        The pictures, in the order PR curves, score curves, confusion matrix.

    Raises:
        PlotsUnavailable: matplotlib is not installed.
        OdetError: ``result`` has no details, or ``out_dir`` cannot be written.
    """
    details = result.details
    if details is None:
        raise OdetError("this evaluation scored no image: no curves or confusion matrix to draw")
    ensure_output_dir(out_dir)
    return [
        draw_pr_curves(details, out_dir / f"{prefix}pr.png", title=title),
        draw_score_curves(details, out_dir / f"{prefix}f1.png", title=title),
        draw_confusion(details, out_dir / f"{prefix}confusion.png", title=title),
    ]


class EvalPicturesHook:
    """The pictures of a training run's evaluations, in ``RUN_DIR/eval/``: ``metrics.json`` (the
    numbers, with the epoch and iteration) and ``pr.png``, ``f1.png``, ``confusion.png``, replaced at
    each evaluation.

    Both a :class:`~odcli.engine.hooks.TrainHook` (pass it to the trainer's ``hooks``) and a
    :class:`~odcli.viz.run_pictures.RunPicture` drawer (give it to ``RunPicturesHook``), so it can
    join the other training pictures.

    Drawing the three pictures takes about a second: an evaluation that comes sooner after the
    previous drawing than ``1 / max_share`` times its cost writes only the numbers, and the end of
    the run draws the last evaluation if it was skipped, so a run that evaluates every few seconds
    spends at most ``max_share`` of its time on them (None: draw every evaluation). Without
    matplotlib the numbers are still written and ``note`` is called once with the line to print.

    Attributes:
        pictures: the pictures of the latest evaluation drawn (empty before, or without matplotlib).
    """

    #: Writes its numbers without matplotlib; says itself when the pictures cannot be drawn.
    needs_plots = False

    def __init__(
        self, *, max_share: float | None = 0.05, note: Callable[[str], object] | None = None
    ) -> None:
        self.max_share = max_share
        self.note = note
        self.pictures: list[EvalPicture] = []
        self._result: EvalResult | None = None  # the evaluation whose numbers are written
        self._drawn: EvalResult | None = None  # the evaluation whose pictures are drawn
        self._ready_at = 0.0  # perf_counter time before which an evaluation is not drawn
        self._warned = False

    def draw(self, run: RunView, *, final: bool) -> list[Path]:
        """Write the latest evaluation's numbers (if new) and pictures (if due); the files written."""
        result = run.last_eval
        if result is None:
            return []
        out_dir = run.run_dir / "eval"
        written: list[Path] = []
        if result is not self._result:
            ensure_output_dir(out_dir)
            write_json_atomic(
                out_dir / "metrics.json", {"epoch": run.epoch, "iter": run.iter, **result.to_dict()}
            )
            self._result = result
            written.append(out_dir / "metrics.json")
        due = final or self.max_share is None or time.perf_counter() >= self._ready_at
        if result is self._drawn or result.details is None or not due or self._warned:
            return written
        started = time.perf_counter()
        try:
            self.pictures = draw_evaluation_pictures(
                result, out_dir, title=f"{run.run_dir.name}, epoch {run.epoch} (iter {run.iter})"
            )
        except PlotsUnavailable:
            if self.note is not None:
                self.note(missing_plots_note(EVAL_PICTURES))
            self._warned = True
            return written
        done = time.perf_counter()
        self._drawn = result
        if self.max_share:
            self._ready_at = done + (done - started) / self.max_share
        return written + [p.path for p in self.pictures]

    def after_evaluation(self, run: RunView, result: EvalResult) -> None:
        self.draw(run, final=False)

    def after_fit(self, run: RunView, best: Path) -> None:
        self.draw(run, final=True)
