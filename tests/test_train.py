"""`odet train`: a tiny end-to-end run, resume, and one-line errors for bad recipes/datasets."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.engine.hooks import RunView
from odcli.engine.trainer import Trainer
from odcli.evaluation.report import EvalResult
from odcli.recipe import load_recipe
from odcli.weights.checkpoint import load_checkpoint, read_meta
from tests.conftest import DEMO, small_demo_args

REPO = Path(__file__).resolve().parents[1]
FAST = [
    *small_demo_args(128, batch_size=4, nms_pre=200),
    "--set", "train.warmup_iters=2",
    "--set", "train.cosine_start_epoch=1",
    "--set", "train.eval_interval=2",
    "--set", "train.checkpoint_interval=1",
    "--set", "train.log_interval=1",
]  # fmt: skip


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_train_resume_and_outputs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # infer without --weights looks for runs/latest.json here
    run = tmp_path / "runs" / "demo-test"  # latest.json goes beside the run: runs/latest.json
    code, out = _run(["train", str(DEMO), *FAST, "--set", "train.epochs=1", "--run-dir", str(run)])
    assert code == 0, out
    meta = read_meta(run / "last.safetensors")
    assert meta["epoch"] == 1 and meta["arch"] == "rtmdet_tiny" and len(meta["classes"]) == 80
    assert meta["cat_ids"][72] == 82
    first = load_checkpoint(run / "last.safetensors")
    assert first.optimizer_state is not None and first.ema_state is not None

    code, out = _run(
        ["train", str(DEMO), *FAST, "--set", "train.epochs=2", "--run-dir", str(run), "--resume"]
    )
    assert code == 0, out
    assert "resumed from" in out
    assert read_meta(run / "last.safetensors")["epoch"] == 2
    assert (run / "best.safetensors").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("mAP" in r for r in records) and any("loss_cls" in r for r in records)
    assert list(run.glob("prediction_*.jpg"))

    # Without --weights, infer uses the best checkpoint of this (latest) run and says so.
    image = REPO / "recipes" / "data" / "coco8" / "images" / "000000000009.jpg"
    code, out = _run(["infer", str(image), "-o", str(tmp_path / "pred")])
    assert code == 0, out
    assert "latest run" in out and str(run / "best.safetensors") in out.replace("\n", "")
    assert (tmp_path / "pred" / "detections.json").exists()


def test_misspelled_recipe_key_is_one_line(tmp_path: Path) -> None:
    code, out = _run(["train", str(DEMO), "--set", "train.epoch=3"])
    assert code != 0
    assert "unknown key 'train.epoch'" in out and "did you mean 'epochs'" in out
    assert "Traceback" not in out


def test_missing_dataset_is_one_line(tmp_path: Path) -> None:
    code, out = _run(["train", str(DEMO), "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert code != 0
    assert "dataset root not found" in out and "data.root" in out
    assert "Traceback" not in out


def test_commands_without_weights_and_without_runs_name_the_demo(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["infer", str(REPO / "recipes" / "data" / "coco8" / "images")], ["eval"]):
        code, out = _run(args)
        assert code != 0 and "odet train recipes/demo.yaml" in out and "Traceback" not in out


class RecordingHook:
    """A hook that writes down what it saw at each call, and checks what exists on disk then."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def after_evaluation(self, run: RunView, result: EvalResult) -> None:
        self.calls.append(
            {
                "call": "after_evaluation",
                "epoch": run.epoch,
                "iter": run.iter,
                "mAP": result.stats["mAP"],
                "is_last_eval": run.last_eval is result,
                "epochs_logged": [r["epoch"] for r in run.history.epochs],
                "evaluations_logged": [r["epoch"] for r in run.history.evaluations],
                "best_map": run.best_map,
                "best_exists": (run.run_dir / "best.safetensors").is_file(),
                "eval_model_is_ema": run.eval_model is not run.model,
                "classes": len(run.classes),
            }
        )

    def after_fit(self, run: RunView, best: Path) -> None:
        self.calls.append({"call": "after_fit", "epoch": run.epoch, "best": best})


def test_hooks_see_each_evaluation_and_the_end_of_the_run(tmp_path: Path) -> None:
    overrides = [*small_demo_args()[1::2], "train.warmup_iters=2", "train.cosine_start_epoch=1"]
    recipe = load_recipe(
        DEMO, [*overrides, "train.epochs=2", "train.eval_interval=1", "train.log_interval=1"]
    )
    run_dir = tmp_path / "run"
    hook = RecordingHook()
    Trainer(recipe, run_dir=run_dir, console=Console(quiet=True), hooks=[hook]).fit()

    evals = [c for c in hook.calls if c["call"] == "after_evaluation"]
    assert [c["call"] for c in hook.calls] == ["after_evaluation", "after_evaluation", "after_fit"]
    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    for call, record in zip(evals, epochs, strict=True):
        # called once the epoch is logged and the checkpoints are written, with that evaluation
        assert call["epoch"] == record["epoch"] and call["iter"] == record["iter"] == 4 * record["epoch"]
        assert call["mAP"] == record["mAP"] and call["is_last_eval"]
        assert call["epochs_logged"] == call["evaluations_logged"] == list(range(1, call["epoch"] + 1))
        assert call["best_exists"] and call["best_map"] >= call["mAP"]
        assert call["eval_model_is_ema"] and call["classes"] == 80
    assert hook.calls[-1]["epoch"] == 2 and hook.calls[-1]["best"] == run_dir / "best.safetensors"

    # A resumed run's hooks see the whole run's history, not only what this process logged.
    again = RecordingHook()
    resumed = Trainer(
        recipe, run_dir=run_dir, resume=True, extend_epochs=1, console=Console(quiet=True), hooks=[again]
    )
    resumed.fit()
    assert [c["call"] for c in again.calls] == ["after_evaluation", "after_fit"]
    assert again.calls[0]["epoch"] == 3 and again.calls[0]["epochs_logged"] == [1, 2, 3]
    assert again.calls[0]["evaluations_logged"] == [1, 2, 3]
