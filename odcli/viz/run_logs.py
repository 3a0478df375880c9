"""A run's logged history as plottable series: losses and lr per logged iteration, metrics per evaluation.

The records come from :class:`~odcli.engine.metrics_log.MetricsHistory`, either the trainer's own
(in memory, the whole run including the runs it resumed) or read back from a run directory's
``metrics.jsonl`` / ``epochs.jsonl`` by :func:`read_run_history` (what ``odet plot`` does; it only
reads: the files of a run still training stay untouched).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odcli.engine.metrics_log import EPOCH_JSONL, ITER_JSONL, MetricsHistory
from odcli.errors import OdetError

__all__ = ["METRIC_ORDER", "RunCurves", "curves_of", "read_run_history"]

#: Evaluation metrics in the order pycocotools reports them (``AR@…`` keys follow, as logged).
METRIC_ORDER = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
#: Iteration-record fields that are bookkeeping, not curves.
_NOT_CURVES = {"epoch", "iter", "time", "data_time", "iter_time", "amp_scale"}

Series = tuple[np.ndarray, np.ndarray]  #: (N,) iterations, (N,) values (NaN: missing)


@dataclass(frozen=True)
class RunCurves:
    """One run's curves.

    Attributes:
        label: how plots name the run (its directory name).
        losses: loss name → series per logged iteration, ``loss`` (the weighted total) first.
        lr: learning rate per logged iteration (empty arrays when none was logged).
        metrics: metric name → series per evaluation (``mAP``, ``mAP_50``, … fractions in [0, 1];
            pycocotools' -1, "nothing to average", becomes NaN).
        iters_per_epoch: iterations of one epoch (None before the first epoch ended).
    """

    label: str
    losses: dict[str, Series] = field(default_factory=dict)
    lr: Series = (np.zeros(0), np.zeros(0))
    metrics: dict[str, Series] = field(default_factory=dict)
    iters_per_epoch: float | None = None

    def series(self, key: str) -> Series | None:
        """The series named ``key`` (a loss, ``lr`` or a metric), or None when the run has none."""
        if key == "lr":
            return self.lr if len(self.lr[0]) else None
        return self.losses.get(key, self.metrics.get(key))

    @property
    def keys(self) -> list[str]:
        """Every series name this run has, losses first."""
        return [*self.losses, *(["lr"] if len(self.lr[0]) else []), *self.metrics]


def _number(value: Any) -> float:
    """A logged value as a float; NaN for what is not a number (``"nan"`` strings included)."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return math.nan


def _series(records: list[dict[str, Any]], key: str, missing: float | None = None) -> Series:
    """(iterations, values) of ``key`` over ``records`` sorted by iteration, the last record of an
    iteration winning (a resumed run may log one twice); ``missing`` values become NaN."""
    by_iter: dict[int, float] = {}
    for r in records:
        if key in r and "iter" in r:
            value = _number(r[key])
            by_iter[int(r["iter"])] = math.nan if missing is not None and value == missing else value
    iters = np.array(sorted(by_iter), dtype=np.float64)
    values = np.array([by_iter[int(i)] for i in iters], dtype=np.float64)
    values[~np.isfinite(values)] = np.nan  # a diverged step's inf would flatten the whole panel
    return iters, values


def _keys_in_order(records: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.update(dict.fromkeys(r))
    return list(seen)


def curves_of(history: MetricsHistory, label: str) -> RunCurves:
    """The curves of a run's ``history`` (see :class:`RunCurves`)."""
    # Per logged iteration; a run shorter than train.log_interval has only its epoch means.
    iters = history.iterations if any("loss" in r for r in history.iterations) else history.epochs
    names = _keys_in_order(iters)
    loss_names = [k for k in names if k.startswith("loss") and k not in _NOT_CURVES]
    loss_names.sort(key=lambda k: k != "loss")  # the total first, components as the head logs them
    # Epoch records carry every metric of an evaluation; the iteration log only its mAP (older runs).
    evaluated = [r for r in history.epochs if "mAP" in r] or list(history.evaluations)
    metric_names = [k for k in _keys_in_order(evaluated) if k in METRIC_ORDER or k.startswith("AR")]
    metric_names.sort(key=lambda k: METRIC_ORDER.index(k) if k in METRIC_ORDER else len(METRIC_ORDER))
    metrics = {k: _series(evaluated, k, missing=-1.0) for k in metric_names}
    ipe = None
    ends = [r for r in history.epochs if int(r.get("epoch", 0)) > 0 and "iter" in r]
    if ends:
        ipe = int(ends[-1]["iter"]) / int(ends[-1]["epoch"])
    return RunCurves(
        label=label,
        losses={k: _series(iters, k) for k in loss_names},
        lr=_series(iters, "lr"),
        metrics={k: s for k, s in metrics.items() if np.isfinite(s[1]).any()},
        iters_per_epoch=ipe,
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole-line JSON objects of ``path`` (a line cut by a kill is skipped)."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OdetError(f"cannot read {path}: {exc}") from exc
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_run_history(run_dir: Path) -> MetricsHistory:
    """The records ``odet train`` logged in ``run_dir`` (read only).

    Raises:
        OdetError: ``run_dir`` is not a directory, holds no metrics logs, or its logs hold no record.
    """
    if not run_dir.is_dir():
        raise OdetError(f"{run_dir} is not a directory (give the run directory odet train wrote)")
    iter_log, epoch_log = run_dir / ITER_JSONL, run_dir / EPOCH_JSONL
    if not iter_log.exists() and not epoch_log.exists():
        raise OdetError(
            f"{run_dir} is not an odet run directory: it has no {ITER_JSONL} or {EPOCH_JSONL} "
            "(odet train writes them there)"
        )
    logged = _read_jsonl(iter_log)
    history = MetricsHistory(
        iterations=[r for r in logged if "mAP" not in r],  # evaluations share the iteration log
        evaluations=[r for r in logged if "mAP" in r],
        epochs=_read_jsonl(epoch_log),
    )
    if not (history.iterations or history.epochs):
        raise OdetError(f"{run_dir}: its logs hold no records yet (nothing to plot)")
    return history
