"""Inference on raw images: preprocess, predict, and the checks ``odet infer`` applies to the result.

A :class:`Predictor` owns a model in eval mode and the test-time pipeline its
:class:`~odcli.models.detector.InputSpec` prescribes (the model: :func:`odcli.inference.load.load_model`).
"""

from __future__ import annotations

import numpy as np
import torch

from odcli.data.collate import collate
from odcli.data.normalize import prepare_batch
from odcli.data.pipelines import build_test_transforms
from odcli.data.sample import Sample, image_sample
from odcli.models.detector import Detector


class Predictor:
    """Raw BGR images → detections in original-image pixels.

    Args:
        model: a detector (put in eval mode here).
        score_thr: extra display/export threshold applied after the model's own post-processing
            (0 keeps everything the model returns, which is what COCO evaluation wants).
    """

    def __init__(self, model: Detector, *, score_thr: float = 0.0) -> None:
        self.model = model.eval()
        self.score_thr = score_thr
        spec = model.input_spec
        self.transforms = build_test_transforms(
            spec.test_scale,
            pad_val=int(spec.pad_value),
            pad=spec.pad_to is not None,
            keep_ratio=spec.keep_ratio,
            interpolation=spec.interpolation,
        )
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @property
    def finest_stride(self) -> int:
        """Pixels per cell of the model's finest feature level (``odet infer``'s small-image warning)."""
        return finest_stride(self.model)

    def prepare(self, img: np.ndarray, *, file_name: str = "", image_id: int = 0) -> Sample:
        """Apply the test pipeline to one (H, W, 3) uint8 BGR image."""
        return self.transforms(image_sample(img, file_name=file_name, image_id=image_id))

    @torch.no_grad()
    def predict_samples(
        self, samples: list[Sample], *, min_score: float | None = None, max_dets: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections (CPU tensors) for already-prepared samples, one forward pass.

        ``min_score`` / ``max_dets``: what the caller will show — detections scoring at least
        ``min_score``, at most ``max_dets`` per image. Post-processing then stops there, and returns
        exactly those detections of the full result (see :func:`odcli.boxes.postprocess.per_level_nms`).
        """
        spec = self.model.input_spec
        images, _, metas = collate(samples, pad_value=int(spec.pad_value), size_divisor=spec.size_divisor)
        # In the parameters' dtype: a half-precision model (``odet profile --dtype fp16``) takes half inputs.
        batch = prepare_batch(images, metas, spec, self.device).to(self.dtype)
        floor = self._floor(min_score)
        decoded = self.model.decode(batch.contiguous(memory_format=torch.channels_last))
        if decoded.scores.dtype != torch.float32:  # fp16 (--half): post-process in float32 like upstream,
            # whose class offsets (label × largest coordinate) would lose whole pixels in fp16
            decoded = decoded._replace(scores=decoded.scores.float(), boxes=decoded.boxes.float())
        dets = self.model.head.postprocess(decoded, metas, min_score=floor, max_dets=max_dets)
        out = []
        for det in dets:
            keep = det["scores"] > self.score_thr
            out.append({k: v[keep].cpu() for k, v in det.items()})
        return out

    def _floor(self, min_score: float | None) -> float | None:
        """The lowest score a returned detection can have: ``min_score`` and this predictor's own
        strict ``score_thr`` (as "at least the next float32 above it"), whichever is higher."""
        floors = [min_score] if min_score is not None else []
        if self.score_thr > 0:
            above = torch.nextafter(torch.tensor(self.score_thr), torch.tensor(float("inf")))
            floors.append(float(above))
        return max(floors) if floors else None

    def __call__(
        self, images: list[np.ndarray], *, min_score: float | None = None, max_dets: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections for raw BGR images: ``boxes`` (K, 4) xyxy original pixels, ``scores``, ``labels``
        (``min_score`` / ``max_dets``: see :meth:`predict_samples`)."""
        return self.predict_samples(
            [self.prepare(img) for img in images], min_score=min_score, max_dets=max_dets
        )


#: An image whose shorter side spans fewer than this many cells of the finest feature level holds
#: less detail than the smallest object the detector was trained to find (at stride 8: 16 px); the
#: test resize only interpolates it up, so whatever it "finds" there is noise.
MIN_FINEST_CELLS = 2


def finest_stride(model: Detector) -> int:
    """The smallest stride (pixels per cell of the finest feature level) of ``model``'s head."""
    return int(min(model.head.strides))


def tiny_image_warning(height: int, width: int, stride: int, name: str) -> str | None:
    """A one-line warning when an (height, width) image is too small for a model of finest ``stride``."""
    limit = MIN_FINEST_CELLS * stride
    if min(height, width) >= limit:
        return None
    return (
        f"{name} is only {width}x{height} px, less than {MIN_FINEST_CELLS} cells of the model's finest "
        f"stride ({stride} px): its detections are probably meaningless"
    )


def clip_to_image(det: dict[str, torch.Tensor], height: int, width: int) -> dict[str, torch.Tensor]:
    """Detections with their boxes clipped to the original image, as ``odet infer`` shows them.

    Upstream (and :class:`Predictor`, which reproduces it) clips boxes to the *padded* network input
    before rescaling, so a box can reach past the real image (y2 = 618 on a 426 px high image).
    Here x is clipped to ``[0, width]`` and y to ``[0, height]``; a box left without area (it lay
    entirely in the padding) is dropped.

    Args:
        det: ``boxes`` (K, 4) xyxy original-image pixels, ``scores`` (K,), ``labels`` (K,).
        height, width: the original image size in pixels.

    Returns:
        The same keys with K' <= K rows.
    """
    boxes = det["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out = {k: v[keep] for k, v in det.items() if k != "boxes"}
    out["boxes"] = boxes[keep]
    return out
