"""From a loaded model to what the writers trace: the export's canvas, its graph and its metadata."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from odcli import __version__
from odcli.errors import OdetError
from odcli.export.graph import POSTPROCESS_STYLE, ExportGraph
from odcli.inference.backends.meta import ExportMeta
from odcli.inference.load import LoadedModel
from odcli.models.detector import Detector, InputSpec
from odcli.models.fuse import to_half

__all__ = ["ExportPlan", "export_canvas", "plan_export"]

#: Canvas sides must be multiples of this: every zoo model's coarsest backbone stride.
CANVAS_MULTIPLE = 32


def export_canvas(spec: InputSpec, imgsz: tuple[int, int] | None) -> tuple[InputSpec, tuple[int, int]]:
    """The input spec of the export and its fixed (H, W) canvas.

    Without ``imgsz`` the model's own test resize is kept and the canvas is the smallest that holds
    every image it produces: RTMDet its pad size, PP-YOLOE its resize target, RetinaNet (keep-ratio
    fit to 1333×800, both orientations) a square of max(test_scale) rounded up to 32 — 1344×1344.
    With ``imgsz`` = (H, W) the canvas is that and the test resize targets it: ``test_scale`` = (W, H)
    (RTMDet also pads to it). For keep-ratio models without a fixed pad (RetinaNet) a non-square
    canvas only holds images of one orientation.

    Raises:
        OdetError: a side that is not a positive multiple of 32.
    """
    if imgsz is None:
        w, h = spec.test_scale
        if spec.pad_to is not None:
            return spec, (int(spec.pad_to[0]), int(spec.pad_to[1]))
        if not spec.keep_ratio:
            return spec, (_round_up(h), _round_up(w))
        side = _round_up(max(w, h))
        return spec, (side, side)
    h, w = (int(v) for v in imgsz)
    if min(h, w) < CANVAS_MULTIPLE or h % CANVAS_MULTIPLE or w % CANVAS_MULTIPLE:
        raise OdetError(f"--imgsz {h} {w}: both sides must be positive multiples of {CANVAS_MULTIPLE}")
    pad_to = (h, w) if spec.pad_to is not None else None
    return dataclasses.replace(spec, test_scale=(w, h), pad_to=pad_to), (h, w)


def level_counts(model: Detector, canvas: tuple[int, int]) -> tuple[int, ...]:
    """Priors per level (strides ascending) of ``model`` on an (H, W) canvas: ceil(H/s)·ceil(W/s)
    locations on the level of stride s — every zoo backbone halves with "same" padding — times the
    priors per location (RetinaNet's anchors)."""
    h, w = canvas
    per_location = int(getattr(model.head, "num_anchors", 1))
    return tuple(math.ceil(h / s) * math.ceil(w / s) * per_location for s in model.head.strides)


def _round_up(side: int) -> int:
    return math.ceil(side / CANVAS_MULTIPLE) * CANVAS_MULTIPLE


@dataclass
class ExportPlan:
    """What a writer needs: the module to trace, example inputs of the right shapes, the metadata."""

    graph: ExportGraph
    example: tuple[torch.Tensor, ...]
    meta: ExportMeta

    def final_meta(self, **changes: object) -> ExportMeta:
        """:attr:`meta` with what the writer adds (format, opset, exporter)."""
        return dataclasses.replace(self.meta, **changes)


def plan_export(
    loaded: LoadedModel,
    *,
    imgsz: tuple[int, int] | None = None,
    batch: int | None = 1,
    nms: bool = True,
    half: bool = False,
    fmt: str = "onnx",
) -> ExportPlan:
    """Wrap ``loaded.model`` (BN folded, on CPU) for export and describe the result.

    Args:
        imgsz: (H, W) canvas (:func:`export_canvas`). batch: fixed batch size, None for dynamic.
        nms: upstream post-processing in the graph. half: fp16 weights and compute.
        fmt: the format being written (recorded in the metadata).
    """
    model = loaded.model.float().eval()
    family = model.arch.split("_")[0]
    if family not in POSTPROCESS_STYLE:
        raise OdetError(f"odet export does not know the post-processing of {model.arch}")
    spec, canvas = export_canvas(model.input_spec, imgsz)
    model.input_spec = spec
    zero_padding = spec.pad_to is None  # as prepare_batch: upstream pads after normalising
    graph = ExportGraph(
        to_half(model) if half else model,
        nms=nms,
        style=POSTPROCESS_STYLE[family],
        zero_padding=zero_padding,
        half=half,
    ).eval()
    # Two images for a dynamic batch: torch.export would specialise an example batch of 1 to 1.
    b = 2 if batch is None else batch
    h, w = canvas
    example = (
        torch.full((b, 3, h, w), float(spec.pad_value)),
        torch.tensor([[h, w]] * b, dtype=torch.float32),
        torch.ones(b, 2),
    )
    if nms:
        example = (*example, torch.zeros(1))  # min_score
    cfg = model.head.nms
    meta = ExportMeta(
        arch=model.arch,
        classes=tuple(loaded.classes),
        cat_ids=tuple(loaded.cat_ids),
        canvas=canvas,
        batch=batch,
        mean=spec.mean,
        std=spec.std,
        to_rgb=spec.to_rgb,
        pad_value=float(spec.pad_value),
        zero_padding=zero_padding,
        test_scale=spec.test_scale,
        keep_ratio=spec.keep_ratio,
        interpolation=spec.interpolation,
        postprocess=POSTPROCESS_STYLE[family],
        score_thr=cfg.score_thr,
        nms_pre=cfg.nms_pre,
        iou_thr=cfg.iou_thr,
        max_per_img=cfg.max_per_img,
        min_bbox_size=cfg.min_bbox_size,
        nms=nms,
        min_score_input=nms,
        level_counts=level_counts(model, canvas),
        strides=tuple(int(s) for s in model.head.strides),
        half=half,
        format=fmt,
        odet_version=__version__,
        torch_version=torch.__version__.split("+")[0],
        source=loaded.source.name if loaded.source is not None else "",
    )
    return ExportPlan(graph=graph, example=example, meta=meta)
