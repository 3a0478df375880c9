"""How many DataLoader worker processes a command may start on this machine."""

from __future__ import annotations

import os

from odcli.runtime.console import STDERR

__all__ = ["available_cpus", "cap_workers"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cap_workers(num_workers: int) -> int:
    """``num_workers``, or the CPUs available when it asks for more, with a one-line warning.

    More workers than CPUs only compete for them (PyTorch warns that the loader may slow down or
    freeze, in four lines with source locations, at every epoch). Results do not depend on the
    worker count: augmentation is seeded per sample.
    """
    cpus = available_cpus()
    if num_workers <= cpus:
        return num_workers
    if os.environ.get("RANK", "0") == "0":  # once per command, not once per rank
        STDERR.write(
            f"warning: {num_workers} data-loading workers asked for, but this process may use only "
            f"{cpus} CPUs: using {cpus} (set --workers / data.num_workers to at most {cpus})\n"
        )
        STDERR.flush()
    return cpus
