"""The detection records ``odet infer`` writes: one per box in ``detections.json`` (images), one per
frame in ``<name>.jsonl`` (video, cameras, streams). Both describe a box the same way::

    {"bbox": [x1, y1, x2, y2], "score": 0.8731, "label": 0, "category_id": 1, "category": "person"}

``bbox`` is xyxy pixels of the original image rounded to 0.01 px, ``score`` rounded to 4 digits,
``label`` the model's class index, ``category_id`` its COCO category id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["detection_records", "frame_record", "image_records"]


def detection_records(
    det: dict[str, torch.Tensor], classes: Sequence[str], cat_ids: Sequence[int], score_thr: float = 0.0
) -> list[dict[str, Any]]:
    """One record per detection with ``score >= score_thr``, in the order of ``det``.

    Args:
        det: ``boxes`` (K, 4) xyxy original pixels, ``scores`` (K,), ``labels`` (K,) class indices.
        classes: class name of each label.
        cat_ids: COCO category id of each label.
        score_thr: keep detections scoring at least this.
    """
    keep = det["scores"] >= score_thr
    boxes, scores, labels = (
        det["boxes"][keep].tolist(),
        det["scores"][keep].tolist(),
        det["labels"][keep].tolist(),
    )
    return [
        {
            "bbox": [round(v, 2) for v in box],
            "score": round(score, 4),
            "label": int(label),
            "category_id": int(cat_ids[label]),
            "category": classes[label],
        }
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]


def image_records(
    image: Path,
    det: dict[str, torch.Tensor],
    classes: Sequence[str],
    cat_ids: Sequence[int],
    score_thr: float = 0.0,
) -> list[dict[str, Any]]:
    """The ``detections.json`` entries of one image: each detection record with ``"image"`` first."""
    return [{"image": str(image), **r} for r in detection_records(det, classes, cat_ids, score_thr)]


def frame_record(
    frame_index: int,
    timestamp: float,
    det: dict[str, torch.Tensor],
    classes: Sequence[str],
    cat_ids: Sequence[int],
    score_thr: float,
    *,
    time_base: str,
) -> dict[str, Any]:
    """The JSON line of one frame: its index, time (s), what the time counts and the detections
    above ``score_thr`` (``time_base``: ``"video"`` = seconds into the file, ``"wall_clock"`` = Unix
    time at capture, for cameras and streams)."""
    return {
        "frame": frame_index,
        "time": round(timestamp, 3),
        "time_base": time_base,
        "detections": detection_records(det, classes, cat_ids, score_thr),
    }
