"""The detection sample and the transform convention every augmentation in :mod:`odcli.data` follows.

Conventions (every transform, MMDetection- and PaddleDetection-style alike):

* ``sample["img"]`` is (H, W, 3) uint8 **BGR**; ``sample["boxes"]`` is (N, 4) float32 xyxy in pixels of
  the *current* image; ``sample["labels"]`` is (N,) int64. Boxes always move with the pixels.
* Sizes given to constructors are **(w, h)**, as in the upstream configs (``scale=(1333, 800)``); shapes
  stored in the sample (``ori_shape``, ``img_shape``, ``pad_shape``) are **(h, w)**.
* ``scale_factor`` is (sx, sy) = (new_w / w, new_h / h), cumulative from the original image.
* A transform is called as ``t(sample, rng)`` and returns a new dict (or the input itself when it
  changes nothing); the input dict and its arrays are never written to. Randomness comes only
  from the ``rng`` (``np.random.Generator``) argument, so one seed reproduces one augmentation.
  :class:`Compose` supplies the generator when it is not given. The dataset passes one seeded per
  sample by :func:`odcli.data.loader.build_loader` (reproducible for a given loader seed whatever
  the number of workers); otherwise :func:`process_rng` is used, a per-process generator seeded
  from ``torch.initial_seed()`` — which PyTorch sets to a distinct, loader-seeded value in each
  DataLoader worker, so workers never repeat each other's draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import numpy as np
import torch

__all__ = ["Compose", "Sample", "Transform", "image_sample", "process_rng", "replace_sample"]


class Sample(TypedDict):
    """One detection sample; a plain ``dict`` at runtime.

    Keys:
        img: (H, W, 3) uint8 BGR image.
        boxes: (N, 4) float32 xyxy, pixels of ``img``.
        labels: (N,) int64 contiguous labels 0..K-1.
        image_id: COCO image id.
        file_name: file name as written in the annotation file.
        ori_shape: (h, w) of the decoded file.
        img_shape: (h, w) of the image content (the padded shape after an RTMDet-style ``Pad``).
        pad_shape: (h, w) of ``img`` including padding.
        scale_factor: (sx, sy) = resized / original size per axis.
    """

    img: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    file_name: str
    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    scale_factor: tuple[float, float]


Transform = Callable[[Sample, np.random.Generator], Sample]
"""A transform: ``(sample, rng) -> new sample``."""

_process_rng_state: tuple[int, np.random.Generator] | None = None


def process_rng() -> np.random.Generator:
    """The fallback generator of this process, seeded from ``torch.initial_seed()``.

    It is re-created whenever the value of ``torch.initial_seed()`` changes: in a fresh DataLoader
    worker (PyTorch gives each worker ``base_seed + worker_id``, drawn from the loader's generator)
    and after a ``torch.manual_seed`` call with a new value in the main process (calling it again with
    the *same* value does not restart the stream). Forked workers therefore never share a stream
    inherited from the parent.
    """
    global _process_rng_state
    seed = torch.initial_seed()
    if _process_rng_state is None or _process_rng_state[0] != seed:
        _process_rng_state = (seed, np.random.default_rng(seed))
    return _process_rng_state[1]


def image_sample(img: np.ndarray, *, file_name: str = "", image_id: int = 0) -> Sample:
    """A :class:`Sample` of one unannotated (H, W, 3) uint8 BGR image, before any transform: what a
    test pipeline starts from at inference."""
    h, w = img.shape[:2]
    return {
        "img": img,
        "boxes": np.zeros((0, 4), np.float32),
        "labels": np.zeros((0,), np.int64),
        "image_id": image_id,
        "file_name": file_name,
        "ori_shape": (h, w),
        "img_shape": (h, w),
        "pad_shape": (h, w),
        "scale_factor": (1.0, 1.0),
    }


def replace_sample(sample: Sample, **changes: object) -> Sample:
    """A shallow copy of ``sample`` with some keys replaced (arrays are not copied): how a transform
    returns its result without writing to its input."""
    out = dict(sample)
    out.update(changes)
    return out  # type: ignore[return-value]


class Compose:
    """Apply transforms in order, threading one random generator through them."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        """Args: transforms: callables ``(sample, rng) -> sample``."""
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """Run the pipeline; without ``rng``, :func:`process_rng` supplies the randomness."""
        if rng is None:
            rng = process_rng()
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"
