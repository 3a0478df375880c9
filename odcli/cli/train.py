"""``odet train RECIPE``: train a detector as the recipe says; ends with an eval table and pictures.

Multi-GPU: ``odet train RECIPE --gpus N`` starts N processes through PyTorch's own launcher
(``torch.distributed.run``, i.e. ``torchrun --standalone``); ``torchrun … -m odcli train RECIPE`` works
the same, also across nodes. Every process runs this function; rank 0 chooses the run directory.
"""

from __future__ import annotations

from pathlib import Path

import typer

from odcli.cli.common import check_output_location, console, user_errors
from odcli.cli.options import set_option
from odcli.errors import OdetError


def _child_argv(
    recipe: Path, set_: list[str], resume: bool, run_dir: Path, extend_epochs: int | None
) -> list[str]:
    """The ``odet`` arguments each launched process receives (the run directory fixed by the launcher)."""
    argv = ["train", str(recipe)]
    for item in set_:
        argv += ["--set", item]
    if resume:
        argv.append("--resume")
    if extend_epochs is not None:
        argv += ["--extend-epochs", str(extend_epochs)]
    return [*argv, "--run-dir", str(run_dir)]


@user_errors
def train(
    recipe: Path = typer.Argument(..., help="recipe file (.yaml/.toml), e.g. recipes/rtmdet_tiny.yaml"),
    set_: list[str] = set_option(),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="continue the run in its run directory from last.safetensors, mid-epoch too, with the run's own "
        "settings (its recipe.yaml); --set then changes only what it names",
    ),
    extend_epochs: int | None = typer.Option(
        None,
        "--extend-epochs",
        help="resume and train N epochs more than the run's total, with the lr schedule rebuilt for it",
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="output directory (default <train.output_dir>/<recipe>)"
    ),
    gpus: int | None = typer.Option(
        None, "--gpus", help="train on N local GPUs with DDP (launches torchrun; one process per GPU)"
    ),
) -> None:
    """Train a detector on the recipe's dataset, evaluating and checkpointing as it goes."""
    from odcli.engine.run_dir import choose_run_dir, recipe_for_resume, record_latest
    from odcli.recipe import load_recipe
    from odcli.runtime import distributed as dist
    from odcli.runtime.device import resolve_device

    cfg = load_recipe(recipe, set_)
    resume = resume or extend_epochs is not None
    if extend_epochs is not None and extend_epochs < 1:
        raise OdetError(f"--extend-epochs must be >= 1, got {extend_epochs}")
    if gpus is not None and not dist.launched_by_torchrun():
        import torch

        if gpus < 1:
            raise OdetError(f"--gpus must be >= 1, got {gpus}")
        visible = torch.cuda.device_count()
        if gpus > visible:
            raise OdetError(
                f"--gpus {gpus} needs {gpus} CUDA GPUs but {visible} are visible; on CPU start processes "
                f"with: torchrun --nproc_per_node {gpus} -m odcli train {recipe} (gloo backend)"
            )
        if gpus > 1:
            out = run_dir or choose_run_dir(cfg, resume=resume)
            check_output_location(out, "choose another --run-dir or train.output_dir")
            dist.launch(gpus, _child_argv(recipe, set_, resume, out, extend_epochs))
            return

    from odcli.engine.trainer import Trainer
    from odcli.viz.eval_pictures import EvalPicturesHook
    from odcli.viz.plotting import missing_plots_note
    from odcli.viz.run_pictures import BatchPictures, CurvesPicture, RunPicturesHook
    from odcli.viz.sample_prediction import SamplePredictionHook

    dist.setup(cfg.train.dist_backend, resolve_device(cfg.train.device).type)
    try:
        # Rank 0 decides: ranks choosing on their own could race past each other's new directory.
        out = dist.broadcast_object(run_dir or choose_run_dir(cfg, resume=resume))
        if dist.is_main_process():
            check_output_location(out, "choose another --run-dir or train.output_dir")
        if resume:  # continue the run as it was started (its recipe.yaml), not as the file reads now
            cfg, notes = recipe_for_resume(cfg, out, set_)
            for line in notes if dist.is_main_process() else []:
                console.print(line, soft_wrap=True, markup=False)
        sample = SamplePredictionHook()  # the best weights' detections on a validation image
        batches = BatchPictures()
        # curves.png, one batch per pipeline stage, eval/{metrics.json, pr, f1, confusion}.png
        pictures = RunPicturesHook([CurvesPicture(), batches, EvalPicturesHook()])
        if pictures.skipped and dist.is_main_process():
            what = "training curves (curves.png), PR curves or confusion matrix"
            console.print(missing_plots_note(what), soft_wrap=True, markup=False)
        trainer = Trainer(
            cfg,
            run_dir=out,
            resume=resume,
            extend_epochs=extend_epochs,
            console=console,
            hooks=[pictures, sample],
        )
        batches.dataset = trainer.parts.train_set  # loaded already: its annotations are not read twice
        best = trainer.fit()
        if dist.is_main_process():
            record_latest(cfg, out)
            console.print(f"[bold green]done[/]: best checkpoint {best}")
            if pictures.written:
                shown = [p for p in pictures.written if p.suffix in {".png", ".jpg"}]
                names = ", ".join(sorted(str(p.relative_to(out)) for p in shown))
                console.print(f"training pictures: {names} in {out}", soft_wrap=True, markup=False)
            if sample.picture is not None:
                console.print(f"sample prediction: {sample.picture}")
    finally:
        dist.cleanup()
