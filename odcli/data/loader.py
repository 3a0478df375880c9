"""The DataLoader every command uses: seeded, sharded over ranks, resumable mid-epoch.

One builder, :func:`build_loader`, for training (shuffled, sharded, ``drop_last``), evaluation (dataset
order) and benchmarks. Its batches come from a :class:`~odcli.data.sampler.ShardedBatchSampler`
(``loader.batch_sampler``), whose stream of ``(index, seed)`` keys fixes the order and each sample's
augmentation from the seed and the epoch alone, whatever the number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from odcli.data.collate import BatchTransform, make_collate_fn
from odcli.data.sampler import ShardedBatchSampler
from odcli.data.workers import cap_workers
from odcli.errors import OdetError

__all__ = ["build_loader", "iterate_batches"]


def _seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's global generators in a worker from its torch seed, for any code that
    still uses them (PyTorch already gives each worker a distinct ``torch.initial_seed()``)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    persistent_workers: bool = False,
    pad_value: int = 114,
    size_divisor: int = 1,
    pin_memory: bool = False,
    batch_transform: BatchTransform | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` that batches with :func:`~odcli.data.collate.collate`.

    Order and augmentation: epoch ``e`` is the stream of :class:`~odcli.data.sampler.ShardedBatchSampler`
    for ``(seed, e)`` — a permutation (``shuffle``) or the dataset order, and one augmentation seed per
    position. Datasets with ``supports_seeded_index`` (e.g. ``CocoDetection``) receive ``(index,
    sample_seed)`` keys, so their augmentation depends only on ``seed`` and the epoch; others receive
    bare indices. The epoch counts the passes over the loader, or is set with
    ``loader.batch_sampler.set_epoch(epoch, skip_batches)`` (resume). ``loader.generator``, seeded
    with ``seed``, only seeds the worker processes (:func:`torch.initial_seed` there), for code
    outside the seeded transforms; the trainer reseeds it per epoch.

    Args:
        dataset: map-style dataset of samples (N > 0).
        batch_size: images per batch on this rank.
        num_workers: worker processes (0 = load in the main process); capped at the CPUs available.
        shuffle: a new random order each epoch (else the dataset order).
        seed: base seed for order and augmentation.
        drop_last: drop the incomplete last global batch (kept when it is the only one, see
            :class:`~odcli.data.sampler.ShardedBatchSampler`).
        rank, world_size: this process and the number of processes sharing each global batch.
        persistent_workers: keep workers alive between epochs (ignored when ``num_workers == 0``).
        pad_value: see :func:`~odcli.data.collate.collate`.
        size_divisor: see :func:`~odcli.data.collate.collate`.
        pin_memory: page-locked batches for faster host → GPU copies.
        batch_transform: run on each batch's samples before collating (see
            :func:`~odcli.data.collate.make_collate_fn`).

    Returns:
        A DataLoader yielding ``(images, targets, metas)`` as :func:`~odcli.data.collate.collate`
        returns them; ``loader.batch_sampler`` is its :class:`~odcli.data.sampler.ShardedBatchSampler`.

    Raises:
        OdetError: ``batch_size < 1``, ``num_workers < 0`` or an empty dataset.
    """
    if num_workers < 0:
        raise OdetError(f"num_workers must be >= 0, got {num_workers} (check the recipe's num_workers)")
    sampler = ShardedBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        seeded_keys=bool(getattr(dataset, "supports_seeded_index", False)),
    )
    num_workers = cap_workers(num_workers)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=make_collate_fn(pad_value, size_divisor, batch_transform),
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
    )


def iterate_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``loader``, turning a user error raised inside a worker back into a one-line error.

    PyTorch re-raises a worker's exception with the worker's whole traceback as its message; the
    original one-line message is the last line of that text.
    """
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except OdetError as exc:
            text = str(exc)
            if "Traceback" not in text:
                raise
            last = text.strip().splitlines()[-1]
            raise OdetError(last.partition("OdetError: ")[2] or last) from None
        yield batch
