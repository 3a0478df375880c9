"""PaddleDetection's zoom-out and SSD-style crop for PP-YOLOE: ``RandomExpand`` and ``RandomCrop``, the
latter named :class:`IoUConstrainedCrop` here (MMDetection's ``RandomCrop``,
:class:`odcli.data.geometric.RandomCrop`, is a different transform).

Conventions of :mod:`odcli.data.sample`; the image keeps its dtype except where upstream's becomes
float32 (the expand canvas). See :mod:`odcli.data.ppdet_transforms` for the whole reader.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from odcli.data.checks import check_prob
from odcli.data.sample import Sample, replace_sample
from odcli.errors import OdetError

__all__ = ["IoUConstrainedCrop", "RandomExpand", "iou_with_window"]


class RandomExpand:
    """Place the image at a random offset on a larger canvas filled with ``fill_value`` (upstream
    ``RandomExpand``, a zoom-out).

    With probability ``prob``: r ~ U(1, ``ratio``), canvas (int(h·r), int(w·r)) — nothing happens when
    either side would not grow — offset y ~ U{0 … H - h - 1}, x ~ U{0 … W - w - 1} (upstream's
    exclusive ``randint`` bounds), boxes shifted by (x, y). The canvas is float32 (as upstream's), so
    the fill keeps its fractional mean colour. ``img_shape``/``pad_shape`` become the canvas shape;
    ``scale_factor`` is unchanged (no resampling).

    ``prob`` is the probability of expanding. Upstream's code *returns early* when U(0, 1) < its
    ``prob`` (it expands with probability 1 - prob, unlike its docstring); at PP-YOLOE's 0.5 the two
    readings agree. To port another upstream value p, use 1 - p here.
    """

    def __init__(
        self,
        ratio: float = 4.0,
        prob: float = 0.5,
        fill_value: Sequence[float] = (123.675, 116.28, 103.53),
    ) -> None:
        """Args: ratio: largest side multiplier (> 1.01, upstream's assertion); prob: expand
        probability; fill_value: canvas colour, **RGB** as in upstream configs (reversed here for BGR)."""
        if not float(ratio) > 1.01:
            raise OdetError(f"RandomExpand ratio must be > 1.01, got {ratio}")
        if len(fill_value) != 3:
            raise OdetError(f"RandomExpand fill_value must be 3 values (R, G, B), got {list(fill_value)}")
        self.ratio = float(ratio)
        self.prob = check_prob("RandomExpand probability", prob)
        self.fill_rgb = tuple(float(v) for v in fill_value)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Expand ``sample`` or return it unchanged."""
        if not rng.random() < self.prob:
            return sample
        img = sample["img"]
        h, w = img.shape[:2]
        r = rng.uniform(1.0, self.ratio)
        big_h, big_w = int(h * r), int(w * r)
        if not (big_h > h and big_w > w):
            return sample
        y = int(rng.integers(0, big_h - h))
        x = int(rng.integers(0, big_w - w))
        canvas = np.empty((big_h, big_w, 3), np.float32)
        canvas[:] = np.array(self.fill_rgb[::-1], np.float32)  # BGR
        canvas[y : y + h, x : x + w] = img
        boxes = sample["boxes"] + np.array([x, y, x, y], np.float32)
        return replace_sample(
            sample, img=canvas, boxes=boxes, img_shape=(big_h, big_w), pad_shape=(big_h, big_w)
        )

    def __repr__(self) -> str:
        return f"RandomExpand(ratio={self.ratio}, prob={self.prob}, fill_value={list(self.fill_rgb)})"


# -------------------------------------------------------------------------------------------- crop
def iou_with_window(boxes: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """IoU of each box with one window, upstream's formula (no +1; 1e-10 added to the union).

    Args:
        boxes: (N, 4) xyxy pixels.
        window: (4,) xyxy pixels.

    Returns:
        (N,) float IoUs.
    """
    win = np.asarray(window, np.float32)
    tl = np.maximum(boxes[:, :2], win[:2])
    br = np.minimum(boxes[:, 2:], win[2:])
    inter = np.prod(br - tl, axis=1) * (tl < br).all(axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    area_win = np.prod(win[2:] - win[:2])
    return inter / (area + area_win - inter + 1e-10)


class IoUConstrainedCrop:
    """SSD-style IoU-constrained random crop: PaddleDetection's ``RandomCrop`` (not MMDetection's
    ``RandomCrop``, which is :class:`odcli.data.geometric.RandomCrop`).

    A sample without boxes is returned unchanged. Otherwise the IoU thresholds — plus a "no crop"
    entry when ``allow_no_crop`` — are shuffled and tried in turn. "No crop" returns the sample. For a
    threshold t, up to ``num_attempts`` windows are drawn: scale s ~ U(``scaling``), aspect ratio
    a ~ U(max(a_min, s²), min(a_max, s⁻²)), window (int(h·s/√a), int(w·s·√a)) at a uniform integer
    offset. A window is accepted when the largest IoU of a box with it is ≥ t (every box's, with
    ``cover_all_box``) and at least one box keeps its centre inside it (x1 ≤ cx < x2, same for y) and a
    positive area once clipped to it. Those boxes are kept — clipped and shifted into the window —
    with their labels; the others are removed. When a threshold finds no window the next one is tried;
    when none does, the sample is returned unchanged. The image keeps its dtype; ``img_shape`` and
    ``pad_shape`` become the window's shape.

    Upstream's ``is_mask_crop`` option crops polygons; odet trains on boxes only, so it is absent.
    """

    def __init__(
        self,
        aspect_ratio: Sequence[float] | None = (0.5, 2.0),
        thresholds: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
        scaling: Sequence[float] = (0.3, 1.0),
        num_attempts: int = 50,
        allow_no_crop: bool = True,
        cover_all_box: bool = False,
    ) -> None:
        """Args: aspect_ratio: (min, max) window w/h ratio relative to the image's, or None to draw
        the two sides' scales independently (then h/w of the window must lie in [0.5, 2]);
        thresholds: IoU thresholds; scaling: (min, max) window side / image side; num_attempts: windows
        per threshold; allow_no_crop: add the "no crop" choice; cover_all_box: every box must reach
        the threshold."""
        if aspect_ratio is not None:
            if len(aspect_ratio) != 2 or not 0 < aspect_ratio[0] <= aspect_ratio[1]:
                raise OdetError(
                    f"IoUConstrainedCrop aspect_ratio must be [min, max] > 0, got {list(aspect_ratio)}"
                )
            aspect_ratio = (float(aspect_ratio[0]), float(aspect_ratio[1]))
        if len(scaling) != 2 or not 0 < scaling[0] <= scaling[1] <= 1:
            raise OdetError(f"IoUConstrainedCrop scaling must be [min, max] in (0, 1], got {list(scaling)}")
        self.aspect_ratio = aspect_ratio
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scaling = (float(scaling[0]), float(scaling[1]))
        self.num_attempts = int(num_attempts)
        self.allow_no_crop = bool(allow_no_crop)
        self.cover_all_box = bool(cover_all_box)

    def _window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
        """One random window (x1, y1, x2, y2) in an (h, w) image, or None when the draw is rejected."""
        if self.aspect_ratio is not None:
            s = rng.uniform(*self.scaling)
            lo, hi = self.aspect_ratio
            a = rng.uniform(max(lo, s**2), min(hi, s**-2))
            h_scale, w_scale = s / math.sqrt(a), s * math.sqrt(a)
        else:
            h_scale, w_scale = rng.uniform(*self.scaling), rng.uniform(*self.scaling)
            if not 0.5 <= (h * h_scale) / (w * w_scale) <= 2.0:
                return None
        ch, cw = int(h * h_scale), int(w * w_scale)
        # Upstream's randint(0, h - ch) excludes h - ch; max(1, …) only avoids an empty range (a
        # window of the full side, which the draws above reach with probability 0).
        y = int(rng.integers(0, max(1, h - ch)))
        x = int(rng.integers(0, max(1, w - cw)))
        return x, y, x + cw, y + ch

    @staticmethod
    def crop_boxes(boxes: np.ndarray, window: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) clipped to ``window`` and shifted into it, and the (K,) indices of those whose
        centre lies in the window (x1 ≤ cx < x2, y likewise) and whose clipped box has positive area."""
        win = np.asarray(window, np.float32)
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, :2] = np.maximum(boxes[:, :2], win[:2]) - win[:2]
        out[:, 2:] = np.minimum(boxes[:, 2:], win[2:]) - win[:2]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        valid = ((win[:2] <= centres) & (centres < win[2:])).all(axis=1)
        valid &= (out[:, :2] < out[:, 2:]).all(axis=1)
        return out, np.flatnonzero(valid)

    def sample_crop(
        self, boxes: np.ndarray, h: int, w: int, rng: np.random.Generator
    ) -> tuple[tuple[int, int, int, int] | None, float | None]:
        """Draw the crop for boxes (N > 0, 4) in an (h, w) image: ``(window, threshold)`` of the accepted
        window, or ``(None, None)`` for no crop (drawn, or nothing found)."""
        choices: list[float | None] = list(self.thresholds)
        if self.allow_no_crop:
            choices.append(None)
        for k in rng.permutation(len(choices)):
            thresh = choices[int(k)]
            if thresh is None:
                return None, None
            for _ in range(self.num_attempts):
                window = self._window(h, w, rng)
                if window is None:
                    continue
                iou = iou_with_window(boxes, window)
                if iou.max() < thresh or (self.cover_all_box and iou.min() < thresh):
                    continue
                if len(self.crop_boxes(boxes, window)[1]):
                    return window, thresh
        return None, None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Crop ``sample`` (or return it unchanged)."""
        boxes = sample["boxes"]
        if len(boxes) == 0:
            return sample
        img = sample["img"]
        h, w = img.shape[:2]
        window, _ = self.sample_crop(boxes, h, w, rng)
        if window is None:
            return sample
        x1, y1, x2, y2 = window
        cropped, keep = self.crop_boxes(boxes, window)
        return replace_sample(
            sample,
            img=img[y1:y2, x1:x2].copy(),
            boxes=cropped[keep],
            labels=sample["labels"][keep],
            img_shape=(y2 - y1, x2 - x1),
            pad_shape=(y2 - y1, x2 - x1),
        )

    def __repr__(self) -> str:
        return (
            f"IoUConstrainedCrop(aspect_ratio={self.aspect_ratio}, thresholds={list(self.thresholds)}, "
            f"scaling={self.scaling}, num_attempts={self.num_attempts}, "
            f"allow_no_crop={self.allow_no_crop}, cover_all_box={self.cover_all_box})"
        )
