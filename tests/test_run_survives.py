"""A run survives what happens to its console, and ``--resume`` continues *the run*.

Real processes, real pipes and real signals:

* stdout closed by its reader (``odet train … | head -c 200``): the run trains to the end;
* Ctrl-C after ``tee`` died (the terminal sends SIGINT to the whole process group, DataLoader
  workers included): the state is saved, the stop is announced once, on stderr, with exit 130;
* the printed resume command, pasted as is, finishes the run with its own ``--set`` values;
* ``--set`` on resume changes only what it names, and says so;
* ``latest.json`` lands beside the run, not in the working directory;
* a batch larger than the dataset scales the lr by the images a step really holds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odcli.weights.checkpoint import read_meta
from tests.conftest import DEMO, small_demo_args

EPOCHS = 6  # 8 images, batch 2: 4 iterations per epoch
FAST = [
    *small_demo_args(),
    "--set", "train.warmup_iters=2",
    "--set", "train.cosine_start_epoch=1",
    "--set", "train.log_interval=1",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _odet(*args: str) -> list[str]:
    return [sys.executable, "-m", "odcli", *args]


def _epochs(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]


def _wait_for_checkpoint(proc: subprocess.Popen, last: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(read_meta(last)["iter"]) >= 2:
                return
        except Exception:  # not written yet (renamed into place atomically)
            pass
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped (exit {proc.returncode})")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no checkpoint appeared within {timeout} s")


def test_closed_stdout_does_not_end_training(tmp_path: Path) -> None:
    """``odet train … | head -c 200``: once the reader is gone every print fails; the run goes on."""
    cwd, run_dir = tmp_path / "cwd", tmp_path / "elsewhere" / "run"
    cwd.mkdir()
    args = [
        "train", str(DEMO), *FAST, "--set", "train.epochs=3", "--set", "train.eval_interval=1",
        "--set", "data.num_workers=0", "--run-dir", str(run_dir),
    ]  # fmt: skip
    proc = subprocess.Popen(_odet(*args), cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(200)  # what `head -c 200` reads, then it exits
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert len(head) == 200
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert [r["epoch"] for r in _epochs(run_dir)] == [1, 2, 3]
    assert (run_dir / "last.safetensors").is_file() and (run_dir / "best.safetensors").is_file()
    log = (run_dir / "train.log").read_text()
    assert "COCO box metrics" in log and "epoch 3/3 iter 12/12" in log  # the whole report survives
    # latest.json is written beside the run, never where the command was started
    assert not (cwd / "runs").exists()
    assert json.loads((run_dir.parent / "latest.json").read_text())["run_dir"] == str(run_dir.resolve())


def test_ctrl_c_after_tee_died_saves_once_and_the_printed_command_finishes_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        "--set", f"train.epochs={EPOCHS}", "--set", "train.eval_interval=3",
        "--set", "train.checkpoint_every_iters=1", "--set", "data.num_workers=2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        _odet("train", str(DEMO), *FAST, *overrides, "--run-dir", str(run_dir)),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()  # tee is gone
    _wait_for_checkpoint(proc, run_dir / "last.safetensors")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the trainer and its DataLoader workers
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGINT, err
    assert "Traceback" not in err, err
    assert err.count("SIGINT: stopping after this step") == 1, err
    saved = read_meta(run_dir / "last.safetensors")
    assert 2 <= saved["iter"] < EPOCHS * 4
    match = re.search(r"continue with: (odet train .*)$", err, re.MULTILINE)
    assert match, err
    command = shlex.split(match.group(1))
    assert command[:2] == ["odet", "train"] and "--set" not in command  # the run remembers its values

    resumed = subprocess.run(
        _odet(*command[1:]), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = _epochs(run_dir)
    assert records[-1]["epoch"] == EPOCHS  # not the recipe's 240
    assert [r["epoch"] for r in records if "mAP" in r] == [3, 6]  # the run's eval_interval, not 60


def test_set_on_resume_changes_only_what_it_names(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = ["train", str(DEMO), *FAST, "--set", "train.epochs=1", "--set", "data.num_workers=0"]
    done = subprocess.run(
        _odet(*first, "--run-dir", str(run_dir)), cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # Resume with no --set at all (the recipe file says 240 epochs and 64 → 320 px): nothing changes
    # but what is named; here one more epoch with another eval interval.
    again = subprocess.run(
        _odet("train", str(DEMO), "--resume", "--run-dir", str(run_dir), "--set", "train.epochs=2",
              "--set", "train.eval_interval=1"),
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    flat = " ".join(out.split())
    assert "--set train.epochs=2 on resume: was 1" in flat
    assert "--set train.eval_interval=1 on resume: was 60" in flat
    assert "model.test_scale" in flat and "the run's own settings" in flat  # the file differs; not used
    stored = (run_dir / "recipe.yaml").read_text()
    assert "- 64" in stored and "epochs: 2" in stored  # 64 px kept from the run, epochs as named
    assert [r["epoch"] for r in _epochs(run_dir)] == [1, 2]


def test_batch_larger_than_the_dataset_scales_lr_by_the_images_a_step_holds(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "train", str(DEMO), *FAST, "--set", "data.batch_size=64", "--set", "train.epochs=1",
        "--set", "train.warmup_iters=0", "--set", "data.num_workers=0", "--run-dir", str(run_dir),
    ]  # fmt: skip
    done = subprocess.run(_odet(*args), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    out = " ".join(done.stdout.split())
    assert done.returncode == 0, done.stdout + done.stderr
    # demo: lr 0.004 for base_batch_size 8; 64 asked, but each step holds the 8 images there are
    assert "lr 0.004 = 0.004 × 8 images per step / 8" in out
    assert "data.batch_size 64 is larger than the 8 training images" in out
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in logged if "loss" in r]
    assert lrs and all(lr == pytest.approx(0.004) for lr in lrs)
