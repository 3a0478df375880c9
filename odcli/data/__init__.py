"""Data: image decoding, the COCO dataset, transforms and batching (MMDetection 3.3 semantics)."""

from odcli.data.coco import CocoDetection, load_coco_json
from odcli.data.datasets import build_dataset
from odcli.data.image_io import read_image
from odcli.data.loader import build_loader, collate, normalize
from odcli.data.mix import CachedMixUp, CachedMosaic
from odcli.data.stages import StagedPipeline
from odcli.data.transforms import (
    Compose,
    FilterDegenerate,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    Resize,
    Sample,
    YOLOXHSVRandomAug,
    build_test_transforms,
    build_train_transforms,
)
from odcli.data.yolo import YoloDetection

__all__ = [
    "CachedMixUp",
    "CachedMosaic",
    "CocoDetection",
    "Compose",
    "FilterDegenerate",
    "Pad",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "Resize",
    "Sample",
    "StagedPipeline",
    "YOLOXHSVRandomAug",
    "YoloDetection",
    "build_dataset",
    "build_loader",
    "build_test_transforms",
    "build_train_transforms",
    "collate",
    "load_coco_json",
    "normalize",
    "read_image",
]
