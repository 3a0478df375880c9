"""`odet infer` on a real short video and on cameras that do not exist."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import odcli
from odcli.cli.main import app
from odcli.inference.outputs import read_frame_lines
from odcli.inference.sources import is_video_source, parse_source
from odcli.weights.checkpoint import save_checkpoint

from .conftest import COCO128, require


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random RTMDet-tiny checkpoint at 160 px with a low threshold (fast on CPU)."""
    from dataclasses import asdict

    from odcli.models.zoo import model_config

    cfg = model_config("rtmdet_tiny", test_scale=[160, 160], nms_pre=200, max_per_img=20)
    model = odcli.build_detector("rtmdet_tiny", test_scale=[160, 160], nms_pre=200, max_per_img=20)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_checkpoint(
        path, model_state=model.state_dict(), meta={"arch": "rtmdet_tiny", "recipe": {"model": asdict(cfg)}}
    )
    return path


def _make_video(path: Path, n_frames: int) -> None:
    images = sorted(require(COCO128 / "images").glob("*.jpg"))[:n_frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for p in images:
        writer.write(cv2.resize(cv2.imread(str(p)), (320, 240)))
    writer.release()


def test_video_infer_writes_video_and_json_lines(tmp_path: Path, tiny_weights: Path) -> None:
    video = tmp_path / "clip.mp4"
    _make_video(video, 6)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["infer", str(video), "-w", str(tiny_weights), "-o", str(out), "--score-thr", "0.0"]
    )
    assert result.exit_code == 0, result.output
    header, lines = read_frame_lines(out / "clip.jsonl")
    assert header is not None and header["settings"]["score_thr"] == 0.0
    assert [r["frame"] for r in lines] == list(range(6))
    assert all({"bbox", "score", "category"} <= set(d) for r in lines for d in r["detections"])
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    ok, frame = cap.read()
    assert ok and frame.shape == (240, 320, 3)
    assert not list(out.glob(".*partial*"))


def test_video_stride_skips_frames(tmp_path: Path, tiny_weights: Path) -> None:
    video = tmp_path / "clip.mp4"
    _make_video(video, 6)
    out = tmp_path / "out"
    args = ["infer", "--video", str(video), "-w", str(tiny_weights), "-o", str(out), "--stride", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    header, lines = read_frame_lines(out / "clip.jsonl")
    assert header is not None and header["settings"]["stride"] == 2
    assert [r["frame"] for r in lines] == [0, 2, 4]


def test_missing_camera_is_one_line(tmp_path: Path, tiny_weights: Path) -> None:
    result = CliRunner().invoke(
        app, ["infer", "--video", "cam9", "-w", str(tiny_weights), "-o", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "camera cam9 is not available" in result.output
    assert "Traceback" not in result.output


def test_source_parsing() -> None:
    assert is_video_source("cam0") and is_video_source("rtsp://host/stream") and is_video_source("a.MP4")
    assert not is_video_source("photo.jpg")
    assert parse_source("cam1").target == 1
    with pytest.raises(odcli.errors.OdetError, match="video file not found"):
        parse_source("missing.mp4")


def test_frame_record_keeps_only_scores_above_threshold() -> None:
    import torch

    from odcli.inference.records import frame_record

    det = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), "scores": torch.tensor([0.9, 0.1]),
           "labels": torch.tensor([0, 1])}  # fmt: skip
    record = frame_record(3, 1.0, det, ["a", "b"], [1, 2], 0.5, time_base="video")
    assert record["frame"] == 3 and len(record["detections"]) == 1
    assert record["time"] == 1.0 and record["time_base"] == "video"
    assert record["detections"][0]["category"] == "a"
    assert np.allclose(record["detections"][0]["bbox"], [0, 0, 10, 10])
