"""Batching, normalisation and a reproducibly seeded DataLoader.

The model side (MMDetection's ``DetDataPreprocessor``) converts to float, optionally swaps BGR→RGB,
subtracts the mean and divides by the std — in that order and in float32 — and pads the *normalised*
batch. :func:`normalize` does the same operations so the result is bit-identical to upstream's
``inputs``; keeping images uint8 until then makes worker → main-process transfer 4x smaller.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from odcli.data.transforms import Sample
from odcli.data.workers import cap_workers
from odcli.errors import OdetError

__all__ = [
    "META_KEYS",
    "SeededIndexSampler",
    "ShardedBatchSampler",
    "build_loader",
    "build_train_loader",
    "collate",
    "iterate_batches",
    "normalize",
]

#: Per-image metadata carried from the pipeline into the batch.
META_KEYS = ("image_id", "file_name", "ori_shape", "img_shape", "pad_shape", "scale_factor")


def collate(
    samples: Sequence[Sample], *, pad_value: int = 114, size_divisor: int = 1
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """Stack samples into a batch.

    Args:
        samples: B samples (images (H_i, W_i, 3) uint8 BGR).
        pad_value: uint8 fill for images smaller than the batch canvas (bottom/right).
        size_divisor: round the canvas up to a multiple of this (1 = the largest H, W).

    Returns:
        images: (B, 3, H, W) uint8 **BGR**, CHW — float32 when any sample's image is float (PP-YOLOE's
            training pipeline keeps upstream's unclipped float pixels: :mod:`odcli.data.ppdet_transforms`).
        targets: B dicts ``{"boxes": (N_i, 4) float32 xyxy pixels, "labels": (N_i,) int64}``.
        metas: B dicts with :data:`META_KEYS` (shapes (h, w), ``scale_factor`` (sx, sy)).

    Upstream pads with 0 *after* normalising; to reproduce that on a batch with mixed sizes pass the
    per-image content shapes to :func:`normalize` as ``valid_hw``.
    """
    if not samples:
        raise ValueError("collate() needs at least one sample")
    h = max(int(s["img"].shape[0]) for s in samples)
    w = max(int(s["img"].shape[1]) for s in samples)
    if size_divisor > 1:
        h, w = math.ceil(h / size_divisor) * size_divisor, math.ceil(w / size_divisor) * size_divisor
    floats = any(s["img"].dtype != np.uint8 for s in samples)
    images = torch.full((len(samples), 3, h, w), pad_value, dtype=torch.float32 if floats else torch.uint8)
    targets: list[dict[str, torch.Tensor]] = []
    metas: list[dict[str, Any]] = []
    for i, s in enumerate(samples):
        img = torch.from_numpy(np.ascontiguousarray(s["img"]))
        images[i, :, : img.shape[0], : img.shape[1]] = img.permute(2, 0, 1)
        targets.append(
            {
                "boxes": torch.from_numpy(np.asarray(s["boxes"], dtype=np.float32).reshape(-1, 4)),
                "labels": torch.from_numpy(np.asarray(s["labels"], dtype=np.int64).reshape(-1)),
            }
        )
        metas.append({k: s[k] for k in META_KEYS})  # type: ignore[literal-required]
    return images, targets, metas


BatchTransform = Callable[[list[Sample]], list[Sample]]
"""A batch-level transform run before :func:`collate` (e.g. PP-YOLOE's one-size-per-batch resize)."""


def _transform_then_collate(
    samples: Sequence[Sample], *, batch_transform: BatchTransform, pad_value: int, size_divisor: int
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """``collate(batch_transform(samples))``: a module-level function so that workers can pickle it."""
    return collate(batch_transform(list(samples)), pad_value=pad_value, size_divisor=size_divisor)


def make_collate_fn(
    pad_value: int = 114, size_divisor: int = 1, batch_transform: BatchTransform | None = None
) -> Callable[[Sequence[Sample]], Any]:
    """The DataLoader's ``collate_fn``: :func:`collate`, preceded by ``batch_transform`` when given.

    It runs where the batch is assembled (in the worker process with ``num_workers > 0``), so a batch
    transform works on the full-size samples there and only the collated batch crosses processes.
    """
    if batch_transform is None:
        return functools.partial(collate, pad_value=pad_value, size_divisor=size_divisor)
    return functools.partial(
        _transform_then_collate,
        batch_transform=batch_transform,
        pad_value=pad_value,
        size_divisor=size_divisor,
    )


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    to_rgb: bool = False,
    *,
    valid_hw: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """(x - mean) / std per channel, in float32, on the images' device.

    Args:
        images: (B, 3, H, W) uint8 (or float32) BGR batch (any device).
        mean: 3 values in the order of the **output** channels (RGB order when ``to_rgb``).
        std: 3 values, same order as ``mean``.
        to_rgb: reverse the channel order (BGR → RGB) before normalising.
        valid_hw: optional per-image (h, w) of real content; everything outside is set to 0 after
            normalising, which is how upstream pads a batch (RetinaNet: pad value 0 after normalise).

    Returns:
        (B, 3, H, W) float32.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"normalize expects (B, 3, H, W) images, got {tuple(images.shape)}")
    x = images.float()
    if to_rgb:
        x = x.flip(1)
    # float32 mean/std, subtract then divide: the same ops as upstream, hence bit-identical output.
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    x = (x - m) / s
    if valid_hw is not None:
        for i, (h, w) in enumerate(valid_hw):
            x[i, :, h:, :] = 0
            x[i, :, :h, w:] = 0
    return x


class SeededIndexSampler(Sampler):
    """Wrap a sampler so it yields ``(index, seed)``: one augmentation seed per sample.

    Seeds come from ``np.random.default_rng([seed, epoch])``, where the epoch counts the passes over
    this sampler (or is set by :meth:`set_epoch`, e.g. when resuming). The augmentation of every sample
    is then fixed by (seed, epoch, position), whatever the number of workers and however batches are
    spread over them.
    """

    def __init__(self, sampler: Sampler, seed: int) -> None:
        """Args: sampler: yields dataset indices; seed: base seed."""
        self.sampler = sampler
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use the seeds of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for index in self.sampler:
            yield int(index), int(gen.integers(0, 2**63 - 1))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


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
    shuffle: bool,
    num_workers: int,
    seed: int = 0,
    drop_last: bool = False,
    persistent_workers: bool = False,
    pad_value: int = 114,
    size_divisor: int = 1,
    pin_memory: bool = False,
    batch_transform: BatchTransform | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` that batches with :func:`collate`.

    Reproducibility: the shuffle order comes from a ``torch.Generator`` seeded with ``seed``; datasets
    with ``supports_seeded_index`` (e.g. ``CocoDetection``) receive ``(index, sample_seed)`` keys from
    :class:`SeededIndexSampler`, so their augmentation depends only on ``seed`` and the epoch. Other
    datasets still get distinct, ``seed``-derived worker seeds (the loader's generator).

    Args:
        dataset: map-style dataset of samples.
        batch_size: images per batch.
        shuffle: random order each epoch.
        num_workers: worker processes (0 = load in the main process).
        seed: base seed for order and augmentation.
        drop_last: drop the last incomplete batch.
        persistent_workers: keep workers alive between epochs (ignored when ``num_workers == 0``).
        pad_value: see :func:`collate`.
        size_divisor: see :func:`collate`.
        pin_memory: page-locked batches for faster host → GPU copies.
        batch_transform: run on each batch's samples before collating (see :func:`make_collate_fn`).

    Returns:
        A DataLoader yielding ``(images, targets, metas)`` as :func:`collate` returns them.
    """
    if batch_size < 1:
        raise OdetError(f"batch size must be >= 1, got {batch_size} (check the recipe's batch_size)")
    if num_workers < 0:
        raise OdetError(f"num_workers must be >= 0, got {num_workers} (check the recipe's num_workers)")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise OdetError("the dataset is empty; check the annotation file and data filters")
    num_workers = cap_workers(num_workers)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    sampler: Sampler = (
        RandomSampler(dataset, generator=generator)  # type: ignore[arg-type]
        if shuffle
        else SequentialSampler(dataset)  # type: ignore[arg-type]
    )
    if getattr(dataset, "supports_seeded_index", False):
        sampler = SeededIndexSampler(sampler, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=make_collate_fn(pad_value, size_divisor, batch_transform),
        drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
    )


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


def build_train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int = 0,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
    persistent_workers: bool = False,
    pad_value: int = 114,
    size_divisor: int = 1,
    pin_memory: bool = False,
    batch_transform: BatchTransform | None = None,
) -> DataLoader:
    """The training DataLoader: shuffled, sharded over ``world_size`` ranks, resumable mid-epoch.

    Batches come from a :class:`ShardedBatchSampler` (``loader.batch_sampler``): call its
    ``set_epoch(epoch, skip_batches)`` before iterating. Arguments as :func:`build_loader`, plus
    ``rank`` / ``world_size`` (``batch_size`` is per rank).
    """
    if num_workers < 0:
        raise OdetError(f"num_workers must be >= 0, got {num_workers} (check the recipe's num_workers)")
    sampler = ShardedBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        seeded_keys=bool(getattr(dataset, "supports_seeded_index", False)),
    )
    num_workers = cap_workers(num_workers)
    # Only seeds worker processes (for code outside the seeded transforms); the trainer reseeds it
    # per epoch so that it, too, depends on (seed, epoch) alone.
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


def prepare_batch(
    images: torch.Tensor, metas: Sequence[dict[str, Any]], spec: Any, device: torch.device | str
) -> torch.Tensor:
    """Collated uint8 batch → the network input on ``device``, as the model's ``InputSpec`` says.

    Without a fixed pad size (``spec.pad_to is None``, e.g. RetinaNet) upstream pads the batch
    canvas *after* normalising, with 0: everything outside each image's ``img_shape`` is zeroed.
    With ``pad_to`` (RTMDet) the pipeline already padded each image with ``pad_value``.
    """
    valid_hw = [tuple(m["img_shape"]) for m in metas] if spec.pad_to is None else None
    return normalize(
        images.to(device, non_blocking=True), spec.mean, spec.std, spec.to_rgb, valid_hw=valid_hw
    )
