"""``odet export`` of RetinaNet-R18 and PP-YOLOE-s (reference weights; PP-YOLOE also from RepVGG-fused
``--deploy`` weights) to ONNX: raw outputs within each family's reference tolerance, and the
detections of the graph's own post-processing as ``model.predict``'s. Small 320×320 canvases keep
this fast; the full-size comparison against upstream's own detections is marked slow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import PPDET_REF, require
from tests.test_export_helpers import (
    BATCH_A,
    PPYOLOE_PDPARAMS,
    RETINANET_PTH,
    assert_same_detections,
    export_inputs,
    level_strides,
    matched_fraction,
    reference_images,
    torch_outputs,
)

pytest.importorskip("onnxruntime", reason="odet[export] is not installed")


def _export(weights, out, *args: str) -> None:
    from odcli.cli.main import app

    result = CliRunner().invoke(app, ["export", str(weights), "-o", str(out), *args])
    assert result.exit_code == 0, result.output


def _backend(path):
    from odcli.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, threads=2)


@pytest.fixture(scope="module")
def retinanet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """RetinaNet on a 320×320 canvas: raw with a dynamic batch, NMS with a fixed batch of 2."""
    from odcli.inference.load import load_model

    weights = require(RETINANET_PTH)
    root = tmp_path_factory.mktemp("export_retinanet")
    common = ["--arch", "retinanet_r18", "--imgsz", "320", "320"]
    _export(weights, root / "raw.onnx", *common, "--no-nms", "--dynamic-batch")
    _export(weights, root / "nms.onnx", *common, "--batch", "2")
    return {"raw": root / "raw.onnx", "nms": root / "nms.onnx",
            "model": load_model(weights, arch="retinanet_r18", device="cpu").model}  # fmt: skip


@pytest.fixture(scope="module")
def ppyoloe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """PP-YOLOE-s on 320×320: raw from the .pdparams, NMS from its ``convert-weights --deploy`` form."""
    from odcli.cli.main import app
    from odcli.inference.load import load_model

    weights = require(PPYOLOE_PDPARAMS)
    root = tmp_path_factory.mktemp("export_ppyoloe")
    deploy = root / "ppyoloe_s_deploy.safetensors"
    result = CliRunner().invoke(
        app, ["convert-weights", str(weights), str(deploy), "--arch", "ppyoloe_s", "--deploy"]
    )
    assert result.exit_code == 0, result.output
    _export(
        weights,
        root / "raw.onnx",
        "--arch",
        "ppyoloe_s",
        "--imgsz",
        "320",
        "320",
        "--no-nms",
        "--dynamic-batch",
    )
    _export(deploy, root / "nms.onnx", "--imgsz", "320", "320", "--dynamic-batch")
    return {"raw": root / "raw.onnx", "nms": root / "nms.onnx", "deploy": deploy,
            "model": load_model(weights, arch="ppyoloe_s", device="cpu").model}  # fmt: skip


def _with_canvas(model, meta):
    """The PyTorch model with the export's input spec (the test resize targets the canvas)."""
    model.input_spec = meta.input_spec()
    return model


def test_retinanet_raw_outputs_match_within_1e4(retinanet: dict) -> None:
    """Scores within 1e-4; boxes within 1e-4 of their own size (the reference's delta tolerance,
    5e-5 on (dx, dy, dw, dh), carried to pixels). The images sit on a larger canvas whose padding
    the graph zeroes after normalising, as upstream."""
    backend = _backend(retinanet["raw"])
    batch, metas = export_inputs(backend.meta, reference_images())
    assert backend.meta.zero_padding and [tuple(m["img_shape"]) for m in metas] == [(240, 320), (213, 320)]
    model = _with_canvas(retinanet["model"], backend.meta)
    decoded, _ = torch_outputs(model, batch, metas)
    for index in ([0, 1], [1]):
        out = backend.decode(batch[index], [metas[i] for i in index])
        ref = decoded.boxes[index]
        assert (out.scores - decoded.scores[index]).abs().max() <= 1e-4
        size = (ref[..., 2:] - ref[..., :2]).repeat(1, 1, 2).clamp(min=1.0)
        assert ((out.boxes - ref).abs() / size).max() <= 1e-4


def test_retinanet_fixed_batch_file_runs_any_number_of_images(retinanet: dict) -> None:
    """A --batch 2 file takes exactly two images; the backend feeds three as 2 + (1 padded)."""
    backend = _backend(retinanet["nms"])
    assert backend.meta.batch == 2
    images = reference_images((*BATCH_A, "000000000030.jpg"))
    batch, metas = export_inputs(backend.meta, images)
    _, refs = torch_outputs(_with_canvas(retinanet["model"], backend.meta), batch, metas)
    dets = backend.predict(batch, metas)
    assert len(dets) == 3
    assert_same_detections(refs, dets, score_tol=1e-4)
    assert all(len(d["boxes"]) == 100 for d in dets)
    # One min_score for both chunks (the 41st best score of the first image): exactly the best of
    # the full run's detections.
    thr = float(dets[0]["scores"][40])
    shown = backend.predict(batch, metas, min_score=thr)
    counts = [int((full["scores"] >= thr).sum()) for full in dets]
    assert counts[0] == 41
    for full, part, n in zip(dets, shown, counts, strict=True):
        assert len(part["scores"]) == n
        assert all(torch.equal(part[k], full[k][:n]) for k in ("boxes", "scores", "labels"))


def test_ppyoloe_raw_outputs_match_within_1e4(ppyoloe: dict) -> None:
    """Scores within 1e-4; boxes within 1e-3 grid cells (× each prior's stride)."""
    backend = _backend(ppyoloe["raw"])
    batch, metas = export_inputs(backend.meta, reference_images())
    assert [m["scale_factor"] for m in metas] == [
        pytest.approx((0.5, 320 / 480)),
        pytest.approx((0.5, 320 / 426)),
    ]
    decoded, _ = torch_outputs(_with_canvas(ppyoloe["model"], backend.meta), batch, metas)
    out = backend.decode(batch, metas)
    assert backend.meta.level_counts == decoded.level_counts == (1600, 400, 100)
    assert (out.scores - decoded.scores).abs().max() <= 1e-4
    assert ((out.boxes - decoded.boxes) / level_strides(backend.meta)).abs().max() <= 1e-3


def test_ppyoloe_deploy_weights_export_with_nms_matching_predict(ppyoloe: dict) -> None:
    """The RepVGG-fused checkpoint exports the same detector: detections as PyTorch's (from the
    original weights), rescaled by division as PaddleDetection does, 100 per image at most."""
    backend = _backend(ppyoloe["nms"])
    assert backend.meta.arch == "ppyoloe_s" and backend.meta.postprocess == "per_class"
    images = reference_images((*BATCH_A, "000000000030.jpg"), shrink={"000000000030.jpg": 0.5})
    batch, metas = export_inputs(backend.meta, images)
    _, refs = torch_outputs(_with_canvas(ppyoloe["model"], backend.meta), batch, metas)
    dets = backend.predict(batch, metas)
    assert_same_detections(refs, dets, score_tol=1e-4)
    assert all(0 < len(d["boxes"]) <= 100 for d in dets)


@pytest.mark.slow
def test_ppyoloe_at_640_reproduces_upstream_detections(tmp_path) -> None:
    """Upstream's own MultiClassNMS output on batch A, from the exported file run by ONNX Runtime:
    the preprocessed images are upstream's (un-normalised back to 0–255 BGR for the graph)."""
    weights = require(PPYOLOE_PDPARAMS)
    _export(weights, tmp_path / "ppyoloe.onnx", "--arch", "ppyoloe_s", "--batch", "2")
    backend = _backend(tmp_path / "ppyoloe.onnx")
    inputs = np.load(PPDET_REF / "ppyoloe_crn_s_300e_coco" / "batch_A" / "inputs.npz")
    ref = np.load(PPDET_REF / "ppyoloe_crn_s_300e_coco" / "batch_A" / "detections.npz")
    rgb = inputs["image"] * (np.array([0.229, 0.224, 0.225]) * 255).reshape(1, 3, 1, 1)
    rgb = rgb + (np.array([0.485, 0.456, 0.406]) * 255).reshape(1, 3, 1, 1)
    images = rgb[:, ::-1].astype(np.float32)  # BGR, as the graph takes
    metas = [{"img_shape": tuple(s), "scale_factor": (f[1], f[0])}  # upstream's factors are (sy, sx)
             for s, f in zip(inputs["im_shape"], inputs["scale_factor"], strict=True)]  # fmt: skip
    dets = backend.predict(images, metas)
    start = 0
    for i, det in enumerate(dets):
        n = int(ref["bbox_num"][i])
        rows = torch.from_numpy(ref["bbox"][start : start + n])
        start += n
        upstream = {"labels": rows[:, 0].long(), "scores": rows[:, 1], "boxes": rows[:, 2:]}
        assert len(det["boxes"]) == n
        assert matched_fraction(upstream, det, score_tol=1e-4) >= 0.98
