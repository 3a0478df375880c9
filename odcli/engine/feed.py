"""The batches of each epoch: this rank's shard from the resumed position on, with the epoch's
worker seeds and pipeline stage set before the loader starts."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from odcli.data.loader import iterate_batches
from odcli.data.stages import StagedPipeline
from odcli.engine.console import TrainConsole
from odcli.engine.parts import TrainingParts
from odcli.engine.stopping import StopControl, StopRequested

#: (images (B, 3, H, W) uint8, per-image targets, per-image metas) as the loader collates them.
Batch = tuple[torch.Tensor, list[dict], list[dict]]


class EpochFeed:
    """Batches per epoch from ``parts.loader``; a loader killed by a stop request ends as that stop.

    Args:
        parts: the run's loader, sampler, training set and recipe.
        stop: tells a loader whose workers a Ctrl-C ended from one that failed.
        out: where the pipeline-stage notes go.
    """

    def __init__(self, parts: TrainingParts, stop: StopControl, out: TrainConsole) -> None:
        self.parts = parts
        self.stop = stop
        self.out = out
        self.switch_noted = False  # the note that train.switch_epoch does nothing was printed

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        """Batches of ``epoch`` after the first ``skip`` (resume); worker errors as one line."""
        self.parts.sampler.set_epoch(epoch, skip)
        # Worker seeds (only used by code outside the seeded transforms) depend on (seed, epoch) too.
        self.parts.loader.generator.manual_seed(self.parts.recipe.train.seed * 100_003 + epoch)
        self._select_stage(epoch)
        try:
            yield from iterate_batches(self.parts.loader)
        except Exception:
            # Ctrl-C also reaches the DataLoader workers, which exit; that is the stop, not an error.
            if self.stop.requested:
                raise StopRequested from None
            raise

    def _select_stage(self, epoch: int) -> None:
        """Activate the second stage of a staged pipeline (RTMDet: weak, without Mosaic/MixUp) from
        ``train.switch_epoch`` on, as upstream's PipelineSwitchHook does before that epoch.

        Called before the epoch's DataLoader iterator exists, so even persistent workers (which read
        the stage from shared memory per sample) produce and prefetch the new epoch with the new stage.
        """
        pipeline, switch = self.parts.train_set.transforms, self.parts.recipe.train.switch_epoch
        if switch is None:
            return
        if not isinstance(pipeline, StagedPipeline) or len(pipeline) < 2:
            if not self.switch_noted:
                self.switch_noted = True
                self.out.print(
                    f"note: train.switch_epoch={switch} has no effect: data.train_pipeline "
                    f"{self.parts.recipe.data.train_pipeline!r} has a single stage (rtmdet_strong has two)"
                )
            return
        wanted = pipeline.names[1] if epoch >= switch else pipeline.names[0]
        if pipeline.stage != wanted:
            pipeline.set_stage(wanted)
            self.out.print(
                f"switching to the {wanted} pipeline at epoch {epoch + 1} (train.switch_epoch={switch})"
            )
