"""Training samples as the model gets them: augmented, with their boxes and class names, in a grid.

``odet visualize-data`` draws a grid of any number of samples of one stage; a training run draws one
batch of each stage of its pipeline into its run directory (:func:`draw_stage_batches`:
``train_batch_strong.jpg`` and ``train_batch_weak.jpg`` for ``rtmdet_strong``, ``train_batch.jpg``
for a single-stage pipeline). Both run the recipe's training pipeline exactly as training does —
same dataset, same transforms — with one seeded generator per sample (so drawing takes no random
number from the training's own streams), after warming up the Mosaic/MixUp caches (as many samples
as the largest cache holds), so the pictures show steady-state samples, not a cold cache's
pass-through.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from odcli.data.datasets import build_dataset
from odcli.data.mix_cache import cached_transforms
from odcli.data.pipelines import build_train_pipeline
from odcli.data.sample import Sample, Transform
from odcli.data.stages import StagedPipeline
from odcli.errors import OdetError
from odcli.models.zoo import input_spec_of
from odcli.recipe import Recipe
from odcli.viz.draw import draw_detections

__all__ = ["augmented_samples", "cache_warmup", "draw_sample_grid", "draw_stage_batches", "pipeline_stages"]

#: A run's batch picture shows at most this many images of the batch (a 4 × 4 grid).
MAX_BATCH_IMAGES = 16
_JPEG_QUALITY = 75  # ~150 KB for a 4 × 2 grid of 320 px tiles, 16 of 240 px
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def pipeline_stages(pipeline: Transform) -> list[tuple[str, Transform]]:
    """(name, transforms) of each stage: a :class:`StagedPipeline`'s, or ``[("weak", pipeline)]``
    for a single-stage one (it is what runs after any switch)."""
    if isinstance(pipeline, StagedPipeline):
        return list(zip(pipeline.names, pipeline.stages, strict=True))
    return [("weak", pipeline)]


def cache_warmup(stage: Transform) -> int:
    """How many samples fill the largest Mosaic/MixUp cache of ``stage`` (0 without one)."""
    return max((t.max_cached_images for t in cached_transforms(stage)), default=0)


def augmented_samples(dataset: Any, num: int, seed: int, warmup: int = 0) -> list[Sample]:
    """``num`` samples of ``dataset`` through its transforms, after ``warmup`` discarded ones.

    Sample ``k`` is image ``order[k]`` of a seeded permutation (cycled when ``num + warmup`` exceeds
    the dataset) with the transforms' generator seeded by ``(seed, k)``: the same samples every time.
    """
    order = np.random.default_rng(seed).permutation(len(dataset))
    samples = []
    for k in range(warmup + num):
        key = (int(order[k % len(order)]), int(np.random.SeedSequence([seed, k]).generate_state(1)[0]))
        sample = dataset[key]
        if k >= warmup:
            samples.append(sample)
    return samples


def draw_sample_grid(
    samples: Sequence[Sample], classes: Sequence[str], tile: int, gap: int = 4, cols: int | None = None
) -> np.ndarray:
    """A white grid of ``samples`` (row-major, ``cols`` columns, default ⌈√N⌉), each fitted into a
    ``tile`` × ``tile`` cell (top left, keep ratio) with its boxes and class names.

    Returns:
        (rows · (tile + gap) + gap, cols · (tile + gap) + gap, 3) uint8 BGR image.
    """
    cols = cols or math.ceil(math.sqrt(len(samples)))
    rows = math.ceil(len(samples) / cols)
    grid = np.full((rows * (tile + gap) + gap, cols * (tile + gap) + gap, 3), 255, dtype=np.uint8)
    for k, s in enumerate(samples):
        # PP-YOLOE's colour distortion leaves float pixels (upstream does too); show them as uint8.
        img = np.clip(np.rint(s["img"]), 0, 255).astype(np.uint8) if s["img"].dtype != np.uint8 else s["img"]
        boxes = np.asarray(s["boxes"], dtype=np.float64).reshape(-1, 4)
        h, w = img.shape[:2]
        f = tile / max(h, w)
        small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        labels = np.asarray(s["labels"]).reshape(-1)
        drawn = draw_detections(
            small,
            boxes * f,
            np.ones(len(boxes)),
            labels,
            classes,
            score_thr=0.0,
            max_dets=len(boxes),
            show_scores=False,
        )
        r, c = divmod(k, cols)
        y, x = gap + r * (tile + gap), gap + c * (tile + gap)
        grid[y : y + drawn.shape[0], x : x + drawn.shape[1]] = drawn
    return grid


def _wrap(text: str, width: int, scale: float) -> list[str]:
    """``text`` split at spaces into lines at most ``width`` pixels wide (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        wider = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(wider, _FONT, scale, 1)[0][0] <= width:
            lines[-1] = wider
        else:
            lines.append(word)
    return lines


def _with_caption(grid: np.ndarray, title: str, detail: str) -> np.ndarray:
    """``grid`` under a white band with ``title`` and, smaller, ``detail``, wrapped to its width."""
    width = grid.shape[1] - 16
    lines = [(line, 0.55) for line in _wrap(title, width, 0.55)]
    lines += [(line, 0.45) for line in _wrap(detail, width, 0.45)]
    band = np.full((12 + 22 * len(lines), grid.shape[1], 3), 255, dtype=np.uint8)
    for i, (line, scale) in enumerate(lines):
        cv2.putText(band, line, (8, 24 + 22 * i), _FONT, scale, (40, 40, 40), 1, cv2.LINE_AA)
    return np.vstack([band, grid])


def _stage_summary(stage: Transform, batch_transform: Any) -> str:
    """``CachedMosaic > RandomResize > …``: the class names of the stage's transforms, then the batch's."""
    names = [type(t).__name__ for t in getattr(stage, "transforms", [stage])]
    if batch_transform is not None:
        names.append(f"{type(batch_transform).__name__} (per batch)")
    return " > ".join(names)


def draw_stage_batches(
    recipe: Recipe,
    out_dir: Path,
    *,
    dataset: Any = None,
    seed: int | None = None,
    max_images: int = MAX_BATCH_IMAGES,
) -> list[Path]:
    """Draw one training batch of each stage of ``recipe``'s pipeline into ``out_dir``.

    Args:
        recipe: the run's recipe (its ``data`` section and model input spec build the pipeline).
        out_dir: where ``train_batch[_<stage>].jpg`` go.
        dataset: the training set already loaded (its images and annotations are shared, its
            transforms replaced by a pipeline of this function's own, so the training's stage and
            caches stay untouched); None loads it from the recipe.
        seed: of the samples (default ``train.seed``).
        max_images: at most this many images of the batch (``data.batch_size``) are drawn.

    Returns:
        the pictures written, one per stage in the pipeline's order.
    """
    pipeline = build_train_pipeline(recipe.data, input_spec_of(recipe.model))
    if dataset is None:
        view = build_dataset(recipe.data, recipe.data_root, "train", pipeline)
    else:
        view = copy.copy(dataset)  # shallow: shares the annotations, not the transforms
        view.transforms = pipeline
    if len(view) == 0:
        return []
    seed = recipe.train.seed if seed is None else seed
    num = max(1, min(recipe.data.batch_size, max_images))
    tile = 320 if num <= 9 else 240  # a 4 × 4 grid of 320 px tiles would make a 1.5 MB picture
    stages = pipeline_stages(pipeline)
    batch_transform = getattr(pipeline, "batch_transform", None)  # as the trainer's loader reads it
    written = []
    for name, stage in stages:
        if isinstance(pipeline, StagedPipeline):
            pipeline.set_stage(name)
        samples = augmented_samples(view, num, seed, cache_warmup(stage))
        if batch_transform is not None:  # PP-YOLOE: one random size for the batch, in the collate
            samples = batch_transform(samples)
        grid = draw_sample_grid(samples, view.classes, tile, cols=min(4, num))  # 8: 4 × 2, 16: 4 × 4
        n_boxes = sum(len(s["boxes"]) for s in samples)
        title = f"training batch, {name} stage" if len(stages) > 1 else "training batch"
        title += f": {num} of {recipe.data.batch_size} images, {n_boxes} boxes, as the model gets them"
        path = out_dir / (f"train_batch_{name}.jpg" if len(stages) > 1 else "train_batch.jpg")
        tmp = path.with_name(f".{path.stem}.tmp.jpg")
        if not cv2.imwrite(
            str(tmp),
            _with_caption(grid, title, _stage_summary(stage, batch_transform)),
            [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
        ):
            raise OdetError(f"cannot write {path}")
        tmp.replace(path)
        written.append(path)
    return written
