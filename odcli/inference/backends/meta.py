"""What an exported odet file says about itself: :class:`ExportMeta`, stored as one JSON document.

``odet export`` writes it into the file (ONNX ``metadata_props["odet"]``, OpenVINO ``rt_info["odet"]``,
TorchScript ``_extra_files["odet.json"]``); the backends read it back, so an exported file is all a
runner needs: which model it is, its classes, how raw images become its input, which post-processing
it applies (or the runner must apply), and the layout of its inputs and outputs.

The graph's inputs (every file):

* ``images`` (B, 3, H, W) float32, **BGR, 0–255**, NCHW: each image resized by the test rule
  (``resize``) and pasted top-left on an H×W canvas filled with ``pad_value`` — the test pipeline's
  output *before* normalisation. The graph normalises (and swaps to RGB where the network eats RGB).
* ``img_shape`` (B, 2) float32: (h, w) of each image's content on the canvas, as odet's metas say
  (RTMDet: the padded (H, W), upstream clips to it).
* ``scale_factor`` (B, 2) float32: (sx, sy) = resized / original size per axis (odet's and
  MMDetection's order; PaddleDetection's own exports take (sy, sx)).
* ``min_score`` (1,) float32, NMS graphs only (``min_score_input``): candidates scoring below it take
  no part in NMS, so the outputs are exactly the full run's detections scoring at least it; 0 gives
  the upstream test config. A display threshold fed here costs far less NMS than one applied after.

Outputs with NMS in the graph (fixed size, best first; K = ``max_per_img``):
``boxes`` (B, K, 4) float32 xyxy original-image pixels, ``scores`` (B, K) float32, ``labels`` (B, K)
int64, ``num_dets`` (B,) int64; rows past ``num_dets`` are padding (boxes 0, scores 0, labels −1).
Without NMS: ``boxes`` (B, N, 4) float32 xyxy canvas pixels (not clipped, not rescaled) and ``scores``
(B, N, C) float32 probabilities — odet's ``Decoded`` stage, priors level-major (``level_counts``).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from odcli.boxes.postprocess import NMSConfig
from odcli.errors import OdetError
from odcli.models.detector import InputSpec

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NAMES",
    "METADATA_KEY",
    "NMS_OUTPUT_NAMES",
    "RAW_OUTPUT_NAMES",
    "ExportMeta",
]

#: Bumped when the layout of inputs, outputs or this document changes incompatibly.
FORMAT_VERSION = 1
#: The key (ONNX metadata_props, OpenVINO rt_info) and file stem (TorchScript extra file) of the JSON.
METADATA_KEY = "odet"
INPUT_NAMES = ("images", "img_shape", "scale_factor")
NMS_OUTPUT_NAMES = ("boxes", "scores", "labels", "num_dets")
RAW_OUTPUT_NAMES = ("boxes", "scores")

#: Post-processing styles: MMDetection's (RTMDet, RetinaNet) and PaddleDetection's (PP-YOLOE).
POSTPROCESS_STYLES = ("per_level", "per_class")


@dataclass(frozen=True)
class ExportMeta:
    """Everything needed to feed an exported file and read its outputs.

    Attributes:
        arch: zoo name (``rtmdet_tiny``). classes / cat_ids: C names and COCO ids in label order.
        canvas: (H, W) of the ``images`` input. batch: its fixed batch size, None when dynamic.
        mean / std / to_rgb: the normalisation the graph applies (network channel order, 0–255).
        pad_value: the canvas fill before normalisation. zero_padding: the graph zeroes everything
            outside ``img_shape`` after normalising (RetinaNet: upstream pads after normalisation).
        test_scale / keep_ratio / interpolation: the test resize (odet's ``Resize``: (w, h) target;
            keep-ratio is mmcv's rule, long edge to ``max(test_scale)``, short to ``min``).
        postprocess: ``per_level`` (MMDetection: top ``nms_pre`` (prior, class) pairs per level,
            clip to ``img_shape``, × 1/``scale_factor``, drop boxes ≤ ``min_bbox_size``) or
            ``per_class`` (PaddleDetection: ÷ ``scale_factor``, top ``nms_pre`` per class, −1 = all);
            then class-aware NMS and the best ``max_per_img``.
        score_thr / nms_pre / iou_thr / max_per_img / min_bbox_size: the test config.
        nms: post-processing is in the graph (outputs :data:`NMS_OUTPUT_NAMES`), else raw outputs.
        min_score_input: the graph takes ``min_score`` (every NMS export now; files written before
            the input existed lack it and run without it).
        level_counts: priors per level (strides ascending), N in total. strides: the levels' strides.
        half: fp16 weights and compute (inputs and outputs stay float32).
        int8: the network's convolutions run in int8 (ONNX QDQ, static post-training quantisation;
            normalisation, decoding and NMS stay float32). calibration: how its ranges were found.
        format / opset / exporter: how the file was written. odet_version / torch_version: by what.
        source: the weights file it came from.
    """

    arch: str
    classes: tuple[str, ...]
    cat_ids: tuple[int, ...]
    canvas: tuple[int, int]
    batch: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    to_rgb: bool
    pad_value: float
    zero_padding: bool
    test_scale: tuple[int, int]
    keep_ratio: bool
    interpolation: str
    postprocess: str
    score_thr: float
    nms_pre: int
    iou_thr: float
    max_per_img: int
    min_bbox_size: float
    nms: bool
    level_counts: tuple[int, ...]
    strides: tuple[int, ...]
    half: bool = False
    min_score_input: bool = False
    int8: bool = False
    calibration: str = ""
    format: str = "onnx"
    opset: int | None = None
    exporter: str = ""
    odet_version: str = ""
    torch_version: str = ""
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def precision(self) -> str:
        """What the network computes in: ``int8``, ``float16`` or ``float32``."""
        return "int8" if self.int8 else "float16" if self.half else "float32"

    @property
    def input_names(self) -> tuple[str, ...]:
        return (*INPUT_NAMES, "min_score") if self.min_score_input else INPUT_NAMES

    @property
    def output_names(self) -> tuple[str, ...]:
        return NMS_OUTPUT_NAMES if self.nms else RAW_OUTPUT_NAMES

    def input_spec(self) -> InputSpec:
        """The model-side :class:`InputSpec` this file's preprocessing follows: the canvas as ``pad_to``
        where the pipeline pads to it (RTMDet); none where padding is zeroed after normalising
        (RetinaNet), so that PyTorch's ``prepare_batch`` zeroes the same pixels as the graph."""
        return InputSpec(
            mean=self.mean,
            std=self.std,
            to_rgb=self.to_rgb,
            test_scale=self.test_scale,
            keep_ratio=self.keep_ratio,
            pad_value=self.pad_value,
            pad_to=None if self.zero_padding else self.canvas,
            interpolation=self.interpolation,
        )

    def nms_config(self) -> NMSConfig:
        return NMSConfig(
            score_thr=self.score_thr,
            nms_pre=self.nms_pre,
            iou_thr=self.iou_thr,
            max_per_img=self.max_per_img,
            min_bbox_size=self.min_bbox_size,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields plus ``format_version`` and a readable ``layout``."""
        out = {"format_version": FORMAT_VERSION, **asdict(self)}
        out["layout"] = self.layout()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def layout(self) -> dict[str, Any]:
        """Names, shapes (``B`` = batch) and meaning of every input and output."""
        b: int | str = self.batch if self.batch is not None else "B"
        h, w = self.canvas
        inputs = {
            "images": {
                "shape": [b, 3, h, w],
                "dtype": "float32",
                "meaning": "BGR 0-255 canvas, resized+padded",
            },
            "img_shape": {"shape": [b, 2], "dtype": "float32", "meaning": "(h, w) content on the canvas"},
            "scale_factor": {"shape": [b, 2], "dtype": "float32", "meaning": "(sx, sy) resized / original"},
        }
        if self.min_score_input:
            inputs["min_score"] = {
                "shape": [1],
                "dtype": "float32",
                "meaning": "drop candidates below it before NMS (0: test config)",
            }
        k, n, c = self.max_per_img, sum(self.level_counts), self.num_classes
        if self.nms:
            outputs = {
                "boxes": {"shape": [b, k, 4], "dtype": "float32", "meaning": "xyxy original pixels"},
                "scores": {"shape": [b, k], "dtype": "float32", "meaning": "best first; 0 = padding"},
                "labels": {"shape": [b, k], "dtype": "int64", "meaning": "class index; -1 = padding"},
                "num_dets": {"shape": [b], "dtype": "int64", "meaning": "valid rows per image"},
            }
        else:
            outputs = {
                "boxes": {
                    "shape": [b, n, 4],
                    "dtype": "float32",
                    "meaning": "xyxy canvas pixels, every prior",
                },
                "scores": {"shape": [b, n, c], "dtype": "float32", "meaning": "class probabilities"},
            }
        return {"inputs": inputs, "outputs": outputs}

    @classmethod
    def from_json(cls, text: str, *, source: str = "the file") -> ExportMeta:
        """Parse the JSON :meth:`to_json` wrote.

        Raises:
            OdetError: not odet's metadata, or written by a newer, incompatible odet.
        """
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise OdetError(f"{source} has unreadable odet metadata; re-export it with odet export") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise OdetError(
                f"{source} has export format {version!r}, this odet reads {FORMAT_VERSION}; "
                "re-export it with this odet"
            )
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        if missing:
            raise OdetError(
                f"{source}: odet metadata lacks {', '.join(missing)}; re-export it with odet export"
            )
        kwargs = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for key in ("classes", "cat_ids", "canvas", "mean", "std", "test_scale", "level_counts", "strides"):
            kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)
