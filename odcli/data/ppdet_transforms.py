"""PaddleDetection's training augmentation for PP-YOLOE / PP-YOLOE+ (``ppyoloe_reader.yml``).

Upstream's ``TrainReader`` runs, per sample, ``Decode → RandomDistort → RandomExpand → RandomCrop →
RandomFlip`` and then, per batch, ``BatchRandomResize → NormalizeImage → Permute → PadGT``. Here:

* :class:`RandomDistort`, :class:`RandomExpand` and :class:`RandomCrop` are per-sample transforms in
  the convention of :mod:`odcli.data.transforms` (``t(sample, rng) -> new sample``; the input dict
  and its arrays are never written to; randomness only from ``rng``). The flip is
  :class:`odcli.data.transforms.RandomFlip`, whose rule (flip when U(0, 1) < prob; x1' = w - x2) is
  upstream's.
* :class:`BatchRandomResize` is a *batch* transform ``bt(samples) -> samples``: one size and one cv2
  interpolation for the whole batch. The loader runs it inside the collate function
  (``build_loader(..., batch_transform=...)``). Its randomness comes from the ``batch_seed`` that the
  last per-sample step, :class:`DrawBatchSeed`, draws from each sample's own generator, so the batch's
  size is fixed by the loader seed and epoch whatever the number of workers.
* NormalizeImage and Permute are :func:`odcli.data.loader.prepare_batch` (the model's mean/std,
  BGR → RGB); PadGT is not needed: targets stay per-image lists and the head pads them itself.

Pixel values. Upstream decodes to **RGB** and its colour distortion leaves the image **float32,
neither clipped nor rounded** (a contrast of 1.5 turns 200 into 300); RandomExpand's canvas and
BatchRandomResize's output are float32 too. odet keeps images **BGR** and reproduces this (to float32
rounding: upstream's hue step leaves float64 until the next step casts it back): the distortion
maths is written for BGR channel order (channel-mixing matrices reversed), images
become float32 exactly where upstream's do (a sample that no step distorts or expands stays uint8,
as upstream's, until BatchRandomResize converts it after resizing), and the collated batch is
float32. Box coordinates are float32 xyxy pixels, as everywhere in odet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from odcli.data.transforms import Sample, _replace, process_rng
from odcli.errors import OdetError

__all__ = [
    "CV2_INTERPOLATIONS",
    "PPYOLOE_TARGET_SIZES",
    "BatchRandomResize",
    "DrawBatchSeed",
    "RandomCrop",
    "RandomDistort",
    "RandomExpand",
    "batch_rng",
    "distort_brightness",
    "distort_contrast",
    "distort_hue",
    "distort_saturation",
    "iou_with_window",
]

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
        return _replace(sample, img=img)

    def __repr__(self) -> str:
        return (
            f"RandomDistort(hue={list(self.hue)}, saturation={list(self.saturation)}, "
            f"contrast={list(self.contrast)}, brightness={list(self.brightness)}, "
            f"random_apply={self.random_apply}, count={self.count}, random_channel={self.random_channel})"
        )


# ------------------------------------------------------------------------------------------ expand
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
        if not 0.0 <= float(prob) <= 1.0:
            raise OdetError(f"RandomExpand probability must be in [0, 1], got {prob}")
        if len(fill_value) != 3:
            raise OdetError(f"RandomExpand fill_value must be 3 values (R, G, B), got {list(fill_value)}")
        self.ratio = float(ratio)
        self.prob = float(prob)
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
        return _replace(sample, img=canvas, boxes=boxes, img_shape=(big_h, big_w), pad_shape=(big_h, big_w))

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


class RandomCrop:
    """SSD-style IoU-constrained random crop (upstream ``RandomCrop``, not MMDetection's).

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
                raise OdetError(f"RandomCrop aspect_ratio must be [min, max] > 0, got {list(aspect_ratio)}")
            aspect_ratio = (float(aspect_ratio[0]), float(aspect_ratio[1]))
        if len(scaling) != 2 or not 0 < scaling[0] <= scaling[1] <= 1:
            raise OdetError(f"RandomCrop scaling must be [min, max] in (0, 1], got {list(scaling)}")
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
        return _replace(
            sample,
            img=img[y1:y2, x1:x2].copy(),
            boxes=cropped[keep],
            labels=sample["labels"][keep],
            img_shape=(y2 - y1, x2 - x1),
            pad_shape=(y2 - y1, x2 - x1),
        )

    def __repr__(self) -> str:
        return (
            f"RandomCrop(aspect_ratio={self.aspect_ratio}, thresholds={list(self.thresholds)}, "
            f"scaling={self.scaling}, num_attempts={self.num_attempts}, "
            f"allow_no_crop={self.allow_no_crop}, cover_all_box={self.cover_all_box})"
        )


# ---------------------------------------------------------------------------------- batch resize
class DrawBatchSeed:
    """Store one integer drawn from the sample's generator as ``sample["batch_seed"]``.

    The last per-sample step of a pipeline with a batch transform: :func:`batch_rng` combines the
    seeds of a batch's samples, so batch-level randomness is as reproducible as the samples' own.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Add ``batch_seed`` (an int in [0, 2⁶³)) to a copy of ``sample``."""
        return _replace(sample, batch_seed=int(rng.integers(0, 2**63 - 1)))

    def __repr__(self) -> str:
        return "DrawBatchSeed()"


def batch_rng(samples: Sequence[Sample]) -> np.random.Generator:
    """The generator of a batch: seeded by its samples' ``batch_seed`` values, in order (see
    :class:`DrawBatchSeed`); :func:`~odcli.data.transforms.process_rng` if any sample has none."""
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
        out = out.astype(np.float32, copy=False)
        new_h, new_w = out.shape[:2]
        boxes = sample["boxes"] * np.array([fx, fy, fx, fy], np.float32)
        np.clip(boxes[:, 0::2], 0, new_w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, new_h, out=boxes[:, 1::2])
        sx, sy = sample["scale_factor"]
        return _replace(
            sample,
            img=out,
            boxes=boxes.astype(np.float32, copy=False),
            img_shape=(new_h, new_w),
            pad_shape=(new_h, new_w),
            scale_factor=(sx * fx, sy * fy),
        )

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
