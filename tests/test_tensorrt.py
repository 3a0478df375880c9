"""TensorRT: where it is missing (every CPU machine, CI), ``odet export --format tensorrt`` and the
engine runner fail with one line naming what is missing; where a CUDA GPU with TensorRT is present,
an FP16 engine of RTMDet-tiny matches the PyTorch model within fp16's reach."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from typer.testing import CliRunner

from odcli.cli.main import app
from tests.conftest import require
from tests.test_export_helpers import RTMDET_PTH

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT and a CUDA GPU are present: the engine test runs instead")
def test_tensorrt_export_without_it_is_one_line(tmp_path) -> None:
    weights = require(RTMDET_PTH)
    result = CliRunner().invoke(
        app, ["export", str(weights), "-o", str(tmp_path / "m.engine"), "--arch", "rtmdet_tiny"]
    )
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert "TensorRT is not installed" in line or "TensorRT needs a CUDA GPU" in line
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs TensorRT and a CUDA GPU (none on this machine)")
def test_tensorrt_fp16_engine_matches_pytorch(tmp_path) -> None:
    from odcli.export.run import export_model
    from odcli.inference.backends.tensorrt_backend import TensorRTBackend
    from odcli.inference.load import load_model

    weights = require(RTMDET_PTH)
    export_model(weights, tmp_path / "m.engine", arch="rtmdet_tiny", imgsz=(320, 320), nms=False, batch=1)
    engine = TensorRTBackend(tmp_path / "m.engine")
    assert engine.meta.half and engine.meta.format == "tensorrt"
    torch.manual_seed(0)
    images = torch.rand(1, 3, 320, 320) * 255
    metas = [{"img_shape": (320, 320), "scale_factor": (1.0, 1.0)}]
    out = engine.decode(images, metas)
    model = load_model(weights, arch="rtmdet_tiny", device="cpu").model
    spec = model.input_spec
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.decode((images - mean) / std)
    assert (out.scores - ref.scores).abs().max() <= 2e-2  # fp16 engine against the fp32 model
    assert (out.boxes - ref.boxes).abs().max() <= 1.0
