"""The order and the augmentation seeds of every epoch: one stream, sharded over ranks and resumable.

Every loader (:func:`odcli.data.loader.build_loader`) draws its batches from a
:class:`ShardedBatchSampler`, so training, evaluation and benchmarks share one definition of which
sample comes when and with which seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from odcli.errors import OdetError

__all__ = ["ShardedBatchSampler"]


class ShardedBatchSampler(Sampler[list]):
    """Batches of ``(index, seed)`` keys for one rank: the training order, sharded and resumable.

    The *global stream* of epoch ``e`` is a pure function of ``(seed, e)``: a permutation of the
    dataset and one augmentation seed per position, both from ``np.random.default_rng([seed, e])``.
    Global batch ``b`` is positions ``[b * T, (b + 1) * T)`` of that stream, ``T = batch_size *
    world_size``, and rank ``r`` takes the slice ``[b * T + r * B, b * T + (r + 1) * B)`` of it. So:

    * ``world_size`` processes with ``batch_size`` B see, together, exactly the batches one process
      with batch size ``world_size * B`` sees, each sample with the same augmentation seed;
    * resuming in the middle of an epoch is ``set_epoch(e, skip_batches=k)``: the same stream,
      minus the ``k`` global batches already trained on (no RNG state to save).

    Every rank must step the same number of times (DDP's collectives), so the stream is cut to whole
    global batches (``drop_last``), or, when that would leave nothing or ``drop_last`` is off with
    several ranks, wrapped around to fill the last one (as ``DistributedSampler`` pads). One process
    without ``drop_last`` gets a short last batch, like a plain DataLoader.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        seeded_keys: bool = True,
    ) -> None:
        """Args:
        num_samples: dataset length N (> 0).
        batch_size: images per batch on this rank (B).
        shuffle: permute the dataset each epoch (else dataset order).
        seed: base seed of order and augmentation.
        drop_last: drop the incomplete last global batch (kept when it is the only one).
        rank, world_size: this process and the number of processes.
        seeded_keys: yield ``(index, seed)`` (datasets with ``supports_seeded_index``) or bare indices.
        """
        if num_samples < 1:
            raise OdetError("the dataset is empty; check the annotation file and data filters")
        if batch_size < 1:
            raise OdetError(f"batch size must be >= 1, got {batch_size} (check the recipe's batch_size)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seeded_keys = seeded_keys
        total = self.batch_size * self.world_size
        whole = self.num_samples // total
        self.batches_per_epoch = whole if (drop_last and whole > 0) else -(-self.num_samples // total)
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Make the next pass yield epoch ``epoch``, starting after ``skip_batches`` global batches."""
        if not 0 <= skip_batches <= self.batches_per_epoch:
            raise ValueError(f"skip_batches must be in [0, {self.batches_per_epoch}], got {skip_batches}")
        self.epoch, self.skip_batches = int(epoch), int(skip_batches)

    def global_stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(N,) dataset indices and (N,) int64 augmentation seeds of epoch ``epoch``, all ranks' order."""
        gen = np.random.default_rng([self.seed, int(epoch)])
        order = gen.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = gen.integers(0, 2**63 - 1, size=self.num_samples, dtype=np.int64)
        return order, seeds

    def __iter__(self) -> Iterator[list]:
        order, seeds = self.global_stream(self.epoch)
        skip = self.skip_batches
        # The next pass is the following epoch from its start (plain loops over epochs just work).
        self.epoch, self.skip_batches = self.epoch + 1, 0
        total = self.batch_size * self.world_size
        single_short_tail = self.world_size == 1
        for b in range(skip, self.batches_per_epoch):
            start = b * total + self.rank * self.batch_size
            stop = start + self.batch_size
            if single_short_tail:
                stop = min(stop, self.num_samples)
            # Positions past N wrap to the start of the stream (padding of the last global batch).
            positions = [p % self.num_samples for p in range(start, stop)]
            if self.seeded_keys:
                yield [(int(order[p]), int(seeds[p])) for p in positions]
            else:
                yield [int(order[p]) for p in positions]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip_batches
