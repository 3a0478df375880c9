"""What ``odet infer`` does between reading and writing: images or frames → detections → records.

:func:`detect_images` reads image files in batches, skipping (with a reason) the ones that cannot be
decoded; :func:`detect_frames` runs the model frame by frame. Both clip boxes to the image unless
asked for the raw ones (:func:`~odcli.inference.predictor.clip_to_image`), keep the detections
scoring at least ``score_thr`` and turn them into the records :mod:`odcli.inference.records` defines.
Drawing and writing files stay with the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odcli.data.image_io import read_image
from odcli.errors import OdetError
from odcli.inference.predict_options import select_detections
from odcli.inference.predictor import Predictor, clip_to_image, tiny_image_warning
from odcli.inference.records import frame_record, image_records
from odcli.inference.sources import Frame

__all__ = [
    "DetectionSettings",
    "FrameDetections",
    "ImageBatch",
    "ImageDetections",
    "detect_frames",
    "detect_images",
]


@dataclass(frozen=True)
class DetectionSettings:
    """How detections become output: ``classes`` / ``cat_ids`` name each label, detections scoring at
    least ``score_thr`` are kept — of the model's best ``max_dets`` per image (None: all it returns)
    of the classes ``labels`` (None: all; ``--classes``) —, and boxes are clipped to the image
    unless ``raw_boxes``. Both limits go to the post-processing, which then spends no time on
    detections that would be dropped here. ``header``: the ``{"odet": …}`` object the outputs start
    with (:func:`~odcli.inference.outputs.output_header`)."""

    classes: Sequence[str]
    cat_ids: Sequence[int]
    score_thr: float = 0.0
    raw_boxes: bool = False
    max_dets: int | None = None
    labels: tuple[int, ...] | None = None
    header: dict[str, Any] = field(default_factory=dict, compare=False)

    def limits(self) -> dict[str, Any]:
        """The ``min_score`` / ``max_dets`` keywords of :meth:`~odcli.inference.predictor.Predictor.__call__`
        that ask the post-processing for these detections only (with ``labels`` the best
        ``max_dets`` of those classes are picked afterwards, from everything it keeps)."""
        max_dets = self.max_dets if self.labels is None else None
        return {"min_score": self.score_thr if self.score_thr > 0 else None, "max_dets": max_dets}


@dataclass
class ImageDetections:
    """One decoded image and what was kept of its detections.

    Attributes:
        path: the image file.
        image: (H, W, 3) uint8 BGR as read.
        det: ``boxes`` (K, 4) xyxy original pixels, ``scores`` (K,), ``labels`` (K,): the kept ones.
        records: the ``detections.json`` entries of these K detections.
    """

    path: Path
    image: np.ndarray
    det: dict[str, torch.Tensor]
    records: list[dict[str, Any]]


@dataclass
class ImageBatch:
    """One forward pass over up to ``batch_size`` images.

    Attributes:
        done: the images that were decoded, in input order.
        skipped: the images that could not be decoded.
        warnings: one line per skipped or suspiciously small image, in input order.
        model_seconds: wall time of the forward pass and post-processing (results back on the CPU).
    """

    done: list[ImageDetections] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model_seconds: float = 0.0


def _kept(det: dict[str, torch.Tensor], height: int, width: int, settings: DetectionSettings) -> dict:
    """``det`` of the chosen classes and number, clipped to the (height, width) image unless raw
    boxes are asked for, then thresholded."""
    det = select_detections(det, settings.labels, settings.max_dets)
    if not settings.raw_boxes:
        det = clip_to_image(det, height, width)
    keep = det["scores"] >= settings.score_thr
    return {k: v[keep] for k, v in det.items()}


def _reason(exc: OdetError, path: Path) -> str:
    """The message of a decoding error without the file name, which the warning puts first."""
    return str(exc).replace(f": {path}", "").replace(f" {path}", "")


def detect_images(
    predictor: Predictor, paths: Sequence[Path], settings: DetectionSettings, *, batch_size: int
) -> Iterator[ImageBatch]:
    """Detections for image files, ``batch_size`` images per forward pass.

    An image that cannot be decoded is skipped (reported in :attr:`ImageBatch.skipped` and
    :attr:`ImageBatch.warnings`), unless it is the only input: then its error is raised.

    Raises:
        OdetError: the only image cannot be decoded.
    """
    stride = predictor.finest_stride
    for start in range(0, len(paths), batch_size):
        batch = ImageBatch()
        good: list[tuple[Path, np.ndarray]] = []
        for path in paths[start : start + batch_size]:
            try:
                img = read_image(path)
            except OdetError as exc:
                if len(paths) == 1:
                    raise  # the one input: its error is the one line
                batch.warnings.append(f"skipped {path}: {_reason(exc, path)}")
                batch.skipped.append(path)
                continue
            if note := tiny_image_warning(img.shape[0], img.shape[1], stride, str(path)):
                batch.warnings.append(note)
            good.append((path, img))
        if good:
            t0 = time.perf_counter()
            # CPU tensors: the copy back also waits for the GPU
            dets = predictor([img for _, img in good], **settings.limits())
            batch.model_seconds = time.perf_counter() - t0
            for (path, img), det in zip(good, dets, strict=True):
                kept = _kept(det, img.shape[0], img.shape[1], settings)
                records = image_records(path, kept, settings.classes, settings.cat_ids)
                batch.done.append(ImageDetections(path, img, kept, records))
        yield batch


@dataclass
class FrameDetections:
    """One frame and what was kept of its detections.

    Attributes:
        frame: the frame as read.
        det: the kept detections (as :attr:`ImageDetections.det`).
        record: the frame's JSON line (:func:`~odcli.inference.records.frame_record`).
        model_seconds: wall time of its forward pass and post-processing.
        warning: a line for the first frame when it is too small for the model, else None.
    """

    frame: Frame
    det: dict[str, torch.Tensor]
    record: dict[str, Any]
    model_seconds: float
    warning: str | None = None


def detect_frames(
    predictor: Predictor, frames: Iterable[Frame], settings: DetectionSettings, *, time_base: str, name: str
) -> Iterator[FrameDetections]:
    """Detections for each frame of ``frames`` (one forward pass each).

    Args:
        time_base: what the frames' timestamps count (:attr:`~odcli.inference.sources.SourceSpec.time_base`).
        name: the source's name, for the small-frame warning.
    """
    stride = predictor.finest_stride
    for count, frame in enumerate(frames):
        h, w = frame.image.shape[:2]
        warning = tiny_image_warning(h, w, stride, name) if count == 0 else None
        t0 = time.perf_counter()
        det = predictor([frame.image], **settings.limits())[0]
        seconds = time.perf_counter() - t0
        kept = _kept(det, h, w, settings)
        record = frame_record(
            frame.index, frame.timestamp, kept, settings.classes, settings.cat_ids, 0.0, time_base=time_base
        )
        yield FrameDetections(frame, kept, record, seconds, warning)
