"""The transforms' former module, kept as re-exports while callers move to the modules that hold them.

The sample and :class:`Compose`: :mod:`odcli.data.sample`; resize, pad, crop, flip:
:mod:`odcli.data.geometric`; colour: :mod:`odcli.data.photometric`; the test and RTMDet training
pipelines: :mod:`odcli.data.pipelines`. New code imports from those (or from :mod:`odcli.data`).
"""

from __future__ import annotations

from odcli.data.geometric import (
    FilterDegenerate,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    Resize,
    rescale_size,
)
from odcli.data.photometric import YOLOXHSVRandomAug
from odcli.data.pipelines import build_test_transforms, build_train_transforms
from odcli.data.sample import Compose, Sample, Transform, process_rng

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
