"""MMDetection 3.3 photometric transforms: the YOLOX HSV colour jitter of RTMDet's pipelines.

Conventions of :mod:`odcli.data.sample`: ``t(sample, rng) -> new sample``; only the pixels change.
"""

from __future__ import annotations

import cv2
import numpy as np

from odcli.data.sample import Sample, replace_sample

__all__ = ["YOLOXHSVRandomAug"]


class YOLOXHSVRandomAug:
    """Random hue/saturation/value shift (upstream ``YOLOXHSVRandomAug``).

    Each of H, S, V independently gets, with probability 1/2, an integer offset drawn uniformly in
    ±delta and truncated toward zero; H wraps modulo 180 (OpenCV's uint8 hue range), S and V saturate
    to 0..255. The image goes BGR → HSV → BGR even when every offset is 0, as upstream, because that
    round trip itself changes a few pixel values. Offsets are applied with per-channel lookup tables,
    which gives the same result as integer arithmetic on every pixel, faster.
    """

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30) -> None:
        """Args: maximum absolute offsets in OpenCV uint8 HSV units (hue 0..179, others 0..255)."""
        self.deltas = np.array([hue_delta, saturation_delta, value_delta], dtype=np.float64)

    def gains(self, rng: np.random.Generator) -> np.ndarray:
        """Draw the (3,) int16 (dh, ds, dv) offsets: uniform in ±delta, each kept with probability 1/2."""
        g = rng.uniform(-1.0, 1.0, 3) * self.deltas
        g *= rng.integers(0, 2, 3)
        return g.astype(np.int16)  # truncation toward zero, as upstream

    @staticmethod
    def apply(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """Apply (dh, ds, dv) offsets to an (H, W, 3) uint8 BGR image; returns a new image."""
        values = np.arange(256, dtype=np.int16)
        lut = np.stack(
            [
                (values + gains[0]) % 180,  # non-negative: numpy's % takes the divisor's sign
                np.clip(values + gains[1], 0, 255),
                np.clip(values + gains[2], 0, 255),
            ],
            axis=-1,
        ).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv = cv2.LUT(hsv, lut.reshape(256, 1, 3))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Colour-jitter ``sample["img"]``; boxes are untouched."""
        return replace_sample(sample, img=self.apply(sample["img"], self.gains(rng)))

    def __repr__(self) -> str:
        h, s, v = (int(d) for d in self.deltas)
        return f"YOLOXHSVRandomAug(hue_delta={h}, saturation_delta={s}, value_delta={v})"
