"""Writing a TorchScript file: the traced graph, metadata in ``_extra_files["odet.json"]``.

Tracing records the torchvision ops of :func:`~odcli.export.nms.reference_nms` (not odet's ONNX
custom op), so the file loads anywhere ``torch`` and ``torchvision`` are imported — odet not needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from odcli.export.build import ExportPlan
from odcli.export.files import atomic_output
from odcli.inference.backends.meta import METADATA_KEY, ExportMeta

__all__ = ["EXTRA_FILE", "write_torchscript"]

#: The name of the metadata inside the TorchScript archive.
EXTRA_FILE = f"{METADATA_KEY}.json"


def write_torchscript(plan: ExportPlan, path: Path) -> ExportMeta:
    """Trace ``plan.graph`` with ``torch.jit.trace`` and save it to ``path`` (atomically).

    The batch size is traced symbolically (the graph reads it from its inputs), so a file exported
    with a dynamic batch takes any batch; the canvas size is fixed.
    """
    meta = plan.final_meta(format="torchscript", exporter=f"torch.jit.trace {torch.__version__}")
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about Python ints taken from shapes: those are the fixed canvas's sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(plan.graph, plan.example, check_trace=False, strict=False)
    with atomic_output(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: meta.to_json()})
    return meta
