"""Run a detector over a COCO dataset and score it: shared by ``odet eval`` and the trainer's
periodic evaluation.

The pipeline is the upstream test pipeline: keep-ratio resize (+ pad for RTMDet) per image,
batch, normalise, ``model.predict`` with boxes rescaled to original pixels, COCO results, then
pycocotools with MMDetection's settings (:mod:`odcli.evaluation.coco`). An exported file
(:class:`~odcli.inference.runner.ExportedPredictor`) takes the same batches pasted on its canvas,
and its runtime does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import Subset

from odcli.data.coco import CocoDetection
from odcli.data.loader import build_loader
from odcli.data.loader import iterate_batches as _batches
from odcli.data.normalize import prepare_batch
from odcli.data.pipelines import build_test_transforms
from odcli.data.sample import Compose
from odcli.evaluation.coco import detections_to_coco, evaluate_coco
from odcli.evaluation.report import EvalResult
from odcli.inference.runner import ExportedPredictor
from odcli.models.dense_head import Detections
from odcli.models.detector import Detector

__all__ = ["eval_transforms", "run_coco_eval"]


def eval_transforms(model: Detector | ExportedPredictor) -> Compose:
    """The test-time pipeline ``model`` expects (its :class:`InputSpec`, or an exported file's
    own): give it to the dataset."""
    if isinstance(model, ExportedPredictor):
        return model.transforms
    spec = model.input_spec
    return build_test_transforms(
        spec.test_scale,
        pad_val=int(spec.pad_value),
        pad=spec.pad_to is not None,
        keep_ratio=spec.keep_ratio,
        interpolation=spec.interpolation,
    )


def _batch_predictor(
    model: Detector | ExportedPredictor, device: torch.device
) -> tuple[Callable[[torch.Tensor, list[dict[str, Any]]], Detections], int, int]:
    """(collated (B, 3, H, W) batch + metas → detections, the loader's pad value, its size divisor)."""
    if isinstance(model, ExportedPredictor):  # the runtime normalises; the batch goes on its canvas

        def exported(images: torch.Tensor, metas: list[dict[str, Any]]) -> Detections:
            return model.predict_canvases(model.collated_canvases(images, metas), metas)

        return exported, int(model.meta.pad_value), 1
    spec = model.input_spec

    def torch_model(images: torch.Tensor, metas: list[dict[str, Any]]) -> Detections:
        return model.predict(prepare_batch(images, metas, spec, device), metas)

    return torch_model, int(spec.pad_value), spec.size_divisor


@torch.no_grad()
def run_coco_eval(
    model: Detector | ExportedPredictor,
    dataset: CocoDetection,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device | str | None = None,
    cat_ids: Sequence[int] | None = None,
    progress: bool = True,
    max_images: int | None = None,
    console: Console | None = None,
    confusion_score_thr: float | None = None,
) -> tuple[EvalResult, list[dict[str, Any]]]:
    """Predict every image of ``dataset`` and evaluate the detections against its annotations.

    Args:
        model: the detector (already on ``device``); put in eval mode for the run and restored to
            its previous train/eval mode afterwards, so the trainer can call this mid-training. Or
            an exported file's predictor (``device`` is then its own).
        dataset: a :class:`CocoDetection` whose ``transforms`` are the model's test pipeline
            (:func:`eval_transforms`).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes for decoding/resizing.
        device: where batches go; default the device of the model's parameters.
        cat_ids: COCO category id of each model label (len = model.num_classes); default the
            dataset's own ``cat_ids``.
        progress: show a rich progress bar.
        max_images: evaluate only the first this many images (quick checks).
        console: console for the progress bar (default: a new stdout console).
        confusion_score_thr: score threshold of the confusion matrix (None: the best-F1 one).

    Returns:
        (metrics, COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
        with boxes in original-image pixels). ``metrics.num_images`` counts the evaluated images.
    """
    if dataset.transforms is None:
        raise ValueError("dataset has no transforms; build it with transforms=eval_transforms(model)")
    cat_ids = list(cat_ids) if cat_ids is not None else list(dataset.cat_ids)
    if len(cat_ids) != model.num_classes:
        raise ValueError(f"{len(cat_ids)} category ids for a model with {model.num_classes} classes")
    if isinstance(model, ExportedPredictor):
        device = model.device
    else:
        device = torch.device(device) if device is not None else next(model.parameters()).device
    predict, pad_value, size_divisor = _batch_predictor(model, device)

    image_ids = list(dataset.image_ids)
    source: CocoDetection | Subset = dataset
    if max_images is not None and max_images < len(image_ids):
        image_ids = image_ids[: max(1, max_images)]
        source = Subset(dataset, range(len(image_ids)))
    loader = build_loader(
        source,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pad_value=pad_value,
        size_divisor=size_divisor,
        pin_memory=device.type == "cuda",
    )

    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    results: list[dict[str, Any]] = []
    bar = Progress(
        TextColumn("[bold]eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images"),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    try:
        with bar:
            task = bar.add_task("eval", total=len(image_ids))
            for images, _, metas in _batches(loader):
                dets = predict(images, metas)
                results.extend(detections_to_coco(dets, metas, cat_ids))
                bar.advance(task, len(metas))
    finally:
        if module is not None:
            module.train(was_training)

    metrics = evaluate_coco(
        dataset.coco,
        results,
        image_ids=image_ids,
        cat_ids=dataset.cat_ids,
        confusion_score_thr=confusion_score_thr,
    )
    return metrics, results
