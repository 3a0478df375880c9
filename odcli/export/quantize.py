"""``odet export --int8``: static post-training quantisation of an ONNX export with ONNX Runtime's tools.

What is quantised is the *network*: the convolutions of backbone, neck and head and the activations,
additions, concatenations, poolings and resizes between them, as QDQ pairs (int8 weights per output
channel, uint8 activations per tensor, ranges = min/max over calibration images run through the
export's own test pipeline). What stays float32: the normalisation in front, each head's last
prediction convolutions (class logits and box distances: their int8 rounding would move every score
and box edge), the decoding and NMS — so the file keeps the same inputs, outputs and metadata.

Measured (2-core AVX-512 VNNI CPU, 2 threads, ONNX Runtime 1.32; ``bench/deploy.py``): RTMDet-tiny's
forward at 640 runs 1.6–1.9× faster than the float32 file. On a trained model (the demo's, its 8
images, calibrated on 64 other COCO128 images): mAP@0.5 0.750 → 0.751, mAP 0.555 → 0.526, and 98 %
of the float32 detections scoring ≥ 0.3 on 32 COCO128 images are found again (same class, IoU ≥ 0.5;
mean IoU 0.958, median score change 0.012); the slow learning check's 300-step model: mAP 0.706 →
0.707, mAP@0.5 0.846 → 0.846. Boxes move by a few percent of their size: hence opt-in,
and worth an ``odet eval`` of your own model's int8 file.

ONNX Runtime's ``quantize_static`` does the work (calibration, QDQ insertion); odet only chooses the
nodes (:func:`network_nodes`) and feeds the calibration images.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from odcli.data.image_io import read_image
from odcli.data.yolo_layout import images_in
from odcli.errors import OdetError
from odcli.export.files import atomic_output
from odcli.inference.backends.base import graph_feeds, import_optional
from odcli.inference.backends.inputs import canvas_batch, prepare_image, test_transforms
from odcli.inference.backends.meta import METADATA_KEY, ExportMeta

__all__ = ["QUANTIZED_OPS", "calibration_images", "network_nodes", "quantize_onnx"]

#: The operators quantised inside the network (ONNX Runtime fuses QDQ Conv + activation chains).
QUANTIZED_OPS = (
    "Conv", "Relu", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "HardSigmoid", "ReduceMean",
)  # fmt: skip
#: The network's parts, as the exporter names their modules' scopes.
NETWORK_SCOPES = ("model.backbone", "model.neck", "model.head")
#: The heads' last convolutions (RTMDet, RetinaNet, PP-YOLOE), kept float32.
PREDICTION_MODULES = ("cls_preds", "reg_preds", "cls_pred", "reg_pred", "pred_cls", "pred_reg", "proj_conv")


def _module_scope(node: Any) -> str:
    """The innermost module a node of the dynamo exporter's graph comes from ('' for graph code)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            # A Python list literal of scopes, outermost first: "['', 'model', 'model.backbone', …]".
            modules = [s.strip(" '\"") for s in prop.value.strip("[]").split(",")]
            modules = [m for m in modules if m.startswith("model")]
            return modules[-1] if modules else ""
    return ""


def network_nodes(model: Any) -> list[str]:
    """Names of the nodes of an ONNX export (``onnx.ModelProto``) to quantise.

    A node qualifies when its operator is in :data:`QUANTIZED_OPS` and it comes from a module inside
    backbone, neck or head — not from the head's own code (decoding, scaling by stride), not from a
    prediction convolution (:data:`PREDICTION_MODULES`).

    Raises:
        OdetError: no node qualifies (a graph without the exporter's scopes).
    """
    chosen = []
    for node in model.graph.node:
        scope = _module_scope(node)
        if node.op_type not in QUANTIZED_OPS or not scope.startswith(NETWORK_SCOPES) or scope == "model.head":
            continue
        if any(part in PREDICTION_MODULES for part in scope.split(".")):
            continue
        chosen.append(node.name)
    if not chosen:
        raise OdetError("this ONNX graph names no network modules (not an odet export?): cannot quantise it")
    return chosen


def calibration_images(source: str | Path, count: int) -> list[Path]:
    """The first ``count`` images (sorted) of a folder (searched recursively) or a ``.txt`` list.

    Raises:
        OdetError: no such folder or list, no images in it, or ``count`` < 1.
    """
    if count < 1:
        raise OdetError(f"--calib-images must be >= 1, got {count}")
    return images_in(Path(source).expanduser(), "--calib")[:count]


class _CalibrationFeeds:
    """ONNX Runtime's ``CalibrationDataReader``: the export's inputs, one batch of images at a time."""

    def __init__(self, meta: ExportMeta, paths: Sequence[Path]) -> None:
        self.meta = meta
        self.batches = self._batches(paths)

    def _batches(self, paths: Sequence[Path]) -> Iterator[dict[str, np.ndarray]]:
        transforms = test_transforms(self.meta)
        size = self.meta.batch or 1
        for start in range(0, len(paths), size):
            chunk = list(paths[start : start + size])
            chunk += [chunk[-1]] * (size - len(chunk))  # a fixed-batch file takes exactly its batch
            samples = []
            for path in chunk:
                try:
                    samples.append(prepare_image(transforms, read_image(path), file_name=path.name))
                except (OSError, ValueError) as exc:
                    raise OdetError(f"--calib: cannot read {path}: {exc}") from None
            batch, metas = canvas_batch(samples, self.meta)
            yield graph_feeds(self.meta, batch, metas)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_onnx(path: Path, meta: ExportMeta, images: Sequence[Path]) -> ExportMeta:
    """Replace the float32 ONNX export at ``path`` by its int8 version (atomically).

    Args:
        path: what :func:`~odcli.export.onnx_file.write_onnx` wrote. meta: its metadata.
        images: calibration images (:func:`calibration_images`), raw files.

    Returns:
        The metadata now stored in the file (``int8``, ``calibration``).
    """
    onnx = import_optional("onnx", "odet export --int8")
    import_optional("onnxruntime", "odet export --int8")  # the pip line, if onnxruntime is missing
    quantization = import_optional("onnxruntime.quantization", "odet export --int8")
    model = onnx.load(str(path))
    nodes = network_nodes(model)
    int8_meta = dataclasses.replace(
        meta,
        int8=True,
        calibration=f"min/max over {len(images)} images ({Path(images[0]).parent.name}/…), "
        f"{len(nodes)} network nodes int8 (QDQ, per-channel weights)",
    )
    root = logging.getLogger()
    level = root.level
    # ONNX Runtime's quantiser logs advice on the root logger ("consider pre-processing…"): the
    # exporter's graph is already shape-inferred, and odet's output is its summary table.
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix=".odet-int8-", dir=path.parent) as tmp:
            quantized = Path(tmp) / "int8.onnx"
            quantization.quantize_static(
                str(path),
                str(quantized),
                _CalibrationFeeds(meta, images),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_quantize=nodes,
                calibrate_method=quantization.CalibrationMethod.MinMax,
            )
            result = onnx.load(str(quantized))
    finally:
        root.setLevel(level)
    del result.metadata_props[:]
    result.metadata_props.add(key=METADATA_KEY, value=int8_meta.to_json())
    result.producer_name = "odet"
    with atomic_output(path) as tmp_file:
        onnx.save(result, str(tmp_file))
    return int8_meta
