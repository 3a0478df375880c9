"""Hooks: code from above the engine that runs at fixed points of a run.

The engine draws nothing (pictures and plots live in :mod:`odcli.viz`, above it in the layer
order); the command that trains passes objects following :class:`TrainHook` to the trainer
(``Trainer(..., hooks=[...])``), which calls them in the order given, on the main process only,
with a :class:`RunView` of the run at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from odcli.data.coco import CocoDetection
from odcli.engine.metrics_log import MetricsHistory
from odcli.engine.parts import TrainingParts
from odcli.engine.state import TrainState
from odcli.evaluation.report import EvalResult
from odcli.models.detector import Detector
from odcli.recipe import Recipe


@dataclass(frozen=True)
class RunView:
    """What a hook may read about the run (read it; changing it changes the training)."""

    run_dir: Path  #: where the run writes (pictures go here too)
    recipe: Recipe  #: as the run trains it (``model.num_classes`` from the data)
    classes: list[str]  #: class name of each model label
    epoch: int  #: completed epochs
    iter: int  #: completed iterations
    best_map: float  #: the best evaluation's mAP so far (-1 before the first)
    history: MetricsHistory  #: every record logged so far, of this and the resumed runs before it
    last_eval: EvalResult | None  #: the latest evaluation (None before the first)
    model: Detector  #: the trained model (not the DDP wrapper)
    eval_model: Detector  #: the weights evaluations and ``best`` use: the EMA copy, or ``model``
    val_set: CocoDetection  #: the validation images, with the model's test pipeline
    device: torch.device


class TrainHook(Protocol):
    """Called by the trainer on the main process; an exception a hook raises ends the run."""

    def after_evaluation(self, run: RunView, result: EvalResult) -> None:
        """After each evaluation, once its epoch is logged and ``best``/``last`` are written."""

    def after_fit(self, run: RunView, best: Path) -> None:
        """After the last epoch, with the logs closed; ``best`` is the best (else last) checkpoint."""


def run_view(
    run_dir: Path,
    parts: TrainingParts,
    state: TrainState,
    history: MetricsHistory,
    last_eval: EvalResult | None,
) -> RunView:
    """The run as a hook sees it now."""
    return RunView(
        run_dir=run_dir,
        recipe=parts.recipe,
        classes=parts.classes,
        epoch=state.epoch,
        iter=state.iter,
        best_map=state.best_map,
        history=history,
        last_eval=last_eval,
        model=parts.model,
        eval_model=parts.eval_model,
        val_set=parts.val_set,
        device=parts.placement.device,
    )
