"""Building a TensorRT engine from an odet ONNX file (TensorRT's Python API; FP16 by default).

TensorRT is optional and needs an NVIDIA GPU: this module imports it only when building, and fails
with one line naming what is missing. The engine cannot carry odet's metadata, so it is written
beside it as ``<engine>.json`` (the same document the ONNX file holds).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from odcli.errors import OdetError
from odcli.export.files import atomic_output
from odcli.inference.backends.meta import ExportMeta
from odcli.inference.backends.tensorrt_backend import require_tensorrt, sidecar_path

__all__ = ["TENSORRT_MAX_TOPK", "build_engine", "check_tensorrt_graph"]

#: TensorRT's TopK layer returns at most this many elements.
TENSORRT_MAX_TOPK = 3840


def check_tensorrt_graph(meta: ExportMeta) -> None:
    """Refuse, before any work, an NMS graph whose top-k exceeds what TensorRT's TopK takes.

    MMDetection's per-level top-k keeps ``nms_pre`` (prior, class) pairs per level (RTMDet: 30000).
    """
    if not meta.nms:
        return
    k = meta.nms_pre
    if meta.postprocess == "per_level":
        ks = [min(k, n * meta.num_classes) for n in meta.level_counts]
    else:
        ks = [min(k, sum(meta.level_counts)) if k > 0 else sum(meta.level_counts)]
    if max([*ks, meta.max_per_img]) > TENSORRT_MAX_TOPK:
        raise OdetError(
            f"TensorRT's TopK takes k <= {TENSORRT_MAX_TOPK}, this model's post-processing needs {max(ks)} "
            f"(nms_pre {meta.nms_pre}): export with --no-nms and post-process outside the engine"
        )


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    meta: ExportMeta,
    *,
    fp16: bool = True,
    max_batch: int = 32,
    workspace_gb: float = 4.0,
) -> ExportMeta:
    """Parse ``onnx_path``, build a serialized engine (FP16 kernels allowed when ``fp16``), write it.

    Args:
        meta: the ONNX file's metadata (a dynamic batch gets an optimisation profile 1 … ``max_batch``,
            tuned for 1).
    Raises:
        OdetError: TensorRT missing, no CUDA GPU, an ONNX graph TensorRT cannot parse or build.
    """
    trt = require_tensorrt()
    check_tensorrt_graph(meta)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 8; implicit in 10
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise OdetError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if meta.batch is None:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.name == "min_score":  # (1,): one threshold, whatever the batch
                continue
            rest = tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, (1, *rest), (1, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise OdetError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    built = dataclasses.replace(
        meta, format="tensorrt", half=fp16, exporter=f"{meta.exporter}; TensorRT {trt.__version__}"
    )
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    sidecar_path(engine_path).write_text(built.to_json())
    return built
