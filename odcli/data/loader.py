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
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from odcli.data.transforms import Sample
from odcli.errors import OdetError

__all__ = ["META_KEYS", "SeededIndexSampler", "build_loader", "collate", "normalize"]

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
        images: (B, 3, H, W) uint8 **BGR**, CHW.
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
    images = torch.full((len(samples), 3, h, w), pad_value, dtype=torch.uint8)
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
        images: (B, 3, H, W) uint8 BGR batch (any device).
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

    Returns:
        A DataLoader yielding ``(images, targets, metas)`` as :func:`collate` returns them.
    """
    if batch_size < 1:
        raise OdetError(f"batch size must be >= 1, got {batch_size} (check the recipe's batch_size)")
    if num_workers < 0:
        raise OdetError(f"num_workers must be >= 0, got {num_workers} (check the recipe's num_workers)")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise OdetError("the dataset is empty; check the annotation file and data filters")
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
        collate_fn=functools.partial(collate, pad_value=pad_value, size_divisor=size_divisor),
        drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
    )


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
