"""Killed runs resume bit-exactly: SIGKILL mid-epoch (periodic checkpoint), SIGTERM (graceful stop),
``--resume`` twice, and the final weights, EMA, optimiser state and per-iteration losses equal those
of an uninterrupted run. Also ``--extend-epochs`` and the sharded, resumable sampler."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from odcli.data.sampler import ShardedBatchSampler
from odcli.weights.checkpoint import load_checkpoint, read_meta
from tests.conftest import DEMO, small_demo_args

ITERS_PER_EPOCH = 4  # 8 images, batch 2
EPOCHS = 4  # 16 iterations: room to stop the runs mid-epoch even on a loaded machine
# 64 px, one thread, deterministic kernels, checkpoint after every iteration; augmentation stays
# on (its randomness is a function of (seed, epoch, position), which a resumed run reproduces).
ARGS = [
    *small_demo_args(),
    "--set", "train.warmup_iters=3",
    "--set", "train.cosine_start_epoch=1",
    "--set", f"train.epochs={EPOCHS}",
    "--set", "train.eval_interval=100",
    "--set", "train.log_interval=1",
    "--set", "train.checkpoint_every_iters=1",
    "--set", "train.deterministic=true",
]  # fmt: skip


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "odcli", "train", str(DEMO), *ARGS, "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(
        cmd, cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _iter_of(last: Path) -> int:
    try:
        return int(read_meta(last)["iter"])
    except Exception:  # not written yet (the rename is atomic, so never half a file)
        return -1


def _stop_mid_epoch(proc: subprocess.Popen, run_dir: Path, after: int, sig: signal.Signals) -> None:
    """Send ``sig`` as soon as a checkpoint of an iteration >= ``after`` inside an epoch exists."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        it = _iter_of(run_dir / "last.safetensors")
        if it >= after and it % ITERS_PER_EPOCH:
            proc.send_signal(sig)
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be stopped:\n{proc.stdout.read()}")  # type: ignore[union-attr]
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no checkpoint appeared within 120 s")


def _losses(run_dir: Path) -> dict[int, tuple[str, str]]:
    with open(run_dir / "iterations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    iters = [int(r["iter"]) for r in rows]
    assert iters == sorted(set(iters)), f"iterations logged twice or out of order: {iters}"
    return {int(r["iter"]): (r["loss_cls"], r["loss_bbox"]) for r in rows}


def test_killed_and_stopped_runs_resume_to_identical_weights(tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    reference = _start(ref_dir)  # runs alongside the interrupted chain

    first = _start(run_dir)
    _stop_mid_epoch(first, run_dir, after=ITERS_PER_EPOCH + 1, sig=signal.SIGKILL)
    first.wait(timeout=60)
    killed_at = read_meta(run_dir / "last.safetensors")["iter"]
    assert killed_at % ITERS_PER_EPOCH and killed_at < EPOCHS * ITERS_PER_EPOCH

    second = _start(run_dir, "--resume")
    _stop_mid_epoch(second, run_dir, after=2 * ITERS_PER_EPOCH + 1, sig=signal.SIGTERM)
    out, _ = second.communicate(timeout=120)
    assert f"resumed from {run_dir / 'last.safetensors'}" in out.replace("\n", "")
    assert second.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out and "--resume" in out
    stopped_at = read_meta(run_dir / "last.safetensors")["iter"]
    assert stopped_at > killed_at

    third = _start(run_dir, "--resume")
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0, out
    ref_out, _ = reference.communicate(timeout=120)
    assert reference.returncode == 0, ref_out

    ref = load_checkpoint(ref_dir / "last.safetensors")
    got = load_checkpoint(run_dir / "last.safetensors")
    assert got.meta["iter"] == ref.meta["iter"] == EPOCHS * ITERS_PER_EPOCH
    for name, a, b in (("model", ref.model_state, got.model_state), ("ema", ref.ema_state, got.ema_state)):
        assert a is not None and b is not None and a.keys() == b.keys()
        differing = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differing, f"{name}: {len(differing)} tensors differ, e.g. {differing[:3]}"
    assert ref.optimizer_state is not None and got.optimizer_state is not None
    for idx, state in ref.optimizer_state["state"].items():
        for key, value in state.items():
            other = got.optimizer_state["state"][idx][key]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (idx, key)
    # Every iteration was logged once, with the losses of the uninterrupted run.
    assert _losses(run_dir) == _losses(ref_dir)


def test_sharded_sampler_splits_global_batches_and_skips() -> None:
    one = ShardedBatchSampler(10, batch_size=4, seed=3, world_size=1)
    one.set_epoch(2)
    single = list(one)
    ranks = []
    for r in range(2):
        s = ShardedBatchSampler(10, batch_size=2, seed=3, rank=r, world_size=2)
        s.set_epoch(2)
        ranks.append(list(s))
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 2  # 10 // 4, last partial batch dropped
    for b, batch in enumerate(single):
        assert batch == ranks[0][b] + ranks[1][b]  # same samples, same augmentation seeds
    skipped = ShardedBatchSampler(10, batch_size=2, seed=3, rank=1, world_size=2)
    skipped.set_epoch(2, skip_batches=1)
    assert len(skipped) == 1  # the batches left in this pass
    assert list(skipped) == ranks[1][1:]
    assert len(skipped) == 2  # the next pass is a whole epoch
    # Fewer samples than one global batch: every rank still gets a full batch (wrapped around).
    tiny = [ShardedBatchSampler(3, batch_size=2, seed=0, rank=r, world_size=2) for r in range(2)]
    got = [next(iter(t)) for t in tiny]
    assert all(len(b) == 2 for b in got)
    assert sorted({i for b in got for i, _ in b}) == [0, 1, 2]
    order, seeds = ShardedBatchSampler(5, batch_size=1).global_stream(0)
    assert sorted(order.tolist()) == list(range(5)) and seeds.dtype == np.int64
