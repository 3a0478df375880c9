"""Data: image decoding, the datasets, transforms, pipelines and batching (MMDetection 3.3 and
PaddleDetection semantics).

From the bottom up: the sample and its transform convention (:mod:`~odcli.data.sample`); transforms
— geometric, photometric, multi-image mixing with its cache, PaddleDetection's
(:mod:`~odcli.data.ppdet_transforms`); the pipelines built from them (:mod:`~odcli.data.pipelines`,
:mod:`~odcli.data.stages`); datasets (COCO, YOLO) and the one builder of them
(:func:`build_dataset`); batching (:mod:`~odcli.data.collate`, :mod:`~odcli.data.normalize`), the
seeded order (:mod:`~odcli.data.sampler`) and the one DataLoader builder (:func:`build_loader`).
"""

from odcli.data.coco import CocoDetection, load_coco_json
from odcli.data.collate import collate
from odcli.data.datasets import build_dataset
from odcli.data.geometric import FilterDegenerate, Pad, RandomCrop, RandomFlip, RandomResize, Resize
from odcli.data.image_io import read_image
from odcli.data.loader import build_loader, iterate_batches
from odcli.data.mix import CachedMixUp, CachedMosaic
from odcli.data.normalize import normalize, prepare_batch
from odcli.data.photometric import YOLOXHSVRandomAug
from odcli.data.pipelines import build_test_transforms, build_train_pipeline, build_train_transforms
from odcli.data.sample import Compose, Sample
from odcli.data.sampler import ShardedBatchSampler
from odcli.data.stages import StagedPipeline
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
    "ShardedBatchSampler",
    "StagedPipeline",
    "YOLOXHSVRandomAug",
    "YoloDetection",
    "build_dataset",
    "build_loader",
    "build_test_transforms",
    "build_train_pipeline",
    "build_train_transforms",
    "collate",
    "iterate_batches",
    "load_coco_json",
    "normalize",
    "prepare_batch",
    "read_image",
]
