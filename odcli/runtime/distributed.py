"""Thin helpers over torch.distributed; the process group itself is PyTorch's, started by ``torchrun``.

``torchrun`` (or ``odet train --gpus N``, which runs ``torch.distributed.run`` for you) starts one
process per device and exports ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`setup` reads them through ``init_process_group(init_method="env://")``.
Without those variables everything here degrades to single-process no-ops, so the trainer runs the
same code either way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from odcli.errors import OdetError

#: Backends a recipe may name in ``train.dist_backend``.
BACKENDS = ("nccl", "gloo")
# Only rank 0 evaluates (COCO eval of a large validation set takes minutes) while the other ranks
# wait in the next collective; the default 10-minute NCCL timeout would kill those waiting ranks.
_TIMEOUT = timedelta(minutes=60)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """Index of this process among the processes of its node (``LOCAL_RANK``; 0 when not launched)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(backend: str | None = None, device_type: str = "cuda") -> bool:
    """Join the process group torchrun prepared (idempotent); return whether training is distributed.

    Args:
        backend: ``nccl`` or ``gloo``; None picks ``nccl`` for CUDA training, else ``gloo``.
        device_type: ``cuda`` (each process uses GPU ``LOCAL_RANK``) or ``cpu``.

    Raises:
        OdetError: an unknown backend, NCCL without CUDA, or more local processes than GPUs.
    """
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    if backend is not None and backend not in BACKENDS:
        raise OdetError(f"train.dist_backend must be one of {', '.join(BACKENDS)} (or null), got {backend!r}")
    cuda = device_type == "cuda"
    chosen = backend or ("nccl" if cuda else "gloo")
    if chosen == "nccl" and not cuda:
        raise OdetError("train.dist_backend=nccl needs CUDA training; on CPU use train.dist_backend=gloo")
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise OdetError(
                f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} CUDA devices are visible; "
                "start at most that many processes per node (--nproc_per_node)"
            )
        # Before init: NCCL binds each process to the current device.
        torch.cuda.set_device(local_rank())
    dist.init_process_group(chosen, init_method="env://", timeout=_TIMEOUT)
    return True


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Average a tensor over all ranks (identity when not distributed)."""
    if not is_distributed():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of a tensor over all ranks (identity when not distributed)."""
    if not is_distributed():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def launch(nproc: int, argv: Sequence[str]) -> None:
    """Run ``python -m odcli <argv>`` in ``nproc`` local processes through PyTorch's own launcher.

    This is ``torchrun --standalone --nproc_per_node <nproc> -m odcli <argv>`` (single node; the
    rendezvous picks a free port). For several nodes, call ``torchrun`` yourself (README).

    Raises:
        OdetError: one of the processes failed (its own error line was printed above).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={nproc}", "--module", "odcli", *argv]
    )
    try:
        run(args)
    except ChildFailedError as exc:
        ranks = sorted(exc.failures)
        first = exc.get_first_failure()[1]
        code = first.exitcode
        err = OdetError(
            f"training stopped: process(es) of rank {', '.join(map(str, ranks))} exited with code {code} "
            "(see the error printed above)"
        )
        # Keep the child's status (130 after Ctrl-C, 2 for a user error, ...) as our own.
        err.exit_code = code if isinstance(code, int) and 0 < code < 256 else 1
        raise err from None
