"""Running an exported OpenVINO IR (``.xml`` + ``.bin``), or an odet ``.onnx``, with the OpenVINO runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odcli.errors import OdetError
from odcli.inference.backends.base import ExportedBackend, import_optional
from odcli.inference.backends.meta import METADATA_KEY, ExportMeta

__all__ = ["OpenVINOBackend"]


class OpenVINOBackend(ExportedBackend):
    """An OpenVINO compiled model over an odet ``.xml`` file.

    Args:
        path: the ``.xml`` (its ``.bin`` beside it), or an ``.onnx`` (OpenVINO reads ONNX).
        device: an OpenVINO device name (``CPU``, ``GPU``).
        threads: inference threads (None: OpenVINO's default).

    fp32 files run at fp32 precision: OpenVINO would otherwise pick bf16 on CPUs that have it, which
    moves scores by ~1e-2. ``--half`` files run at the device's default (fp16 or bf16 where supported).
    """

    name = "openvino"

    def __init__(self, path: str | Path, *, device: str = "CPU", threads: int | None = None) -> None:
        ov = import_optional("openvino", "running OpenVINO files")
        path = Path(path)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            raise OdetError(f"OpenVINO cannot read {path.name}: {str(exc).strip().splitlines()[0]}") from None
        # An IR keeps it in rt_info["odet"]; an .onnx read by OpenVINO under "framework" (metadata_props).
        where = next((k for k in ([METADATA_KEY], ["framework", METADATA_KEY]) if model.has_rt_info(k)), None)
        if where is None:
            raise OdetError(f"{path.name} was not written by odet export (no odet metadata)")
        self.meta = ExportMeta.from_json(model.get_rt_info(where).astype(str), source=path.name)
        config: dict[str, str] = {}
        if not self.meta.half:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            self.compiled = core.compile_model(model, device.upper(), config)
        except RuntimeError as exc:
            raise OdetError(
                f"OpenVINO cannot compile {path.name} for {device}: {str(exc).strip().splitlines()[0]}"
            ) from None
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer({k: feeds[k] for k in self.input_names})
        return {o.get_any_name(): np.asarray(results[o]) for o in self.compiled.outputs}
