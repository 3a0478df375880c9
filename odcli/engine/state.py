"""Training state: where a run is (epoch, iteration, best mAP, the epoch's running loss sums), and
how it is saved to and resumed from ``last.safetensors``.

``last`` holds model, EMA, optimiser, schedule, grad scaler, the counters and every rank's RNG
states; ``--resume`` continues from the exact iteration (the sampler skips the batches done) and,
with the same total batch, bit for bit. The meta keys written here are read by older and newer
versions alike: they are only ever added to.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from odcli.engine.console import TrainConsole
from odcli.engine.parts import TrainingParts, build_schedule
from odcli.engine.rng_state import capture_rng_state, restore_rng_state, split_by_rank
from odcli.engine.schedules import schedule_from_state_dict
from odcli.errors import OdetError
from odcli.runtime import distributed as dist
from odcli.weights.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

LAST = "last.safetensors"
BEST = "best.safetensors"


@dataclass
class TrainState:
    """The counters of a run; ``epoch_sums``/``epoch_count`` make a resumed epoch's means exact."""

    epoch: int = 0  #: completed epochs
    iter: int = 0  #: completed iterations (optimiser steps)
    best_map: float = -1.0  #: the best evaluation's mAP so far
    epoch_sums: dict[str, float] = field(default_factory=dict)  #: loss sums of the current epoch
    epoch_count: int = 0  #: steps summed in ``epoch_sums``
    epoch_start: float = field(default_factory=time.perf_counter)  #: not saved: wall clock only
    wrote_checkpoint: bool = False  #: this process wrote a checkpoint (a failed run keeps its dir)

    # ----------------------------------------------------------------------------------- epochs
    def begin_epoch(self) -> None:
        self.epoch_start = time.perf_counter()

    def add_step(self, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
        self.epoch_count += 1

    def finish_epoch(self, lr: float) -> dict[str, Any]:
        """Count the epoch done; its record: ``epoch``, ``iter``, mean losses, last ``lr``, ``time`` (s)."""
        self.epoch += 1
        record: dict[str, Any] = {"epoch": self.epoch, "iter": self.iter}
        record.update({k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()})
        record["lr"] = lr
        record["time"] = round(time.perf_counter() - self.epoch_start, 3)
        self.epoch_sums, self.epoch_count = {}, 0
        return record

    # ------------------------------------------------------------------------------------ saving
    def meta(self, parts: TrainingParts) -> dict[str, Any]:
        """The JSON meta of a checkpoint (keys are kept forever: old checkpoints stay loadable)."""
        recipe = parts.recipe
        return {
            "arch": parts.model.arch,
            "recipe": recipe.to_dict(),
            "recipe_path": str(recipe.path) if recipe.path else None,
            "epoch": self.epoch,
            "iter": self.iter,
            "iters_per_epoch": parts.iters_per_epoch,
            "world_size": parts.placement.world,
            "total_batch": parts.total_batch,
            "classes": parts.classes,
            "cat_ids": parts.cat_ids,
            "best_map": self.best_map,
            "lr": parts.lr,
            "schedule": parts.schedule.state_dict(),
            "scaler": parts.amp.scaler.state_dict() if parts.amp.scaler.is_enabled() else None,
            "epoch_sums": self.epoch_sums,
            "epoch_count": self.epoch_count,
            "seed": recipe.train.seed,
            "torch_version": torch.__version__,
        }

    def save_last(self, parts: TrainingParts, path: Path) -> Path:
        """Write the full training state (every rank must call this: it gathers their RNG states)."""
        gathered = dist.all_gather_object(capture_rng_state())
        if parts.placement.main:
            extra = {f"rng.{r}.{k}": v for r, (tensors, _) in enumerate(gathered) for k, v in tensors.items()}
            save_checkpoint(
                path,
                model_state=parts.model.state_dict(),
                meta={**self.meta(parts), "rng": [m for _, m in gathered]},
                ema_state=parts.ema.state_dict() if parts.ema else None,
                optimizer=parts.optimizer,
                extra_tensors=extra,
            )
            self.wrote_checkpoint = True
        return path

    def save_best(self, parts: TrainingParts, path: Path) -> Path:
        """Write the evaluated weights (EMA when on) with the meta: what deployment loads."""
        if parts.placement.main:
            save_checkpoint(path, model_state=parts.eval_model.state_dict(), meta=self.meta(parts))
            self.wrote_checkpoint = True
        return path

    # ---------------------------------------------------------------------------------- resuming
    def resume(self, parts: TrainingParts, path: Path, extend_epochs: int | None, out: TrainConsole) -> None:
        """Continue from the training state in ``path``: weights, optimiser, counters, RNG, schedule.

        With another total batch (world size) the run continues at the same fraction of the epoch,
        not bit-exactly. ``extend_epochs`` adds epochs to the checkpoint's total and rebuilds the
        schedule (``parts.recipe`` and ``parts.schedule`` are replaced).

        Raises:
            OdetError: no checkpoint, weights only, or a state that does not fit the recipe's model.
        """
        ckpt = _load_training_state(path, parts)
        meta = ckpt.meta
        ipe = parts.iters_per_epoch
        self.epoch = int(meta["epoch"])
        self.best_map = float(meta.get("best_map", -1.0))
        old_ipe = int(meta.get("iters_per_epoch", ipe))
        done = int(meta.get("iter", self.epoch * old_ipe)) - self.epoch * old_ipe  # iterations in epoch
        same_layout = old_ipe == ipe and int(meta.get("total_batch", parts.total_batch)) == parts.total_batch
        if same_layout:
            self.iter = self.epoch * ipe + done
        else:
            self.iter = self.epoch * ipe + min(round(done * ipe / max(old_ipe, 1)), ipe)
            out.print(
                f"note: the total batch changed ({meta.get('total_batch')} → {parts.total_batch}): lr and "
                f"schedule follow the new batch; continuing at the same point of epoch {self.epoch + 1}, "
                "not bit-exactly"
            )
        self.epoch_sums = dict(meta.get("epoch_sums") or {}) if same_layout else {}
        self.epoch_count = int(meta.get("epoch_count", 0)) if same_layout else 0
        if meta.get("scaler") and parts.amp.scaler.is_enabled():
            parts.amp.scaler.load_state_dict(meta["scaler"])
        self._restore_schedule(parts, meta, same_layout, extend_epochs, out)
        rng_meta = meta.get("rng")
        per_rank = split_by_rank({k[4:]: v for k, v in ckpt.extra_tensors.items() if k.startswith("rng.")})
        rank = parts.placement.rank
        if rng_meta and rank in per_rank and len(rng_meta) == parts.placement.world:
            restore_rng_state(per_rank[rank], rng_meta[rank])
        where = f"epoch {self.epoch}, iteration {self.iter}"
        if self.iter > self.epoch * ipe:
            where += f" ({self.iter - self.epoch * ipe}/{ipe} of epoch {self.epoch + 1} done)"
        out.print(f"resumed from {path} at {where}")

    def _restore_schedule(
        self,
        parts: TrainingParts,
        meta: dict[str, Any],
        same_layout: bool,
        extend_epochs: int | None,
        out: TrainConsole,
    ) -> None:
        """Keep the checkpoint's lr schedule, or rebuild it (``--extend-epochs``, other batch size)."""
        train = parts.recipe.train
        old_epochs = int((meta.get("recipe") or {}).get("train", {}).get("epochs", train.epochs))
        if extend_epochs is not None:
            if extend_epochs < 1:
                raise OdetError(f"--extend-epochs must be >= 1, got {extend_epochs}")
            new_epochs = old_epochs + extend_epochs
            parts.recipe = dataclasses.replace(
                parts.recipe, train=dataclasses.replace(train, epochs=new_epochs)
            )
            before = _schedule_lr(meta, self.iter)
            parts.schedule = build_schedule(train, parts.lr, parts.iters_per_epoch, new_epochs)
            was = f"{before:.3g}" if before is not None else "?"
            out.print(
                f"extending the run from {old_epochs} to {new_epochs} epochs (--extend-epochs "
                f"{extend_epochs}): the lr schedule is rebuilt for {new_epochs} epochs "
                f"({train.schedule}); lr at iteration {self.iter} was {was}, "
                f"is now {parts.schedule.lr_at(self.iter):.3g}"
            )
            return
        saved = meta.get("schedule")
        if saved and same_layout:
            parts.schedule = schedule_from_state_dict(saved)
        if old_epochs == train.epochs:
            return
        if train.epochs <= self.epoch:
            out.print(
                f"note: the run already has {self.epoch} epochs and train.epochs is "
                f"{train.epochs}: nothing to train; use --extend-epochs N to train N more"
            )
        else:
            out.print(
                f"note: train.epochs is {train.epochs} but the run's lr schedule was built "
                f"for {old_epochs}; it is kept as it was (--extend-epochs N rebuilds it for more epochs)"
            )


def _load_training_state(path: Path, parts: TrainingParts) -> Checkpoint:
    """Read ``path`` and load model, EMA and optimiser state into ``parts`` (checked to fit)."""
    if not path.is_file():
        raise OdetError(f"nothing to resume: {path} does not exist (train without --resume first)")
    ckpt = load_checkpoint(path, device=parts.placement.device)
    arch = parts.model.arch
    if ckpt.meta.get("arch") != arch:
        raise OdetError(
            f"{path} holds {ckpt.meta.get('arch')}, but the recipe builds {arch}; "
            "resume with the recipe that started the run, or use another --run-dir"
        )
    if "epoch" not in ckpt.meta or not ckpt.optimizer_state:
        raise OdetError(
            f"{path} holds weights only, not a training state to resume; start a new run from them "
            f"with --set train.init_weights={path}"
        )
    try:
        parts.model.load_state_dict(ckpt.model_state)
        if parts.ema is not None and ckpt.ema_state:
            parts.ema.load_state_dict(ckpt.ema_state)
        parts.optimizer.load_state_dict(ckpt.optimizer_state)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OdetError(
            f"{path} does not fit the model this recipe builds ({first.rstrip(':.')}); the run was "
            "made with other model settings or another dataset (class count): use its recipe"
        ) from None
    return ckpt


def _schedule_lr(meta: dict[str, Any], iteration: int) -> float | None:
    """The lr the checkpoint's schedule gives at ``iteration`` (for messages)."""
    try:
        return schedule_from_state_dict(meta["schedule"]).lr_at(iteration)
    except (KeyError, TypeError, ValueError):
        return None
