"""PaddleDetection's training augmentation for PP-YOLOE / PP-YOLOE+ (``ppyoloe_reader.yml``), one name
per upstream operator; the pipeline ``ppyoloe`` (:mod:`odcli.data.pipelines`) is built from them.

Upstream's ``TrainReader`` runs, per sample, ``Decode → RandomDistort → RandomExpand → RandomCrop →
RandomFlip`` and then, per batch, ``BatchRandomResize → NormalizeImage → Permute → PadGT``. Here:

* :class:`RandomDistort` (:mod:`odcli.data.ppdet_distort`), :class:`RandomExpand` and
  :class:`IoUConstrainedCrop` — upstream's ``RandomCrop`` — (:mod:`odcli.data.ppdet_geometric`) are
  per-sample transforms in the convention of :mod:`odcli.data.sample` (``t(sample, rng) -> new
  sample``; the input dict and its arrays are never written to; randomness only from ``rng``). The
  flip is :class:`odcli.data.geometric.RandomFlip`, whose rule (flip when U(0, 1) < prob; x1' = w - x2)
  is upstream's.
* :class:`BatchRandomResize` (:mod:`odcli.data.ppdet_batch`) is a *batch* transform, run by the loader
  inside the collate function, with randomness from the seeds :class:`DrawBatchSeed` draws per sample.
* NormalizeImage and Permute are :func:`odcli.data.normalize.prepare_batch` (the model's mean/std,
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

from odcli.data.ppdet_batch import (
    CV2_INTERPOLATIONS,
    PPYOLOE_TARGET_SIZES,
    BatchRandomResize,
    DrawBatchSeed,
    batch_rng,
)
from odcli.data.ppdet_distort import (
    RandomDistort,
    distort_brightness,
    distort_contrast,
    distort_hue,
    distort_saturation,
)
from odcli.data.ppdet_geometric import IoUConstrainedCrop, RandomExpand, iou_with_window

__all__ = [
    "CV2_INTERPOLATIONS",
    "PPYOLOE_TARGET_SIZES",
    "BatchRandomResize",
    "DrawBatchSeed",
    "IoUConstrainedCrop",
    "RandomDistort",
    "RandomExpand",
    "batch_rng",
    "distort_brightness",
    "distort_contrast",
    "distort_hue",
    "distort_saturation",
    "iou_with_window",
]
