"""The training loop: data → model.loss → optimiser step → EMA → schedule, with eval and checkpoints.

One :class:`Trainer` per run (per process under ``torchrun``). Everything it does is decided by the
recipe; the run directory (``<train.output_dir>/<recipe name>``) receives ``recipe.yaml``, the metric
logs of :mod:`odcli.engine.metrics_log`, ``train.log``, ``last.safetensors`` (full state, for
``--resume``) and ``best.safetensors`` (EMA weights of the best evaluation, for deployment).

The trainer composes its seams, each in its own module: :mod:`~odcli.engine.parts` builds what a run
trains with, :mod:`~odcli.engine.state` counts, saves and resumes, :mod:`~odcli.engine.stopping`
handles signals, the ranks' agreement and the NaN guard, :mod:`~odcli.engine.report` and
:mod:`~odcli.engine.console` say what happens, and :mod:`~odcli.engine.hooks` lets the command
add pictures. Under DDP every process trains a wrapper of the model on its shard of each global
batch and only rank 0 writes files or prints; the lr scales with the images a step holds.
"""

from __future__ import annotations

import math
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from odcli.data.normalize import prepare_batch
from odcli.engine.console import TrainConsole
from odcli.engine.ddp import join_processes, seed_everything, set_train_mode, wrap_for_training
from odcli.engine.feed import EpochFeed
from odcli.engine.hooks import RunView, TrainHook, run_view
from odcli.engine.metrics_log import MetricsLogger
from odcli.engine.parts import build_parts
from odcli.engine.report import StepStats, TrainProgress, print_header
from odcli.engine.run_dir import prepare_run_dir
from odcli.engine.state import BEST, LAST, TrainState
from odcli.engine.stopping import StopControl, StopRequested, stop_for_nonfinite_loss
from odcli.errors import OdetError
from odcli.evaluation.report import EvalResult, render_eval_table
from odcli.evaluation.run import run_coco_eval
from odcli.recipe import Recipe
from odcli.runtime import distributed as dist


class Trainer:
    """Train a detector as a recipe describes.

    Args:
        recipe: the validated recipe.
        run_dir: where outputs go (created by :meth:`fit`).
        resume: continue from ``run_dir/last.safetensors`` (exact iteration, schedule and RNG).
        extend_epochs: with ``resume``: train this many epochs more than the checkpoint's total and
            rebuild the lr schedule for the new total (instead of restoring the old one).
        console: where progress and tables are rendered.
        hooks: called after each evaluation and after the last epoch (main process only).
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        run_dir: Path,
        resume: bool = False,
        extend_epochs: int | None = None,
        console: Console | None = None,
        hooks: Sequence[TrainHook] = (),
    ) -> None:
        placement = join_processes(recipe.train)
        self.run_dir = run_dir
        self.main = placement.main
        self.out = TrainConsole(console, enabled=self.main)  # the screen plus train.log
        self.parts = build_parts(recipe, placement, self.out, pretrained=not resume)
        self.metrics = MetricsLogger(run_dir, enabled=self.main)
        self.state = TrainState()
        self.stop = StopControl(self.out, placement, run_dir / LAST)
        self.hooks = list(hooks)
        self.last_eval: EvalResult | None = None  # the latest evaluation (main process only)
        self.created_run_dir = False  # fit() made run_dir (a failed first epoch removes it again)
        if placement.world > 1:  # from here on each rank draws its own random numbers
            seed_everything(recipe.train.seed + placement.rank, recipe.train.deterministic)
        if resume:
            self.state.resume(self.parts, run_dir / LAST, extend_epochs, self.out)
            self.metrics.truncate_after(self.state.iter)
        self.loss_module = wrap_for_training(self.parts.model, placement, self.recipe.train.sync_bn, self.out)
        self.feed = EpochFeed(self.parts, self.stop, self.out)

    @property
    def recipe(self) -> Recipe:
        """The recipe as trained (classes from the data; epochs after ``--extend-epochs``)."""
        return self.parts.recipe

    @property
    def iter(self) -> int:
        """Completed iterations."""
        return self.state.iter

    @property
    def total_iters(self) -> int:
        return self.recipe.train.epochs * self.parts.iters_per_epoch

    # -------------------------------------------------------------------------------------- run
    def fit(self) -> Path:
        """Train to ``train.epochs``; returns the best (or last) checkpoint path.

        Raises:
            SystemExit: 128 + signal number after SIGINT/SIGTERM (the state is saved first).
            OdetError: a user error, or the NaN guard fired.
        """
        if self.main:
            self.created_run_dir = prepare_run_dir(self.run_dir, self.recipe, self.out)
            print_header(self.out, self.parts, self.run_dir, self.metrics.tensorboard_dir)
        first_epoch = self.state.epoch
        self.stop.install()
        try:
            with TrainProgress(self.out, total=self.total_iters, completed=self.state.iter) as progress:
                while self.state.epoch < self.recipe.train.epochs:
                    if not self._train_epoch(progress):
                        raise StopRequested
                    self._end_epoch(progress)
                    if self.stop.requested and self.parts.placement.world == 1:
                        raise StopRequested
        except StopRequested:
            saved = self.state.save_last(self.parts, self.run_dir / LAST)
            self.stop.exit(saved, self.state.iter, self.state.epoch, self.resume_command())
        except Exception:
            self._remove_failed_run(first_epoch)
            raise
        finally:
            self.stop.restore()
            self.metrics.close()
            self.out.close()
        best = self.run_dir / BEST if (self.run_dir / BEST).exists() else self.run_dir / LAST
        for hook in self.hooks if self.main else ():
            hook.after_fit(self._view(), best)
        return best

    def resume_command(self) -> str:
        """The command that continues this run exactly (its settings come from the run's recipe.yaml)."""
        recipe = shlex.quote(str(self.recipe.path)) if self.recipe.path else "RECIPE"
        return f"odet train {recipe} --resume --run-dir {shlex.quote(str(self.run_dir))}"

    def _remove_failed_run(self, first_epoch: int) -> None:
        """A new run that failed within its first epoch, before any checkpoint, leaves no directory
        behind (a longer one keeps its logs: they may explain the failure)."""
        state = self.state
        if self.main and self.created_run_dir and not state.wrote_checkpoint and state.epoch == first_epoch:
            self.metrics.close()
            self.out.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ----------------------------------------------------------------------------------- epochs
    def _train_epoch(self, progress: TrainProgress) -> bool:
        """Train the rest of the current epoch; False when a stop was requested (state consistent)."""
        tcfg, state = self.recipe.train, self.state
        stats = StepStats()
        state.begin_epoch()
        batches = self.feed.batches(state.epoch, skip=state.iter - state.epoch * self.parts.iters_per_epoch)
        while True:
            asked = time.perf_counter()
            try:
                images, targets, metas = next(batches)
            except StopIteration:
                break
            except StopRequested:
                self.stop.agree(False)  # meet the other ranks' pre-step all-reduce, which stops them
                return False
            stats.add_wait(time.perf_counter() - asked)
            started = time.perf_counter()
            losses = self.train_step(images, targets, metas)
            if losses is None:
                return False
            stats.add_step(losses)
            state.add_step(losses)
            lr = self.parts.optimizer.param_groups[0]["lr"]
            line = stats.text(lr)
            progress.advance(f"{state.epoch + 1}/{tcfg.epochs}", line)
            if state.iter % tcfg.log_interval == 0:
                self._log_iteration(losses, lr, stats.data_time, time.perf_counter() - started)
                self.out.log_line(
                    f"epoch {state.epoch + 1}/{tcfg.epochs} iter {state.iter}/{self.total_iters} {line}"
                )
            if tcfg.checkpoint_every_iters and state.iter % tcfg.checkpoint_every_iters == 0:
                state.save_last(self.parts, self.run_dir / LAST)
            if self.stop.requested and self.parts.placement.world == 1:
                return False
        if not math.isfinite(stats.losses.get("loss", 0.0)):
            raise OdetError("training diverged (non-finite loss)")
        return True

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
        p, state, tcfg = self.parts, self.state, self.recipe.train
        if self.stop.agree(False)[1]:
            return None
        p.schedule.apply(p.optimizer, state.iter)
        device = p.placement.device
        batch = prepare_batch(images, metas, p.model.input_spec, device)
        targets = [
            {**{k: v.to(device) for k, v in t.items()}, "pad_shape": tuple(m["pad_shape"])}
            for t, m in zip(targets, metas, strict=True)
        ]
        set_train_mode(self.loss_module, p.model, tcfg.freeze_bn)
        with p.amp.autocast():
            losses = self.loss_module(batch, targets, state.epoch)
        total = losses["loss"]  # every head returns its weighted total next to the components
        finite = bool(torch.isfinite(total))
        if self.stop.agree(not finite)[0]:
            stop_for_nonfinite_loss(losses, metas, not finite, state=state, parts=p, run_dir=self.run_dir)
        p.optimizer.zero_grad(set_to_none=True)
        p.amp.scaler.scale(total).backward()
        if tcfg.clip_grad_norm:
            p.amp.scaler.unscale_(p.optimizer)
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), tcfg.clip_grad_norm)
        p.amp.scaler.step(p.optimizer)
        p.amp.scaler.update()
        if p.ema is not None:
            p.ema.update(p.model)
        state.iter += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def _end_epoch(self, progress: TrainProgress) -> None:
        """Epoch bookkeeping after its last step: evaluation, best/last checkpoints, epoch record."""
        tcfg, state = self.recipe.train, self.state
        record = state.finish_epoch(self.parts.optimizer.param_groups[0]["lr"])
        is_last = state.epoch == tcfg.epochs
        evaluated = state.epoch % tcfg.eval_interval == 0 or is_last
        if evaluated:
            with progress.paused():
                mean_ap = self._evaluate_everywhere()
            self.metrics.log_eval({"epoch": state.epoch, "iter": state.iter, "mAP": mean_ap})
            if self.last_eval is not None:  # the main process has every metric
                record.update({k: float(v) for k, v in self.last_eval.stats.items()})
            else:
                record["mAP"] = mean_ap
            if mean_ap > state.best_map:
                state.best_map = mean_ap
                state.save_best(self.parts, self.run_dir / BEST)
        self.metrics.log_epoch(record)
        if state.epoch % tcfg.checkpoint_interval == 0 or is_last:
            state.save_last(self.parts, self.run_dir / LAST)
        if evaluated and self.last_eval is not None:
            for hook in self.hooks:
                hook.after_evaluation(self._view(), self.last_eval)

    def _log_iteration(self, losses: dict[str, float], lr: float, data_time: float, step_time: float) -> None:
        """Log one iteration; losses are averaged over the ranks (a collective: every rank calls it)."""
        names = sorted(losses)
        if self.parts.placement.world > 1:
            values = torch.tensor(
                [losses[k] for k in names], dtype=torch.float64, device=self.parts.placement.device
            )
            losses = dict(zip(names, dist.all_reduce_mean(values).tolist(), strict=True))
        record = {"epoch": self.state.epoch + 1, "iter": self.state.iter, "lr": lr, **losses}
        record.update(data_time=round(data_time, 5), iter_time=round(step_time, 5))
        if self.parts.amp.scaler.is_enabled():
            record["amp_scale"] = float(self.parts.amp.scaler.get_scale())
        self.metrics.log_iter(record)

    # ------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> float:
        """COCO mAP of the EMA (or live) model on the validation set; shows the table, returns mAP."""
        result, _ = run_coco_eval(
            self.parts.eval_model,
            self.parts.val_set,
            batch_size=self.recipe.data.val_batch_size,
            num_workers=0,
            device=self.parts.placement.device,
            cat_ids=self.parts.cat_ids,
            progress=False,
        )
        self.last_eval = result
        self.out.render(lambda console: render_eval_table(result, console))
        return float(result.stats["mAP"])

    def _evaluate_everywhere(self) -> float:
        """Rank 0 evaluates (the others wait in the broadcast), every rank gets the mAP."""
        mean_ap = self.evaluate() if self.main else None
        return float(dist.broadcast_object(mean_ap))

    def _view(self) -> RunView:
        return run_view(self.run_dir, self.parts, self.state, self.metrics.history, self.last_eval)
