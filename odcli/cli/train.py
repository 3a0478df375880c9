"""``odet train RECIPE``: train a detector as the recipe says; ends with an eval table and a picture."""

from __future__ import annotations

from pathlib import Path

import typer

from odcli.cli.common import console, user_errors


@user_errors
def train(
    recipe: Path = typer.Argument(..., help="recipe file (.yaml/.toml), e.g. recipes/rtmdet_tiny.yaml"),
    set_: list[str] = typer.Option(
        [], "--set", help="override a recipe value: section.key=value (repeatable)"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue the run in its run directory from last.safetensors"
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="output directory (default <train.output_dir>/<recipe>)"
    ),
) -> None:
    """Train a detector on the recipe's dataset, evaluating and checkpointing as it goes."""
    from odcli.engine.run_dir import choose_run_dir, record_latest
    from odcli.engine.trainer import Trainer
    from odcli.recipe import load_recipe

    cfg = load_recipe(recipe, set_)
    out = run_dir or choose_run_dir(cfg, resume=resume)
    trainer = Trainer(cfg, run_dir=out, resume=resume, console=console)
    best = trainer.fit()
    record_latest(cfg, out)
    console.print(f"[bold green]done[/]: best checkpoint {best}")
    picture = trainer.draw_sample_prediction(best)
    if picture is not None:
        console.print(f"sample prediction: {picture}")
