"""Metric files (CSV, JSON lines, optional TensorBoard), ``--extend-epochs`` and the NaN guard."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.engine.metrics_log import MetricsLogger
from odcli.weights.checkpoint import read_meta
from tests.conftest import DEMO, small_demo_args

FAST = [
    *small_demo_args(),
    "--set", "train.warmup_iters=2",
    "--set", "train.cosine_start_epoch=1",
    "--set", "train.eval_interval=100",
    "--set", "train.log_interval=1",
]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_metrics_logger_files_columns_truncation_and_tensorboard(tmp_path: Path, monkeypatch) -> None:
    scalars: list[tuple[str, float, int]] = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (not a dependency)
        def __init__(self, log_dir: str) -> None:
            self.log_dir = log_dir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            scalars.append((tag, value, step))

        def flush(self) -> None: ...

        def close(self) -> None: ...

    fake = types.SimpleNamespace(SummaryWriter=FakeWriter)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = MetricsLogger(tmp_path)
    assert log.tensorboard_dir == tmp_path / "tensorboard"
    for it in (1, 2, 3):
        log.log_iter({"epoch": 1, "iter": it, "lr": 0.1, "loss": float(it)})
    log.log_iter({"epoch": 1, "iter": 4, "lr": 0.1, "loss": 4.0, "amp_scale": 65536.0})  # a new column
    log.log_epoch({"epoch": 1, "iter": 4, "loss": 2.5, "mAP": 0.1})
    rows = _rows(tmp_path / "iterations.csv")
    assert [r["iter"] for r in rows] == ["1", "2", "3", "4"] and rows[0]["amp_scale"] == ""
    assert rows[3]["amp_scale"] == "65536.0"
    assert _rows(tmp_path / "epochs.csv")[0]["mAP"] == "0.1"
    assert ("train/loss", 3.0, 3) in scalars and ("epoch/mAP", 0.1, 4) in scalars

    log.truncate_after(2)  # what a resumed run does with the records of a killed one
    assert [r["iter"] for r in _rows(tmp_path / "iterations.csv")] == ["1", "2"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == [1, 2]
    assert not (tmp_path / "epochs.jsonl").read_text().strip()

    quiet = MetricsLogger(tmp_path / "other", enabled=False)  # ranks other than 0 write nothing
    quiet.log_iter({"iter": 1, "loss": 1.0})
    assert not (tmp_path / "other").exists()


def test_extend_epochs_rebuilds_the_schedule(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    run = tmp_path / "run"
    args = ["train", str(DEMO), *FAST, "--set", "train.epochs=1", "--run-dir", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_meta(run / "last.safetensors")["schedule"]["total_iters"] == 4

    # Plain --resume with a larger train.epochs keeps the old schedule and says so.
    result = CliRunner().invoke(app, [*args, "--set", "train.epochs=2", "--resume"])
    assert result.exit_code == 0, result.output
    assert "the run's lr schedule was built for 1; it is kept" in result.output
    assert read_meta(run / "last.safetensors")["schedule"]["total_iters"] == 4

    result = CliRunner().invoke(app, [*args, "--extend-epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "extending the run from 2 to 4 epochs (--extend-epochs 2)" in result.output
    meta = read_meta(run / "last.safetensors")
    assert meta["epoch"] == 4 and meta["recipe"]["train"]["epochs"] == 4
    assert meta["schedule"]["total_iters"] == 16
    epochs = [int(r["epoch"]) for r in _rows(run / "epochs.csv")]
    assert epochs == [1, 2, 3, 4]


def test_nan_guard_saves_the_batch_and_the_state_and_stops(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    run = tmp_path / "run"
    # An absurd lr: the first full step blows the weights up, the next loss is not finite.
    args = ["train", str(DEMO), *FAST, "--set", "train.optimizer=sgd", "--set", "train.lr=1e12"]
    result = CliRunner().invoke(app, [*args, "--set", "train.warmup_iters=0", "--run-dir", str(run)])
    assert result.exit_code != 0
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "non-finite loss at iteration" in lines[0], result.output
    assert "lower train.lr" in lines[0] and "train.clip_grad_norm" in lines[0]
    assert "Traceback" not in result.output
    report = json.loads((run / "nan_guard.json").read_text())
    images = report["batches"][0]["images"]
    assert len(images) == 2 and all(i["file_name"].endswith(".jpg") and i["image_id"] for i in images)
    for image in images:
        assert image["file_name"] in lines[0]
    state = read_meta(run / "nan_guard.safetensors")
    assert state["iter"] == report["iteration"] - 1  # the state before the step that failed
