"""``odet infer`` keeps going and says what it did (issue 12): unreadable images and video frames
are skipped with a warning, boxes stay inside the image, tiny images are flagged, video times are
positions in the video, and checkpoint / worker problems come as one odet line.

Everything runs through the CLI on real files: COCO128 images, PNGs and videos written here with
OpenCV, the converted reference RTMDet-tiny where the boxes themselves matter.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import odcli
from odcli.cli.main import app
from odcli.inference.outputs import read_detections, read_frame_lines
from odcli.weights.checkpoint import save_checkpoint
from tests.conftest import COCO128, MMDET_REF, REPO, require

COCO8 = REPO / "recipes" / "data" / "coco8"
PTH = MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random RTMDet-tiny odet checkpoint at 160 px (fast on CPU; the boxes do not matter).

    ``reg_bias_init=1`` gives every prior a box one stride per side, so it detects something
    (score 0.01 everywhere): a freshly initialised head would regress empty boxes only.
    """
    from dataclasses import asdict

    from odcli.models.zoo import model_config

    settings = {"test_scale": [160, 160], "nms_pre": 200, "max_per_img": 20, "reg_bias_init": 1.0}
    model = odcli.build_detector("rtmdet_tiny", **settings)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    recipe = {"model": asdict(model_config("rtmdet_tiny", **settings))}
    save_checkpoint(path, model_state=model.state_dict(), meta={"arch": "rtmdet_tiny", "recipe": recipe})
    return path


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def _coco_images(dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(require(COCO128 / "images" / name), dst / name)


# --------------------------------------------------------------------------- 3: unreadable inputs
def test_corrupt_image_in_folder_is_skipped_and_the_rest_written(tmp_path: Path, tiny_weights: Path) -> None:
    src = tmp_path / "imgs"
    _coco_images(src, ["000000000009.jpg", "000000000030.jpg"])
    raw = (src / "000000000009.jpg").read_bytes()
    (src / "000000000025.jpg").write_bytes(raw[:2] + bytes(range(256)) * 2 + raw[514:])  # headers broken
    out = tmp_path / "out"
    args = ["infer", str(src), "-w", str(tiny_weights), "-o", str(out), "--score-thr", "0", "-b", "3"]
    result = runner.invoke(app, args)

    assert result.exit_code == 1, result.output  # finished, but something was skipped
    assert "Traceback" not in result.output
    warned = _warnings(result.stderr)
    assert len(warned) == 2, result.stderr
    assert warned[0].startswith(f"warning: skipped {src / '000000000025.jpg'}: cannot decode image")
    assert warned[1] == "warning: skipped 1 of 3 images that could not be decoded: 000000000025.jpg"
    records = read_detections(out / "detections.json")[1]
    assert {r["image"] for r in records} == {str(src / "000000000009.jpg"), str(src / "000000000030.jpg")}
    assert sorted(p.name for p in out.iterdir()) == [
        "000000000009.jpg",
        "000000000030.jpg",
        "detections.json",
    ]


def test_folder_of_only_unreadable_images_is_one_error(tmp_path: Path, tiny_weights: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"not a JPEG" * 50)
    (src / "b.png").write_bytes(b"")
    out = tmp_path / "out"
    result = runner.invoke(app, ["infer", str(src), "-w", str(tiny_weights), "-o", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: none of the 2 images could be decoded (see the warnings); nothing written"]
    assert len(_warnings(result.stderr)) == 2
    assert not (out / "detections.json").exists()


def _corrupt_mjpeg_avi(path: Path, n_frames: int, bad: range, fps: float = 10.0) -> None:
    """An MJPEG AVI of COCO128 frames whose JPEG payloads ``bad`` are zeroed, container intact."""
    images = sorted(require(COCO128 / "images").glob("*.jpg"))[:n_frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 64))
    for p in images:
        writer.write(cv2.resize(cv2.imread(str(p)), (96, 64)))
    writer.release()
    raw = bytearray(path.read_bytes())
    chunks = []  # (offset, size) of each frame's JPEG data: "00dc" chunk id, uint32 size, payload
    at = raw.find(b"00dc")
    while at >= 0:
        size = struct.unpack("<I", raw[at + 4 : at + 8])[0]
        if raw[at + 8 : at + 10] == b"\xff\xd8":
            chunks.append((at + 8, size))
        at = raw.find(b"00dc", at + 8)
    assert len(chunks) == n_frames
    for k in bad:
        offset, size = chunks[k]
        raw[offset : offset + size] = bytes(size)
    path.write_bytes(bytes(raw))


def test_undecodable_frames_mid_video_are_skipped_and_the_run_goes_on(
    tmp_path: Path, tiny_weights: Path
) -> None:
    video = tmp_path / "clip.avi"
    _corrupt_mjpeg_avi(video, 20, range(5, 8))
    # OpenCV's own decoder really fails exactly those frames and goes on after them.
    cap = cv2.VideoCapture(str(video))
    decoded = [cap.read()[0] for _ in range(20)]
    cap.release()
    if decoded != [i not in range(5, 8) for i in range(20)]:
        pytest.skip(f"this OpenCV build does not fail the damaged frames: {decoded}")

    out = tmp_path / "out"
    result = runner.invoke(app, ["infer", str(video), "-w", str(tiny_weights), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert _warnings(result.stderr) == [
        f"warning: skipped frames 5-7 of {video}: could not be decoded",
        f"warning: skipped 3 of 20 frames of {video} that could not be decoded: 5-7",
    ]
    lines = read_frame_lines(out / "clip.jsonl")[1]
    assert [r["frame"] for r in lines] == [*range(5), *range(8, 20)]
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 17


# ------------------------------------------------------------------------ 7: boxes inside the image
def test_infer_clips_boxes_to_the_image_unless_raw_boxes(tmp_path: Path, converted: Path) -> None:
    # 000000000034.jpg is 640x425: RTMDet pads it to 640x640, and the reference weights put a
    # "dining table" at y 377-584, past the bottom edge (upstream clips to the padded 640).
    src = tmp_path / "imgs"
    _coco_images(src, ["000000000034.jpg"])
    width, height = 640, 425
    base = ["infer", str(src / "000000000034.jpg"), "-w", str(converted), "--device", "cpu"]
    clipped = runner.invoke(app, [*base, "-o", str(tmp_path / "clipped")])
    assert clipped.exit_code == 0, clipped.output
    boxes = np.array([r["bbox"] for r in read_detections(tmp_path / "clipped" / "detections.json")[1]])
    assert len(boxes) > 0
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()

    raw = runner.invoke(app, [*base, "-o", str(tmp_path / "raw"), "--raw-boxes"])
    assert raw.exit_code == 0, raw.output
    raw_records = read_detections(tmp_path / "raw" / "detections.json")[1]
    raw_boxes = np.array([r["bbox"] for r in raw_records])
    # The raw run keeps upstream's value: the table reaches y2 = 584.36 on the 425-px image.
    table = [r["bbox"] for r in raw_records if r["category"] == "dining table"]
    assert any(abs(b[1] - 377.16) < 0.05 and abs(b[3] - 584.36) < 0.05 for b in table), table
    # Clipping is all that differs: the raw boxes clamped to the image, minus those left empty.
    expect = raw_boxes.copy()
    expect[:, 0::2] = expect[:, 0::2].clip(0, width)
    expect[:, 1::2] = expect[:, 1::2].clip(0, height)
    expect = expect[(expect[:, 2] > expect[:, 0]) & (expect[:, 3] > expect[:, 1])]
    assert boxes.shape == expect.shape and np.allclose(boxes, expect, atol=0.011)


def test_video_infer_clips_boxes_to_the_frame(tmp_path: Path, converted: Path) -> None:
    # The same image as a one-frame video (cut to 424 rows: the encoders want an even height); the
    # clipping is shared with images, so the table now ends at the frame's bottom edge.
    video = tmp_path / "one.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 1.0, (640, 424))
    writer.write(cv2.imread(str(require(COCO128 / "images" / "000000000034.jpg")))[:424])
    writer.release()
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["infer", str(video), "-w", str(converted), "-o", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    (record,) = read_frame_lines(out / "one.jsonl")[1]
    boxes = np.array([d["bbox"] for d in record["detections"]])
    assert len(boxes) > 0
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 640).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 424).all()
    assert (boxes[:, 3] == 424).any()  # some box reached past the bottom and was cut there


# ------------------------------------------------------------------------------- 8: tiny images
def test_images_smaller_than_two_finest_cells_get_a_warning(tmp_path: Path, tiny_weights: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    for side in (1, 8, 16):
        assert cv2.imwrite(
            str(src / f"s{side:02d}.png"), rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        )
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["infer", str(src), "-w", str(tiny_weights), "-o", str(out), "--score-thr", "0"]
    )
    assert result.exit_code == 0, result.output  # a warning, not a failure
    reason = "less than 2 cells of the model's finest stride (8 px): its detections are probably meaningless"
    assert _warnings(result.stderr) == [
        f"warning: {src / 's01.png'} is only 1x1 px, {reason}",
        f"warning: {src / 's08.png'} is only 8x8 px, {reason}",
    ]  # 16 px = 2 cells of stride 8: no warning
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "s01.png", "s08.png", "s16.png"]
    assert cv2.imread(str(out / "s01.png")).shape == (1, 1, 3)


# -------------------------------------------------------------------- 13: video time is video time
def test_video_json_time_is_the_position_in_the_video(tmp_path: Path, tiny_weights: Path) -> None:
    video = tmp_path / "clip.mp4"
    images = sorted(require(COCO128 / "images").glob("*.jpg"))[:6]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 4.0, (96, 64))
    for p in images:
        writer.write(cv2.resize(cv2.imread(str(p)), (96, 64)))
    writer.release()
    out = tmp_path / "out"
    args = ["infer", str(video), "-w", str(tiny_weights), "-o", str(out), "--stride", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = read_frame_lines(out / "clip.jsonl")[1]
    assert [(r["frame"], r["time"], r["time_base"]) for r in lines] == [
        (0, 0.0, "video"),
        (2, 0.5, "video"),
        (4, 1.0, "video"),
    ]


# --------------------------------------------------------------- 15: checkpoints and worker counts
def _one_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_arch_other_than_the_checkpoints_is_an_error(tmp_path: Path, tiny_weights: Path) -> None:
    image = tmp_path / "a.jpg"
    shutil.copy(COCO8 / "images" / "000000000009.jpg", image)
    args = [
        "infer",
        str(image),
        "-w",
        str(tiny_weights),
        "--arch",
        "retinanet_r18",
        "-o",
        str(tmp_path / "o"),
    ]
    line = _one_error(runner.invoke(app, args))
    assert "tiny.safetensors holds rtmdet_tiny, not retinanet_r18" in line and "drop --arch" in line


def test_weights_directory_is_named_as_such(tmp_path: Path, tiny_weights: Path) -> None:
    image = tmp_path / "a.jpg"
    shutil.copy(COCO8 / "images" / "000000000009.jpg", image)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_weights, run / "best.safetensors")
    line = _one_error(runner.invoke(app, ["infer", str(image), "-w", str(run), "-o", str(tmp_path / "o")]))
    assert (
        line
        == f"error: weights path is a directory, not a file: {run}; did you mean {run / 'best.safetensors'}?"
    )


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_more_workers_than_cpus_is_one_odet_warning(tmp_path: Path, tiny_weights: Path) -> None:
    ann, images = COCO8 / "annotations" / "instances.json", COCO8 / "images"
    args = ["eval", str(tiny_weights), "--ann", str(ann), "--images", str(images), "--device", "cpu"]
    args += ["--workers", "2", "--max-images", "2", "--out", str(tmp_path / "det.json")]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # this process really runs on one CPU now
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = runner.invoke(app, args)
    finally:
        os.sched_setaffinity(0, before)
    assert result.exit_code == 0, result.output
    assert not [str(w.message) for w in caught if "worker" in str(w.message)]  # PyTorch's warning
    assert _warnings(result.stderr) == [
        "warning: 2 data-loading workers asked for, but this process may use only 1 CPUs: using 1 "
        "(set --workers / data.num_workers to at most 1)"
    ]
