"""Run a detector over a COCO dataset and score it: shared by ``odet eval`` and the trainer's
periodic evaluation.

The pipeline is the upstream test pipeline: keep-ratio resize (+ pad for RTMDet) per image,
batch, normalise, ``model.predict`` with boxes rescaled to original pixels, COCO results, then
pycocotools with MMDetection's settings (:mod:`odcli.evaluation.coco`).
"""

from __future__ import annotations

from collections.abc import Sequence
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
from odcli.models.detector import Detector

__all__ = ["eval_transforms", "run_coco_eval"]


def eval_transforms(model: Detector) -> Compose:
    """The test-time pipeline ``model`` expects (its :class:`InputSpec`): give it to the dataset."""
    spec = model.input_spec
    return build_test_transforms(
        spec.test_scale,
        pad_val=int(spec.pad_value),
        pad=spec.pad_to is not None,
        keep_ratio=spec.keep_ratio,
        interpolation=spec.interpolation,
    )


@torch.no_grad()
def run_coco_eval(
    model: Detector,
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
            its previous train/eval mode afterwards, so the trainer can call this mid-training.
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
    device = torch.device(device) if device is not None else next(model.parameters()).device
    spec = model.input_spec

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
        pad_value=int(spec.pad_value),
        size_divisor=spec.size_divisor,
        pin_memory=device.type == "cuda",
    )

    was_training = model.training
    model.eval()
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
                batch = prepare_batch(images, metas, spec, device)
                dets = model.predict(batch, metas)
                results.extend(detections_to_coco(dets, metas, cat_ids))
                bar.advance(task, len(metas))
    finally:
        model.train(was_training)

    metrics = evaluate_coco(
        dataset.coco,
        results,
        image_ids=image_ids,
        cat_ids=dataset.cat_ids,
        confusion_score_thr=confusion_score_thr,
    )
    return metrics, results
