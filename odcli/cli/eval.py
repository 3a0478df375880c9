"""``odet eval``: COCO box metrics of a checkpoint on a dataset, MMDetection's numbers and report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import typer

from odcli.cli.common import console, ensure_output_dir, user_errors
from odcli.errors import OdetError

RECIPE_SUFFIXES = (".yaml", ".yml", ".toml")


def _checkpoint_sections(meta: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The recipe sections stored in a checkpoint's meta; a bare ``arch`` gives the zoo model config."""
    from odcli.models.zoo import model_config

    stored = meta.get("recipe")
    sections = (
        {k: dict(v) for k, v in stored.items() if isinstance(v, dict)} if isinstance(stored, dict) else {}
    )
    if "model" not in sections:
        if not meta.get("arch"):
            raise OdetError(
                f"{path.name} records neither a recipe nor an architecture; it cannot be evaluated"
            )
        overrides = {"num_classes": len(meta["classes"])} if meta.get("classes") else {}
        sections["model"] = dataclasses.asdict(model_config(meta["arch"], **overrides))
    if meta.get("deploy") and "deploy" in sections["model"]:  # RepVGG re-parameterised (PP-YOLOE)
        sections["model"]["deploy"] = True
    return sections


def _apply_overrides(sections: dict[str, dict[str, Any]], overrides: list[str]) -> None:
    """``--set section.key=value`` on a stored recipe (values are validated when it is rebuilt)."""
    from odcli.recipe import parse_override

    for text in overrides:
        section, key, value = parse_override(text)
        if section not in ("model", "data", "train"):
            raise OdetError(f"unknown section {section!r} in --set {text}: use model., data. or train.")
        sections.setdefault(section, {})[key] = value


def _stats_path(detections: Path) -> Path:
    """Metrics JSON beside the detections: ``x_detections.json`` → ``x_metrics.json``, else ``x_metrics.json``
    for any other ``x.json``."""
    stem = detections.stem
    stem = stem[: -len("detections")] + "metrics" if stem.endswith("detections") else f"{stem}_metrics"
    return detections.with_name(stem + ".json")


@user_errors
def evaluate(
    target: str | None = typer.Argument(
        None, help="Recipe (.yaml/.toml) or odet checkpoint (.safetensors); default: the latest run's best."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", "-w", help="Weights to evaluate when TARGET is a recipe (.safetensors or .pth)."
    ),
    set_: list[str] | None = typer.Option(
        None, "--set", help="Recipe override section.key=value, e.g. --set data.root=/data/coco (repeatable)."
    ),
    ann: Path | None = typer.Option(
        None, "--ann", help="COCO annotation JSON (default: the recipe's val_ann)."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Image directory (default: the recipe's val_images)."
    ),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Detections JSON (COCO results). Default: <checkpoint>_detections.json next to the checkpoint, "
        "or runs/eval/detections.json. The metrics JSON is written beside it.",
    ),
    max_images: int | None = typer.Option(None, "--max-images", help="Evaluate only the first N images."),
    workers: int = typer.Option(2, "--workers", help="Data loading worker processes."),
    all_classes: bool = typer.Option(
        False, "--all-classes", help="List every class in the per-class table, not only those that occur."
    ),
) -> None:
    """Evaluate a checkpoint on a COCO-format dataset (mAP as MMDetection reports it)."""
    from odcli.evaluation.coco import render_eval_table
    from odcli.evaluation.run import eval_transforms, run_coco_eval
    from odcli.models.fuse import optimize_for_inference
    from odcli.models.zoo import build_from_config
    from odcli.recipe import load_recipe, recipe_from_dict
    from odcli.runtime.device import resolve_device
    from odcli.weights.checkpoint import read_meta, write_json_atomic
    from odcli.weights.load import load_weights

    if target is None:
        from odcli.engine.run_dir import default_weights

        target = str(default_weights())
        console.print(f"evaluating the latest run's weights: {target}")
    overrides = list(set_ or [])
    path = Path(target).expanduser()
    if not path.is_file():
        raise OdetError(
            f"TARGET not found: {target} (give a recipe .yaml/.toml or an odet .safetensors checkpoint)"
        )
    suffix = path.suffix.lower()
    if suffix in RECIPE_SUFFIXES:
        recipe = load_recipe(path, overrides)
        if weights is None:
            raise OdetError(
                "evaluating a recipe needs weights: pass --weights FILE (or evaluate a checkpoint directly: "
                "odet eval run/best.safetensors)"
            )
        meta = read_meta(weights) if weights.suffix == ".safetensors" else {}
        has_data = True
    elif suffix == ".safetensors":
        if weights is not None:
            raise OdetError(
                f"{path.name} is already a checkpoint: drop --weights (or pass a recipe as TARGET)"
            )
        weights = path
        meta = read_meta(path)
        sections = _checkpoint_sections(meta, path)
        _apply_overrides(sections, overrides)
        has_data = "data" in sections
        recipe = recipe_from_dict(sections, name=path.stem)
        if meta.get("recipe_path"):
            # Relative data paths in the stored recipe were written relative to the recipe file.
            recipe.path = Path(meta["recipe_path"]).expanduser().resolve()
    elif suffix in (".pth", ".pt", ".ckpt"):
        raise OdetError(
            f"{path.name} is an upstream checkpoint: convert it first "
            f"(odet convert-weights {path.name} model.safetensors --arch ...) or pass a recipe with --weights"
        )
    else:
        raise OdetError(
            f"TARGET must be a recipe (.yaml/.yml/.toml) or an odet checkpoint (.safetensors): {target}"
        )

    # Dataset: explicit flags win; otherwise the recipe's validation split (COCO JSON or YOLO folders).
    dataset = _eval_dataset(recipe, ann=ann, images=images, has_data=has_data, target=path)
    ann_file, image_dir = Path(dataset.ann_file), Path(dataset.image_dir)
    if batch_size < 1:
        raise OdetError(f"--batch-size must be >= 1, got {batch_size}")
    if max_images is not None and max_images < 1:
        raise OdetError(f"--max-images must be >= 1, got {max_images}")

    if out is None:
        out = (
            weights.with_name(f"{weights.stem}_detections.json")
            if weights.suffix == ".safetensors"
            else Path("runs/eval/detections.json")
        )
    stats_out = _stats_path(out)
    ensure_output_dir(out.parent)

    torch_device = resolve_device(device)
    model = build_from_config(recipe.model)
    if meta.get("deploy"):  # a recipe + RepVGG re-parameterised weights (convert-weights --deploy)
        from odcli.models.fuse import reparameterize

        reparameterize(model)
    load_weights(model, weights)
    model = optimize_for_inference(model.to(torch_device).eval())

    dataset.transforms = eval_transforms(model)
    n_eval = len(dataset) if max_images is None else min(max_images, len(dataset))
    # A missing file would otherwise surface minutes in, from inside a loader worker.
    missing = [p for p in (dataset.image_path(i) for i in range(n_eval)) if not p.is_file()]
    if missing:
        raise OdetError(
            f"{len(missing)} of {n_eval} images listed in {ann_file.name} are missing from {image_dir} "
            f"(e.g. {missing[0].name}); check --images / data.val_images"
        )
    cat_ids = _model_cat_ids(meta, dataset, model.num_classes, ann_file)

    console.print(
        f"[bold]eval[/] {weights} ({model.arch}) on {ann_file} — {n_eval} images, device {torch_device}"
    )
    start = time.perf_counter()
    metrics, results = run_coco_eval(
        model,
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        device=torch_device,
        cat_ids=cat_ids,
        progress=True,
        max_images=max_images,
        console=console,
    )
    seconds = time.perf_counter() - start
    render_eval_table(metrics, console, all_classes=all_classes)

    write_json_atomic(out, results)
    write_json_atomic(
        stats_out,
        {
            "weights": str(weights),
            "arch": model.arch,
            "ann_file": str(ann_file),
            "image_dir": str(image_dir),
            "detections_file": str(out),
            "seconds": round(seconds, 3),
            **metrics.to_dict(),
        },
    )
    ms = 1000 * seconds / max(1, metrics.num_images)
    console.print(f"detections → {out}\nmetrics    → {stats_out}\n{seconds:.1f} s ({ms:.0f} ms/image)")


def _eval_dataset(recipe: Any, *, ann: Path | None, images: Path | None, has_data: bool, target: Path) -> Any:
    """The dataset to evaluate on (no transforms yet): ``--ann``/``--images`` where given, the rest
    from the recipe's validation split."""
    from odcli.data.coco import CocoDetection
    from odcli.data.datasets import build_dataset

    if not has_data and (ann is None or images is None):
        raise OdetError(
            f"{target.name} stores no dataset: pass --ann FILE.json and --images DIR (or --set data.root=DIR)"
        )
    if ann is None and images is None:
        return build_dataset(recipe.data, recipe.data_root, "val")
    if ann is None and recipe.data.format == "yolo":
        from odcli.data.yolo import YoloDetection

        if not images.is_dir():  # type: ignore[union-attr]
            raise OdetError(f"image directory not found: {images} (check --images)")
        return YoloDetection(image_dir=images, root=recipe.data_root)  # type: ignore[arg-type]
    ann_file = ann if ann is not None else recipe.data_root / recipe.data.val_ann
    image_dir = images if images is not None else recipe.data_root / recipe.data.val_images
    if not ann_file.is_file():
        how = (
            "check --ann" if ann is not None else "use --set data.root=DIR, --set data.val_ann=FILE or --ann"
        )
        raise OdetError(f"annotation file not found: {ann_file} ({how})")
    if not image_dir.is_dir():
        how = (
            "check --images"
            if images is not None
            else "use --set data.root=DIR, --set data.val_images=DIR or --images"
        )
        raise OdetError(f"image directory not found: {image_dir} ({how})")
    return CocoDetection(ann_file=ann_file, image_dir=image_dir)


def _model_cat_ids(meta: dict[str, Any], dataset: Any, num_classes: int, ann_file: Path) -> list[int]:
    """COCO category id of each model label: the checkpoint's own list, else the dataset's."""
    stored = meta.get("cat_ids")
    if isinstance(stored, list) and len(stored) == num_classes:
        return [int(c) for c in stored]
    if len(dataset.cat_ids) == num_classes:
        return list(dataset.cat_ids)
    raise OdetError(
        f"the model predicts {num_classes} classes but {ann_file.name} has {len(dataset.cat_ids)} "
        "categories; evaluate on annotations with the model's classes"
    )
