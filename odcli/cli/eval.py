"""``odet eval``: COCO box metrics of a checkpoint (or of a results file) on a dataset, MMDetection's
numbers and report, and the evaluation pictures beside the metrics JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from odcli.cli.common import console, user_errors
from odcli.cli.options import (
    backend_option,
    batch_size_option,
    check_at_least,
    device_option,
    out_option,
    set_option,
    weights_option,
    workers_option,
)
from odcli.errors import OdetError

if TYPE_CHECKING:
    from odcli.evaluation.report import EvalResult


@user_errors
def evaluate(
    target: str | None = typer.Argument(
        None,
        help="Recipe (.yaml/.toml), odet checkpoint (.safetensors) or a file odet export wrote (.onnx, "
        ".xml, .torchscript, .engine; give the data with --ann/--images); default: the latest run's best.",
    ),
    weights: Path | None = weights_option(
        "Needed when TARGET is a recipe: the weights to evaluate (an exported file too)."
    ),
    backend: str | None = backend_option(),
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
        "Detections JSON (COCO results). Default: <model>_detections.json next to the checkpoint or "
        "exported file, or runs/eval/detections.json. The metrics JSON is written beside it.",
    ),
    max_images: int | None = typer.Option(None, "--max-images", help="Evaluate only the first N images."),
    workers: int = workers_option(2),
    all_classes: bool = typer.Option(
        False, "--all-classes", help="List every class in the per-class table, not only those that occur."
    ),
    plots: bool = typer.Option(
        True,
        "--plots/--no-plots",
        help="Draw PR curves, P/R/F1 against the score threshold and the confusion matrix beside the "
        "metrics JSON (<stem>_pr.png, <stem>_f1.png, <stem>_confusion.png); the numbers are in the JSON "
        "either way.",
    ),
    confusion_thr: float | None = typer.Option(
        None,
        "--confusion-thr",
        metavar="SCORE",
        help="Score threshold of the confusion matrix (default: the best-F1 threshold).",
    ),
    detections: Path | None = typer.Option(
        None,
        "--detections",
        help="Score this COCO results JSON against --ann instead of running a model (no TARGET); the "
        "metrics are written beside it.",
    ),
) -> None:
    """Evaluate a checkpoint on a COCO-format dataset (mAP as MMDetection reports it), with P/R/F1, PR
    curves and a confusion matrix; --detections scores a COCO results file instead."""
    from odcli.evaluation.job import evaluate_checkpoint
    from odcli.evaluation.report import render_eval_table

    check_at_least(batch_size, "--batch-size")
    check_at_least(max_images, "--max-images")
    if confusion_thr is not None and not 0.0 <= confusion_thr <= 1.0:
        raise OdetError(f"--confusion-thr must be a score in [0, 1], got {confusion_thr}")
    if detections is not None:
        model_args = {"TARGET": target, "--weights": weights, "--backend": backend}
        _score_file(detections, model_args, ann, images, out, max_images, set_, confusion_thr, plots)
        return
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
        confusion_score_thr=confusion_thr,
        backend=backend,
    )
    render_eval_table(report.metrics, console, all_classes=all_classes, prf1=True)
    console.print(f"detections → {report.detections_path}\nmetrics    → {report.metrics_path}")
    _pictures(report.metrics, report.metrics_path, plots)
    console.print(f"{report.seconds:.1f} s ({report.ms_per_image:.0f} ms/image)")


def _pictures(metrics: EvalResult, metrics_path: Path, plots: bool) -> None:
    """Draw the evaluation pictures beside ``metrics_path`` and name them (or say why not)."""
    if not plots or metrics.details is None:
        return
    from odcli.viz.eval_pictures import EVAL_PICTURES, draw_evaluation_pictures, picture_prefix
    from odcli.viz.plotting import PlotsUnavailable, missing_plots_note

    try:
        pictures = draw_evaluation_pictures(metrics, metrics_path.parent, prefix=picture_prefix(metrics_path))
    except PlotsUnavailable:
        console.print(missing_plots_note(EVAL_PICTURES), soft_wrap=True, markup=False)
        return
    console.print("pictures   → " + ", ".join(str(p.path) for p in pictures), soft_wrap=True, markup=False)


def _score_file(
    detections: Path,
    model_args: dict[str, object],
    ann: Path | None,
    images: Path | None,
    out: Path | None,
    max_images: int | None,
    set_: list[str] | None,
    confusion_thr: float | None,
    plots: bool,
) -> None:
    """``odet eval --detections FILE --ann ANN``: score a results file, no model."""
    from odcli.evaluation.job import score_detections
    from odcli.evaluation.report import render_eval_table

    given = {
        **{name: value is not None for name, value in model_args.items()},
        "--images": images is not None,
        "--out": out is not None,
        "--max-images": max_images is not None,
        "--set": bool(set_),
    }
    clash = [name for name, on in given.items() if on]
    if clash:
        raise OdetError(f"--detections scores a results file as it is: drop {', '.join(clash)}")
    if ann is None:
        raise OdetError("--detections needs the ground truth: pass --ann FILE.json")
    scored = score_detections(detections, ann, confusion_score_thr=confusion_thr)
    render_eval_table(scored.metrics, console, prf1=True)
    console.print(f"metrics    → {scored.metrics_path}")
    _pictures(scored.metrics, scored.metrics_path, plots)
