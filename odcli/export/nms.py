"""Class-aware NMS inside an exported graph: ONNX's ``NonMaxSuppression``, and the fixed-size outputs.

``torch.onnx.export`` has no class-aware, batched NMS of its own (torchvision's ``nms`` maps to
``NonMaxSuppression`` for one image and one class), so the graph calls :func:`class_aware_nms`, a
custom op ``odet::nms`` with ONNX's semantics that the exporter translates into one
``NonMaxSuppression`` node (:func:`onnx_translations`). In PyTorch (eager, and when TorchScript
traces the graph) the same call runs torchvision's ``batched_nms`` — NMS is never written here.

ONNX's operator returns a flat, variable-length list of (image, class, prior) triples for the whole
batch; :func:`padded_detections` turns it into per-image outputs of fixed size K, which is graph
code of ours only because no ONNX operator does that step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.ops import batched_nms

__all__ = ["class_aware_nms", "onnx_translations", "padded_detections", "reference_nms"]


def reference_nms(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thr: float, score_thr: float
) -> torch.Tensor:
    """ONNX ``NonMaxSuppression`` computed with torchvision, for PyTorch and TorchScript.

    Args:
        boxes: (B, N, 4) xyxy, shared by all classes of an image.
        scores: (B, C, N); entries not above ``score_thr`` take no part.
        max_per_class: ONNX keeps at most this many per (image, class). Not applied here: the
            survivors beyond it are never among an image's best ``max_per_class`` detections,
            which is all :func:`padded_detections` keeps.
        iou_thr: suppress a box whose IoU with a better one of its class is above this.

    Returns:
        (M, 3) int64 (image, class, prior) of the kept boxes, ordered by class, then best first.
    """
    kept = []
    # One class at a time, as torchvision's batched_nms itself does on CPU for large inputs: one NMS
    # over every candidate of every class would compare boxes that can never suppress each other
    # (RTMDet: up to 90,000 candidates). Traced, the loop is C calls fixed by the model.
    for c in range(scores.shape[1]):
        img, prior = (scores[:, c] > score_thr).nonzero(as_tuple=True)
        # float64: batched_nms separates the images by offsetting their boxes by image index ×
        # (largest coordinate + 1); in float32 those offsets would round the coordinates.
        keep = batched_nms(boxes[img, prior].double(), scores[img, c, prior].double(), img, iou_thr)
        kept.append(torch.stack([img[keep], torch.full_like(keep, c), prior[keep]], dim=1))
    return torch.cat(kept)


@torch.library.custom_op("odet::nms", mutates_args=())
def _nms_op(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thr: float, score_thr: float
) -> torch.Tensor:
    return reference_nms(boxes, scores, max_per_class, iou_thr, score_thr)


@_nms_op.register_fake
def _nms_shape(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thr: float, score_thr: float
) -> torch.Tensor:
    count = torch.library.get_ctx().new_dynamic_size()  # data-dependent: how many boxes survive
    return boxes.new_empty((count, 3), dtype=torch.int64)


def class_aware_nms(
    boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_thr: float, score_thr: float
) -> torch.Tensor:
    """Per image and class NMS → (M, 3) int64 (image, class, prior); see :func:`reference_nms`.

    Exported to ONNX it is one ``NonMaxSuppression`` node. TorchScript tracing records the
    torchvision ops instead of the custom op, so a TorchScript file needs only torchvision to load.
    """
    if torch.jit.is_tracing():
        return reference_nms(boxes, scores, max_per_class, iou_thr, score_thr)
    return torch.ops.odet.nms(boxes, scores, max_per_class, iou_thr, score_thr)


def onnx_translations() -> dict[Callable[..., Any], Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``: ``odet::nms`` → ONNX
    ``NonMaxSuppression`` (corner boxes; any diagonal pair is fine, IoU does not care for x/y order)."""
    from onnxscript import opset18 as op

    def nms(boxes: Any, scores: Any, max_per_class: int, iou_thr: float, score_thr: float) -> Any:
        return op.NonMaxSuppression(
            boxes,
            scores,
            op.Constant(value_ints=[max_per_class]),
            op.Constant(value_floats=[iou_thr]),
            op.Constant(value_floats=[score_thr]),
        )

    return {torch.ops.odet.nms.default: nms}


def padded_detections(
    selected: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's best ``k`` NMS survivors, padded to ``k`` rows (TensorRT EfficientNMS's layout).

    Args:
        selected: (M, 3) int64 (image, class, prior) from :func:`class_aware_nms`.
        scores: (B, C, N) the scores NMS saw; every selected entry is ≥ 0 (probabilities above a
            threshold in [0, 1]).
        boxes: (B, N, 4) the boxes NMS saw.
        k: rows per image (``max_per_img``).

    Returns:
        boxes (B, k, 4), scores (B, k), labels (B, k) int64, num_dets (B,) int64; best first; padding
        rows have boxes 0, score 0, label −1.
    """
    batch = scores.shape[0]
    img, cls, prior = selected.unbind(1)
    picked = scores[img, cls, prior]  # (M,)
    images = torch.arange(batch, device=scores.device)[:, None]
    # One row per image over all M survivors (−1 where the survivor belongs to another image), plus
    # k padding columns so that TopK always has k entries to return, even when M < k.
    per_image = torch.where(img[None, :] == images, picked[None, :], -1.0)
    per_image = torch.cat([per_image, per_image.new_full((batch, k), -1.0)], dim=1)
    top, column = per_image.topk(k, dim=1)
    valid = top >= 0
    rows = torch.cat([selected, selected.new_zeros((k, 3))])[column]  # (B, k, 3)
    labels = torch.where(valid, rows[..., 1], -1)
    det_boxes = torch.where(valid[..., None], boxes[images, rows[..., 2]], 0.0)
    return det_boxes, torch.where(valid, top, 0.0), labels, valid.sum(dim=1)
