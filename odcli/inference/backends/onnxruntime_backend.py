"""Running an exported ``.onnx`` file with ONNX Runtime (CPU, CUDA or TensorRT execution provider)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odcli.errors import OdetError
from odcli.inference.backends.base import ExportedBackend, import_optional
from odcli.inference.backends.meta import METADATA_KEY, ExportMeta

__all__ = ["PROVIDERS", "OnnxRuntimeBackend", "read_onnx_meta"]

#: ``device`` → ONNX Runtime execution providers, fastest first (each falls back to the next).
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def read_onnx_meta(path: Path) -> ExportMeta:
    """The odet metadata of an ``.onnx`` file, read without loading its weights into a session."""
    onnx = import_optional("onnx", "reading .onnx files")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise OdetError(f"{path.name} was not written by odet export (no odet metadata)")
    return ExportMeta.from_json(props[METADATA_KEY], source=path.name)


class OnnxRuntimeBackend(ExportedBackend):
    """An ONNX Runtime session over an odet ``.onnx`` file.

    Args:
        path: the file. device: ``cpu``, ``cuda`` or ``tensorrt`` (FP16 engines built and cached by
            ONNX Runtime's TensorRT provider; needs ``onnxruntime-gpu`` and TensorRT).
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
        spinning: let idle threads spin-wait for the next run (ONNX Runtime's default). Off, they
            sleep: what shares the CPU with them between runs (drawing, another model timed in the
            same rounds) is not slowed down by them.
        optimization: graph optimisation level, ``all`` (default), ``extended``, ``basic`` or ``none``.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        optimization: str = "all",
        spinning: bool = True,
    ) -> None:
        ort = import_optional("onnxruntime", "running .onnx files")
        path = Path(path)
        if device not in PROVIDERS:
            raise OdetError(f"unknown ONNX Runtime device {device!r}; choose one of {', '.join(PROVIDERS)}")
        wanted = PROVIDERS[device][0]
        if wanted not in ort.get_available_providers():
            raise OdetError(
                f"this onnxruntime has no {wanted} (it has {', '.join(ort.get_available_providers())}): "
                "install onnxruntime-gpu (with CUDA, and TensorRT for the tensorrt device)"
            )
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers: list = list(PROVIDERS[device])
        if device == "tensorrt":
            cache = str(path.parent / ".trt_cache")
            providers[0] = (
                wanted,
                {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache},
            )
        self.meta = read_onnx_meta(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types, with long messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = (
                " (fp16 files need a GPU provider: --device cuda)"
                if self.meta.half and device == "cpu"
                else ""
            )
            raise OdetError(f"ONNX Runtime cannot run {path.name}: {first}{hint}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs, strict=True))
