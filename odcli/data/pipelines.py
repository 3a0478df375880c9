"""The pipelines: which transforms a model is evaluated with, and which a family trains with.

:func:`build_test_transforms` is the evaluation / inference pipeline (resize, then pad for RTMDet).
Training pipelines are chosen by name (``data.train_pipeline``): each builder reads the ``data``
section of the recipe and the model's input spec; adding a family means adding one function and one
table entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from odcli.data import ppdet_transforms as ppdet
from odcli.data.geometric import Pad, RandomCrop, RandomFlip, RandomResize, Resize
from odcli.data.mix import CachedMixUp, CachedMosaic
from odcli.data.photometric import YOLOXHSVRandomAug
from odcli.data.sample import Compose, Transform
from odcli.data.stages import StagedPipeline
from odcli.errors import OdetError

__all__ = ["TRAIN_PIPELINES", "build_test_transforms", "build_train_pipeline", "build_train_transforms"]


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


def _rtmdet(data: Any, spec: Any) -> Compose:
    """RTMDet's weak pipeline (upstream's stage 2): random resize → random crop → HSV → flip → pad."""
    return build_train_transforms(
        tuple(data.img_scale),
        ratio_range=tuple(data.resize_ratio_range),
        crop_size=tuple(data.crop_size),
        hsv=data.hsv,
        flip_prob=data.flip_prob,
        pad_val=int(spec.pad_value),
    )


def _rtmdet_strong(data: Any, spec: Any) -> Transform:
    """RTMDet's two-stage schedule: a :class:`~odcli.data.stages.StagedPipeline` whose ``strong`` stage is
    cached Mosaic (tiles fitted to ``img_scale``) → RandomResize(``strong_scale`` × ``resize_ratio_range``)
    → RandomCrop(``crop_size``) → HSV → flip → Pad(``crop_size``) → cached MixUp, and whose ``weak`` stage
    is :func:`_rtmdet`. The trainer switches to ``weak`` at ``train.switch_epoch`` (upstream 280 of 300)."""
    pad = int(spec.pad_value)
    img_scale = tuple(data.img_scale)
    strong_scale = tuple(data.strong_scale) if data.strong_scale else (2 * img_scale[0], 2 * img_scale[1])
    steps: list[Transform] = [
        CachedMosaic(
            img_scale,
            pad_val=pad,
            prob=data.mosaic_prob,
            max_cached_images=data.mosaic_cache,
            random_pop=data.random_pop,
        ),
        RandomResize(strong_scale, ratio_range=tuple(data.resize_ratio_range), keep_ratio=True),
        RandomCrop(tuple(data.crop_size)),
    ]
    if data.hsv:
        steps.append(YOLOXHSVRandomAug())
    steps += [
        RandomFlip(data.flip_prob),
        Pad(size=tuple(data.crop_size), pad_val=pad),
        CachedMixUp(
            img_scale,
            ratio_range=tuple(data.mixup_ratio_range),
            pad_val=pad,
            max_cached_images=data.mixup_cache,
            random_pop=data.random_pop,
            prob=data.mixup_prob,
        ),
    ]
    return StagedPipeline([("strong", Compose(steps)), ("weak", _rtmdet(data, spec))])


def _retinanet(data: Any, spec: Any) -> Compose:
    """RetinaNet 1x: keep-ratio Resize to ``data.img_scale`` (1333×800) → RandomFlip. No pad here:
    the collate pads the batch to a multiple of 32 and ``prepare_batch`` zeroes it after normalising."""
    return Compose([Resize(tuple(data.img_scale), keep_ratio=True), RandomFlip(data.flip_prob)])


def _ppyoloe(data: Any, spec: Any) -> Compose:
    """PP-YOLOE / PP-YOLOE+, as PaddleDetection's ``ppyoloe_reader.yml``: per sample RandomDistort (if
    ``data.ppyoloe_distort``) → RandomExpand (``ppyoloe_expand_prob``, ``_ratio``, ``_fill``) →
    IoUConstrainedCrop (upstream's RandomCrop; if ``ppyoloe_crop``) → RandomFlip(``flip_prob``); then,
    per batch, the Compose's ``batch_transform`` — BatchRandomResize to one of ``ppyoloe_target_sizes``
    (square, ratio not kept, random cv2 interpolation if ``ppyoloe_random_interp``) — which the trainer
    hands to the loader.
    Normalisation is the model's (``prepare_batch``); images stay float32 as upstream's.
    """
    steps: list[Transform] = []
    if data.ppyoloe_distort:
        steps.append(ppdet.RandomDistort())
    if data.ppyoloe_expand_prob != 0:  # a value outside [0, 1] reaches RandomExpand, which rejects it
        steps.append(
            ppdet.RandomExpand(
                ratio=data.ppyoloe_expand_ratio,
                prob=data.ppyoloe_expand_prob,
                fill_value=tuple(data.ppyoloe_expand_fill),
            )
        )
    if data.ppyoloe_crop:
        steps.append(ppdet.IoUConstrainedCrop())
    steps += [RandomFlip(data.flip_prob), ppdet.DrawBatchSeed()]
    pipeline = Compose(steps)
    # Read by the trainer (getattr(transforms, "batch_transform", None)) and passed to the loader.
    pipeline.batch_transform = ppdet.BatchRandomResize(  # type: ignore[attr-defined]
        data.ppyoloe_target_sizes,
        random_size=True,
        random_interp=data.ppyoloe_random_interp,
        keep_ratio=False,
    )
    return pipeline


TRAIN_PIPELINES: dict[str, Callable[[Any, Any], Transform]] = {
    "rtmdet": _rtmdet,
    "rtmdet_strong": _rtmdet_strong,
    "retinanet": _retinanet,
    "ppyoloe": _ppyoloe,
}


def build_train_pipeline(data: Any, spec: Any) -> Transform:
    """The transforms named by ``data.train_pipeline`` (a :class:`~odcli.recipe.DataConfig`): a
    :class:`Compose`, or a :class:`~odcli.data.stages.StagedPipeline` for two-stage schedules."""
    builder = TRAIN_PIPELINES.get(data.train_pipeline)
    if builder is None:
        raise OdetError(
            f"unknown data.train_pipeline {data.train_pipeline!r}; choose one of {', '.join(TRAIN_PIPELINES)}"
        )
    return builder(data, spec)
