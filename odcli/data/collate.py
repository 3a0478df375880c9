"""Batching: samples → one uint8 batch tensor, per-image targets and metadata (the DataLoader's
``collate_fn``).

Images stay uint8 until :func:`odcli.data.normalize.normalize` runs on the batch (on the model's
device): a worker → main-process transfer 4x smaller than float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from odcli.data.sample import Sample

__all__ = ["META_KEYS", "BatchTransform", "collate", "make_collate_fn"]

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
    per-image content shapes to :func:`~odcli.data.normalize.normalize` as ``valid_hw``.
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
