"""``odet eval``: COCO box metrics of a checkpoint on a dataset, MMDetection's numbers and report."""

from __future__ import annotations

from pathlib import Path

import typer

from odcli.cli.common import console, user_errors
from odcli.cli.options import (
    batch_size_option,
    check_at_least,
    device_option,
    out_option,
    set_option,
    weights_option,
    workers_option,
)


@user_errors
def evaluate(
    target: str | None = typer.Argument(
        None, help="Recipe (.yaml/.toml) or odet checkpoint (.safetensors); default: the latest run's best."
    ),
    weights: Path | None = weights_option("Needed when TARGET is a recipe: the weights to evaluate."),
    set_: list[str] = set_option(),
    ann: Path | None = typer.Option(
        None, "--ann", help="COCO annotation JSON (default: the recipe's val_ann)."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Image directory (default: the recipe's val_images)."
    ),
    batch_size: int = batch_size_option(8),
    device: str = device_option(),
    out: Path | None = out_option(
        None,
        "Detections JSON (COCO results). Default: <checkpoint>_detections.json next to the checkpoint, "
        "or runs/eval/detections.json. The metrics JSON is written beside it.",
    ),
    max_images: int | None = typer.Option(None, "--max-images", help="Evaluate only the first N images."),
    workers: int = workers_option(2),
    all_classes: bool = typer.Option(
        False, "--all-classes", help="List every class in the per-class table, not only those that occur."
    ),
) -> None:
    """Evaluate a checkpoint on a COCO-format dataset (mAP as MMDetection reports it)."""
    from odcli.evaluation.job import evaluate_checkpoint
    from odcli.evaluation.report import render_eval_table

    check_at_least(batch_size, "--batch-size")
    check_at_least(max_images, "--max-images")
    if target is None:
        from odcli.engine.run_dir import default_weights

        target = str(default_weights())
        console.print(f"evaluating the latest run's weights: {target}")
    report = evaluate_checkpoint(
        target,
        weights=weights,
        overrides=list(set_ or []),
        ann=ann,
        images=images,
        batch_size=batch_size,
        device=device,
        out=out,
        max_images=max_images,
        workers=workers,
        console=console,
    )
    render_eval_table(report.metrics, console, all_classes=all_classes)
    console.print(
        f"detections → {report.detections_path}\nmetrics    → {report.metrics_path}\n"
        f"{report.seconds:.1f} s ({report.ms_per_image:.0f} ms/image)"
    )
