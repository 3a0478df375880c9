"""Running a TensorRT engine written by ``odet export --format tensorrt`` (needs CUDA and TensorRT).

Inputs and outputs live in torch CUDA tensors, so no other CUDA binding (pycuda, cuda-python) is
needed. Importable without TensorRT: the import happens when an engine is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from odcli.errors import OdetError
from odcli.inference.backends.base import ExportedBackend
from odcli.inference.backends.meta import ExportMeta

__all__ = ["TensorRTBackend", "require_tensorrt", "sidecar_path"]


def sidecar_path(engine: Path) -> Path:
    """Where an engine's odet metadata lives (an engine cannot hold it): ``m.engine`` → ``m.engine.json``."""
    return engine.with_name(engine.name + ".json")


def require_tensorrt():
    """The ``tensorrt`` module, or one line saying what is missing (TensorRT itself, or a CUDA GPU)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise OdetError(
            "TensorRT is not installed (pip install tensorrt; needs an NVIDIA GPU with CUDA)"
        ) from None
    if not torch.cuda.is_available():
        raise OdetError("TensorRT needs a CUDA GPU, and torch sees none")
    return trt


class TensorRTBackend(ExportedBackend):
    """A deserialized engine with one execution context; ``path`` is the ``.engine`` file, its
    metadata the ``.engine.json`` beside it."""

    name = "tensorrt"

    def __init__(self, path: str | Path, *, device: str = "cuda") -> None:
        trt = require_tensorrt()
        path = Path(path)
        sidecar = sidecar_path(path)
        if not sidecar.is_file():
            raise OdetError(f"{sidecar.name} (the engine's odet metadata) is missing beside {path.name}")
        self.meta = ExportMeta.from_json(sidecar.read_text(), source=sidecar.name)
        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise OdetError(f"TensorRT cannot load {path.name} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def bind(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Set the engine's addresses to ``inputs`` (CUDA tensors) and to fresh output tensors."""
        for name in self.input_names:
            tensor = inputs[name].to(self.device, self.dtypes[name]).contiguous()
            inputs[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        return outputs

    def execute(self) -> None:
        """Run the bound engine once on the current CUDA stream (model-only timing uses this)."""
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise OdetError("TensorRT failed to run the engine")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        outputs = self.bind(inputs)
        self.execute()
        torch.cuda.synchronize(self.device)
        return {k: v.cpu().numpy() for k, v in outputs.items()}


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.bool: torch.bool,
    }
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    return table[dtype]
