"""The recipe's typed sections: :class:`DataConfig`, :class:`TrainConfig` and :class:`Recipe`.

A recipe has three sections, each a dataclass whose fields map 1:1 onto keyword arguments:
``model`` (the family config, e.g. :class:`odcli.models.rtmdet.RTMDetConfig`, picked by ``arch``),
``data`` (:class:`DataConfig`) and ``train`` (:class:`TrainConfig`). Values are range-checked as each
section is built (:mod:`odcli.config_checks`). Reading files and ``--set`` is :mod:`odcli.recipe.load`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odcli.config_checks import check_data, check_train
from odcli.errors import OdetError

SECTIONS = ("model", "data", "train")


@dataclass
class DataConfig:
    """Dataset location and the data pipeline.

    ``root`` is the dataset directory; annotation and image paths are relative to it. ``format`` is
    ``coco`` (JSON annotations) or ``yolo`` (``images/<split>`` + ``labels/<split>`` + ``classes.txt``
    or ``data.yaml``; ``*_ann`` unused), see :mod:`odcli.data.datasets`.
    """

    format: str = "coco"
    root: str = "../data/coco"
    train_ann: str = "annotations/instances_train2017.json"
    train_images: str = "train2017"
    val_ann: str = "annotations/instances_val2017.json"
    val_images: str = "val2017"
    batch_size: int = 32
    val_batch_size: int = 8
    num_workers: int = 2
    persistent_workers: bool = True
    # training augmentation: the pipeline (odcli/data/pipelines.py) and its settings
    train_pipeline: str = "rtmdet"
    img_scale: list[int] = field(default_factory=lambda: [640, 640])
    resize_ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: list[int] = field(default_factory=lambda: [640, 640])
    hsv: bool = True
    flip_prob: float = 0.5
    filter_empty: bool = True
    min_size: float = 32.0
    # RTMDet's strong stage (train_pipeline: rtmdet_strong, until train.switch_epoch): cached Mosaic →
    # RandomResize(strong_scale × resize_ratio_range) → RandomCrop → HSV → flip → Pad → cached MixUp
    strong_scale: list[int] | None = None  # (w, h); None = 2 × img_scale (upstream 1280 for 640)
    mosaic_cache: int = 40  # max_cached_images of CachedMosaic (RTMDet-tiny 20)
    mixup_cache: int = 20  # max_cached_images of CachedMixUp (RTMDet-tiny 10)
    random_pop: bool = True  # evict a random cached image (False: the oldest, RTMDet-tiny)
    mosaic_prob: float = 1.0
    mixup_prob: float = 1.0  # RTMDet-tiny 0.5
    mixup_ratio_range: list[float] = field(default_factory=lambda: [1.0, 1.0])  # partner scale jitter
    # PP-YOLOE (train_pipeline: ppyoloe), PaddleDetection's reader: RandomDistort → RandomExpand →
    # RandomCrop (SSD-style, IoU-constrained) → RandomFlip(flip_prob), then BatchRandomResize: one square
    # side per batch, ratio not kept. Defaults = upstream; see odcli/data/ppdet_transforms.py.
    ppyoloe_target_sizes: list[int] = field(default_factory=lambda: list(range(320, 769, 32)))  # pixels
    ppyoloe_random_interp: bool = True  # cv2 nearest/linear/area/cubic/lanczos4 drawn per batch
    ppyoloe_distort: bool = True  # RandomDistort: hue, saturation, contrast, brightness
    ppyoloe_expand_prob: float = 0.5  # probability of RandomExpand (zoom-out onto a larger canvas)
    ppyoloe_expand_ratio: float = 4.0  # largest canvas side / image side
    ppyoloe_expand_fill: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])  # RGB
    ppyoloe_crop: bool = True  # RandomCrop

    def __post_init__(self) -> None:
        check_data(self)


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and evaluation during training.

    ``lr`` is the learning rate for ``base_batch_size`` images per step; the trainer scales it
    linearly to the actual total batch size and prints the result.
    """

    epochs: int = 300
    optimizer: str = "adamw"
    lr: float = 0.004
    base_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.05
    norm_decay: float = 0.0
    bias_decay: float = 0.0
    warmup_iters: int = 1000
    warmup_start_factor: float = 1e-5
    schedule: str = "flat_cosine"
    cosine_start_epoch: int = 150
    min_lr_ratio: float = 0.05
    milestones: list[int] = field(default_factory=lambda: [8, 11])
    clip_grad_norm: float | None = None
    ema: bool = True
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000.0
    eval_interval: int = 10
    checkpoint_interval: int = 10
    log_interval: int = 10
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "fp16"  # CUDA autocast type: fp16 (with a gradient scaler) or bf16 (none needed)
    seed: int = 0
    deterministic: bool = False
    output_dir: str = "runs"
    init_weights: str | None = None
    # first epoch (0-based count of epochs done) of a staged pipeline's second stage; None = never
    switch_epoch: int | None = None
    # also write last.safetensors every this many iterations (0 = only per checkpoint_interval epochs)
    checkpoint_every_iters: int = 0
    sync_bn: bool = False  # multi-GPU: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA)
    freeze_bn: bool = False  # BatchNorm layers use and keep their running statistics (no batch stats)
    dist_backend: str | None = None  # torchrun process group: nccl / gloo; None = nccl on CUDA, else gloo

    def __post_init__(self) -> None:
        # Values that would otherwise fail deep inside training (division by zero, empty schedule).
        positive = ("epochs", "eval_interval", "checkpoint_interval", "log_interval", "base_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise OdetError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_iters", "checkpoint_every_iters"):
            if getattr(self, name) < 0:
                raise OdetError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise OdetError(f"train.lr must be > 0, got {self.lr}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise OdetError(f"train.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")
        if self.amp_dtype not in ("fp16", "bf16"):
            raise OdetError(f"train.amp_dtype must be fp16 or bf16, got {self.amp_dtype!r}")
        if self.dist_backend not in (None, "nccl", "gloo"):
            raise OdetError(f"train.dist_backend must be nccl, gloo or null, got {self.dist_backend!r}")
        check_train(self)


@dataclass
class Recipe:
    """A loaded, validated recipe."""

    model: Any
    data: DataConfig
    train: TrainConfig
    name: str = "recipe"
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the three sections (what checkpoints store)."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in ("model", "data", "train")}

    def resolve_path(self, value: str | Path) -> Path:
        """A ``data`` path: absolute as is, else relative to the recipe file's directory."""
        p = Path(value).expanduser()
        if p.is_absolute() or self.path is None:
            return p
        return (self.path.parent / p).resolve()

    @property
    def data_root(self) -> Path:
        return self.resolve_path(self.data.root)

    def with_absolute_paths(self) -> Recipe:
        """A copy whose file paths (``data.root``, ``train.init_weights``, ``model.backbone_weights``)
        are absolute, so the recipe means the same read from anywhere (a run directory's copy)."""
        data = dataclasses.replace(self.data, root=str(self.data_root))
        init = self.train.init_weights
        train = dataclasses.replace(self.train, init_weights=str(self.resolve_path(init)) if init else None)
        model = self.model
        backbone = getattr(model, "backbone_weights", None)
        if backbone:
            model = dataclasses.replace(model, backbone_weights=str(self.resolve_path(backbone)))
        return dataclasses.replace(self, model=model, data=data, train=train)
