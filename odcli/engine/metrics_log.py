"""Training metrics on disk: JSON lines and CSV per iteration and per epoch, and TensorBoard if installed.

Files in the run directory (only the main process writes):

* ``metrics.jsonl`` — one JSON object per logged iteration (``epoch``, ``iter``, ``lr``, the losses,
  ``data_time`` / ``iter_time`` in seconds, ...) and one per evaluation (``epoch``, ``iter``, ``mAP``);
* ``iterations.csv`` — the same iteration records as a table;
* ``epochs.jsonl`` and ``epochs.csv`` — one record per epoch: mean losses over the epoch, the last
  lr, wall time, and the evaluation metrics when the epoch was evaluated;
* ``tensorboard/`` — the same scalars as TensorBoard events, when the ``tensorboard`` package is
  importable (optional: ``pip install tensorboard``).

A resumed run first drops the records of iterations after its checkpoint (a killed run may have
logged a few more), so every file reads as one uninterrupted run, and reads the remaining ones back
into :attr:`MetricsLogger.history`, which then holds the whole run (what training curves plot).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MetricsHistory", "MetricsLogger"]

ITER_JSONL = "metrics.jsonl"
ITER_CSV = "iterations.csv"
EPOCH_JSONL = "epochs.jsonl"
EPOCH_CSV = "epochs.csv"


def _json_value(value: Any) -> Any:
    # JSON has no NaN/Inf; write them as strings rather than produce unparsable lines.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class _CsvTable:
    """A CSV file whose header grows when a record brings a new column (the file is then rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        if path.exists():
            with open(path, newline="") as f:
                self.columns = next(csv.reader(f), [])

    def append(self, record: dict[str, Any]) -> None:
        new = [k for k in record if k not in self.columns]
        if new or not self.path.exists():
            rows = self._read()
            self.columns += new
            self._write(rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(record)

    def _read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def truncate_after(self, iteration: int) -> None:
        rows = [r for r in self._read() if not r.get("iter") or int(float(r["iter"])) <= iteration]
        if self.path.exists():
            self._write(rows)


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of each whole line of ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append((line, json.loads(line)))
        except json.JSONDecodeError:  # a line cut by a kill: drop it
            continue
    return records


def _truncate_jsonl(path: Path, iteration: int) -> list[dict[str, Any]]:
    """Keep the records of iterations up to ``iteration``; returns them (non-finite values as floats)."""
    if not path.exists():
        return []
    kept = [(line, r) for line, r in _read_jsonl(path) if int(r.get("iter", 0)) <= iteration]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line, _ in kept))
    os.replace(tmp, path)
    return [{k: _from_json(v) for k, v in r.items()} for _, r in kept]


def _from_json(value: Any) -> Any:
    return float(value) if value in ("nan", "inf", "-inf") else value


@dataclass
class MetricsHistory:
    """The run's records in memory, as written: per logged iteration, per evaluation, per epoch."""

    iterations: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  #: ``epoch``, ``iter``, ``mAP``
    epochs: list[dict[str, Any]] = field(default_factory=list)


class MetricsLogger:
    """Append training records to the run directory's metric files (see the module docstring).

    Args:
        run_dir: the run directory (must exist before the first record).
        enabled: False on every process but the main one: then all methods do nothing.
        tensorboard: also write TensorBoard events when the package is installed.
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.want_tensorboard = tensorboard
        self._tb: Any = None
        self._tb_checked = False
        self.history = MetricsHistory()

    @property
    def tensorboard_dir(self) -> Path | None:
        """Where TensorBoard events go, or None when TensorBoard is not installed (or disabled)."""
        writer = self._writer()
        return Path(writer.log_dir) if writer is not None else None

    def _writer(self) -> Any:
        if not (self.enabled and self.want_tensorboard):
            return None
        if not self._tb_checked:
            self._tb_checked = True
            try:  # optional: odet does not depend on tensorboard
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return None
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        return self._tb

    def truncate_after(self, iteration: int) -> None:
        """Forget the records of iterations after ``iteration`` (a resumed run restarts there); the
        kept ones become :attr:`history`."""
        if not self.enabled:
            return
        logged = _truncate_jsonl(self.run_dir / ITER_JSONL, iteration)
        self.history = MetricsHistory(
            iterations=[r for r in logged if "mAP" not in r],  # evaluations share the file
            evaluations=[r for r in logged if "mAP" in r],
            epochs=_truncate_jsonl(self.run_dir / EPOCH_JSONL, iteration),
        )
        for name in (ITER_CSV, EPOCH_CSV):
            _CsvTable(self.run_dir / name).truncate_after(iteration)

    def _append(
        self, jsonl: str, table: str, record: dict[str, Any], prefix: str, kept: list[dict[str, Any]]
    ) -> None:
        kept.append(record)
        if not self.enabled:
            return
        clean = {k: _json_value(v) for k, v in record.items()}
        with open(self.run_dir / jsonl, "a") as f:
            f.write(json.dumps(clean) + "\n")
        if table:
            _CsvTable(self.run_dir / table).append(clean)
        writer = self._writer()
        if writer is not None:
            step = int(record.get("iter", 0))
            for key, value in record.items():
                if key not in ("epoch", "iter") and isinstance(value, int | float):
                    writer.add_scalar(f"{prefix}/{key}", value, step)

    def log_iter(self, record: dict[str, Any]) -> None:
        """One training iteration: ``epoch`` (1-based), ``iter`` (completed), lr, losses, timings."""
        self._append(ITER_JSONL, ITER_CSV, record, "train", self.history.iterations)

    def log_eval(self, record: dict[str, Any]) -> None:
        """An evaluation (``epoch``, ``iter``, ``mAP`` ...) in the iteration log, as earlier versions did."""
        self._append(ITER_JSONL, "", record, "val", self.history.evaluations)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One epoch's summary: ``epoch``, ``iter``, mean losses, lr, time, evaluation metrics."""
        self._append(EPOCH_JSONL, EPOCH_CSV, record, "epoch", self.history.epochs)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
