"""MMDetection 3.3 / MMCV 2 geometric transforms: resize, random resize, pad, random crop, flip, and
the removal of degenerate boxes.

They follow the conventions of :mod:`odcli.data.sample` (``t(sample, rng) -> new sample``, sizes given
as (w, h), shapes stored as (h, w), boxes (N, 4) float32 xyxy pixels that move with the pixels, inputs
never written to). :func:`rescale_size` and :func:`clip_boxes` are the box/size rules shared with the
multi-image transforms (:mod:`odcli.data.mix`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from odcli.data.checks import check_pad_value, check_prob, check_size
from odcli.data.sample import Sample, replace_sample
from odcli.errors import OdetError

__all__ = [
    "FilterDegenerate",
    "Pad",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "Resize",
    "clip_boxes",
    "rescale_size",
    "rescaled_sample",
    "resize_sample",
]


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int, float]:
    """Size of a keep-ratio resize, as ``mmcv.imrescale`` computes it.

    The image is scaled by s = min(max(scale) / max(h, w), min(scale) / min(h, w)) — the largest factor
    that fits the long side in the long edge of ``scale`` and the short side in its short edge — and
    each side rounded half up: (int(w·s + 0.5), int(h·s + 0.5)).

    Args:
        w: image width, pixels.
        h: image height, pixels.
        scale: target (w, h); only its long and short edges matter.

    Returns:
        (new_w, new_h, s).
    """
    s = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * s + 0.5), int(h * s + 0.5), s


_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


class Resize:
    """Resize the image (cv2 bilinear or ``interpolation``) and scale the boxes with it (upstream ``Resize``).

    With ``keep_ratio`` the new size follows :func:`rescale_size`; otherwise the image is resized to
    exactly ``scale`` = (w, h). ``scale_factor`` becomes (new_w / w, new_h / h) times its previous
    value (upstream overwrites it; with one resize per pipeline both agree). Boxes are multiplied per
    axis in float32 and clipped to the new image, as upstream does (``clip_object_border=True``).
    ``img_shape`` and ``pad_shape`` become the new (h, w).
    """

    def __init__(
        self, scale: tuple[int, int] = (640, 640), keep_ratio: bool = True, interpolation: str = "bilinear"
    ) -> None:
        """Args: scale: target (w, h) pixels; keep_ratio: keep the aspect ratio (fit inside ``scale``);
        interpolation: ``"bilinear"`` or ``"cubic"`` (PaddleDetection's ``interp: 2``)."""
        self.scale = check_size("resize scale", scale)
        self.keep_ratio = keep_ratio
        if interpolation not in _INTERPOLATIONS:
            choices = ", ".join(_INTERPOLATIONS)
            raise OdetError(f"resize interpolation must be one of {choices}, got {interpolation!r}")
        self.interpolation = interpolation

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """Resize ``sample`` to ``self.scale`` (``rng`` is unused)."""
        return resize_sample(sample, self.scale, self.keep_ratio, self.interpolation)

    def __repr__(self) -> str:
        interp = self.interpolation
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio}, interpolation={interp!r})"


def resize_sample(
    sample: Sample, scale: tuple[int, int], keep_ratio: bool, interpolation: str = "bilinear"
) -> Sample:
    """Functional form of :class:`Resize`; ``scale`` is (w, h)."""
    img = sample["img"]
    h, w = img.shape[:2]
    if keep_ratio:
        new_w, new_h, _ = rescale_size(w, h, scale)
    else:
        new_w, new_h = scale
    # Always call cv2.resize, even for an unchanged size, exactly as mmcv does.
    out = cv2.resize(img, (new_w, new_h), interpolation=_INTERPOLATIONS[interpolation])
    return rescaled_sample(sample, out, new_w / w, new_h / h)


def rescaled_sample(sample: Sample, img: np.ndarray, sx: float, sy: float) -> Sample:
    """``sample`` with its image replaced by ``img``, a resampling of it by (sx, sy) = (new_w / w,
    new_h / h): boxes multiplied per axis in float32 and clipped to ``img``, ``img_shape`` and
    ``pad_shape`` set to its (h, w), ``scale_factor`` multiplied by (sx, sy)."""
    new_h, new_w = img.shape[:2]
    boxes = clip_boxes(sample["boxes"] * np.array([sx, sy, sx, sy], dtype=np.float32), new_w, new_h)
    psx, psy = sample["scale_factor"]
    return replace_sample(
        sample,
        img=img,
        boxes=boxes,
        img_shape=(new_h, new_w),
        pad_shape=(new_h, new_w),
        scale_factor=(psx * sx, psy * sy),
    )


def clip_boxes(boxes: np.ndarray, w: float, h: float) -> np.ndarray:
    """(N, 4) xyxy clipped to [0, w] × [0, h]; returns a new float32 array."""
    out = boxes.astype(np.float32, copy=True)
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out


class RandomResize:
    """Resize to ``scale`` × a uniform random ratio (upstream ``RandomResize`` with ``ratio_range``).

    ratio ~ U(ratio_range); target = (int(scale_w · ratio), int(scale_h · ratio)) — truncated, as
    upstream — then resized as :class:`Resize`.
    """

    def __init__(
        self,
        scale: tuple[int, int] = (640, 640),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        keep_ratio: bool = True,
    ) -> None:
        """Args: scale: base (w, h); ratio_range: (low, high) multipliers; keep_ratio: as Resize."""
        self.scale = check_size("random resize scale", scale)
        lo, hi = float(ratio_range[0]), float(ratio_range[1])
        if not 0 < lo <= hi:
            raise OdetError(f"ratio_range must satisfy 0 < low <= high, got {tuple(ratio_range)}")
        self.ratio_range = (lo, hi)
        self.keep_ratio = keep_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Resize ``sample`` to a randomly scaled target."""
        lo, hi = self.ratio_range
        ratio = lo + rng.random() * (hi - lo)
        target = (max(1, int(self.scale[0] * ratio)), max(1, int(self.scale[1] * ratio)))
        return resize_sample(sample, target, self.keep_ratio)

    def __repr__(self) -> str:
        return (
            f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio})"
        )


class Pad:
    """Pad the image at the bottom/right with a constant (upstream ``Pad``); boxes do not move.

    The target is ``size`` = (w, h) if given, else the current size, then rounded up to a multiple of
    ``size_divisor`` if given. ``pad_shape`` becomes the padded (h, w). With ``img_shape_is_padded``
    (the upstream behaviour, which RTMDet relies on) ``img_shape`` becomes the padded shape too, so
    later box clipping uses the padded canvas; set it to False to keep the content shape.
    """

    def __init__(
        self,
        size: tuple[int, int] | None = (640, 640),
        size_divisor: int | None = None,
        pad_val: int = 114,
        img_shape_is_padded: bool = True,
    ) -> None:
        """Args: size: target (w, h) or None; size_divisor: round up to a multiple of it;
        pad_val: uint8 fill value for all channels; img_shape_is_padded: see the class docstring."""
        if size is None and not size_divisor:
            raise OdetError("Pad needs a size (w, h) or a size_divisor")
        self.size = check_size("pad size", size) if size is not None else None
        if size_divisor is not None and size_divisor <= 0:
            raise OdetError(f"pad size_divisor must be positive, got {size_divisor}")
        self.size_divisor = size_divisor
        self.pad_val = check_pad_value(pad_val)
        self.img_shape_is_padded = img_shape_is_padded

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """Pad ``sample`` (``rng`` is unused)."""
        img = sample["img"]
        h, w = img.shape[:2]
        th, tw = (self.size[1], self.size[0]) if self.size is not None else (h, w)
        if self.size_divisor:
            d = self.size_divisor
            th, tw = math.ceil(th / d) * d, math.ceil(tw / d) * d
        if th < h or tw < w:
            raise OdetError(
                f"pad size {tw}x{th} is smaller than the image {w}x{h}; "
                "make the resize scale / crop size no larger than the pad size"
            )
        out = np.full((th, tw, img.shape[2]), self.pad_val, dtype=img.dtype)
        out[:h, :w] = img
        changes: dict[str, object] = {"img": out, "pad_shape": (th, tw)}
        if self.img_shape_is_padded:
            changes["img_shape"] = (th, tw)
        return replace_sample(sample, **changes)

    def __repr__(self) -> str:
        return (
            f"Pad(size={self.size}, size_divisor={self.size_divisor}, pad_val={self.pad_val}, "
            f"img_shape_is_padded={self.img_shape_is_padded})"
        )


class RandomCrop:
    """Crop a random window of ``crop_size`` = (w, h) (MMDetection's ``RandomCrop``, type 'absolute';
    PaddleDetection's ``RandomCrop`` is :class:`odcli.data.ppdet_geometric.IoUConstrainedCrop`).

    The window is min(crop, image) per side at a uniform integer offset. Boxes are shifted, clipped to
    the window, and those left with zero width or height are removed with their labels.

    Upstream (``allow_negative_crop=False``) rejects a crop that keeps no box and makes the dataset
    load another image. Here, instead, when the input has boxes: up to ``max_tries`` random offsets are
    drawn; if all lose every box, the offset is drawn among the windows that contain the centre of one
    randomly chosen box, so a box always survives and the image is kept. A sample without boxes (or
    whose boxes all lie outside the image) is cropped once at random and returned with no boxes.
    """

    def __init__(self, crop_size: tuple[int, int] = (640, 640), max_tries: int = 10) -> None:
        """Args: crop_size: window (w, h) pixels; max_tries: random offsets tried before the fallback."""
        self.crop_size = check_size("crop size", crop_size)
        self.max_tries = max(1, int(max_tries))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Crop ``sample`` at a random offset."""
        img = sample["img"]
        h, w = img.shape[:2]
        ch, cw = min(self.crop_size[1], h), min(self.crop_size[0], w)
        margin_h, margin_w = h - ch, w - cw
        boxes = sample["boxes"]

        for _ in range(self.max_tries):
            oy = int(rng.integers(0, margin_h + 1))
            ox = int(rng.integers(0, margin_w + 1))
            kept_boxes, keep = self._crop_boxes(boxes, ox, oy, cw, ch)
            if len(boxes) == 0 or keep.any():
                break
        else:
            # Every try lost all boxes: centre the choice on one box that is visible in the image.
            visible = clip_boxes(boxes, w, h)
            vis = np.flatnonzero((visible[:, 2] > visible[:, 0]) & (visible[:, 3] > visible[:, 1]))
            if len(vis):
                x1, y1, x2, y2 = visible[vis[int(rng.integers(0, len(vis)))]].astype(np.float64)
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                # Any integer offset with o <= c <= o + crop keeps a positive-area part of the box.
                ox = int(rng.integers(max(0, math.ceil(cx - cw)), min(margin_w, math.floor(cx)) + 1))
                oy = int(rng.integers(max(0, math.ceil(cy - ch)), min(margin_h, math.floor(cy)) + 1))
                kept_boxes, keep = self._crop_boxes(boxes, ox, oy, cw, ch)

        return replace_sample(
            sample,
            img=img[oy : oy + ch, ox : ox + cw].copy(),
            boxes=kept_boxes[keep],
            labels=sample["labels"][keep],
            img_shape=(ch, cw),
            pad_shape=(ch, cw),
        )

    @staticmethod
    def _crop_boxes(boxes: np.ndarray, ox: int, oy: int, cw: int, ch: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) shifted by -(ox, oy) and clipped to (cw, ch), plus the (N,) bool mask of the
        ones with positive width and height."""
        shifted = boxes - np.array([ox, oy, ox, oy], dtype=np.float32)
        clipped = clip_boxes(shifted, cw, ch)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        return clipped, keep

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, max_tries={self.max_tries})"


class RandomFlip:
    """Horizontal flip with probability ``prob``: x1' = w - x2, x2' = w - x1 (w = current image width)."""

    def __init__(self, prob: float = 0.5) -> None:
        """Args: prob: flip probability in [0, 1]."""
        self.prob = check_prob("flip probability", prob)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Flip ``sample`` left-right or return it unchanged."""
        if not rng.random() < self.prob:
            return sample
        img = sample["img"]
        w = img.shape[1]
        boxes = sample["boxes"]
        flipped = boxes.copy()
        flipped[:, 0] = w - boxes[:, 2]
        flipped[:, 2] = w - boxes[:, 0]
        return replace_sample(sample, img=np.ascontiguousarray(img[:, ::-1]), boxes=flipped)

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


class FilterDegenerate:
    """Remove boxes whose width or height is <= ``min_size`` pixels, with their labels.

    ``dropped`` counts the boxes removed by this instance in the current process (each DataLoader
    worker has its own copy, so read it in the main process only with ``num_workers=0``).
    """

    def __init__(self, min_size: float = 0.0) -> None:
        """Args: min_size: boxes need width and height strictly greater than this, pixels."""
        self.min_size = float(min_size)
        self.dropped = 0

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """Filter ``sample``'s boxes (``rng`` is unused)."""
        b = sample["boxes"]
        keep = ((b[:, 2] - b[:, 0]) > self.min_size) & ((b[:, 3] - b[:, 1]) > self.min_size)
        if keep.all():
            return sample
        self.dropped += int((~keep).sum())
        return replace_sample(sample, boxes=b[keep], labels=sample["labels"][keep])

    def __repr__(self) -> str:
        return f"FilterDegenerate(min_size={self.min_size})"
