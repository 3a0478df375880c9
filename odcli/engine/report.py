"""What a run reports while it trains: the header (model, data, devices, lr, notes) and the live
progress bar with its running statistics. Everything goes through :class:`TrainConsole`, so it
lands in ``train.log`` too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from odcli.data.coco import CocoDetection
from odcli.engine.console import TrainConsole
from odcli.engine.parts import TrainingParts


def print_header(
    out: TrainConsole, parts: TrainingParts, run_dir: Path, tensorboard_dir: Path | None
) -> None:
    """The run in two lines (what, where, lr and its scaling), then the notes that apply to it."""
    tcfg, data = parts.recipe.train, parts.recipe.data
    world = parts.placement.world
    where = f"{parts.placement.device}"
    if world > 1:
        import torch.distributed as tdist

        where += f" × {world} processes (DDP, {tdist.get_backend()}"
        where += ", SyncBN)" if tcfg.sync_bn else ")"
    if parts.amp.enabled:
        where += f" · amp {tcfg.amp_dtype}"
    train_set, val_set = parts.train_set, parts.val_set
    out.print(
        f"[bold]{parts.model.arch}[/] · {len(parts.classes)} classes · {len(train_set)} train / "
        f"{len(val_set)} val images · {where} · torch threads {torch.get_num_threads()}\n"
        f"lr {parts.lr:.6g} = {tcfg.lr:g} × {parts.step_images} images per step / {tcfg.base_batch_size} · "
        f"{tcfg.epochs} epochs × {parts.iters_per_epoch} iterations · run dir {run_dir}"
    )
    if parts.step_images < parts.total_batch:
        out.print(
            f"note: data.batch_size {data.batch_size} is larger than the {len(train_set)} training "
            f"images: each step holds {parts.step_images}, and the lr is scaled for that"
        )
    shared = validation_images_in_training(train_set, val_set)
    if shared:
        out.print(
            f"warning: {shared} of the {len(val_set)} validation images ({val_set.origin}) are "
            f"training images ({train_set.origin}): the evaluations measure memorisation, not "
            "generalisation; point val at held-out images (or set data.val_images to train's to mean it)"
        )
    if train_set.dropped_boxes:
        out.print(
            f"dropped {train_set.dropped_boxes} degenerate boxes (zero width/height) from the "
            f"training annotations; {train_set.crowd_boxes} crowd boxes are not trained on"
        )
    if tensorboard_dir is not None:
        out.print(f"tensorboard --logdir {tensorboard_dir}")


def validation_images_in_training(train_set: CocoDetection, val_set: CocoDetection) -> int:
    """How many validation images are also training images, when a data.yaml (not the recipe)
    chose the splits; 0 otherwise (a recipe naming the same images for both means it)."""
    if not any(getattr(ds, "split_from_yaml", False) for ds in (train_set, val_set)):
        return 0
    train = {train_set.image_path(i).resolve() for i in range(len(train_set))}
    return sum(val_set.image_path(i).resolve() in train for i in range(len(val_set)))


class StepStats:
    """The current epoch's losses and data wait (seconds), smoothed with weight 0.9 on the past."""

    def __init__(self) -> None:
        self.losses: dict[str, float] = {}
        self.data_time = 0.0
        self.steps = 0

    def add_wait(self, seconds: float) -> None:
        """The time the next batch took to arrive (the first of an epoch is taken as it is)."""
        self.data_time = 0.9 * self.data_time + 0.1 * seconds if self.steps else seconds

    def add_step(self, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            self.losses[key] = value if key not in self.losses else 0.9 * self.losses[key] + 0.1 * value
        self.steps += 1

    def text(self, lr: float) -> str:
        """``loss 2.088 loss_cls 0.786 … lr 1.89e-04 data 7ms``."""
        losses = " ".join(f"{k} {v:.3f}" for k, v in self.losses.items())
        return f"{losses} lr {lr:.2e} data {self.data_time * 1e3:.0f}ms"


class TrainProgress:
    """The run's progress bar over all its iterations (shown by the main process only).

    Use as a context manager around the epochs; :meth:`paused` around anything else that prints
    (evaluation tables), so the bar does not redraw over it.
    """

    def __init__(self, out: TrainConsole, *, total: int, completed: int) -> None:
        columns = (
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self.bar = Progress(*columns, console=out.screen, disable=not out.enabled, transient=False)
        self.task = self.bar.add_task("train", total=total, completed=completed, epoch=0, stats="")

    def __enter__(self) -> TrainProgress:
        self.bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()

    def advance(self, epoch: str, stats: str) -> None:
        """One iteration done; ``epoch`` as ``3/12``, ``stats`` from :meth:`StepStats.text`."""
        self.bar.update(self.task, advance=1, epoch=epoch, stats=stats)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing while the body prints (not restarted when the body raises)."""
        self.bar.stop()
        yield
        self.bar.start()
