"""``odet export --int8``: the network quantised (QDQ, calibrated on real images), everything around it
float32, the file still a complete odet detector; misuse ends in one line.

The reference weights are built so that every output depends strongly on every weight, which int8
rounding cannot survive; how close an int8 file stays to its float32 one on a *trained* model is the
slow check in tests/test_learning.py (the demo model, mAP through ONNX Runtime).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from odcli.cli.main import app
from tests.conftest import COCO8, COCO128, require
from tests.test_export_helpers import RTMDET_PTH, export_inputs, reference_images

pytest.importorskip("onnxruntime", reason="odet[export] is not installed")
runner = CliRunner()


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("int8")
    path = root / "rtmdet_int8.onnx"
    calib = ["--int8", "--calib", str(COCO128 / "images"), "--calib-images", "6"]
    args = ["export", str(require(RTMDET_PTH)), "--arch", "rtmdet_tiny", "-o", str(path)]
    args += ["--imgsz", "320", "320"]
    result = runner.invoke(app, [*args, *calib])
    assert result.exit_code == 0, result.output
    return {"path": path, "stdout": result.stdout}


def _producers(graph) -> dict[str, object]:
    return {out: node for node in graph.node for out in node.output}


def _scope(node) -> str:
    return {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")


def test_the_network_is_int8_and_the_rest_float32(int8_file: dict) -> None:
    """Every backbone/neck/head convolution takes int8 weights (a DequantizeLinear of an int8
    initializer) except the six prediction convolutions (3 levels × class, box), and NMS sees float
    boxes and scores computed from float32 nodes."""
    import onnx

    model = onnx.load(str(int8_file["path"]))
    graph = model.graph
    producers = _producers(graph)
    inits = {i.name: i for i in graph.initializer}
    int8_convs, float_convs = [], []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = producers.get(node.input[1])
        if weight is not None and weight.op_type == "DequantizeLinear":
            assert inits[weight.input[0]].data_type == onnx.TensorProto.INT8
            int8_convs.append(node)
        else:
            float_convs.append(node)
    assert len(int8_convs) == 80 and len(float_convs) == 6
    assert all(("cls_preds" in _scope(n)) or ("reg_preds" in _scope(n)) for n in float_convs)
    # The prediction convolutions read a dequantised (float) feature; their outputs are not requantised.
    consumers = Counter(node.op_type for node in graph.node for i in node.input
                        if i in {o for n in float_convs for o in n.output})  # fmt: skip
    assert "QuantizeLinear" not in consumers
    (nms,) = [n for n in graph.node if n.op_type == "NonMaxSuppression"]
    assert all(producers[i].op_type not in ("DequantizeLinear", "QuantizeLinear") for i in nms.input[:2])


def test_the_file_says_it_is_int8_and_runs_as_any_export(int8_file: dict) -> None:
    import onnx

    from odcli.inference.runner import ExportedPredictor, open_backend

    model = onnx.load(str(int8_file["path"]), load_external_data=False)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["odet"])
    assert meta["int8"] is True and "6 images" in meta["calibration"] and meta["canvas"] == [320, 320]
    assert "int8" in int8_file["stdout"] and "calibration" in int8_file["stdout"]
    backend = open_backend(int8_file["path"], device="cpu", threads=2)
    assert backend.meta.int8
    batch, metas = export_inputs(backend.meta, reference_images())
    out = backend.run(batch, metas)
    assert out["boxes"].shape == (2, 300, 4) and out["num_dets"].tolist() == [300, 300]
    dets = ExportedPredictor(backend)(reference_images(), min_score=0.3)
    assert len(dets) == 2 and all(len(d["scores"]) > 0 for d in dets)
    assert all(bool((d["scores"] >= 0.3).all()) for d in dets)
    # Original pixels: RTMDet clips to the 320 canvas, i.e. 640 px of these half-scaled images.
    assert all(float(d["boxes"].max()) <= 640 + 1e-3 and float(d["boxes"].max()) > 320 for d in dets)
    assert np.isfinite(out["scores"]).all()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--int8"], "--int8 needs --calib DIR"),
        (["--int8", "--calib", "CALIB", "--half"], "--int8 and --half exclude each other"),
        (["--int8", "--calib", "CALIB", "--format", "torchscript"], "--int8 writes ONNX files"),
        (["--int8", "--calib", "EMPTY"], "no images"),
        (["--int8", "--calib", "CALIB", "--calib-images", "0"], "--calib-images must be >= 1"),
    ],
)
def test_int8_misuse_is_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    swap = {"CALIB": str(COCO8 / "images"), "EMPTY": str(tmp_path / "empty")}
    out = tmp_path / ("m.torchscript" if "torchscript" in flags else "m.onnx")
    args = ["export", str(require(RTMDET_PTH)), "--arch", "rtmdet_tiny", "-o", str(out)]
    result = runner.invoke(app, [*args, *(swap.get(f, f) for f in flags)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_infer_names_an_int8_file_in_its_summary(int8_file: dict, tmp_path: Path) -> None:
    image = require(COCO128 / "images" / "000000000009.jpg")
    args = ["infer", str(image), "-w", str(int8_file["path"]), "-o", str(tmp_path / "out"), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime on cpu, int8" in result.stdout
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert records["detections"] and all(r["score"] >= 0.3 for r in records["detections"])


def test_eval_of_an_int8_file_records_its_precision(int8_file: dict, tmp_path: Path) -> None:
    out = tmp_path / "detections.json"
    args = ["eval", str(int8_file["path"]), "--ann", str(COCO8 / "annotations" / "instances.json"),
            "--images", str(COCO8 / "images"), "--no-plots", "-o", str(out), "--max-images", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime on cpu, int8" in result.stdout.replace("\n", " ")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["backend"], metrics["precision"], metrics["num_images"]) == ("onnxruntime", "int8", 2)
