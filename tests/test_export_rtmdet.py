"""``odet export`` of RTMDet-tiny (reference weights) to ONNX: the file is a complete detector that
matches PyTorch — raw outputs within the reference tolerances, detections as sets — for any batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import MMDET_REF, require
from tests.test_export_helpers import (
    BATCH_A,
    RTMDET_PTH,
    assert_same_detections,
    export_inputs,
    reference_images,
    torch_outputs,
)

pytest.importorskip("onnxruntime", reason="odet[export] is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """RTMDet-tiny exported twice through the CLI, both with a dynamic batch: with NMS, and raw."""
    from odcli.cli.main import app
    from odcli.inference.load import load_model

    weights = require(RTMDET_PTH)
    root = tmp_path_factory.mktemp("export_rtmdet")
    runs = {}
    for name, flags in (("nms", ["--nms"]), ("raw", ["--no-nms"])):
        path = root / f"rtmdet_{name}.onnx"
        args = ["export", str(weights), "--arch", "rtmdet_tiny", "-o", str(path), "--dynamic-batch", *flags]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs[name] = (path, result.stdout)
    return {"paths": {k: v[0] for k, v in runs.items()}, "stdout": runs["nms"][1],
            "model": load_model(weights, arch="rtmdet_tiny", device="cpu").model}  # fmt: skip


def _backend(path: Path):
    from odcli.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, threads=2)


def test_the_export_preprocesses_like_upstream(exported: dict) -> None:
    """The export's pipeline (resize, pad to the canvas) then its normalisation give exactly the
    batch MMDetection fed the network."""
    backend = _backend(exported["paths"]["raw"])
    batch, metas = export_inputs(backend.meta, reference_images())
    spec = backend.meta
    normalised = (torch.from_numpy(batch) - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(
        spec.std
    ).view(1, 3, 1, 1)
    ref = load_file(MMDET_REF / "inputs" / "rtmdet_batchA.safetensors")["inputs"]
    assert torch.equal(normalised, ref)
    assert [tuple(m["img_shape"]) for m in metas] == [(640, 640), (640, 640)]


def test_raw_outputs_match_pytorch_for_batches_of_1_2_and_3(exported: dict) -> None:
    """One session, three batch sizes; scores within RTMDet's logit tolerance 2e-3 and boxes within
    its 2e-2 px (boxes are points ± the distances)."""
    backend = _backend(exported["paths"]["raw"])
    batch, metas = export_inputs(backend.meta, reference_images())
    decoded, _ = torch_outputs(exported["model"], batch, metas)
    assert backend.meta.level_counts == decoded.level_counts == (6400, 1600, 400)
    for index in ([0, 1], [0], [0, 1, 0]):
        out = backend.decode(batch[index], [metas[i] for i in index])
        assert out.scores.shape == (len(index), 8400, 80) and out.boxes.shape == (len(index), 8400, 4)
        assert (out.scores - decoded.scores[index]).abs().max() <= 2e-3
        assert (out.boxes - decoded.boxes[index]).abs().max() <= 2e-2


def test_detections_with_nms_in_the_graph_match_predict(exported: dict) -> None:
    """Batch A plus a shrunken image (scale factor 1.6: boxes are clipped to the canvas, then mapped
    back to its original pixels): the same detections as ``model.predict``, 300 per image."""
    backend = _backend(exported["paths"]["nms"])
    images = reference_images((*BATCH_A, "000000000030.jpg"), shrink={"000000000030.jpg": 0.625})
    batch, metas = export_inputs(backend.meta, images)
    assert metas[2]["scale_factor"] == pytest.approx((1.6, 1.6), abs=0.01)
    _, refs = torch_outputs(exported["model"], batch, metas)
    dets = backend.predict(batch, metas)
    assert_same_detections(refs, dets, score_tol=1e-3)
    assert all(len(d["boxes"]) == 300 for d in dets)
    # Original pixels of the small image: clipped to the 640×640 canvas first, as upstream, so at 400.
    assert float(dets[2]["boxes"].max()) == pytest.approx(640 / 1.6, abs=1e-3)
    # The single-image run of the same session gives that image's detections.
    assert_same_detections(refs[1:2], backend.predict(batch[1:2], metas[1:2]), score_tol=1e-3)


def test_padded_outputs_follow_the_documented_layout(exported: dict) -> None:
    backend = _backend(exported["paths"]["nms"])
    batch, metas = export_inputs(backend.meta, reference_images())
    out = backend.run(batch, metas)
    assert out["boxes"].shape == (2, 300, 4) and out["scores"].shape == (2, 300)
    assert out["labels"].dtype == np.int64 and out["num_dets"].tolist() == [300, 300]
    assert np.all(np.diff(out["scores"], axis=1) <= 0)  # best first


def test_min_score_drops_candidates_inside_the_graph(exported: dict) -> None:
    """Fed ``min_score``, the graph itself returns only detections scoring at least it (``num_dets``
    counts them), and they are exactly the full run's best: the threshold went before NMS, where it
    saves the work, without changing a detection."""
    backend = _backend(exported["paths"]["nms"])
    images = reference_images((*BATCH_A, "000000000030.jpg"))
    batch, metas = export_inputs(backend.meta, images)
    full = backend.run(batch, metas)
    assert full["num_dets"].tolist() == [300, 300, 300]
    for thr in (0.3, 0.6):
        out = backend.run(batch, metas, min_score=thr)
        above = (full["scores"] >= thr).sum(axis=1)
        assert out["num_dets"].tolist() == above.tolist()
        for i, n in enumerate(above.tolist()):
            for key in ("boxes", "scores", "labels"):
                assert np.array_equal(out[key][i, :n], full[key][i, :n])
            assert np.all(out["scores"][i, n:] == 0) and np.all(out["labels"][i, n:] == -1)
    assert 0 < above[2] < 300  # the third image has fewer detections above 0.6 than max_per_img


def test_the_file_carries_its_metadata(exported: dict) -> None:
    import onnx

    from odcli.data.coco_classes import default_class_names

    model = onnx.load(str(exported["paths"]["nms"]), load_external_data=False)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["odet"])
    names, cat_ids = default_class_names(80)
    assert meta["arch"] == "rtmdet_tiny" and meta["classes"] == names and meta["cat_ids"] == cat_ids
    assert meta["mean"] == [103.53, 116.28, 123.675] and meta["to_rgb"] is False
    assert meta["canvas"] == [640, 640] and meta["batch"] is None and meta["pad_value"] == 114
    settings = ("postprocess", "score_thr", "nms_pre", "iou_thr", "max_per_img")
    assert tuple(meta[k] for k in settings) == ("per_level", 0.001, 30000, 0.65, 300)
    assert meta["opset"] == 18 and meta["nms"] is True and meta["odet_version"]
    inputs = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input
    }
    assert list(inputs) == ["images", "img_shape", "scale_factor", "min_score"]
    assert inputs["images"][1:] == [3, 640, 640] and isinstance(inputs["images"][0], str)  # symbolic batch
    assert inputs["min_score"] == [1] and meta["min_score_input"] is True
    assert list(meta["layout"]["inputs"]) == list(inputs)
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "labels", "num_dets"]
    assert "NonMaxSuppression" in {n.op_type for n in model.graph.node}
    assert "images" in exported["stdout"] and "num_dets" in exported["stdout"]  # the CLI's summary


def test_files_exported_before_min_score_are_fed_without_it(exported: dict) -> None:
    """Metadata without ``min_score_input`` (NMS files of earlier odet): three inputs, no threshold fed."""
    import onnx

    from odcli.inference.backends.base import ExportedBackend
    from odcli.inference.backends.meta import ExportMeta

    model = onnx.load(str(exported["paths"]["nms"]), load_external_data=False)
    data = json.loads({p.key: p.value for p in model.metadata_props}["odet"])
    del data["min_score_input"]
    old = ExportedBackend()
    old.meta = ExportMeta.from_json(json.dumps(data))
    assert old.meta.input_names == ("images", "img_shape", "scale_factor")
    batch, metas = export_inputs(old.meta, reference_images())
    assert list(old.feeds(batch, metas, min_score=0.3)) == ["images", "img_shape", "scale_factor"]
