"""How a run stops early: SIGINT/SIGTERM (save ``last``, exit 128 + signal), the ranks agreeing on
a stop, and the NaN guard (a non-finite loss stops before the step, with the batch and the state).

Every rank must stop at the same step, or the others hang in DDP's next all-reduce: each step
begins and ends with :meth:`StopControl.agree`, one tiny all-reduce of (loss not finite, stop
asked) over all ranks.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, NoReturn

import torch

from odcli.engine.console import TrainConsole
from odcli.engine.parts import Placement, TrainingParts
from odcli.engine.state import TrainState
from odcli.errors import OdetError
from odcli.runtime import distributed as dist
from odcli.weights.checkpoint import write_json_atomic

NAN_JSON = "nan_guard.json"
NAN_CKPT = "nan_guard.safetensors"


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived: every rank stops before its next step and saves ``last``."""


class StopControl:
    """Stop requests from signals, agreed between the ranks.

    Args:
        out: where the stop is announced (stderr and ``train.log``).
        placement: this process's rank, world size and device (for the agreement).
        last: the checkpoint a stop saves (named in the announcement).
    """

    def __init__(self, out: TrainConsole, placement: Placement, last: Path) -> None:
        self.out = out
        self.placement = placement
        self.last = last
        self.signal: str | None = None  #: name of the first SIGINT/SIGTERM, once one arrived
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        """SIGINT/SIGTERM → finish the current step, save ``last``, stop. A second one stops at once.

        Only this process acts on them: DataLoader workers are forked with this handler, and a
        terminal's Ctrl-C reaches every process of the group, so each worker would otherwise announce
        the stop again. Workers go on producing batches until this process shuts the loader down.
        """
        owner = os.getpid()

        def request_stop(signum: int, _frame: Any) -> None:
            if os.getpid() != owner:
                return
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signal.Signals(signum).name
            # Written directly (the handler may interrupt a rich print); never raises on a closed pipe.
            self.out.warn(
                f"\n{self.signal}: stopping after this step and saving {self.last} "
                "(press Ctrl-C again to stop at once, without saving)"
            )

        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not possible outside the main thread (embedded use): Python's defaults stay.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, request_stop)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agree(self, nonfinite: bool) -> tuple[bool, bool]:
        """(any rank's loss non-finite, any rank asked to stop): every rank calls this twice per step
        (before the forward pass for the stop, after it for the loss)."""
        if self.placement.world == 1:
            return nonfinite, self.requested
        flags = torch.tensor([float(nonfinite), float(self.requested)], device=self.placement.device)
        flags = dist.all_reduce_max(flags)
        return bool(flags[0]), bool(flags[1])

    def exit(self, saved: Path, iteration: int, epoch: int, resume_command: str) -> NoReturn:
        """Say where the state went and how to continue, then exit with 128 + the signal's number."""
        name = self.signal or "SIGINT"
        self.out.warn(
            f"stopped by {name} after iteration {iteration} (epoch {epoch + 1}): state saved to "
            f"{saved}; continue with: {resume_command}"
        )
        raise SystemExit(128 + int(getattr(signal, name, signal.SIGINT)))


def stop_for_nonfinite_loss(
    losses: dict[str, torch.Tensor],
    metas: list[dict],
    here: bool,
    *,
    state: TrainState,
    parts: TrainingParts,
    run_dir: Path,
) -> NoReturn:
    """The NaN guard: record the offending batches and the state before the step, stop with one line.

    Every rank calls this when any rank's loss is not finite (``here``: this rank's is); rank 0
    writes ``nan_guard.json`` (image ids per bad batch) and explains, the others exit with 2.
    """
    report = {
        "rank": parts.placement.rank,
        "nonfinite": here,
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "images": [{"image_id": m["image_id"], "file_name": m["file_name"]} for m in metas],
    }
    reports = dist.all_gather_object(report)
    ckpt = state.save_last(parts, run_dir / NAN_CKPT)  # nothing has been stepped: the state before
    bad = [r for r in reports if r["nonfinite"]]
    if not parts.placement.main:
        raise SystemExit(2)  # rank 0 explains; N copies of the same line help nobody
    write_json_atomic(
        run_dir / NAN_JSON,
        {
            "iteration": state.iter + 1,
            "epoch": state.epoch + 1,
            "lr": parts.schedule.lr_at(state.iter),
            "batches": bad,
            "checkpoint": str(ckpt),
        },
    )
    values = ", ".join(f"{k}={v:.4g}" for k, v in bad[0]["losses"].items())
    names = [img["file_name"] for r in bad for img in r["images"]]
    shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
    raise OdetError(
        f"non-finite loss at iteration {state.iter + 1} (epoch {state.epoch + 1}: {values}); stopped "
        f"before the step: lower train.lr, set train.clip_grad_norm (e.g. 10), or check the images "
        f"{shown} (ids in {run_dir / NAN_JSON}; state before the step in {ckpt})"
    )
