"""PaddleDetection's per-batch resize for PP-YOLOE (``BatchRandomResize``) and the batch's seed.

:class:`BatchRandomResize` is a *batch* transform ``bt(samples) -> samples``: one size and one cv2
interpolation for the whole batch. The loader runs it inside the collate function
(``build_loader(..., batch_transform=...)``). Its randomness comes from the ``batch_seed`` that the
last per-sample step, :class:`DrawBatchSeed`, draws from each sample's own generator, so the batch's
size is fixed by the loader seed and epoch whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from odcli.data.geometric import rescaled_sample
from odcli.data.sample import Sample, process_rng, replace_sample
from odcli.errors import OdetError

__all__ = ["CV2_INTERPOLATIONS", "PPYOLOE_TARGET_SIZES", "BatchRandomResize", "DrawBatchSeed", "batch_rng"]

#: BatchRandomResize's square sides in PP-YOLOE's reader: 320 … 768 pixels in steps of 32.
PPYOLOE_TARGET_SIZES: tuple[int, ...] = tuple(range(320, 769, 32))

#: The interpolations BatchRandomResize draws from with ``random_interp`` (upstream's list and order).
CV2_INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos4": cv2.INTER_LANCZOS4,
}


class DrawBatchSeed:
    """Store one integer drawn from the sample's generator as ``sample["batch_seed"]``.

    The last per-sample step of a pipeline with a batch transform: :func:`batch_rng` combines the
    seeds of a batch's samples, so batch-level randomness is as reproducible as the samples' own.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Add ``batch_seed`` (an int in [0, 2⁶³)) to a copy of ``sample``."""
        return replace_sample(sample, batch_seed=int(rng.integers(0, 2**63 - 1)))

    def __repr__(self) -> str:
        return "DrawBatchSeed()"


def batch_rng(samples: Sequence[Sample]) -> np.random.Generator:
    """The generator of a batch: seeded by its samples' ``batch_seed`` values, in order (see
    :class:`DrawBatchSeed`); :func:`~odcli.data.sample.process_rng` if any sample has none."""
    seeds = [s.get("batch_seed") for s in samples]
    if not seeds or any(v is None for v in seeds):
        return process_rng()
    return np.random.default_rng([int(v) for v in seeds])  # type: ignore[arg-type]


class BatchRandomResize:
    """Resize every image of a batch to one size drawn for the batch (upstream ``BatchRandomResize``).

    With ``random_size`` a side t is drawn uniformly from ``target_sizes``, else the single entry is
    used; with ``random_interp`` the cv2 interpolation is drawn uniformly from
    :data:`CV2_INTERPOLATIONS`, else ``interpolation`` (upstream's default: nearest). With
    ``keep_ratio=False`` (PP-YOLOE) each image becomes exactly t × t; with ``keep_ratio`` it is scaled
    by t / max(h, w). As upstream: cv2.resize with per-axis factors (fx, fy) on the image as it comes
    (uint8 or float32), then float32; boxes multiplied per axis and clipped to the new image;
    ``scale_factor`` multiplied by (fx, fy); ``img_shape``/``pad_shape`` set to the new (h, w).

    Called as ``bt(samples)`` (the batch's generator from :func:`batch_rng`) or ``bt(samples, rng)``.
    """

    def __init__(
        self,
        target_sizes: Sequence[int] = PPYOLOE_TARGET_SIZES,
        random_size: bool = True,
        random_interp: bool = True,
        keep_ratio: bool = False,
        interpolation: str = "nearest",
    ) -> None:
        """Args: target_sizes: square sides, pixels; random_size: draw one per batch (else exactly one
        size must be given); random_interp: draw the interpolation per batch; keep_ratio: keep each
        image's aspect ratio; interpolation: a key of :data:`CV2_INTERPOLATIONS` when not random."""
        sizes = list(target_sizes)
        if not sizes or any(int(t) != t or t <= 0 for t in sizes):
            raise OdetError(f"BatchRandomResize target sizes must be positive integers, got {sizes}")
        if not random_size and len(sizes) != 1:
            raise OdetError(f"BatchRandomResize without random_size needs exactly one size, got {sizes}")
        if interpolation not in CV2_INTERPOLATIONS:
            choices = ", ".join(CV2_INTERPOLATIONS)
            raise OdetError(
                f"BatchRandomResize interpolation must be one of {choices}, got {interpolation!r}"
            )
        self.target_sizes = tuple(int(t) for t in sizes)
        self.random_size = bool(random_size)
        self.random_interp = bool(random_interp)
        self.keep_ratio = bool(keep_ratio)
        self.interpolation = interpolation

    def draw(self, rng: np.random.Generator) -> tuple[int, str]:
        """The batch's (side t in pixels, interpolation name)."""
        t = self.target_sizes[0]
        if self.random_size:
            t = self.target_sizes[int(rng.integers(0, len(self.target_sizes)))]
        names = list(CV2_INTERPOLATIONS)
        interp = names[int(rng.integers(0, len(names)))] if self.random_interp else self.interpolation
        return t, interp

    @staticmethod
    def resize(sample: Sample, side: int, interpolation: str, keep_ratio: bool = False) -> Sample:
        """Resize one sample to ``side`` (see the class docstring); returns a new sample."""
        img = sample["img"]
        h, w = img.shape[:2]
        if keep_ratio:
            fx = fy = side / max(h, w)
        else:
            fx, fy = side / w, side / h
        out = cv2.resize(img, None, fx=fx, fy=fy, interpolation=CV2_INTERPOLATIONS[interpolation])
        return rescaled_sample(sample, out.astype(np.float32, copy=False), fx, fy)

    def __call__(self, samples: Sequence[Sample], rng: np.random.Generator | None = None) -> list[Sample]:
        """Resize all ``samples`` with one drawn (size, interpolation)."""
        if rng is None:
            rng = batch_rng(samples)
        side, interp = self.draw(rng)
        return [self.resize(s, side, interp, self.keep_ratio) for s in samples]

    def __repr__(self) -> str:
        return (
            f"BatchRandomResize(target_sizes={list(self.target_sizes)}, random_size={self.random_size}, "
            f"random_interp={self.random_interp}, keep_ratio={self.keep_ratio}, "
            f"interpolation={self.interpolation!r})"
        )
