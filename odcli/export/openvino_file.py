"""Writing an OpenVINO IR (``.xml`` + ``.bin``): converted from the ONNX export, metadata in ``rt_info``.

``openvino.convert_model`` reads the ONNX file (``NonMaxSuppression`` included) and
``openvino.save_model`` writes the IR. ``save_model`` compresses weights to fp16 unless told not to:
an fp32 export keeps them fp32 (the parity the tests check); ``--half`` lets it compress.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from odcli.export.build import ExportPlan
from odcli.export.onnx_file import DEFAULT_OPSET, write_onnx
from odcli.inference.backends.base import import_optional
from odcli.inference.backends.meta import METADATA_KEY, ExportMeta

__all__ = ["write_openvino"]


def write_openvino(plan: ExportPlan, path: Path, *, opset: int = DEFAULT_OPSET) -> ExportMeta:
    """Export ``plan`` to ONNX in a temporary folder, convert it, save ``path`` (``.xml``) and the
    ``.bin`` beside it; both are renamed into place only once complete."""
    ov = import_optional("openvino", "--format openvino")
    with tempfile.TemporaryDirectory(prefix=".odet-export-", dir=path.parent) as tmp:
        onnx_meta = write_onnx(plan, Path(tmp) / "model.onnx", opset=opset)
        meta = plan.final_meta(
            format="openvino",
            opset=opset,
            exporter=f"{onnx_meta.exporter}; openvino.convert_model {ov.__version__}",
        )
        model = ov.convert_model(str(Path(tmp) / "model.onnx"))
        model.set_rt_info(meta.to_json(), [METADATA_KEY])
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=plan.meta.half)
        os.replace(xml.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(xml, path)
    return meta
