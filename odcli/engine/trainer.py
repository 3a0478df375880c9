"""The training loop: data → model.loss → optimiser step → EMA → schedule, with eval and checkpoints.

One :class:`Trainer` per run. Everything it does is decided by the recipe; the run directory
(``<train.output_dir>/<recipe name>``) receives ``recipe.yaml``, ``metrics.jsonl``,
``last.safetensors`` (full state, for ``--resume``) and ``best.safetensors`` (EMA weights of the
best evaluation, for deployment).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from odcli.data.datasets import build_dataset
from odcli.data.loader import build_loader, prepare_batch
from odcli.data.pipelines import build_train_pipeline
from odcli.data.stages import StagedPipeline
from odcli.engine import distributed as dist
from odcli.engine.checkpoint import load_checkpoint, save_checkpoint
from odcli.engine.ema import ModelEMA
from odcli.engine.evaluate_model import eval_transforms
from odcli.engine.schedules import FlatCosineSchedule, MultiStepSchedule, build_param_groups
from odcli.errors import OdetError
from odcli.models.detector import Detector
from odcli.predictor import resolve_device
from odcli.recipe import Recipe
from odcli.zoo import build_from_config, input_spec_of

LAST = "last.safetensors"
BEST = "best.safetensors"


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


class Trainer:
    """Train a detector as a recipe describes.

    Args:
        recipe: the validated recipe.
        run_dir: where outputs go (created).
        resume: continue from ``run_dir/last.safetensors``.
        console: where progress and tables are rendered.
    """

    def __init__(
        self, recipe: Recipe, *, run_dir: Path, resume: bool = False, console: Console | None = None
    ):
        self.recipe = recipe
        self.run_dir = run_dir
        self.console = console or Console()
        self.main = dist.is_main_process()
        tcfg, dcfg = recipe.train, recipe.data
        seed_everything(tcfg.seed + dist.rank(), tcfg.deterministic)
        self.device = resolve_device(tcfg.device)

        root = _require(recipe.data_root, "dataset root", "data.root")
        # The input spec (pad value, scale) comes from the model config; build the pipeline from it.
        spec = input_spec_of(recipe.model)
        # COCO JSON or YOLO folders (data.format); a staged pipeline is built here, in the main process,
        # so its shared stage flag exists before any DataLoader worker starts.
        self.train_set = build_dataset(dcfg, root, "train", build_train_pipeline(dcfg, spec))
        self.classes = list(self.train_set.classes)
        self.cat_ids = list(self.train_set.cat_ids)
        model_cfg = dataclasses.replace(recipe.model, num_classes=len(self.classes))
        self.recipe = dataclasses.replace(recipe, model=model_cfg)
        self.model: Detector = build_from_config(model_cfg).to(self.device)
        backbone_weights = getattr(model_cfg, "backbone_weights", None)
        if backbone_weights and not resume:  # ImageNet init (RetinaNet); a resumed run has its own
            from odcli.weights import load_backbone_weights

            load_backbone_weights(self.model, recipe.resolve_path(backbone_weights))
            if self.main:
                self.console.print(f"backbone initialised from {recipe.resolve_path(backbone_weights)}")
        if tcfg.init_weights:
            self._init_from(recipe.resolve_path(tcfg.init_weights))

        self.val_set = build_dataset(dcfg, root, "val", eval_transforms(self.model))
        self.loader = build_loader(
            self.train_set,
            batch_size=dcfg.batch_size,
            shuffle=True,
            num_workers=dcfg.num_workers,
            seed=tcfg.seed,
            drop_last=len(self.train_set) > dcfg.batch_size,
            persistent_workers=dcfg.persistent_workers,
            pad_value=int(spec.pad_value),
            size_divisor=spec.size_divisor,
            pin_memory=self.device.type == "cuda",
        )
        self.iters_per_epoch = len(self.loader)
        self.total_iters = tcfg.epochs * self.iters_per_epoch

        total_batch = dcfg.batch_size * dist.world_size()
        self.lr = tcfg.lr * total_batch / tcfg.base_batch_size
        groups = build_param_groups(
            self.model, weight_decay=tcfg.weight_decay, norm_decay=tcfg.norm_decay, bias_decay=tcfg.bias_decay
        )
        if tcfg.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=self.lr)
        elif tcfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=tcfg.momentum)
        else:
            raise OdetError(f"train.optimizer must be 'adamw' or 'sgd', got {tcfg.optimizer!r}")
        warmup = min(tcfg.warmup_iters, max(self.total_iters - 1, 0))
        warmup = warmup if warmup >= 2 else 0
        if tcfg.schedule == "flat_cosine":
            self.schedule: FlatCosineSchedule | MultiStepSchedule = FlatCosineSchedule(
                base_lr=self.lr,
                total_iters=self.total_iters,
                warmup_iters=warmup,
                warmup_start_factor=tcfg.warmup_start_factor,
                cosine_start_iter=min(tcfg.cosine_start_epoch * self.iters_per_epoch, self.total_iters - 1),
                min_lr=self.lr * tcfg.min_lr_ratio,
            )
        elif tcfg.schedule == "multistep":
            self.schedule = MultiStepSchedule(
                base_lr=self.lr,
                warmup_iters=warmup,
                warmup_start_factor=tcfg.warmup_start_factor,
                milestones=tuple(m * self.iters_per_epoch for m in tcfg.milestones),
            )
        else:
            raise OdetError(f"train.schedule must be 'flat_cosine' or 'multistep', got {tcfg.schedule!r}")
        self.ema = (
            ModelEMA(self.model, momentum=tcfg.ema_momentum, gamma=tcfg.ema_gamma) if tcfg.ema else None
        )
        self.use_amp = tcfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch = 0  # completed epochs
        self.iter = 0  # completed iterations
        self.best_map = -1.0
        self.history: list[dict[str, Any]] = []
        if resume:
            self._resume(run_dir / LAST)

    # ------------------------------------------------------------------------------ checkpoints
    def _init_from(self, path: Path) -> None:
        """Initialise from other weights, keeping only tensors whose name and shape fit."""
        from odcli.weights import read_state_dict

        state = read_state_dict(path, arch=self.model.arch)
        own = self.model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.model.load_state_dict(fitting, strict=False)
        if self.main:
            self.console.print(f"initialised {len(fitting)}/{len(own)} tensors from {path}")

    def _meta(self) -> dict[str, Any]:
        return {
            "arch": self.model.arch,
            "recipe": self.recipe.to_dict(),
            "recipe_path": str(self.recipe.path) if self.recipe.path else None,
            "epoch": self.epoch,
            "iter": self.iter,
            "classes": self.classes,
            "cat_ids": self.cat_ids,
            "best_map": self.best_map,
            "lr": self.lr,
        }

    def save_last(self) -> Path:
        path = self.run_dir / LAST
        if self.main:
            save_checkpoint(
                path,
                model_state=self.model.state_dict(),
                meta=self._meta(),
                ema_state=self.ema.state_dict() if self.ema else None,
                optimizer=self.optimizer,
            )
        return path

    def save_best(self) -> Path:
        path = self.run_dir / BEST
        if self.main:
            weights = (self.ema.module if self.ema else self.model).state_dict()
            save_checkpoint(path, model_state=weights, meta=self._meta())
        return path

    def _resume(self, path: Path) -> None:
        if not path.is_file():
            raise OdetError(f"nothing to resume: {path} does not exist (train without --resume first)")
        ckpt = load_checkpoint(path, device=self.device)
        if ckpt.meta.get("arch") != self.model.arch:
            raise OdetError(f"{path} holds {ckpt.meta.get('arch')}, but the recipe builds {self.model.arch}")
        self.model.load_state_dict(ckpt.model_state)
        if self.ema is not None and ckpt.ema_state:
            self.ema.load_state_dict(ckpt.ema_state)
        if ckpt.optimizer_state:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.epoch = int(ckpt.meta["epoch"])
        self.iter = self.epoch * self.iters_per_epoch
        self.best_map = float(ckpt.meta.get("best_map", -1.0))
        if self.main:
            self.console.print(f"resumed from {path} at epoch {self.epoch}")

    # ---------------------------------------------------------------------------------- training
    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, list[dict], list[dict]]]:
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self._select_pipeline_stage(epoch)
        yield from self.loader

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
                self.console.print(
                    f"note: train.switch_epoch={switch} has no effect: data.train_pipeline "
                    f"{self.recipe.data.train_pipeline!r} has a single stage (rtmdet_strong has two)"
                )
            return
        wanted = pipeline.names[1] if epoch >= switch else pipeline.names[0]
        if pipeline.stage != wanted:
            pipeline.set_stage(wanted)
            if self.main:
                self.console.print(
                    f"switching to the {wanted} pipeline at epoch {epoch + 1} (train.switch_epoch={switch})"
                )

    def train_step(self, images: torch.Tensor, targets: list[dict], metas: list[dict]) -> dict[str, float]:
        """One optimisation step on a collated uint8 batch; returns the losses as floats.

        Each target also receives its image's ``pad_shape`` (heads with anchors train only on
        anchors inside it).
        """
        self.schedule.apply(self.optimizer, self.iter)
        batch = prepare_batch(images, metas, self.model.input_spec, self.device)
        targets = [
            {**{k: v.to(self.device) for k, v in t.items()}, "pad_shape": tuple(m["pad_shape"])}
            for t, m in zip(targets, metas, strict=True)
        ]
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        self.model.train()
        with autocast:
            losses = self.model.loss(batch, targets, epoch=self.epoch)
        # A head that returns its own weighted total under "loss" (PP-YOLOE, as upstream reports it
        # next to the unweighted components) is trained on that; otherwise the components add up.
        total = losses["loss"] if "loss" in losses else sum(losses.values())
        if not torch.isfinite(total):
            raise OdetError(
                f"loss became {total.item()} at iteration {self.iter}; lower train.lr or set "
                "train.clip_grad_norm (the last checkpoint is in the run directory)"
            )
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
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["loss"] = float(total.detach())
        return out

    def evaluate(self) -> float:
        """COCO mAP of the EMA (or live) model on the validation set; logs and returns mAP."""
        from odcli.engine.evaluate import render_eval_table
        from odcli.engine.evaluate_model import run_coco_eval

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
            render_eval_table(result, self.console)
        return float(result.stats["mAP"])

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def fit(self) -> Path:
        """Train to ``train.epochs``; returns the best (or last) checkpoint path."""
        tcfg = self.recipe.train
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
            total_batch = self.recipe.data.batch_size * dist.world_size()
            self.console.print(
                f"[bold]{self.model.arch}[/] · {len(self.classes)} classes · {len(self.train_set)} train / "
                f"{len(self.val_set)} val images · {self.device} · torch threads {torch.get_num_threads()}\n"
                f"lr {self.lr:.6g} = {tcfg.lr:g} × total batch {total_batch} / {tcfg.base_batch_size} · "
                f"{tcfg.epochs} epochs × {self.iters_per_epoch} iterations · run dir {self.run_dir}"
            )
            if self.train_set.dropped_boxes:
                self.console.print(
                    f"dropped {self.train_set.dropped_boxes} degenerate boxes (zero width/height) from the "
                    f"training annotations; {self.train_set.crowd_boxes} crowd boxes are not trained on"
                )
        columns = (
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=self.console, disable=not self.main, transient=False) as progress:
                task = progress.add_task(
                    "train", total=self.total_iters, completed=self.iter, epoch=0, stats=""
                )
                while self.epoch < tcfg.epochs:
                    self._train_epoch(progress, task)
                    self.epoch += 1
                    is_last = self.epoch == tcfg.epochs
                    if self.epoch % tcfg.eval_interval == 0 or is_last:
                        progress.stop()
                        mean_ap = self.evaluate()
                        progress.start()
                        self._log({"epoch": self.epoch, "iter": self.iter, "mAP": mean_ap})
                        if mean_ap > self.best_map:
                            self.best_map = mean_ap
                            self.save_best()
                    if self.epoch % tcfg.checkpoint_interval == 0 or is_last:
                        self.save_last()
        except KeyboardInterrupt:
            path = self.save_last()
            if self.main:
                self.console.print(f"interrupted: state saved to {path}; continue with --resume")
            raise
        best = self.run_dir / BEST
        return best if best.exists() else self.run_dir / LAST

    def _train_epoch(self, progress: Progress, task: Any) -> None:
        tcfg = self.recipe.train
        smoothed: dict[str, float] = {}
        t_data = time.perf_counter()
        data_time = 0.0
        for step, (images, targets, _metas) in enumerate(self._batches(self.epoch)):
            data_time = (
                0.9 * data_time + 0.1 * (time.perf_counter() - t_data)
                if step
                else time.perf_counter() - t_data
            )
            losses = self.train_step(images, targets, _metas)
            for k, v in losses.items():
                smoothed[k] = v if k not in smoothed else 0.9 * smoothed[k] + 0.1 * v
            lr = self.optimizer.param_groups[0]["lr"]
            stats = (
                " ".join(f"{k} {v:.3f}" for k, v in smoothed.items())
                + f" lr {lr:.2e} data {data_time * 1e3:.0f}ms"
            )
            progress.update(task, advance=1, epoch=f"{self.epoch + 1}/{tcfg.epochs}", stats=stats)
            if self.iter % tcfg.log_interval == 0:
                self._log(
                    {"epoch": self.epoch + 1, "iter": self.iter, "lr": lr, "data_time": data_time, **losses}
                )
                if self.main and not self.console.is_terminal:  # logs and CI: no live bar, print lines
                    line = f"epoch {self.epoch + 1}/{tcfg.epochs} iter {self.iter}/{self.total_iters} {stats}"
                    self.console.print(line, soft_wrap=True)
            t_data = time.perf_counter()
        if not math.isfinite(smoothed.get("loss", 0.0)):
            raise OdetError("training diverged (non-finite loss)")

    def draw_sample_prediction(self, weights: Path) -> Path | None:
        """Predict the first validation image with ``weights`` and save the annotated picture."""
        from odcli.data.image_io import read_image
        from odcli.predictor import Predictor
        from odcli.viz.draw import draw_detections
        from odcli.weights import load_weights

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
