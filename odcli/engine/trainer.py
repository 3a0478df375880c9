"""The training loop: data → model.loss → optimiser step → EMA → schedule, with eval and checkpoints.

One :class:`Trainer` per run (per process under ``torchrun``). Everything it does is decided by the
recipe; the run directory (``<train.output_dir>/<recipe name>``) receives ``recipe.yaml``, the metric
logs of :mod:`odcli.engine.metrics_log`, ``last.safetensors`` (full state, for ``--resume``) and
``best.safetensors`` (EMA weights of the best evaluation, for deployment).

Scaling and surviving:

* **DDP.** Under ``torchrun`` (or ``odet train --gpus N``) every process joins the process group
  from the environment, trains a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper of the
  model on its shard of each global batch (:class:`~odcli.data.loader.ShardedBatchSampler`), and
  only rank 0 writes files or prints. The lr scales with the total batch ``batch_size × world size``.
* **Resume.** ``last.safetensors`` holds model, EMA, optimiser, schedule, grad scaler, epoch,
  iteration, the epoch's running loss sums and every rank's RNG states; it is written at epoch
  ends, every ``train.checkpoint_every_iters`` iterations, and on SIGINT/SIGTERM (after the current
  step). ``--resume`` continues from the exact iteration: the sampler skips the batches done.
* **NaN guard.** A non-finite loss stops before the step: the batch's image ids go to
  ``nan_guard.json`` and the state before the step to ``nan_guard.safetensors``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import shlex
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from odcli.data.datasets import build_dataset
from odcli.data.loader import build_train_loader, iterate_batches, prepare_batch
from odcli.data.pipelines import build_train_pipeline
from odcli.data.stages import StagedPipeline
from odcli.engine.console import TrainConsole
from odcli.engine.ema import ModelEMA
from odcli.engine.metrics_log import MetricsLogger
from odcli.engine.rng_state import capture_rng_state, restore_rng_state, split_by_rank
from odcli.engine.schedules import (
    FlatCosineSchedule,
    MultiStepSchedule,
    build_param_groups,
    schedule_from_state_dict,
)
from odcli.errors import OdetError
from odcli.evaluation.run import eval_transforms
from odcli.models.detector import Detector
from odcli.models.zoo import build_from_config, input_spec_of
from odcli.recipe import RUN_RECIPE, Recipe, dump_recipe
from odcli.runtime import distributed as dist
from odcli.runtime.device import resolve_device
from odcli.weights.checkpoint import load_checkpoint, save_checkpoint, write_json_atomic, write_text_atomic

LAST = "last.safetensors"
BEST = "best.safetensors"
NAN_JSON = "nan_guard.json"
NAN_CKPT = "nan_guard.safetensors"

Schedule = FlatCosineSchedule | MultiStepSchedule


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _require(path: Path, what: str, key: str) -> Path:
    if not path.exists():
        raise OdetError(f"{what} not found: {path} (set {key} in the recipe or --set {key}=…)")
    return path


class _StopRequested(Exception):
    """SIGINT/SIGTERM arrived: every rank stops before its next step and saves ``last``."""


class _LossForward(nn.Module):
    """``forward`` = ``model.loss``: DDP synchronises gradients only for work done in ``forward``."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, targets: list[dict], epoch: int) -> dict[str, torch.Tensor]:
        return self.model.loss(images, targets, epoch=epoch)


class Trainer:
    """Train a detector as a recipe describes.

    Args:
        recipe: the validated recipe.
        run_dir: where outputs go (created by :meth:`fit`).
        resume: continue from ``run_dir/last.safetensors`` (exact iteration, schedule and RNG).
        extend_epochs: with ``resume``: train this many epochs more than the checkpoint's total and
            rebuild the lr schedule for the new total (instead of restoring the old one).
        console: where progress and tables are rendered.
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        run_dir: Path,
        resume: bool = False,
        extend_epochs: int | None = None,
        console: Console | None = None,
    ):
        self.recipe = recipe
        self.run_dir = run_dir
        self.console = console  # the screen (rich); self.out adds train.log and stderr
        tcfg, dcfg = recipe.train, recipe.data
        self.device = resolve_device(tcfg.device)
        dist.setup(tcfg.dist_backend, self.device.type)
        self.main = dist.is_main_process()
        self.out = TrainConsole(console, enabled=self.main)
        self.rank, self.world = dist.rank(), dist.world_size()
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank())
        # The same seed on every rank while the model is built: identical initial weights (DDP also
        # broadcasts rank 0's, but the EMA copy is taken before that).
        seed_everything(tcfg.seed, tcfg.deterministic)

        root = _require(recipe.data_root, "dataset root", "data.root")
        # The input spec (pad value, scale) comes from the model config; build the pipeline from it.
        spec = input_spec_of(recipe.model)
        # COCO JSON or YOLO folders (data.format); a staged pipeline is built here, in the main process,
        # so its shared stage flag exists before any DataLoader worker starts.
        self.train_set = build_dataset(dcfg, root, "train", build_train_pipeline(dcfg, spec))
        self._check_training_boxes()
        self.classes = list(self.train_set.classes)
        self.cat_ids = list(self.train_set.cat_ids)
        model_cfg = dataclasses.replace(recipe.model, num_classes=len(self.classes))
        self.recipe = dataclasses.replace(recipe, model=model_cfg)
        self.model: Detector = build_from_config(model_cfg).to(self.device)
        backbone_weights = getattr(model_cfg, "backbone_weights", None)
        if backbone_weights and not resume:  # ImageNet init (RetinaNet); a resumed run has its own
            from odcli.weights.load import load_backbone_weights

            load_backbone_weights(self.model, recipe.resolve_path(backbone_weights))
            if self.main:
                self.out.print(f"backbone initialised from {recipe.resolve_path(backbone_weights)}")
        if tcfg.init_weights and not resume:
            self._init_from(recipe.resolve_path(tcfg.init_weights))

        self.val_set = build_dataset(dcfg, root, "val", eval_transforms(self.model))
        total_batch = dcfg.batch_size * self.world
        self.loader = build_train_loader(
            self.train_set,
            batch_size=dcfg.batch_size,
            num_workers=dcfg.num_workers,
            seed=tcfg.seed,
            drop_last=len(self.train_set) > total_batch,
            rank=self.rank,
            world_size=self.world,
            persistent_workers=dcfg.persistent_workers,
            pad_value=int(spec.pad_value),
            size_divisor=spec.size_divisor,
            pin_memory=self.device.type == "cuda",
            # per-batch step of the pipeline, if any (PP-YOLOE: one random size per batch)
            batch_transform=getattr(self.train_set.transforms, "batch_transform", None),
        )
        self.sampler = self.loader.batch_sampler
        self.iters_per_epoch = self.sampler.batches_per_epoch

        # Linear scaling with the images a step really holds over all processes: one process never
        # holds more than the dataset (a short, only batch); several ranks pad their last global batch.
        self.step_images = total_batch if self.world > 1 else min(total_batch, len(self.train_set))
        self.lr = tcfg.lr * self.step_images / tcfg.base_batch_size
        groups = build_param_groups(
            self.model, weight_decay=tcfg.weight_decay, norm_decay=tcfg.norm_decay, bias_decay=tcfg.bias_decay
        )
        if tcfg.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=self.lr)
        elif tcfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=tcfg.momentum)
        else:
            raise OdetError(f"train.optimizer must be 'adamw' or 'sgd', got {tcfg.optimizer!r}")
        self.schedule: Schedule = self._build_schedule(tcfg.epochs)
        self.ema = (
            ModelEMA(self.model, momentum=tcfg.ema_momentum, gamma=tcfg.ema_gamma) if tcfg.ema else None
        )
        self.use_amp = tcfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if tcfg.amp_dtype == "bf16" else torch.float16
        if self.use_amp and self.amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise OdetError("train.amp_dtype=bf16 needs a GPU with bfloat16 support; use fp16")
        # bf16 has fp32's exponent range: gradients do not underflow, no loss scaling needed.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.epoch = 0  # completed epochs
        self.iter = 0  # completed iterations
        self.best_map = -1.0
        # running sums of the current epoch's losses (kept in checkpoints: exact epoch means on resume)
        self._epoch_sums: dict[str, float] = {}
        self._epoch_count = 0
        self.metrics = MetricsLogger(run_dir, enabled=self.main)
        self.history = self.metrics.history
        self._stop_signal: str | None = None
        self._created_run_dir = False
        self._wrote_checkpoint = False
        if self.world > 1:  # from here on each rank draws its own random numbers
            seed_everything(tcfg.seed + self.rank, tcfg.deterministic)
        if resume:
            self._resume(run_dir / LAST, extend_epochs)
        self.total_iters = self.recipe.train.epochs * self.iters_per_epoch
        self.loss_module = self._wrap_for_training()

    # --------------------------------------------------------------------------------- building
    def _check_training_boxes(self) -> None:
        """Stop early when not one box can be trained on (all degenerate, or only crowd boxes)."""
        ds = self.train_set
        if ds.num_boxes > 0:
            return
        if ds.dropped_boxes:
            raise OdetError(
                f"no usable training boxes in {ds.ann_file}: all {ds.dropped_boxes} boxes have zero or "
                "negative width/height or lie outside their image; fix the export (COCO bbox is "
                "[x, y, width, height] in pixels)"
            )
        raise OdetError(
            f"no training boxes in {ds.ann_file} ({ds.crowd_boxes} crowd boxes only); "
            "add annotations or point data.train_ann at the right file"
        )

    def _build_schedule(self, epochs: int) -> Schedule:
        """The lr schedule of the recipe for a run of ``epochs`` epochs (iteration-based)."""
        tcfg = self.recipe.train
        total_iters = epochs * self.iters_per_epoch
        warmup = min(tcfg.warmup_iters, max(total_iters - 1, 0))
        warmup = warmup if warmup >= 2 else 0
        if tcfg.schedule == "flat_cosine":
            return FlatCosineSchedule(
                base_lr=self.lr,
                total_iters=total_iters,
                warmup_iters=warmup,
                warmup_start_factor=tcfg.warmup_start_factor,
                cosine_start_iter=min(tcfg.cosine_start_epoch * self.iters_per_epoch, total_iters - 1),
                min_lr=self.lr * tcfg.min_lr_ratio,
            )
        if tcfg.schedule == "multistep":
            return MultiStepSchedule(
                base_lr=self.lr,
                warmup_iters=warmup,
                warmup_start_factor=tcfg.warmup_start_factor,
                milestones=tuple(m * self.iters_per_epoch for m in tcfg.milestones),
            )
        raise OdetError(f"train.schedule must be 'flat_cosine' or 'multistep', got {tcfg.schedule!r}")

    def _wrap_for_training(self) -> nn.Module:
        """``model.loss`` as a module's forward; under DDP wrapped (after SyncBN conversion) for it."""
        tcfg = self.recipe.train
        forward = _LossForward(self.model)
        if self.world == 1:
            if tcfg.sync_bn and self.main:
                self.out.print("note: train.sync_bn has no effect in a single process")
            return forward
        if tcfg.sync_bn:
            if self.device.type != "cuda":
                raise OdetError(
                    "train.sync_bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on CPU); "
                    "set train.sync_bn=false, or train.freeze_bn=true for small per-process batches"
                )
            # In place below the top module: the optimiser and EMA keep the same Parameter objects.
            nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(forward, device_ids=device_ids)

    def _set_train_mode(self) -> None:
        self.loss_module.train()
        if self.recipe.train.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # ------------------------------------------------------------------------------ checkpoints
    def _init_from(self, path: Path) -> None:
        """Initialise from other weights, keeping only tensors whose name and shape fit."""
        from odcli.weights.load import read_state_dict

        state = read_state_dict(path, arch=self.model.arch)
        own = self.model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not fitting:
            raise OdetError(
                f"train.init_weights {path}: none of its {len(state)} tensors fits {self.model.arch} "
                "(weights of another architecture or size?); give weights of this model"
            )
        self.model.load_state_dict(fitting, strict=False)
        if self.main:
            self.out.print(f"initialised {len(fitting)}/{len(own)} tensors from {path}")

    def _meta(self) -> dict[str, Any]:
        return {
            "arch": self.model.arch,
            "recipe": self.recipe.to_dict(),
            "recipe_path": str(self.recipe.path) if self.recipe.path else None,
            "epoch": self.epoch,
            "iter": self.iter,
            "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.world,
            "total_batch": self.recipe.data.batch_size * self.world,
            "classes": self.classes,
            "cat_ids": self.cat_ids,
            "best_map": self.best_map,
            "lr": self.lr,
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch_sums": self._epoch_sums,
            "epoch_count": self._epoch_count,
            "seed": self.recipe.train.seed,
            "torch_version": torch.__version__,
        }

    def save_last(self, path: Path | None = None) -> Path:
        """Write the full training state (every rank must call this: it gathers their RNG states)."""
        path = path or self.run_dir / LAST
        gathered = dist.all_gather_object(capture_rng_state())
        if self.main:
            extra = {f"rng.{r}.{k}": v for r, (tensors, _) in enumerate(gathered) for k, v in tensors.items()}
            save_checkpoint(
                path,
                model_state=self.model.state_dict(),
                meta={**self._meta(), "rng": [m for _, m in gathered]},
                ema_state=self.ema.state_dict() if self.ema else None,
                optimizer=self.optimizer,
                extra_tensors=extra,
            )
            self._wrote_checkpoint = True
        return path

    def save_best(self) -> Path:
        path = self.run_dir / BEST
        if self.main:
            weights = (self.ema.module if self.ema else self.model).state_dict()
            save_checkpoint(path, model_state=weights, meta=self._meta())
            self._wrote_checkpoint = True
        return path

    def _resume(self, path: Path, extend_epochs: int | None) -> None:
        if not path.is_file():
            raise OdetError(f"nothing to resume: {path} does not exist (train without --resume first)")
        ckpt = load_checkpoint(path, device=self.device)
        meta = ckpt.meta
        if meta.get("arch") != self.model.arch:
            raise OdetError(
                f"{path} holds {meta.get('arch')}, but the recipe builds {self.model.arch}; "
                "resume with the recipe that started the run, or use another --run-dir"
            )
        if "epoch" not in meta or not ckpt.optimizer_state:
            raise OdetError(
                f"{path} holds weights only, not a training state to resume; start a new run from them "
                f"with --set train.init_weights={path}"
            )
        try:
            self.model.load_state_dict(ckpt.model_state)
            if self.ema is not None and ckpt.ema_state:
                self.ema.load_state_dict(ckpt.ema_state)
            if ckpt.optimizer_state:
                self.optimizer.load_state_dict(ckpt.optimizer_state)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise OdetError(
                f"{path} does not fit the model this recipe builds ({first.rstrip(':.')}); the run was "
                "made with other model settings or another dataset (class count): use its recipe"
            ) from None
        self.epoch = int(meta["epoch"])
        self.best_map = float(meta.get("best_map", -1.0))
        old_ipe = int(meta.get("iters_per_epoch", self.iters_per_epoch))
        done = int(meta.get("iter", self.epoch * old_ipe)) - self.epoch * old_ipe  # iterations in epoch
        same_layout = (
            old_ipe == self.iters_per_epoch
            and int(meta.get("total_batch", self.recipe.data.batch_size * self.world))
            == self.recipe.data.batch_size * self.world
        )
        if same_layout:
            self.iter = self.epoch * self.iters_per_epoch + done
        else:
            # Another total batch (world size) resumes at the same fraction of the epoch, not bit-exact.
            skip = min(round(done * self.iters_per_epoch / max(old_ipe, 1)), self.iters_per_epoch)
            self.iter = self.epoch * self.iters_per_epoch + skip
            if self.main:
                self.out.print(
                    f"note: the total batch changed ({meta.get('total_batch')} → "
                    f"{self.recipe.data.batch_size * self.world}): lr and schedule follow the new batch; "
                    f"continuing at the same point of epoch {self.epoch + 1}, not bit-exactly"
                )
        self._epoch_sums = dict(meta.get("epoch_sums") or {}) if same_layout else {}
        self._epoch_count = int(meta.get("epoch_count", 0)) if same_layout else 0
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self._restore_schedule(meta, same_layout, extend_epochs)
        rng_meta = meta.get("rng")
        per_rank = split_by_rank({k[4:]: v for k, v in ckpt.extra_tensors.items() if k.startswith("rng.")})
        if rng_meta and self.rank in per_rank and len(rng_meta) == self.world:
            restore_rng_state(per_rank[self.rank], rng_meta[self.rank])
        self.metrics.truncate_after(self.iter)
        if self.main:
            where = f"epoch {self.epoch}" + (
                f", iteration {self.iter} ({self.iter - self.epoch * self.iters_per_epoch}/"
                f"{self.iters_per_epoch} of epoch {self.epoch + 1} done)"
                if self.iter > self.epoch * self.iters_per_epoch
                else f", iteration {self.iter}"
            )
            self.out.print(f"resumed from {path} at {where}")

    def _restore_schedule(self, meta: dict[str, Any], same_layout: bool, extend_epochs: int | None) -> None:
        """Keep the checkpoint's lr schedule, or rebuild it (``--extend-epochs``, other batch size)."""
        old_epochs = int((meta.get("recipe") or {}).get("train", {}).get("epochs", self.recipe.train.epochs))
        if extend_epochs is not None:
            if extend_epochs < 1:
                raise OdetError(f"--extend-epochs must be >= 1, got {extend_epochs}")
            new_epochs = old_epochs + extend_epochs
            train = dataclasses.replace(self.recipe.train, epochs=new_epochs)
            self.recipe = dataclasses.replace(self.recipe, train=train)
            before = self._schedule_lr_from(meta)
            self.schedule = self._build_schedule(new_epochs)
            if self.main:
                was = f"{before:.3g}" if before is not None else "?"
                self.out.print(
                    f"extending the run from {old_epochs} to {new_epochs} epochs (--extend-epochs "
                    f"{extend_epochs}): the lr schedule is rebuilt for {new_epochs} epochs "
                    f"({self.recipe.train.schedule}); lr at iteration {self.iter} was {was}, "
                    f"is now {self.schedule.lr_at(self.iter):.3g}"
                )
            return
        saved = meta.get("schedule")
        if saved and same_layout:
            self.schedule = schedule_from_state_dict(saved)
        if old_epochs != self.recipe.train.epochs and self.main:
            if self.recipe.train.epochs <= self.epoch:
                self.out.print(
                    f"note: the run already has {self.epoch} epochs and train.epochs is "
                    f"{self.recipe.train.epochs}: nothing to train; use --extend-epochs N to train N more"
                )
            else:
                self.out.print(
                    f"note: train.epochs is {self.recipe.train.epochs} but the run's lr schedule was built "
                    f"for {old_epochs}; it is kept as it was (--extend-epochs N rebuilds it for more epochs)"
                )

    def _schedule_lr_from(self, meta: dict[str, Any]) -> float | None:
        """The lr the checkpoint's schedule gives at the resumed iteration (for messages)."""
        try:
            return schedule_from_state_dict(meta["schedule"]).lr_at(self.iter)
        except (KeyError, TypeError, ValueError):
            return None

    # ---------------------------------------------------------------------------------- training
    def _batches(self, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, list[dict], list[dict]]]:
        """Batches of ``epoch`` after the first ``skip`` (resume); worker errors as one line."""
        self.sampler.set_epoch(epoch, skip)
        # Worker seeds (only used by code outside the seeded transforms) depend on (seed, epoch) too.
        self.loader.generator.manual_seed(self.recipe.train.seed * 100_003 + epoch)
        self._select_pipeline_stage(epoch)
        try:
            yield from iterate_batches(self.loader)
        except Exception:
            # Ctrl-C also reaches the DataLoader workers, which exit; that is the stop, not an error.
            if self._stop_signal is not None:
                raise _StopRequested from None
            raise

    def _select_pipeline_stage(self, epoch: int) -> None:
        """Activate the second stage of a staged pipeline (RTMDet: weak, without Mosaic/MixUp) from
        ``train.switch_epoch`` on, as upstream's PipelineSwitchHook does before that epoch.

        Called before the epoch's DataLoader iterator exists, so even persistent workers (which read
        the stage from shared memory per sample) produce and prefetch the new epoch with the new stage.
        """
        pipeline = self.train_set.transforms
        switch = self.recipe.train.switch_epoch
        if switch is None:
            return
        if not isinstance(pipeline, StagedPipeline) or len(pipeline) < 2:
            if self.main and not getattr(self, "_switch_noted", False):
                self._switch_noted = True
                self.out.print(
                    f"note: train.switch_epoch={switch} has no effect: data.train_pipeline "
                    f"{self.recipe.data.train_pipeline!r} has a single stage (rtmdet_strong has two)"
                )
            return
        wanted = pipeline.names[1] if epoch >= switch else pipeline.names[0]
        if pipeline.stage != wanted:
            pipeline.set_stage(wanted)
            if self.main:
                self.out.print(
                    f"switching to the {wanted} pipeline at epoch {epoch + 1} (train.switch_epoch={switch})"
                )

    def _agree(self, nonfinite: bool) -> tuple[bool, bool]:
        """(any rank's loss non-finite, any rank asked to stop): a tiny all-reduce, called by every rank
        twice per step (before the forward pass for the stop, after it for the loss)."""
        if self.world == 1:
            return nonfinite, self._stop_signal is not None
        flags = torch.tensor([float(nonfinite), float(self._stop_signal is not None)], device=self.device)
        flags = dist.all_reduce_max(flags)
        return bool(flags[0]), bool(flags[1])

    def train_step(
        self, images: torch.Tensor, targets: list[dict], metas: list[dict]
    ) -> dict[str, float] | None:
        """One optimisation step on a collated batch (uint8; float32 after PP-YOLOE colour distortion).

        Each target also receives its image's ``pad_shape`` (heads with anchors train only on
        anchors inside it). Returns None, touching nothing, when a stop was requested (on any rank)
        before the step began; a stop requested during the step takes effect after it, because the
        forward pass has already moved the BatchNorm running statistics.

        Raises:
            OdetError: the loss is not finite (the NaN guard has saved the batch's ids and the state).
        """
        if self._agree(False)[1]:
            return None
        self.schedule.apply(self.optimizer, self.iter)
        batch = prepare_batch(images, metas, self.model.input_spec, self.device)
        targets = [
            {**{k: v.to(self.device) for k, v in t.items()}, "pad_shape": tuple(m["pad_shape"])}
            for t, m in zip(targets, metas, strict=True)
        ]
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp else nullcontext()
        self._set_train_mode()
        with autocast:
            losses = self.loss_module(batch, targets, self.epoch)
        total = losses["loss"]  # every head returns its weighted total next to the components
        finite = bool(torch.isfinite(total))
        nonfinite, _ = self._agree(not finite)
        if nonfinite:
            self._nan_guard(losses, metas, not finite)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.recipe.train.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.train.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iter += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def _nan_guard(self, losses: dict[str, torch.Tensor], metas: list[dict], here: bool) -> NoReturn:
        """Record the offending batch and the state before the step, then stop with one line."""
        report = {
            "rank": self.rank,
            "nonfinite": here,
            "losses": {k: float(v.detach()) for k, v in losses.items()},
            "images": [{"image_id": m["image_id"], "file_name": m["file_name"]} for m in metas],
        }
        reports = dist.all_gather_object(report)
        ckpt = self.save_last(self.run_dir / NAN_CKPT)  # nothing has been stepped: the state before
        bad = [r for r in reports if r["nonfinite"]]
        if self.main:
            write_json_atomic(
                self.run_dir / NAN_JSON,
                {
                    "iteration": self.iter + 1,
                    "epoch": self.epoch + 1,
                    "lr": self.schedule.lr_at(self.iter),
                    "batches": bad,
                    "checkpoint": str(ckpt),
                },
            )
        if not self.main:
            raise SystemExit(2)  # rank 0 explains; N copies of the same line help nobody
        values = ", ".join(f"{k}={v:.4g}" for k, v in bad[0]["losses"].items())
        names = [img["file_name"] for r in bad for img in r["images"]]
        shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
        raise OdetError(
            f"non-finite loss at iteration {self.iter + 1} (epoch {self.epoch + 1}: {values}); stopped "
            f"before the step: lower train.lr, set train.clip_grad_norm (e.g. 10), or check the images "
            f"{shown} (ids in {self.run_dir / NAN_JSON}; state before the step in {ckpt})"
        )

    def evaluate(self) -> float:
        """COCO mAP of the EMA (or live) model on the validation set; logs and returns mAP."""
        from odcli.evaluation.coco import render_eval_table
        from odcli.evaluation.run import run_coco_eval

        model = self.ema.module if self.ema else self.model
        result, _ = run_coco_eval(
            model,
            self.val_set,
            batch_size=self.recipe.data.val_batch_size,
            num_workers=0,
            device=self.device,
            cat_ids=self.cat_ids,
            progress=False,
        )
        self.last_eval = result
        if self.main:
            self.out.render(lambda console: render_eval_table(result, console))
        return float(result.stats["mAP"])

    def _evaluate_everywhere(self) -> float:
        """Rank 0 evaluates (the others wait in the broadcast), every rank gets the mAP."""
        mean_ap = self.evaluate() if self.main else None
        return float(dist.broadcast_object(mean_ap))

    def _prepare_run_dir(self) -> None:
        """Create the run directory, write the run's resolved ``recipe.yaml`` (what ``--resume``
        continues from) and start ``train.log``."""
        if not self.main:
            return
        self._created_run_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / RUN_RECIPE, dump_recipe(self.recipe.with_absolute_paths()))
            self.out.open_log(self.run_dir)
        except OSError as exc:
            raise OdetError(
                f"cannot write the run directory {self.run_dir}: {exc.strerror or exc}; "
                "choose another --run-dir or train.output_dir"
            ) from None

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGINT/SIGTERM → finish the current step, save ``last``, stop. A second one stops at once.

        Only this process acts on them: DataLoader workers are forked with this handler, and a
        terminal's Ctrl-C reaches every process of the group, so each worker would otherwise announce
        the stop again. Workers go on producing batches until this process shuts the loader down.
        """
        owner = os.getpid()

        def request_stop(signum: int, _frame: Any) -> None:
            if os.getpid() != owner:
                return
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name
            # Written directly (the handler may interrupt a rich print); never raises on a closed pipe.
            self.out.warn(
                f"\n{self._stop_signal}: stopping after this step and saving {self.run_dir / LAST} "
                "(press Ctrl-C again to stop at once, without saving)"
            )

        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not possible outside the main thread (embedded use): Python's defaults stay.
            with contextlib.suppress(ValueError):
                previous[sig] = signal.signal(sig, request_stop)
        return previous

    def _cleanup_failed_run(self, first_epoch: int) -> None:
        """A new run that failed within its first epoch, before any checkpoint, leaves no directory
        behind (a longer one keeps its logs: they may explain the failure)."""
        if self.main and self._created_run_dir and not self._wrote_checkpoint and self.epoch == first_epoch:
            self.metrics.close()
            self.out.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def fit(self) -> Path:
        """Train to ``train.epochs``; returns the best (or last) checkpoint path.

        Raises:
            SystemExit: 128 + signal number after SIGINT/SIGTERM (the state is saved first).
            OdetError: a user error, or the NaN guard fired.
        """
        tcfg = self.recipe.train
        self._prepare_run_dir()
        first_epoch = self.epoch
        if self.main:
            self._print_header()
        columns = (
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        previous = self._install_signal_handlers()
        try:
            bar = Progress(*columns, console=self.out.screen, disable=not self.main, transient=False)
            with bar as progress:
                task = progress.add_task(
                    "train", total=self.total_iters, completed=self.iter, epoch=0, stats=""
                )
                while self.epoch < tcfg.epochs:
                    if not self._train_epoch(progress, task):
                        raise _StopRequested
                    self._end_epoch(progress)
                    if self._stop_signal is not None and self.world == 1:
                        raise _StopRequested
        except _StopRequested:
            path = self.save_last()
            name = self._stop_signal or "SIGINT"
            self.out.warn(
                f"stopped by {name} after iteration {self.iter} (epoch {self.epoch + 1}): state saved to "
                f"{path}; continue with: {self.resume_command()}"
            )
            raise SystemExit(128 + int(getattr(signal, name, signal.SIGINT))) from None
        except Exception:
            self._cleanup_failed_run(first_epoch)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.metrics.close()
            self.out.close()
        best = self.run_dir / BEST
        return best if best.exists() else self.run_dir / LAST

    def resume_command(self) -> str:
        """The command that continues this run exactly (its settings come from the run's recipe.yaml)."""
        recipe = shlex.quote(str(self.recipe.path)) if self.recipe.path else "RECIPE"
        return f"odet train {recipe} --resume --run-dir {shlex.quote(str(self.run_dir))}"

    def _print_header(self) -> None:
        tcfg = self.recipe.train
        total_batch = self.recipe.data.batch_size * self.world
        where = f"{self.device}"
        if self.world > 1:
            import torch.distributed as tdist

            where += f" × {self.world} processes (DDP, {tdist.get_backend()}"
            where += ", SyncBN)" if tcfg.sync_bn else ")"
        if self.use_amp:
            where += f" · amp {tcfg.amp_dtype}"
        self.out.print(
            f"[bold]{self.model.arch}[/] · {len(self.classes)} classes · {len(self.train_set)} train / "
            f"{len(self.val_set)} val images · {where} · torch threads {torch.get_num_threads()}\n"
            f"lr {self.lr:.6g} = {tcfg.lr:g} × {self.step_images} images per step / {tcfg.base_batch_size} · "
            f"{tcfg.epochs} epochs × {self.iters_per_epoch} iterations · run dir {self.run_dir}"
        )
        if self.step_images < total_batch:
            self.out.print(
                f"note: data.batch_size {self.recipe.data.batch_size} is larger than the "
                f"{len(self.train_set)} training images: each step holds {self.step_images}, and the lr "
                "is scaled for that"
            )
        shared = self._validation_images_in_training()
        if shared:
            self.out.print(
                f"warning: {shared} of the {len(self.val_set)} validation images ({self.val_set.origin}) are "
                f"training images ({self.train_set.origin}): the evaluations measure memorisation, not "
                "generalisation; point val at held-out images (or set data.val_images to train's to mean it)"
            )
        if self.train_set.dropped_boxes:
            self.out.print(
                f"dropped {self.train_set.dropped_boxes} degenerate boxes (zero width/height) from the "
                f"training annotations; {self.train_set.crowd_boxes} crowd boxes are not trained on"
            )
        if self.metrics.tensorboard_dir is not None:
            self.out.print(f"tensorboard --logdir {self.metrics.tensorboard_dir}")

    def _validation_images_in_training(self) -> int:
        """How many validation images are also training images, when a data.yaml (not the recipe)
        chose the splits; 0 otherwise (a recipe naming the same images for both means it)."""
        chosen_by_yaml = (getattr(ds, "split_from_yaml", False) for ds in (self.train_set, self.val_set))
        if not any(chosen_by_yaml):
            return 0
        train = {self.train_set.image_path(i).resolve() for i in range(len(self.train_set))}
        return sum(self.val_set.image_path(i).resolve() in train for i in range(len(self.val_set)))

    def _end_epoch(self, progress: Progress) -> None:
        """Epoch bookkeeping after its last step: evaluation, best/last checkpoints, epoch record."""
        tcfg = self.recipe.train
        self.epoch += 1
        is_last = self.epoch == tcfg.epochs
        record: dict[str, Any] = {"epoch": self.epoch, "iter": self.iter}
        record.update({k: v / max(self._epoch_count, 1) for k, v in self._epoch_sums.items()})
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["time"] = round(time.perf_counter() - getattr(self, "_epoch_start", time.perf_counter()), 3)
        self._epoch_sums, self._epoch_count = {}, 0
        if self.epoch % tcfg.eval_interval == 0 or is_last:
            progress.stop()
            mean_ap = self._evaluate_everywhere()
            progress.start()
            self.metrics.log_eval({"epoch": self.epoch, "iter": self.iter, "mAP": mean_ap})
            if self.main and hasattr(self, "last_eval"):
                record.update({k: float(v) for k, v in self.last_eval.stats.items()})
            else:
                record["mAP"] = mean_ap
            if mean_ap > self.best_map:
                self.best_map = mean_ap
                self.save_best()
        self.metrics.log_epoch(record)
        if self.epoch % tcfg.checkpoint_interval == 0 or is_last:
            self.save_last()

    def _train_epoch(self, progress: Progress, task: Any) -> bool:
        """Train the rest of the current epoch; False when a stop was requested (state consistent)."""
        tcfg = self.recipe.train
        smoothed: dict[str, float] = {}
        self._epoch_start = time.perf_counter()
        data_time = 0.0
        skip = self.iter - self.epoch * self.iters_per_epoch
        batches = self._batches(self.epoch, skip)
        step = 0
        while True:
            t_data = time.perf_counter()
            try:
                images, targets, metas = next(batches)
            except StopIteration:
                break
            except _StopRequested:
                if self.world > 1:
                    self._agree(False)  # meet the other ranks' pre-step all-reduce, which stops them
                return False
            wait = time.perf_counter() - t_data
            data_time = 0.9 * data_time + 0.1 * wait if step else wait
            t_step = time.perf_counter()
            losses = self.train_step(images, targets, metas)
            if losses is None:
                return False
            step += 1
            for k, v in losses.items():
                smoothed[k] = v if k not in smoothed else 0.9 * smoothed[k] + 0.1 * v
                self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + v
            self._epoch_count += 1
            lr = self.optimizer.param_groups[0]["lr"]
            stats = (
                " ".join(f"{k} {v:.3f}" for k, v in smoothed.items())
                + f" lr {lr:.2e} data {data_time * 1e3:.0f}ms"
            )
            progress.update(task, advance=1, epoch=f"{self.epoch + 1}/{tcfg.epochs}", stats=stats)
            if self.iter % tcfg.log_interval == 0:
                self._log_iteration(losses, lr, data_time, time.perf_counter() - t_step)
                where = f"epoch {self.epoch + 1}/{tcfg.epochs} iter {self.iter}/{self.total_iters}"
                self.out.log_line(f"{where} {stats}")
            if tcfg.checkpoint_every_iters and self.iter % tcfg.checkpoint_every_iters == 0:
                self.save_last()
            if self._stop_signal is not None and self.world == 1:
                return False
        if not math.isfinite(smoothed.get("loss", 0.0)):
            raise OdetError("training diverged (non-finite loss)")
        return True

    def _log_iteration(self, losses: dict[str, float], lr: float, data_time: float, step_time: float) -> None:
        """Log one iteration; losses are averaged over the ranks (a collective: every rank calls it)."""
        names = sorted(losses)
        if self.world > 1:
            values = torch.tensor([losses[k] for k in names], dtype=torch.float64, device=self.device)
            losses = dict(zip(names, dist.all_reduce_mean(values).tolist(), strict=True))
        record = {"epoch": self.epoch + 1, "iter": self.iter, "lr": lr, **losses}
        record.update(data_time=round(data_time, 5), iter_time=round(step_time, 5))
        if self.scaler.is_enabled():
            record["amp_scale"] = float(self.scaler.get_scale())
        self.metrics.log_iter(record)

    def draw_sample_prediction(self, weights: Path) -> Path | None:
        """Predict the first validation image with ``weights`` and save the annotated picture."""
        from odcli.data.image_io import read_image
        from odcli.inference.predictor import Predictor
        from odcli.viz.draw import draw_detections
        from odcli.weights.load import load_weights

        if not self.main or not weights.exists() or len(self.val_set) == 0:
            return None
        model = build_from_config(self.recipe.model)
        load_weights(model, weights)
        model.to(self.device)
        img = read_image(self.val_set.image_path(0))
        det = Predictor(model)([img])[0]
        picture = draw_detections(
            img, det["boxes"], det["scores"], det["labels"], self.classes, score_thr=0.3
        )
        path = self.run_dir / f"prediction_{Path(self.val_set.image_path(0)).stem}.jpg"
        import cv2

        cv2.imwrite(str(path), picture)
        return path
