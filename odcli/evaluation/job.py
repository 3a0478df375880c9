"""``odet eval`` as one call: a recipe or checkpoint in, COCO metrics and the files they are written to out.

:func:`evaluate_checkpoint` decides what to evaluate (a recipe with weights, an odet checkpoint with
the recipe it stores, both with ``--set`` overrides, or an exported file run by its runtime:
:mod:`odcli.evaluation.targets`), on which data (the recipe's validation
split unless an annotation file / image folder is given), runs the model over it
(:func:`~odcli.evaluation.run.run_coco_eval`) and writes the detections (COCO results JSON) and
the metrics beside them. Printing the tables is the caller's.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from rich.console import Console

from odcli.data.coco import CocoDetection, load_coco_json
from odcli.errors import OdetError
from odcli.evaluation.coco import evaluate_coco
from odcli.evaluation.report import EvalResult
from odcli.evaluation.run import eval_transforms, run_coco_eval
from odcli.evaluation.targets import resolve_target
from odcli.inference.load import load_model
from odcli.inference.outputs import as_coco_results, read_detections
from odcli.inference.runner import ExportedPredictor
from odcli.recipe import Recipe
from odcli.runtime.paths import ensure_output_dir
from odcli.weights.checkpoint import write_json_atomic

__all__ = ["EvalReport", "ScoredDetections", "evaluate_checkpoint", "metrics_path_for", "score_detections"]


@dataclass
class EvalReport:
    """What :func:`evaluate_checkpoint` measured and wrote.

    Attributes:
        metrics: the COCO numbers (``metrics.num_images`` images evaluated).
        weights: the weights file evaluated.
        arch: the model's zoo name.
        ann_file, image_dir: the data it was evaluated on.
        detections_path: the COCO results JSON written.
        metrics_path: the metrics JSON written beside it.
        seconds: wall time of the run (prediction and scoring).
        device: where the model ran.
        backend: what ran it: ``torch``, or an exported file's runtime (``onnxruntime`` …).
    """

    metrics: EvalResult
    weights: Path
    arch: str
    ann_file: Path
    image_dir: Path
    detections_path: Path
    metrics_path: Path
    seconds: float
    device: torch.device
    backend: str = "torch"

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(1, self.metrics.num_images)


def metrics_path_for(detections: Path) -> Path:
    """Metrics JSON beside the detections: ``x_detections.json`` → ``x_metrics.json``, any other
    ``x.json`` → ``x_metrics.json``."""
    stem = detections.stem
    stem = stem[: -len("detections")] + "metrics" if stem.endswith("detections") else f"{stem}_metrics"
    return detections.with_name(stem + ".json")


def _eval_dataset(
    recipe: Recipe, *, ann: Path | None, images: Path | None, has_data: bool, target: Path
) -> CocoDetection:
    """The dataset to evaluate on (no transforms yet): ``ann`` / ``images`` where given, the rest
    from the recipe's validation split."""
    from odcli.data.datasets import build_dataset

    if not has_data and (ann is None or images is None):
        raise OdetError(
            f"{target.name} stores no dataset: pass --ann FILE.json and --images DIR (or --set data.root=DIR)"
        )
    return build_dataset(recipe.data, recipe.data_root, "val", ann=ann, images=images)


def _model_cat_ids(
    meta: dict[str, Any], dataset: CocoDetection, num_classes: int, ann_file: Path
) -> list[int]:
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


def evaluate_checkpoint(
    target: str | Path,
    *,
    weights: Path | None = None,
    overrides: Sequence[str] = (),
    ann: Path | None = None,
    images: Path | None = None,
    batch_size: int = 8,
    device: str = "auto",
    out: Path | None = None,
    max_images: int | None = None,
    workers: int = 2,
    console: Console | None = None,
    progress: bool = True,
    confusion_score_thr: float | None = None,
    backend: str | None = None,
) -> EvalReport:
    """Evaluate a recipe + weights, an odet checkpoint, or an exported file on a COCO-format dataset.

    Args:
        target: a recipe (``.yaml``/``.yml``/``.toml``, needs ``weights``), an odet ``.safetensors``
            checkpoint (its stored recipe gives the model and, if stored, the dataset), or a file
            ``odet export`` wrote (``.onnx``, ``.xml``, …: run by its runtime; the data from
            ``ann`` / ``images`` or ``--set data.*``).
        weights: the weights to evaluate when ``target`` is a recipe (``.safetensors``, ``.pth``,
            ``.pdparams``, or an exported file).
        overrides: ``section.key=value`` recipe overrides (``--set``).
        ann, images: a COCO annotation file / image directory instead of the recipe's validation split.
        batch_size: images per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        out: detections JSON to write (default ``<checkpoint>_detections.json`` beside an odet
            checkpoint or an exported file, else ``runs/eval/detections.json``); the metrics go beside it
            (:func:`metrics_path_for`).
        max_images: evaluate only the first this many images.
        workers: data-loading worker processes.
        console: where the one-line header and the progress bar go (None: nowhere).
        progress: show a progress bar on ``console``.
        confusion_score_thr: score threshold of the confusion matrix (None: the best-F1 one).
        backend: the runtime of an exported file (:data:`~odcli.inference.runner.BACKENDS`; None:
            by its suffix). Its batches go through the file's batch size (a fixed-batch file takes
            any number of images: the last chunk is padded).

    Raises:
        OdetError: a target, weights file, dataset or output location that cannot be used; options
            that cannot apply to an exported file (``--set model.*``, another architecture's recipe).
    """
    path = Path(target).expanduser()
    if not path.is_file():
        raise OdetError(
            f"TARGET not found: {target} (give a recipe .yaml/.toml, an odet .safetensors checkpoint "
            "or an exported .onnx/.xml)"
        )
    resolved = resolve_target(path, weights, overrides, backend=backend, device=device)
    recipe, weights, has_data = resolved.recipe, resolved.weights, resolved.has_data
    dataset = _eval_dataset(recipe, ann=ann, images=images, has_data=has_data, target=path)
    ann_file, image_dir = Path(dataset.ann_file), Path(dataset.image_dir)
    if out is None:
        out = (
            weights.with_name(f"{weights.stem}_detections.json")
            if weights.suffix == ".safetensors" or resolved.exported is not None
            else Path("runs/eval/detections.json")
        )
    ensure_output_dir(out.parent)

    if resolved.exported is None:
        loaded = load_model(weights, config=recipe.model, device=device)
        model: Any = loaded.model
        stored, arch, runs_on, used = loaded.meta, model.arch, loaded.device, "torch"
        precision, where = "float32", f"device {runs_on}"
    else:
        exported = resolved.exported
        model = ExportedPredictor(exported.backend)
        stored, arch, runs_on = {"cat_ids": exported.cat_ids}, exported.arch, exported.device
        used, precision, where = exported.backend.name, exported.meta.precision, exported.runtime
    dataset.transforms = eval_transforms(model)
    n_eval = len(dataset) if max_images is None else min(max_images, len(dataset))
    # A missing file would otherwise surface minutes in, from inside a loader worker.
    missing = [p for p in (dataset.image_path(i) for i in range(n_eval)) if not p.is_file()]
    if missing:
        raise OdetError(
            f"{len(missing)} of {n_eval} images listed in {ann_file.name} are missing from {image_dir} "
            f"(e.g. {missing[0].name}); check --images / data.val_images"
        )
    cat_ids = _model_cat_ids(stored, dataset, model.num_classes, ann_file)

    if console is not None:
        console.print(f"[bold]eval[/] {weights} ({arch}) on {ann_file} — {n_eval} images, {where}")
    start = time.perf_counter()
    metrics, results = run_coco_eval(
        model,
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        device=runs_on,
        cat_ids=cat_ids,
        progress=progress and console is not None,
        max_images=max_images,
        console=console,
        confusion_score_thr=confusion_score_thr,
    )
    seconds = time.perf_counter() - start
    metrics_path = metrics_path_for(out)
    write_json_atomic(out, results)
    write_json_atomic(
        metrics_path,
        {
            "weights": str(weights),
            "arch": arch,
            "backend": used,
            "precision": precision,
            "ann_file": str(ann_file),
            "image_dir": str(image_dir),
            "detections_file": str(out),
            "seconds": round(seconds, 3),
            **metrics.to_dict(),
        },
    )
    return EvalReport(
        metrics=metrics,
        weights=weights,
        arch=arch,
        ann_file=ann_file,
        image_dir=image_dir,
        detections_path=out,
        metrics_path=metrics_path,
        seconds=seconds,
        device=runs_on,
        backend=used,
    )


@dataclass
class ScoredDetections:
    """What :func:`score_detections` measured and wrote.

    Attributes:
        metrics: the COCO numbers.
        ann_file: the ground truth.
        detections_path: the COCO results JSON scored.
        metrics_path: the metrics JSON written beside it.
        seconds: wall time of the scoring.
    """

    metrics: EvalResult
    ann_file: Path
    detections_path: Path
    metrics_path: Path
    seconds: float


_RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def _read_results(path: Path, images: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A COCO results JSON: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``,
    or the ``detections.json`` of ``odet infer`` (its records matched to the annotation file's
    ``images`` by file name: :func:`~odcli.inference.outputs.as_coco_results`)."""
    data = as_coco_results(read_detections(path)[1], images)
    for r in data:
        ok = isinstance(r, dict) and all(k in r for k in _RESULT_KEYS)
        if not ok or not (isinstance(r["bbox"], list) and len(r["bbox"]) == 4):
            text = repr(r)
            raise OdetError(
                f"invalid detection in {path}: {text[:77] + '...' if len(text) > 80 else text} "
                '(needs {"image_id", "category_id", "bbox": [x, y, w, h], "score"})'
            )
    return data


def score_detections(
    detections: Path, ann: Path, *, confusion_score_thr: float | None = None
) -> ScoredDetections:
    """Score a COCO results JSON made elsewhere (or earlier) against ``ann``, over all its images,
    and write the metrics JSON beside it (:func:`metrics_path_for`) — ``odet eval --detections``.

    Raises:
        OdetError: an unreadable detections or annotation file, or detections of unknown images.
    """
    data = load_coco_json(ann)
    results = _read_results(detections, data.get("images", []))
    coco_gt = COCO()
    coco_gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates its indexing
        coco_gt.createIndex()
    start = time.perf_counter()
    metrics = evaluate_coco(coco_gt, results, confusion_score_thr=confusion_score_thr)
    seconds = time.perf_counter() - start
    metrics_path = metrics_path_for(detections)
    write_json_atomic(
        metrics_path,
        {
            "ann_file": str(ann),
            "detections_file": str(detections),
            "seconds": round(seconds, 3),
            **metrics.to_dict(),
        },
    )
    return ScoredDetections(metrics, ann, detections, metrics_path, seconds)
