"""Detection transforms on :class:`Sample` dicts, with MMDetection 3.3 / MMCV 2 semantics.

Conventions (every transform):

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

import math
from collections.abc import Callable, Sequence
from typing import TypedDict

import cv2
import numpy as np
import torch

from odcli.errors import OdetError

__all__ = [
    "Compose",
    "FilterDegenerate",
    "Pad",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "Resize",
    "Sample",
    "Transform",
    "YOLOXHSVRandomAug",
    "build_test_transforms",
    "build_train_transforms",
    "process_rng",
    "rescale_size",
]


class Sample(TypedDict):
    """One detection sample; a plain ``dict`` at runtime.

    Keys:
        img: (H, W, 3) uint8 BGR image.
        boxes: (N, 4) float32 xyxy, pixels of ``img``.
        labels: (N,) int64 contiguous labels 0..K-1.
        image_id: COCO image id.
        file_name: file name as written in the annotation file.
        ori_shape: (h, w) of the decoded file.
        img_shape: (h, w) of the image content (the padded shape after an RTMDet-style :class:`Pad`).
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


def _replace(sample: Sample, **changes: object) -> Sample:
    """A shallow copy of ``sample`` with some keys replaced (arrays are not copied)."""
    out = dict(sample)
    out.update(changes)
    return out  # type: ignore[return-value]


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    """Validate a (w, h) pair of positive ints from a recipe."""
    if len(size) != 2 or any(int(v) != v or v <= 0 for v in size):
        raise OdetError(f"{name} must be two positive integers (w, h), got {tuple(size)}")
    return int(size[0]), int(size[1])


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
        self.scale = _check_size("resize scale", scale)
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


_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


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
    sx, sy = new_w / w, new_h / h
    boxes = sample["boxes"] * np.array([sx, sy, sx, sy], dtype=np.float32)
    boxes = _clip_boxes(boxes, new_w, new_h)
    psx, psy = sample["scale_factor"]
    return _replace(
        sample,
        img=out,
        boxes=boxes,
        img_shape=(new_h, new_w),
        pad_shape=(new_h, new_w),
        scale_factor=(psx * sx, psy * sy),
    )


def _clip_boxes(boxes: np.ndarray, w: float, h: float) -> np.ndarray:
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
        self.scale = _check_size("random resize scale", scale)
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
        self.size = _check_size("pad size", size) if size is not None else None
        if size_divisor is not None and size_divisor <= 0:
            raise OdetError(f"pad size_divisor must be positive, got {size_divisor}")
        self.size_divisor = size_divisor
        if not 0 <= pad_val <= 255:
            raise OdetError(f"pad value must be in 0..255 for uint8 images, got {pad_val}")
        self.pad_val = int(pad_val)
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
        return _replace(sample, **changes)

    def __repr__(self) -> str:
        return (
            f"Pad(size={self.size}, size_divisor={self.size_divisor}, pad_val={self.pad_val}, "
            f"img_shape_is_padded={self.img_shape_is_padded})"
        )


class RandomCrop:
    """Crop a random window of ``crop_size`` = (w, h) (upstream ``RandomCrop``, type 'absolute').

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
        self.crop_size = _check_size("crop size", crop_size)
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
            visible = _clip_boxes(boxes, w, h)
            vis = np.flatnonzero((visible[:, 2] > visible[:, 0]) & (visible[:, 3] > visible[:, 1]))
            if len(vis):
                x1, y1, x2, y2 = visible[vis[int(rng.integers(0, len(vis)))]].astype(np.float64)
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                # Any integer offset with o <= c <= o + crop keeps a positive-area part of the box.
                ox = int(rng.integers(max(0, math.ceil(cx - cw)), min(margin_w, math.floor(cx)) + 1))
                oy = int(rng.integers(max(0, math.ceil(cy - ch)), min(margin_h, math.floor(cy)) + 1))
                kept_boxes, keep = self._crop_boxes(boxes, ox, oy, cw, ch)

        return _replace(
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
        clipped = _clip_boxes(shifted, cw, ch)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        return clipped, keep

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, max_tries={self.max_tries})"


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
        return _replace(sample, img=self.apply(sample["img"], self.gains(rng)))

    def __repr__(self) -> str:
        h, s, v = (int(d) for d in self.deltas)
        return f"YOLOXHSVRandomAug(hue_delta={h}, saturation_delta={s}, value_delta={v})"


class RandomFlip:
    """Horizontal flip with probability ``prob``: x1' = w - x2, x2' = w - x1 (w = current image width)."""

    def __init__(self, prob: float = 0.5) -> None:
        """Args: prob: flip probability in [0, 1]."""
        if not 0.0 <= prob <= 1.0:
            raise OdetError(f"flip probability must be in [0, 1], got {prob}")
        self.prob = float(prob)

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
        return _replace(sample, img=np.ascontiguousarray(img[:, ::-1]), boxes=flipped)

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
        return _replace(sample, boxes=b[keep], labels=sample["labels"][keep])

    def __repr__(self) -> str:
        return f"FilterDegenerate(min_size={self.min_size})"


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


def build_test_transforms(
    scale: tuple[int, int] = (640, 640),
    pad_val: int = 114,
    pad: bool = True,
    *,
    keep_ratio: bool = True,
    interpolation: str = "bilinear",
) -> Compose:
    """Evaluation pipeline: keep-ratio :class:`Resize` to ``scale`` = (w, h), then (RTMDet) a
    :class:`Pad` to exactly ``scale`` with ``pad_val``. RetinaNet's upstream test pipeline has no pad
    (``scale=(1333, 800), pad=False``): its batch padding happens after normalisation. PP-YOLOE
    resizes to exactly ``scale`` (``keep_ratio=False``) with ``interpolation="cubic"``, no pad."""
    steps: list[Transform] = [Resize(scale, keep_ratio=keep_ratio, interpolation=interpolation)]
    if pad:
        steps.append(Pad(size=scale, pad_val=pad_val))
    return Compose(steps)


def build_train_transforms(
    scale: tuple[int, int] = (640, 640),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    crop_size: tuple[int, int] = (640, 640),
    hsv: bool = True,
    flip_prob: float = 0.5,
    pad_val: int = 114,
) -> Compose:
    """RTMDet training pipeline without mosaic/mix-up (upstream's second stage): RandomResize →
    RandomCrop → YOLOXHSVRandomAug (if ``hsv``) → RandomFlip → Pad to ``crop_size``.
    All sizes are (w, h) pixels."""
    steps: list[Transform] = [
        RandomResize(scale, ratio_range=ratio_range, keep_ratio=True),
        RandomCrop(crop_size),
    ]
    if hsv:
        steps.append(YOLOXHSVRandomAug())
    steps.append(RandomFlip(flip_prob))
    steps.append(Pad(size=crop_size, pad_val=pad_val))
    return Compose(steps)
