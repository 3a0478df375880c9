"""A run's parts, built from its recipe by plain functions: datasets, model, loader, optimiser, lr
schedule, EMA and mixed precision.

:func:`build_parts` calls the builders in a fixed order, and the order is part of reproducing a run:
the model's initial weights and the EMA copy come from the generators seeded first.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from odcli.data.coco import CocoDetection
from odcli.data.datasets import build_dataset
from odcli.data.loader import build_loader
from odcli.data.pipelines import build_train_pipeline
from odcli.data.sampler import ShardedBatchSampler
from odcli.engine.console import TrainConsole
from odcli.engine.ddp import Placement, seed_everything
from odcli.engine.ema import ModelEMA
from odcli.engine.schedules import FlatCosineSchedule, MultiStepSchedule, build_param_groups
from odcli.errors import OdetError
from odcli.evaluation.run import eval_transforms
from odcli.models.detector import Detector
from odcli.models.zoo import build_from_config, input_spec_of
from odcli.recipe import Recipe, TrainConfig
from odcli.weights.load import load_backbone_weights, read_state_dict

Schedule = FlatCosineSchedule | MultiStepSchedule


@dataclass
class MixedPrecision:
    """Autocast on CUDA when ``train.amp``; fp16 scales the loss (bf16 has fp32's exponent range, so
    its gradients do not underflow and ``scaler`` stays disabled)."""

    enabled: bool
    dtype: torch.dtype
    scaler: torch.amp.GradScaler

    def autocast(self) -> AbstractContextManager[object]:
        return torch.autocast("cuda", dtype=self.dtype) if self.enabled else nullcontext()


def build_mixed_precision(train: TrainConfig, device: torch.device) -> MixedPrecision:
    enabled = train.amp and device.type == "cuda"
    dtype = torch.bfloat16 if train.amp_dtype == "bf16" else torch.float16
    if enabled and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise OdetError("train.amp_dtype=bf16 needs a GPU with bfloat16 support; use fp16")
    scaler = torch.amp.GradScaler("cuda", enabled=enabled and dtype == torch.float16)
    return MixedPrecision(enabled=enabled, dtype=dtype, scaler=scaler)


@dataclass
class TrainingParts:
    """Everything one process trains with. ``recipe`` and ``schedule`` are replaced by a resume with
    ``--extend-epochs`` (more epochs, a schedule rebuilt for them); the rest stays as built."""

    recipe: Recipe  #: the run's recipe, ``model.num_classes`` set from the training set
    placement: Placement
    train_set: CocoDetection
    val_set: CocoDetection  #: with the model's test pipeline
    model: Detector
    loader: DataLoader
    sampler: ShardedBatchSampler  #: this rank's shard of each global batch
    step_images: int  #: images one optimiser step holds over all processes
    lr: float  #: ``train.lr`` scaled by ``step_images / train.base_batch_size``
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    ema: ModelEMA | None
    amp: MixedPrecision

    @property
    def classes(self) -> list[str]:
        return list(self.train_set.classes)

    @property
    def cat_ids(self) -> list[int]:
        return list(self.train_set.cat_ids)

    @property
    def iters_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    @property
    def total_batch(self) -> int:
        """``data.batch_size`` × processes: the batch the recipe asks for (before any short dataset)."""
        return self.recipe.data.batch_size * self.placement.world

    @property
    def eval_model(self) -> Detector:
        """The weights evaluations and ``best`` use: the EMA copy when ``train.ema``, else the model."""
        return self.ema.module if self.ema else self.model


def build_parts(
    recipe: Recipe, placement: Placement, out: TrainConsole, *, pretrained: bool
) -> TrainingParts:
    """Build the parts of a run (see the module docstring for why the order is fixed).

    Args:
        pretrained: load ``model.backbone_weights`` / ``train.init_weights`` (False on resume: the
            run has its own weights).

    Raises:
        OdetError: a missing dataset, no trainable box, an unknown optimiser or schedule, bad weights.
    """
    tcfg, dcfg = recipe.train, recipe.data
    # The same seed on every rank while the model is built: identical initial weights (DDP also
    # broadcasts rank 0's, but the EMA copy is taken before that).
    seed_everything(tcfg.seed, tcfg.deterministic)
    root = recipe.data_root
    if not root.exists():
        raise OdetError(f"dataset root not found: {root} (set data.root in the recipe or --set data.root=…)")
    spec = input_spec_of(recipe.model)  # pad value and size divisor of the training batches
    # A staged pipeline is built here, in the main process, so its shared stage flag exists before
    # any DataLoader worker starts.
    train_set = build_dataset(dcfg, root, "train", build_train_pipeline(dcfg, spec))
    check_training_boxes(train_set)
    recipe = dataclasses.replace(
        recipe, model=dataclasses.replace(recipe.model, num_classes=len(train_set.classes))
    )
    model: Detector = build_from_config(recipe.model).to(placement.device)
    if pretrained:
        load_pretrained(model, recipe, out)
    val_set = build_dataset(dcfg, root, "val", eval_transforms(model))
    total_batch = dcfg.batch_size * placement.world
    loader = build_loader(
        train_set,
        batch_size=dcfg.batch_size,
        num_workers=dcfg.num_workers,
        seed=tcfg.seed,
        drop_last=len(train_set) > total_batch,
        rank=placement.rank,
        world_size=placement.world,
        persistent_workers=dcfg.persistent_workers,
        pad_value=int(spec.pad_value),
        size_divisor=spec.size_divisor,
        pin_memory=placement.device.type == "cuda",
        # per-batch step of the pipeline, if any (PP-YOLOE: one random size per batch)
        batch_transform=getattr(train_set.transforms, "batch_transform", None),
    )
    sampler: ShardedBatchSampler = loader.batch_sampler  # type: ignore[assignment]
    # Linear scaling with the images a step really holds over all processes: one process never
    # holds more than the dataset (a short, only batch); several ranks pad their last global batch.
    step_images = total_batch if placement.world > 1 else min(total_batch, len(train_set))
    lr = tcfg.lr * step_images / tcfg.base_batch_size
    optimizer = build_optimizer(model, tcfg, lr)
    schedule = build_schedule(tcfg, lr, sampler.batches_per_epoch, tcfg.epochs)
    ema = ModelEMA(model, momentum=tcfg.ema_momentum, gamma=tcfg.ema_gamma) if tcfg.ema else None
    return TrainingParts(
        recipe=recipe,
        placement=placement,
        train_set=train_set,
        val_set=val_set,
        model=model,
        loader=loader,
        sampler=sampler,
        step_images=step_images,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        ema=ema,
        amp=build_mixed_precision(tcfg, placement.device),
    )


def check_training_boxes(train_set: CocoDetection) -> None:
    """Stop early when not one box can be trained on (all degenerate, or only crowd boxes)."""
    if train_set.num_boxes > 0:
        return
    if train_set.dropped_boxes:
        raise OdetError(
            f"no usable training boxes in {train_set.ann_file}: all {train_set.dropped_boxes} boxes have "
            "zero or negative width/height or lie outside their image; fix the export (COCO bbox is "
            "[x, y, width, height] in pixels)"
        )
    raise OdetError(
        f"no training boxes in {train_set.ann_file} ({train_set.crowd_boxes} crowd boxes only); "
        "add annotations or point data.train_ann at the right file"
    )


def load_pretrained(model: Detector, recipe: Recipe, out: TrainConsole) -> None:
    """ImageNet backbone weights (``model.backbone_weights``, RetinaNet), then ``train.init_weights``:
    every tensor of those weights whose name and shape fit the model."""
    backbone = getattr(recipe.model, "backbone_weights", None)
    if backbone:
        load_backbone_weights(model, recipe.resolve_path(backbone))
        out.print(f"backbone initialised from {recipe.resolve_path(backbone)}")
    if not recipe.train.init_weights:
        return
    path = recipe.resolve_path(recipe.train.init_weights)
    state = read_state_dict(path, arch=model.arch)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise OdetError(
            f"train.init_weights {path}: none of its {len(state)} tensors fits {model.arch} "
            "(weights of another architecture or size?); give weights of this model"
        )
    model.load_state_dict(fitting, strict=False)
    out.print(f"initialised {len(fitting)}/{len(own)} tensors from {path}")


def build_optimizer(model: nn.Module, train: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over the parameter groups of :func:`build_param_groups` (decay per kind)."""
    groups = build_param_groups(
        model, weight_decay=train.weight_decay, norm_decay=train.norm_decay, bias_decay=train.bias_decay
    )
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train.momentum)
    raise OdetError(f"train.optimizer must be 'adamw' or 'sgd', got {train.optimizer!r}")


def build_schedule(train: TrainConfig, lr: float, iters_per_epoch: int, epochs: int) -> Schedule:
    """The recipe's lr schedule for a run of ``epochs`` epochs, in iterations (peak ``lr``)."""
    total_iters = epochs * iters_per_epoch
    warmup = min(train.warmup_iters, max(total_iters - 1, 0))
    warmup = warmup if warmup >= 2 else 0
    if train.schedule == "flat_cosine":
        return FlatCosineSchedule(
            base_lr=lr,
            total_iters=total_iters,
            warmup_iters=warmup,
            warmup_start_factor=train.warmup_start_factor,
            cosine_start_iter=min(train.cosine_start_epoch * iters_per_epoch, total_iters - 1),
            min_lr=lr * train.min_lr_ratio,
        )
    if train.schedule == "multistep":
        return MultiStepSchedule(
            base_lr=lr,
            warmup_iters=warmup,
            warmup_start_factor=train.warmup_start_factor,
            milestones=tuple(m * iters_per_epoch for m in train.milestones),
        )
    raise OdetError(f"train.schedule must be 'flat_cosine' or 'multistep', got {train.schedule!r}")
