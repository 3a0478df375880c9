"""End-to-end checks of ``odet convert-weights``, ``odet infer`` and ``odet eval`` through the Typer app.

They run the real RTMDet-tiny on CPU, so inputs are kept tiny: two COCO128 images for ``infer``,
the bundled 8-image coco8 set for ``eval``. The upstream checkpoint is converted once per module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import odcli
from odcli.cli.main import app
from odcli.data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from odcli.errors import OdetError
from odcli.inference.outputs import read_detections
from odcli.inference.sources import collect_images
from tests.conftest import COCO128, MMDET_REF, REPO, require

PTH = MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"
COCO8 = REPO / "recipes" / "data" / "coco8"
INFER_KEYS = {"image", "bbox", "score", "label", "category_id", "category"}

runner = CliRunner()


def assert_one_line_error(result) -> None:
    """A user error: non-zero exit, exactly one line on stderr, no traceback anywhere."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# convert-weights


def test_convert_gives_the_same_model_as_the_pth(converted: Path) -> None:
    direct = odcli.load_weights(odcli.build_detector("rtmdet_tiny"), PTH).state_dict()
    via_file = odcli.load_weights(odcli.build_detector("rtmdet_tiny"), converted).state_dict()
    assert direct.keys() == via_file.keys()
    for key, value in direct.items():
        assert via_file[key].dtype == value.dtype, key
        assert torch.equal(via_file[key], value), key

    from odcli.weights.checkpoint import read_meta

    meta = read_meta(converted)
    assert meta["arch"] == "rtmdet_tiny"
    assert meta["classes"] == list(COCO_CLASSES) and meta["cat_ids"] == list(COCO_CATEGORY_IDS)
    assert meta["recipe"]["model"]["size"] == "tiny" and meta["converted_from"] == "mmdetection"


def test_convert_wrong_arch_fails_cleanly(tmp_path: Path) -> None:
    require(PTH)
    dst = tmp_path / "s.safetensors"
    result = runner.invoke(app, ["convert-weights", str(PTH), str(dst), "--arch", "rtmdet_s"])
    assert_one_line_error(result)
    assert "shape mismatch" in result.stderr and "backbone.stem.0.conv.weight" in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_convert_needs_safetensors_output(tmp_path: Path) -> None:
    require(PTH)
    result = runner.invoke(
        app, ["convert-weights", str(PTH), str(tmp_path / "x.pth"), "--arch", "rtmdet_tiny"]
    )
    assert_one_line_error(result)
    assert ".safetensors" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# infer


def test_collect_images(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    assert [p.name for p in collect_images(str(tmp_path))] == ["a.PNG", "b.jpg", "c.webp"]
    assert [p.name for p in collect_images(str(tmp_path / "*.jpg"))] == ["b.jpg"]
    assert [p.name for p in collect_images(str(tmp_path / "**" / "*.jpg"))] == ["b.jpg", "d.jpg"]
    assert collect_images(str(tmp_path / "notes.txt")) == [tmp_path / "notes.txt"]
    for bad in (tmp_path / "missing.jpg", tmp_path / "*.bmp", tmp_path / "sub" / "sub2"):
        with pytest.raises(OdetError):
            collect_images(str(bad))


def test_infer_writes_images_and_detections(converted: Path, tmp_path: Path) -> None:
    images = require(COCO128 / "images")
    src = tmp_path / "imgs"
    src.mkdir()
    for name in ("000000000009.jpg", "000000000025.jpg"):
        shutil.copy(images / name, src / name)
    out = tmp_path / "out"
    thr = 0.5
    result = runner.invoke(
        app,
        [
            "infer",
            str(src),
            "-w",
            str(converted),
            "--out",
            str(out),
            "--score-thr",
            str(thr),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "detections" in result.stdout and "ms/image" in result.stdout

    from odcli.data.image_io import read_image

    for name in ("000000000009.jpg", "000000000025.jpg"):
        annotated = read_image(out / name)
        assert annotated.shape == read_image(src / name).shape
    header, dets = read_detections(out / "detections.json")
    assert header is not None and header["settings"]["score_thr"] == thr
    assert dets, "the reference weights always produce confident detections"
    assert {d["image"] for d in dets} == {str(src / "000000000009.jpg"), str(src / "000000000025.jpg")}
    for d in dets:
        assert set(d) == INFER_KEYS
        assert d["score"] >= thr
        assert len(d["bbox"]) == 4 and all(round(v, 2) == v for v in d["bbox"])
        assert d["category"] == COCO_CLASSES[d["label"]]
        assert d["category_id"] == COCO_CATEGORY_IDS[d["label"]]


def test_infer_missing_image(converted: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["infer", str(tmp_path / "nope.jpg"), "-w", str(converted), "--out", str(tmp_path)]
    )
    assert_one_line_error(result)
    assert "nope.jpg" in result.stderr


def test_infer_corrupt_image(converted: Path, tmp_path: Path) -> None:
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a JPEG at all" * 40)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["infer", str(bad), "-w", str(converted), "--out", str(out), "--device", "cpu"]
    )
    assert_one_line_error(result)
    assert "broken.jpg" in result.stderr
    assert not (out / "broken.jpg").exists() and not (out / "detections.json").exists()


# ---------------------------------------------------------------------------------------------
# eval


def test_eval_on_coco8(converted: Path, tmp_path: Path) -> None:
    ann = COCO8 / "annotations" / "instances.json"
    out = tmp_path / "eval" / "dets.json"
    data = ["--ann", str(ann), "--images", str(COCO8 / "images")]
    # Model overrides on the stored recipe keep this CPU test cheap: a 320 px input and fewer NMS
    # candidates (the reference weights put thousands of boxes above the 0.001 score floor).
    data += ["--set", "model.test_scale=[320, 320]", "--set", "model.nms_pre=1000"]
    result = runner.invoke(
        app, ["eval", str(converted), *data, "--out", str(out), "--device", "cpu", "-b", "8"]
    )
    assert result.exit_code == 0, result.output
    for heading in ("COCO box metrics", "mAP_50", "Per-class AP"):
        assert heading in result.stdout

    dets = json.loads(out.read_text())
    expected_ids = {img["id"] for img in json.loads(ann.read_text())["images"]}
    assert len(expected_ids) == 8
    assert {d["image_id"] for d in dets} == expected_ids
    assert set(dets[0]) == {"image_id", "category_id", "bbox", "score"}
    metrics = json.loads((tmp_path / "eval" / "dets_metrics.json").read_text())
    assert metrics["num_images"] == 8 and set(metrics["stats"]) >= {"mAP", "mAP_50", "AR@100"}


def test_eval_missing_annotations(converted: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    result = runner.invoke(
        app, ["eval", str(converted), "--ann", str(missing), "--images", str(COCO8 / "images")]
    )
    assert_one_line_error(result)
    assert str(missing) in result.stderr and "--ann" in result.stderr


def test_eval_checkpoint_without_dataset(converted: Path) -> None:
    result = runner.invoke(app, ["eval", str(converted)])
    assert_one_line_error(result)
    assert "--ann" in result.stderr and "--images" in result.stderr
