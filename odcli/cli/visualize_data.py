"""``odet visualize-data RECIPE``: a grid of augmented training samples with their boxes and class names.

It runs the recipe's training pipeline exactly as training does (same dataset, same transforms, one
seeded generator per sample) and draws what the model is fed, so a wrong box, a too-strong jitter or
a mislabelled class is seen before hours of training. ``--stage`` picks a stage of a two-stage
pipeline (``rtmdet_strong``: ``strong`` with cached Mosaic/MixUp, ``weak`` after
``train.switch_epoch``). The Mosaic/MixUp caches are warmed up first (as many samples as the largest
cache holds), so the grid shows steady-state samples rather than the pass-through of a cold cache.
"""

from __future__ import annotations

from pathlib import Path

import typer

from odcli.cli.common import console, ensure_output_dir, user_errors
from odcli.cli.options import out_option, set_option


@user_errors
def visualize_data(
    recipe: Path = typer.Argument(..., help="recipe file (.yaml/.toml), e.g. recipes/rtmdet_tiny.yaml"),
    set_: list[str] = set_option(),
    num: int = typer.Option(16, "--num", help="number of augmented samples in the grid"),
    out: Path | None = out_option(
        None, "PNG file to write (default: <train.output_dir>/<recipe>_data_<stage>.png)."
    ),
    stage: str | None = typer.Option(
        None, "--stage", help="pipeline stage: strong | weak (default: the first stage of the pipeline)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the sample order and the augmentation"),
    tile: int = typer.Option(320, "--tile", help="size of one grid cell, pixels"),
) -> None:
    """Write a PNG grid of augmented training samples with their boxes and class names."""
    import cv2

    from odcli.data.datasets import build_dataset
    from odcli.data.pipelines import build_train_pipeline
    from odcli.data.stages import StagedPipeline
    from odcli.errors import OdetError
    from odcli.models.zoo import input_spec_of
    from odcli.recipe import load_recipe
    from odcli.viz.batches import augmented_samples, cache_warmup, draw_sample_grid

    if num < 1:
        raise OdetError(f"--num must be >= 1, got {num}")
    if tile < 32:
        raise OdetError(f"--tile must be >= 32 pixels, got {tile}")
    cfg = load_recipe(recipe, set_)
    pipeline = build_train_pipeline(cfg.data, input_spec_of(cfg.model))
    if isinstance(pipeline, StagedPipeline):
        chosen = stage or pipeline.names[0]
        if chosen not in pipeline.names:
            raise OdetError(f"--stage must be one of {', '.join(pipeline.names)}, got {chosen!r}")
        pipeline.set_stage(chosen)
        active = pipeline.stages[pipeline.names.index(chosen)]
    elif stage in (None, "weak"):
        chosen, active = "weak", pipeline  # a single-stage pipeline is what runs after any switch
    else:
        raise OdetError(
            f"data.train_pipeline {cfg.data.train_pipeline!r} has a single stage; --stage {stage} needs a "
            "staged pipeline such as rtmdet_strong (or omit --stage)"
        )
    root = cfg.data_root
    if not root.exists():
        raise OdetError(f"dataset root not found: {root} (set data.root in the recipe or --set data.root=…)")
    dataset = build_dataset(cfg.data, root, "train", pipeline)

    warmup = cache_warmup(active)
    if warmup:
        console.print(f"warming up the Mosaic/MixUp caches with {warmup} samples")
    samples = augmented_samples(dataset, num, seed, warmup)
    grid = draw_sample_grid(samples, dataset.classes, tile)
    n_boxes = sum(len(s["boxes"]) for s in samples)

    path = out or Path(cfg.train.output_dir) / f"{cfg.name}_data_{chosen}.png"
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    ensure_output_dir(path.parent)
    if not cv2.imwrite(str(path), grid):
        raise OdetError(f"cannot write {path}; choose another --out")
    console.print(
        f"{num} {chosen}-stage samples ({n_boxes} boxes, {len(dataset.classes)} classes) of "
        f"{cfg.data.train_pipeline} → {path}",
        soft_wrap=True,
    )
