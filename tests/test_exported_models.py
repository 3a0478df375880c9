"""Exported files are models like checkpoints: ``odet infer``, ``odet eval`` and ``odet profile``
take an ``.onnx`` (ONNX Runtime, or OpenVINO with ``--backend openvino``) exactly as they take the
weights it came from — same preprocessing, same detections, same JSON — and bad combinations end
in one line.

One RTMDet-tiny export (reference weights, 640×640, dynamic batch) serves every default-tier test;
the PyTorch side is the same weights, run as ``odet infer`` / ``odet eval`` run them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from odcli.cli.main import app
from tests.conftest import COCO8, require
from tests.test_export_helpers import RTMDET_PTH, assert_same_detections, matched_fraction

pytest.importorskip("onnxruntime", reason="odet[export] is not installed")

#: Records round scores to 4 decimals: one unit in the last place, plus float slack.
RECORD_SCORE_TOL = 1e-4 + 1e-6
ANN = COCO8 / "annotations" / "instances.json"
runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _export(out: Path, *flags: str) -> Path:
    _ok("export", require(RTMDET_PTH), "--arch", "rtmdet_tiny", "-o", out, *flags)
    return out


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("exported") / "rtmdet_tiny.onnx", "--dynamic-batch")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four coco8 images (two landscape, one portrait, one more) in a folder of their own."""
    folder = tmp_path_factory.mktemp("images")
    for path in sorted((COCO8 / "images").glob("*.jpg"))[:4]:
        shutil.copy(path, folder / path.name)
    return folder


def _infer(weights: Path, source: Path, out: Path, *flags: str) -> tuple[list[dict], str]:
    stdout = _ok("infer", source, "-w", weights, "-o", out, "--device", "cpu", *flags)
    data = json.loads((out / "detections.json").read_text())
    return (data["detections"] if isinstance(data, dict) else data), stdout


@pytest.fixture(scope="module")
def infer_runs(onnx_file: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``odet infer`` on the same images with the .pth and with its .onnx (default --score-thr)."""
    root = tmp_path_factory.mktemp("infer")
    torch_records, _ = _infer(require(RTMDET_PTH), images, root / "torch", "--arch", "rtmdet_tiny")
    ort_records, ort_stdout = _infer(onnx_file, images, root / "onnx")
    return {"torch": torch_records, "onnx": ort_records, "onnx_stdout": ort_stdout}


def _as_detections(records: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor([r["bbox"] for r in records], dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor([r["score"] for r in records], dtype=torch.float32),
        "labels": torch.tensor([r["label"] for r in records], dtype=torch.int64),
    }


def assert_same_records(ref: list[dict], got: list[dict], key: str = "image") -> None:
    """Per image (or frame) as many records with the same fields, matched as sets (≥ 99 %), and
    category ids / names that follow the labels."""
    assert len(got) == len(ref) > 0
    assert {tuple(r) for r in got} == {tuple(r) for r in ref}
    named = {(r["label"], r["category_id"], r["category"]) for r in ref + got}
    assert len(named) == len({label for label, _, _ in named})  # one id and name per label
    for image in sorted({r[key] for r in ref}):
        mine = [r for r in ref if r[key] == image]
        theirs = [r for r in got if r[key] == image]
        assert len(theirs) == len(mine)
        fraction = matched_fraction(_as_detections(mine), _as_detections(theirs), score_tol=RECORD_SCORE_TOL)
        assert fraction >= 0.99, (image, fraction)


def test_infer_onnx_writes_the_records_of_its_checkpoint(infer_runs: dict) -> None:
    assert_same_records(infer_runs["torch"], infer_runs["onnx"])
    assert len({r["image"] for r in infer_runs["onnx"]}) >= 3  # (the portrait one has none above 0.3)
    assert min(r["score"] for r in infer_runs["onnx"]) >= 0.3  # the display threshold still holds
    assert "onnxruntime on cpu" in infer_runs["onnx_stdout"]


def test_infer_runs_the_onnx_with_openvino_when_asked(
    infer_runs: dict, onnx_file: Path, images: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino", reason="odet[openvino] is not installed")
    records, stdout = _infer(onnx_file, images, tmp_path / "ov", "--backend", "openvino")
    assert "openvino on cpu" in stdout
    assert_same_records(infer_runs["torch"], records)


def _write_video(path: Path, frames: int = 2) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (640, 480))
    assert writer.isOpened()
    for src in sorted((COCO8 / "images").glob("*.jpg"))[:frames]:
        writer.write(cv2.resize(cv2.imread(str(src)), (640, 480)))
    writer.release()


def _frame_records(path: Path) -> tuple[list[int], list[dict]]:
    """(the frame indices, one record per detection with its ``frame``) of a video's JSON lines."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    frames = [line for line in lines if "frame" in line]
    return [f["frame"] for f in frames], [{"frame": f["frame"], **d} for f in frames for d in f["detections"]]


def test_infer_video_with_onnx_matches_the_checkpoint(onnx_file: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_video(clip)
    common = ["infer", "--video", clip, "--device", "cpu"]
    _ok(*common, "-w", require(RTMDET_PTH), "--arch", "rtmdet_tiny", "-o", tmp_path / "torch")
    _ok(*common, "-w", onnx_file, "-o", tmp_path / "onnx")
    (frames, ref), (onnx_frames, got) = (
        _frame_records(tmp_path / run / "clip.jsonl") for run in ("torch", "onnx")
    )
    assert frames == onnx_frames == [0, 1]
    assert_same_records(ref, got, key="frame")
    assert (tmp_path / "onnx" / "clip.mp4").stat().st_size > 0


def test_predictor_of_a_dynamic_file_takes_batches_of_1_and_3_and_honours_the_limits(onnx_file: Path) -> None:
    """One ONNX Runtime session: batch 1, then 3, each as the PyTorch predictor's detections; the
    first image's detections do not depend on its batch; ``min_score`` / ``max_dets`` keep exactly
    the full result's best."""
    from odcli.data import read_image
    from odcli.inference.load import load_model
    from odcli.inference.predictor import Predictor
    from odcli.inference.runner import ExportedPredictor, open_backend

    imgs = [read_image(p) for p in sorted((COCO8 / "images").glob("*.jpg"))[:3]]
    exported = ExportedPredictor(open_backend(onnx_file, device="cpu", threads=2))
    reference = Predictor(load_model(require(RTMDET_PTH), arch="rtmdet_tiny", device="cpu").model)
    alone = exported(imgs[:1], min_score=0.3)
    batch = exported(imgs, min_score=0.3)
    assert_same_detections(reference(imgs, min_score=0.3), batch, score_tol=1e-4)
    assert_same_detections(alone, batch[:1], score_tol=1e-5)

    full = exported(imgs[:1])[0]
    assert len(full["scores"]) == 300  # max_per_img at the upstream test config
    limited = exported(imgs[:1], min_score=0.5, max_dets=7)[0]
    assert len(limited["scores"]) == min(7, int((full["scores"] >= 0.5).sum()))
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(limited[key], full[key][: len(limited["scores"])])
    assert exported.finest_stride == 8 and exported.device == torch.device("cpu")
    # Idle runtime threads sleep instead of spinning: they would slow down whatever runs between
    # two calls (drawing in infer; the PyTorch row timed in the same profile rounds, ~40 % here).
    options = exported.backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _pseudo_ground_truth(results: list[dict], path: Path) -> Path:
    """COCO annotations made of the PyTorch detections scoring ≥ 0.5 (10 per image), each box moved
    by 0–12 % of its size, so that the mAP is neither 0 (the reference weights are random) nor 1,
    and moves when any detection does."""
    data = json.loads(ANN.read_text())
    annotations = []
    for image_id in sorted({r["image_id"] for r in results}):
        best = sorted((r for r in results if r["image_id"] == image_id and r["score"] >= 0.5),
                      key=lambda r: -r["score"])[:10]  # fmt: skip
        for k, r in enumerate(best):
            x, y, w, h = r["bbox"]
            shift = 0.03 * (k % 5)
            box = [x + shift * w, y + shift * h, w, h]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": r["category_id"],
                 "bbox": box, "area": w * h, "iscrowd": 0}
            )  # fmt: skip
    data["annotations"] = annotations
    path.write_text(json.dumps(data))
    return path


def _metrics(detections: Path) -> dict:
    return json.loads(
        detections.with_name(detections.stem.replace("detections", "metrics") + ".json").read_text()
    )


def test_eval_through_onnxruntime_gives_the_pytorch_map(
    onnx_file: Path, converted: Path, tmp_path: Path
) -> None:
    data = ["--images", COCO8 / "images", "--max-images", "4", "--no-plots", "--workers", "0"]
    data += ["--device", "cpu"]
    torch_dets = tmp_path / "torch" / "detections.json"
    _ok("eval", converted, "--ann", ANN, "-o", torch_dets, *data)
    truth = _pseudo_ground_truth(json.loads(torch_dets.read_text()), tmp_path / "pseudo.json")
    _ok("eval", "--detections", torch_dets, "--ann", truth, "--no-plots")
    expected = _metrics(torch_dets)["stats"]["mAP"]
    assert 0.1 < expected < 0.95

    ort_dets = tmp_path / "onnx" / "detections.json"
    stdout = _ok("eval", onnx_file, "--ann", truth, "-o", ort_dets, "-b", "3", *data)  # batches of 3, then 1
    metrics = _metrics(ort_dets)
    assert metrics["backend"] == "onnxruntime" and metrics["num_images"] == 4
    assert metrics["precision"] == "float32"
    assert abs(metrics["stats"]["mAP"] - expected) <= 0.001, (metrics["stats"]["mAP"], expected)
    assert "onnxruntime on cpu" in stdout
    ref, got = (json.loads(p.read_text()) for p in (torch_dets, ort_dets))
    assert len(got) == len(ref) == 4 * 300


def test_profile_compare_puts_torch_and_onnxruntime_side_by_side(
    onnx_file: Path, converted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "profile.json"
    # At infer's display threshold: PyTorch's post-processing stops there, the rounds stay short.
    args = ["--iters", "1", "--warmup", "0", "--score-thr", "0.3", "--device", "cpu", "--json", out]
    stdout = _ok("profile", converted, "--compare", onnx_file, *args)
    torch_row, ort_row = json.loads(out.read_text())
    assert (torch_row["backend"], ort_row["backend"]) == ("torch", "onnxruntime")
    assert ort_row["model"] == "rtmdet_tiny.onnx (onnxruntime)"
    assert ort_row["params"] == torch_row["params"] == 4_896_168  # the same architecture
    first, second = torch_row["timing"]["1"], ort_row["timing"]["1"]
    assert first["speedup"] == 1.0
    assert second["speedup"] == pytest.approx(first["total"] / second["total"])
    assert "speed-up" in stdout and "input 640×640 · score >= 0.3" in stdout


# ------------------------------------------------------------------------------------ bad inputs


def _foreign_onnx(path: Path) -> Path:
    """A valid ONNX file that odet did not write (an Identity graph, no odet metadata)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "foreign", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _one_line_error(args: list, *words: str) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_an_onnx_file_odet_did_not_write_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    foreign = _foreign_onnx(tmp_path / "foreign.onnx")
    image = COCO8 / "images" / "000000000009.jpg"
    _one_line_error(
        ["infer", image, "-w", foreign, "-o", tmp_path / "out"], "foreign.onnx", "not written by odet"
    )
    _one_line_error(["eval", foreign, "--ann", ANN, "--images", COCO8 / "images"], "not written by odet")
    _one_line_error(["profile", foreign], "not written by odet")


def test_missing_onnxruntime_is_one_line(
    onnx_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    image = COCO8 / "images" / "000000000009.jpg"
    _one_line_error(["infer", image, "-w", onnx_file, "-o", tmp_path / "out"],
                    "onnxruntime is not installed", 'pip install "odet[export]"')  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--compile"], ["--compile", "exported file"]),
        (["--arch", "retinanet_r18"], ["holds rtmdet_tiny, not retinanet_r18"]),
        (["--backend", "torch"], ["onnx file", "--backend torch cannot run it"]),
        (["--backend", "tflite"], ["unknown --backend 'tflite'"]),
    ],
)
def test_options_that_cannot_apply_to_an_exported_file_are_one_line(
    onnx_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], words: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    image = COCO8 / "images" / "000000000009.jpg"
    _one_line_error(["infer", image, "-w", onnx_file, "-o", tmp_path / "out", *flags], *words)


def test_eval_and_backend_misuse_are_one_line(
    onnx_file: Path, converted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    data = ["--ann", ANN, "--images", COCO8 / "images"]
    _one_line_error(
        ["eval", onnx_file, *data, "--set", "model.nms_pre=100"], "--set model.nms_pre=100", "fixed"
    )
    _one_line_error(["eval", onnx_file, *data, "--weights", converted], "already a model")
    _one_line_error(
        ["eval", converted, *data, "--backend", "onnxruntime"], "PyTorch checkpoint", "odet export"
    )


def test_profile_misuse_is_one_line(onnx_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    _one_line_error(["profile", onnx_file, "--size", "320"], "exported for 640x640", "--size 640")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
    _one_line_error(["profile", require(recipe), "--compare", "onnxruntime"], "recipe without weights")
    _one_line_error(["profile", onnx_file, "--compile"], "--compile", "every model here is an exported file")


# ------------------------------------------------------------------------------ slow: more formats


@pytest.mark.slow
def test_profile_compare_with_a_runtime_name_exports_the_model(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    args = ["--size", "128", "--iters", "1", "--score-thr", "0.3", "--device", "cpu", "--json", out]
    stdout = _ok("profile", "rtmdet_tiny", "--compare", "onnxruntime", *args)
    rows = json.loads(out.read_text())
    assert [(r["model"], r["backend"]) for r in rows] == [
        ("rtmdet_tiny", "torch"),
        ("rtmdet_tiny.onnx (onnxruntime)", "onnxruntime"),
    ]
    assert "exporting for onnxruntime" in stdout and "input 128×128" in stdout


@pytest.mark.slow
def test_openvino_ir_and_torchscript_through_infer(infer_runs: dict, images: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="odet[openvino] is not installed")
    for name in ("model.xml", "model.pt"):
        exported = _export(tmp_path / name, "--dynamic-batch")
        records, stdout = _infer(exported, images, tmp_path / name.replace(".", "_"))
        assert ("openvino on cpu" if name.endswith(".xml") else "torchscript on cpu") in stdout
        assert_same_records(infer_runs["torch"], records)


@pytest.mark.slow
def test_eval_of_a_fixed_batch_file_equals_the_dynamic_one(onnx_file: Path, tmp_path: Path) -> None:
    fixed = _export(tmp_path / "fixed.onnx", "--batch", "2")
    data = ["--ann", ANN, "--images", COCO8 / "images", "--no-plots", "--workers", "0", "-b", "3"]
    results = {}
    for name, path in (("fixed", fixed), ("dynamic", onnx_file)):
        _ok("eval", path, *data, "-o", tmp_path / name / "detections.json")
        results[name] = json.loads((tmp_path / name / "detections.json").read_text())
    assert len(results["fixed"]) == len(results["dynamic"]) == 8 * 300
    for image_id in {r["image_id"] for r in results["dynamic"]}:
        a, b = ([r for r in results[k] if r["image_id"] == image_id] for k in ("dynamic", "fixed"))
        scores = np.array([r["score"] for r in a]) - np.array([r["score"] for r in b])
        assert np.abs(scores).max() <= 1e-5
