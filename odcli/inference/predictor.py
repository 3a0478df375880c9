"""Inference on raw images: load a model with its class names, preprocess, predict.

This is what ``odet infer`` and ``odet eval`` share: a :class:`Predictor` owns a model in eval
mode, the test-time pipeline its :class:`~odcli.models.detector.InputSpec` prescribes, and the
class names that turn labels into words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odcli.data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from odcli.data.loader import collate, prepare_batch
from odcli.data.transforms import Sample, build_test_transforms
from odcli.errors import OdetError
from odcli.models.detector import Detector
from odcli.runtime.device import resolve_device


@dataclass
class LoadedModel:
    """A model ready for inference plus what the checkpoint said about it."""

    model: Detector
    classes: list[str]
    cat_ids: list[int]
    meta: dict[str, Any]
    source: Path


def load_model(
    weights: str | Path, *, arch: str | None = None, device: str = "auto", optimize: bool = True
) -> LoadedModel:
    """Build the model a weights file belongs to and load it.

    With ``optimize`` the model is prepared for inference only (BN folded, channels-last).

    odet ``.safetensors`` checkpoints carry their architecture, recipe and class names; upstream
    ``.pth`` files need ``arch`` and are assumed to be COCO (80 classes).
    """
    from odcli.models.zoo import build_from_config, build_model
    from odcli.weights.load import load_weights

    path = Path(weights)
    if path.is_dir():
        found = [path / n for n in ("best.safetensors", "last.safetensors") if (path / n).is_file()]
        hint = f"; did you mean {found[0]}?" if found else "; give the weights file inside it"
        raise OdetError(f"weights path is a directory, not a file: {path}{hint}")
    if not path.is_file():
        raise OdetError(f"weights file not found: {path}")
    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from odcli.recipe import recipe_from_dict
        from odcli.weights.checkpoint import read_meta

        meta = read_meta(path)
        recipe = meta.get("recipe")
        if recipe and "model" in recipe:
            model = build_from_config(recipe_from_dict(recipe).model)
        elif meta.get("arch") or arch:
            model = build_model(
                meta.get("arch") or arch, num_classes=len(meta.get("classes") or COCO_CLASSES)
            )
        else:
            raise OdetError(f"{path.name} does not say which architecture it holds; pass --arch")
    else:
        if not arch:
            raise OdetError(f"{path.name} is an upstream checkpoint: pass --arch (e.g. --arch rtmdet_tiny)")
        model = build_model(arch, num_classes=len(COCO_CLASSES))
    if arch and path.suffix == ".safetensors" and model.arch != arch:
        # odet checkpoints say what they hold; a different --arch would otherwise be ignored silently.
        raise OdetError(
            f"{path.name} holds {model.arch}, not {arch}: drop --arch (it is only needed for upstream .pth)"
        )
    if meta.get("deploy"):  # RepVGG re-parameterised weights (convert-weights --deploy): same form
        from odcli.models.fuse import reparameterize

        reparameterize(model)
    load_weights(model, path)
    classes = list(meta.get("classes") or (COCO_CLASSES if model.num_classes == 80 else []))
    if len(classes) != model.num_classes:
        classes = [f"class_{i}" for i in range(model.num_classes)]
    cat_ids = list(meta.get("cat_ids") or (COCO_CATEGORY_IDS if model.num_classes == 80 else []))
    if len(cat_ids) != model.num_classes:
        cat_ids = list(range(1, model.num_classes + 1))
    model = model.to(resolve_device(device)).eval()
    if optimize:
        from odcli.models.fuse import optimize_for_inference

        optimize_for_inference(model)
    return LoadedModel(model=model, classes=classes, cat_ids=cat_ids, meta=meta, source=path)


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
        self.device = next(model.parameters()).device

    def prepare(self, img: np.ndarray, *, file_name: str = "", image_id: int = 0) -> Sample:
        """Apply the test pipeline to one (H, W, 3) uint8 BGR image."""
        h, w = img.shape[:2]
        sample: Sample = {
            "img": img,
            "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros((0,), np.int64),
            "image_id": image_id,
            "file_name": file_name,
            "ori_shape": (h, w),
            "img_shape": (h, w),
            "pad_shape": (h, w),
            "scale_factor": (1.0, 1.0),
        }
        return self.transforms(sample)

    @torch.no_grad()
    def predict_samples(self, samples: list[Sample]) -> list[dict[str, torch.Tensor]]:
        """Detections (CPU tensors) for already-prepared samples, one forward pass."""
        spec = self.model.input_spec
        images, _, metas = collate(samples, pad_value=int(spec.pad_value), size_divisor=spec.size_divisor)
        batch = prepare_batch(images, metas, spec, self.device)
        dets = self.model.predict(batch.contiguous(memory_format=torch.channels_last), metas)
        out = []
        for det in dets:
            keep = det["scores"] > self.score_thr
            out.append({k: v[keep].cpu() for k, v in det.items()})
        return out

    def __call__(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Detections for raw BGR images: ``boxes`` (K, 4) xyxy original pixels, ``scores``, ``labels``."""
        return self.predict_samples([self.prepare(img) for img in images])


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


def with_test_settings(model: Detector, **changes: Any) -> Detector:
    """Change the head's post-processing settings (score threshold, NMS …) in place; returns model."""
    model.head.nms = replace(model.head.nms, **changes)
    return model
