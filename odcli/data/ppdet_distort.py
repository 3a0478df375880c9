"""PaddleDetection's colour distortion (``RandomDistort``) for PP-YOLOE, written for BGR images.

Upstream decodes to **RGB**; odet keeps images **BGR**, so the channel-mixing matrices and luma weights
below are upstream's reversed. The result is **float32, neither clipped nor rounded** whenever a
change is applied (a contrast of 1.5 turns 200 into 300), as upstream's (to float32 rounding: its hue
step leaves float64 until the next step casts it back). See :mod:`odcli.data.ppdet_transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from odcli.data.sample import Sample, replace_sample
from odcli.errors import OdetError

__all__ = ["RandomDistort", "distort_brightness", "distort_contrast", "distort_hue", "distort_saturation"]

# Luma weights of R, G, B (ITU-R 601), and the RGB ↔ YIQ matrices upstream's hue rotation uses.
_LUMA_RGB = np.array([0.299, 0.587, 0.114])
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ_TO_RGB = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])


# --------------------------------------------------------------------------------- colour distortion
def distort_hue(img: np.ndarray, delta: float) -> np.ndarray:
    """Rotate the chroma plane (I, Q) of YIQ by ``delta · π`` radians.

    Upstream multiplies its hue draw by π, not π/180, so its range [-18, 18] spans ±18π: in effect a
    uniformly random rotation. Reproduced as is.

    Args:
        img: (H, W, 3) BGR image, any numeric dtype (not modified).
        delta: rotation in units of π radians.

    Returns:
        (H, W, 3) float32 BGR image, unclipped.
    """
    u, w = math.cos(delta * math.pi), math.sin(delta * math.pi)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
    # Upstream right-multiplies RGB row vectors by M = (YIQ→RGB · rot · RGB→YIQ)ᵀ. For BGR rows,
    # x_bgr = x_rgb · P with P the channel reversal, so the equivalent matrix is P·M·P = M[::-1, ::-1].
    m_rgb = (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T
    m_bgr = np.ascontiguousarray(m_rgb[::-1, ::-1])
    flat = img.reshape(-1, 3).astype(np.float64) @ m_bgr  # float64 like upstream's np.dot
    return flat.astype(np.float32).reshape(img.shape)


def distort_saturation(img: np.ndarray, delta: float) -> np.ndarray:
    """Blend with the grey (luma) image: ``img · delta + luma · (1 - delta)``.

    Args:
        img: (H, W, 3) BGR image (not modified).
        delta: saturation factor (1 = unchanged).

    Returns:
        (H, W, 3) float32 BGR image, unclipped.
    """
    x = img.astype(np.float32)
    # Luma weights in BGR order (upstream's are for RGB).
    grey = (x * _LUMA_RGB[::-1].astype(np.float32)).sum(axis=2, keepdims=True)
    grey *= np.float32(1.0 - delta)
    x *= np.float32(delta)
    x += grey
    return x


def distort_contrast(img: np.ndarray, delta: float) -> np.ndarray:
    """Upstream's "contrast": every value multiplied by ``delta`` (no mean is subtracted).

    Returns a new (H, W, 3) float32 image, unclipped.
    """
    x = img.astype(np.float32)
    x *= np.float32(delta)
    return x


def distort_brightness(img: np.ndarray, delta: float) -> np.ndarray:
    """Upstream's "brightness": ``delta`` added to every value (its default range 0.5–1.5 is thus a
    shift of about one grey level). Returns a new (H, W, 3) float32 image, unclipped."""
    x = img.astype(np.float32)
    x += np.float32(delta)
    return x


def _check_triple(name: str, value: Sequence[float]) -> tuple[float, float, float]:
    """Validate a (low, high, skip_prob) triple of RandomDistort."""
    if len(value) != 3:
        raise OdetError(f"RandomDistort {name} must be [low, high, skip_prob], got {list(value)}")
    lo, hi, p = (float(v) for v in value)
    if not lo <= hi or not 0.0 <= p <= 1.0:
        raise OdetError(f"RandomDistort {name} needs low <= high and 0 <= skip_prob <= 1, got {list(value)}")
    return lo, hi, p


class RandomDistort:
    """Random hue, saturation, contrast and brightness changes (upstream ``RandomDistort``).

    Each setting is upstream's triple ``(low, high, skip_prob)``: the change is **skipped** with
    probability ``skip_prob`` (upstream's documented convention), else its amount is drawn uniformly in
    [low, high]. With ``random_apply`` (upstream's default) the four changes run in a random order and
    the first ``count`` of that order are tried; otherwise the fixed SSD order brightness → (contrast
    before or after, at random) saturation → hue, then, with ``random_channel``, a random channel
    permutation with probability 1/2. See :func:`distort_hue` … :func:`distort_brightness` for the maths;
    the result is float32 and unclipped whenever a change was applied, the input when none was.
    """

    def __init__(
        self,
        hue: Sequence[float] = (-18.0, 18.0, 0.5),
        saturation: Sequence[float] = (0.5, 1.5, 0.5),
        contrast: Sequence[float] = (0.5, 1.5, 0.5),
        brightness: Sequence[float] = (0.5, 1.5, 0.5),
        random_apply: bool = True,
        count: int = 4,
        random_channel: bool = False,
    ) -> None:
        """Args: hue (units of π radians), saturation, contrast (factors), brightness (added grey
        levels): (low, high, skip_prob); random_apply: random order; count: how many of the four
        (random order only); random_channel: channel shuffle (fixed order only)."""
        self.hue = _check_triple("hue", hue)
        self.saturation = _check_triple("saturation", saturation)
        self.contrast = _check_triple("contrast", contrast)
        self.brightness = _check_triple("brightness", brightness)
        self.random_apply = bool(random_apply)
        self.count = int(count)
        self.random_channel = bool(random_channel)

    def _maybe(self, which: str, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply change ``which`` unless its skip draw says no."""
        lo, hi, skip = getattr(self, which)
        if rng.random() < skip:
            return img
        delta = rng.uniform(lo, hi)
        fn = {
            "hue": distort_hue,
            "saturation": distort_saturation,
            "contrast": distort_contrast,
            "brightness": distort_brightness,
        }[which]
        return fn(img, delta)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Distort ``sample["img"]``'s colours; boxes and shapes are untouched."""
        img = sample["img"]
        if self.random_apply:
            order = ("brightness", "contrast", "saturation", "hue")
            for k in rng.permutation(len(order))[: self.count]:
                img = self._maybe(order[int(k)], img, rng)
        else:
            img = self._maybe("brightness", img, rng)
            contrast_first = bool(rng.integers(0, 2))
            if contrast_first:
                img = self._maybe("contrast", img, rng)
            img = self._maybe("saturation", img, rng)
            img = self._maybe("hue", img, rng)
            if not contrast_first:
                img = self._maybe("contrast", img, rng)
            if self.random_channel and rng.integers(0, 2):
                img = img[..., rng.permutation(3)]  # fancy indexing: a copy
        if img is sample["img"]:
            return sample
        return replace_sample(sample, img=img)

    def __repr__(self) -> str:
        return (
            f"RandomDistort(hue={list(self.hue)}, saturation={list(self.saturation)}, "
            f"contrast={list(self.contrast)}, brightness={list(self.brightness)}, "
            f"random_apply={self.random_apply}, count={self.count}, random_channel={self.random_channel})"
        )
