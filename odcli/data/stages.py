"""Training pipelines with stages that the trainer switches between epochs (RTMDet: strong → weak).

Upstream's ``PipelineSwitchHook`` swaps the dataset's pipeline at ``switch_epoch`` (280 of 300 for
RTMDet): cached Mosaic + MixUp with large-scale jitter before, a plain random resize/crop after. The
difficulty is that the transforms run in DataLoader worker processes, each holding its own copy of the
dataset — and with ``persistent_workers`` those copies outlive the epoch, so changing an attribute in
the main process changes nothing where the work happens.

:class:`StagedPipeline` holds every stage's transforms and a stage index in **shared memory** (a
``multiprocessing`` ``Value``) created in the main process when the pipeline is built, i.e. before
any worker exists. Workers inherit the same memory (fork) or receive a handle to it when the dataset
is pickled to start them (spawn / forkserver), so a write in the main process is seen by every
worker, persistent or not, at its next sample. The trainer writes it at an epoch boundary *before*
creating that epoch's iterator, so no sample of the new epoch is produced — or prefetched — with the
old stage.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence

import numpy as np

from odcli.data.mix_cache import cached_transforms
from odcli.data.sample import Sample, Transform, process_rng
from odcli.errors import OdetError

__all__ = ["StagedPipeline"]


class StagedPipeline:
    """Named stages of transforms, one active at a time, switchable across processes.

    Called as a transform: ``pipeline(sample, rng)`` runs the active stage. A worker that notices the
    stage changed empties the caches (Mosaic/MixUp) of the stage it left, releasing their images.

    Attributes:
        names: stage names, in order (e.g. ``["strong", "weak"]``).
        stages: the transforms of each stage.
    """

    def __init__(self, stages: Sequence[tuple[str, Transform]]) -> None:
        """Args: stages: (name, transform) pairs; the first one is active initially.

        Must be created in the main process before DataLoader workers start (the shared stage index is
        allocated here).
        """
        if not stages:
            raise OdetError("a staged pipeline needs at least one stage")
        self.names = [str(name) for name, _ in stages]
        if len(set(self.names)) != len(self.names):
            raise OdetError(f"pipeline stage names must be distinct, got {self.names}")
        self.stages = [t for _, t in stages]
        # lock=False: a single aligned int written only by the main process needs no lock, and readers
        # (one per sample) then pay nothing for it.
        self._index = multiprocessing.Value("i", 0, lock=False)
        self._last_run = 0  # per process: the stage this process last ran, to notice a switch

    @property
    def stage(self) -> str:
        """Name of the active stage (as set in the main process)."""
        return self.names[self._index.value]

    def set_stage(self, name: str) -> None:
        """Activate stage ``name`` for every process sharing this pipeline, from the next sample on."""
        if name not in self.names:
            raise OdetError(f"unknown pipeline stage {name!r}; stages are {', '.join(self.names)}")
        self._index.value = self.names.index(name)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """Run the active stage on ``sample`` (``rng`` defaults to :func:`process_rng`)."""
        index = self._index.value
        if index != self._last_run:
            for t in cached_transforms(self.stages[self._last_run]):
                t.clear_cache()
            self._last_run = index
        return self.stages[index](sample, rng if rng is not None else process_rng())

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {name}: {t!r}" for name, t in zip(self.names, self.stages, strict=True))
        return f"StagedPipeline(active={self.stage!r},\n{inner}\n)"
