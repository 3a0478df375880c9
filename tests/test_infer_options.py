"""``odet infer``'s predict options (issue 15): ``--iou``, ``--classes``, ``--imgsz``, ``--max-det``,
``--half``, ``--conf``, ``--save-txt`` / ``--save-conf`` / ``--save-crop``, on images and on video,
each recorded in the JSON header.

The reference RTMDet-tiny (seeded random but trained-looking weights: up to 300 confident
detections per image) runs on coco8 images at ``--imgsz 320`` (fast on CPU). An option that only
selects must give exactly the full run's detections that it selects.
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import odcli
from odcli.boxes.overlaps import pairwise_iou
from odcli.cli.main import app
from odcli.data.coco_classes import COCO_CLASSES
from odcli.errors import OdetError
from odcli.inference.backends.meta import ExportMeta
from odcli.inference.outputs import read_detections, read_frame_lines
from odcli.inference.predict_options import PredictOptions, check_exported, sized_input_spec
from odcli.inference.predictor import Predictor
from odcli.models.zoo import model_config
from tests.conftest import MMDET_REF, REPO, require

COCO8 = REPO / "recipes" / "data" / "coco8"
PTH = MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"
#: Three images with 40-300 detections each and one (025) with none at 320 px.
IMAGES = ["000000000009.jpg", "000000000025.jpg", "000000000260.jpg", "000000000560.jpg"]
runner = CliRunner()


def _base(source: Path, out: Path) -> list[str]:
    weights = ["-w", str(require(PTH)), "--arch", "rtmdet_tiny", "--device", "cpu"]
    return ["infer", str(source), *weights, "-o", str(out)]


def _infer(source: Path, out: Path, *extra: str) -> tuple[dict, list[dict], str]:
    """Run ``odet infer`` at 320 px (unless ``extra`` says otherwise); (header, records, stdout)."""
    size = [] if "--imgsz" in extra else ["--imgsz", "320"]
    result = runner.invoke(app, [*_base(source, out), *size, *extra])
    assert result.exit_code == 0, result.output
    header, records = read_detections(out / "detections.json")
    assert header is not None
    return header, records, result.stdout


def _one_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def _by_image(records: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        grouped[Path(r["image"]).name].append({k: v for k, v in r.items() if k != "image"})
    return grouped


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    for name in IMAGES:
        shutil.copy(require(COCO8 / "images" / name), folder / name)
    return folder


@pytest.fixture(scope="module")
def full(src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict]]:
    """The run every option is compared with (its labels and crops are checked too)."""
    out = tmp_path_factory.mktemp("full")
    header, records, _ = _infer(src, out, "--save-txt", "--save-conf", "--save-crop")
    return out, header, records


def test_header_records_version_weights_and_settings(full: tuple[Path, dict, list[dict]]) -> None:
    _, header, records = full
    assert header["version"] == odcli.__version__
    assert header["weights"] == str(PTH) and header["arch"] == "rtmdet_tiny"
    assert header["settings"] == {
        "score_thr": 0.3,
        "iou": 0.65,
        "classes": None,
        "imgsz": [320, 320],
        "max_det": 300,
        "half": False,
        "raw_boxes": False,
    }
    counts = Counter(Path(r["image"]).name for r in records)
    assert counts["000000000009.jpg"] == 300 and "000000000025.jpg" not in counts  # the data is as described


def test_iou_leaves_no_same_class_pair_above_it(full: tuple[Path, dict, list[dict]], src: Path) -> None:
    def worst_overlap(records: list[dict]) -> float:
        worst = 0.0
        for dets in _by_image(records).values():
            for label in {d["label"] for d in dets}:
                boxes = torch.tensor([d["bbox"] for d in dets if d["label"] == label], dtype=torch.float64)
                iou = pairwise_iou(boxes, boxes).fill_diagonal_(0)
                worst = max(worst, float(iou.max()))
        return worst

    assert worst_overlap(full[2]) > 0.5  # the model's own 0.65 lets such pairs through
    # Raw boxes: NMS compares the boxes before clipping, which could raise an overlap.
    header, records, _ = _infer(src, full[0].parent / "iou", "--iou", "0.3", "--raw-boxes")
    assert header["settings"]["iou"] == 0.3 and header["settings"]["raw_boxes"] is True
    assert records and worst_overlap(records) <= 0.3 + 1e-3  # 1e-3: the JSON's 0.01 px rounding


def test_classes_by_name_and_id_with_conf_select_exactly_the_full_runs(
    full: tuple[Path, dict, list[dict]], src: Path
) -> None:
    out = full[0].parent / "classes"
    # Names, ids, comma-separated and repeated, any case; --conf is --score-thr.
    header, records, _ = _infer(src, out, "--classes", "cow,7", "--classes", "Traffic Light", "--conf", "0.5")
    wanted = {COCO_CLASSES.index("cow"), 7, COCO_CLASSES.index("traffic light")}
    assert header["settings"]["classes"] == ["truck", "traffic light", "cow"]  # label order
    assert header["settings"]["score_thr"] == 0.5
    expected = [r for r in full[2] if r["label"] in wanted and r["score"] >= 0.5]
    assert len(expected) > 10 and records == expected


def test_max_det_keeps_the_best_of_the_full_run_and_imgsz_rounds_to_the_stride(
    full: tuple[Path, dict, list[dict]], src: Path
) -> None:
    header, records, stdout = _infer(src, full[0].parent / "max5", "--max-det", "5", "--imgsz", "300")
    note = "note: --imgsz 300 rounded up to 320, a multiple of the model's largest stride (32)"
    assert note in " ".join(stdout.split())  # the console wraps long lines
    assert header["settings"]["max_det"] == 5 and header["settings"]["imgsz"] == [320, 320]
    got, whole = _by_image(records), _by_image(full[2])
    assert set(got) == set(whole)
    assert all(got[name] == dets[:5] for name, dets in whole.items())


def test_max_det_above_the_models_limit_keeps_more(full: tuple[Path, dict, list[dict]], src: Path) -> None:
    # The same batch as the full run: a batch of another size may differ in the last float bits.
    header, records, _ = _infer(src, full[0].parent / "max400", "--max-det", "400")
    assert header["settings"]["max_det"] == 400
    got, whole = _by_image(records), _by_image(full[2])
    assert len(whole["000000000009.jpg"]) == 300  # the model alone stops at its max_per_img
    assert 300 < len(got["000000000009.jpg"]) <= 400
    assert all(got[name][: len(dets)] == dets for name, dets in whole.items())


def test_imgsz_changes_the_input(full: tuple[Path, dict, list[dict]], src: Path) -> None:
    image = src / "000000000260.jpg"
    header, records, _ = _infer(image, full[0].parent / "s256", "--imgsz", "256,320")
    assert header["settings"]["imgsz"] == [256, 320]
    at_320 = [r for r in full[2] if r["image"].endswith(image.name)]
    assert records and records != at_320


def test_imgsz_sets_each_models_test_resize() -> None:
    model = odcli.build_detector("rtmdet_tiny")
    applied = PredictOptions(imgsz=(256, 320)).apply(model, COCO_CLASSES)
    image = cv2.imread(str(require(COCO8 / "images" / "000000000009.jpg")))  # 640x480
    assert Predictor(model).prepare(image)["img"].shape == (256, 320, 3)  # RTMDet's canvas, H x W
    assert applied.settings["imgsz"] == [256, 320] and not applied.notes
    # RetinaNet fits the longer side and pads its batch itself: any size; PP-YOLOE resizes exactly.
    retina, note = sized_input_spec(model_config("retinanet_r18").input_spec(), (500,), 128)
    assert (retina.test_scale, retina.pad_to, note) == ((500, 500), None, None)
    pp, note = sized_input_spec(model_config("ppyoloe_s").input_spec(), (300, 400), 32)
    assert (pp.test_scale, pp.pad_to) == ((416, 320), None) and note and "320x416" in note


def _cut_from(image: np.ndarray, crop: np.ndarray, x1: float, y1: float) -> bool:
    """``crop`` holds ``image``'s pixels from (x1, y1) on, to within JPEG loss (a mean difference of a
    few levels; one pixel off gives tens) and 1 px (the JSON's rounding can move a .5 either way)."""
    h, w = crop.shape[:2]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            top, left = max(round(y1) + dy, 0), max(round(x1) + dx, 0)
            cut = image[top : top + h, left : left + w]
            if cut.shape == crop.shape and np.abs(cut.astype(int) - crop.astype(int)).mean() < 10:
                return True
    return False


def test_labels_parse_back_to_the_boxes_and_crops_are_the_boxes(full: tuple[Path, dict, list[dict]]) -> None:
    out, _, records = full
    assert sorted(p.name for p in (out / "labels").iterdir()) == [n.replace(".jpg", ".txt") for n in IMAGES]
    assert (out / "labels" / "000000000025.txt").read_text() == ""  # looked at, nothing found
    crops: Counter[tuple[str, str]] = Counter()
    for name, dets in _by_image(records).items():
        image = cv2.imread(str(COCO8 / "images" / name))
        height, width = image.shape[:2]
        lines = (out / "labels" / name.replace(".jpg", ".txt")).read_text().splitlines()
        assert len(lines) == len(dets)
        for line, det in zip(lines, dets, strict=True):
            label, cx, cy, w, h, score = (float(v) for v in line.split())
            box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
            assert label == det["label"] and score == det["score"]
            assert np.allclose(box, det["bbox"], atol=0.011)  # the JSON's 0.01 px rounding
            key = (det["category"], Path(name).stem)
            crops[key] += 1
            stem = key[1] if crops[key] == 1 else f"{key[1]}_{crops[key]}"
            crop = cv2.imread(str(out / "crops" / det["category"] / f"{stem}.jpg"))
            x1, y1, x2, y2 = det["bbox"]
            assert abs(crop.shape[1] - (x2 - x1)) <= 1 and abs(crop.shape[0] - (y2 - y1)) <= 1
            assert _cut_from(image, crop, x1, y1)
    assert sum(1 for _ in (out / "crops").rglob("*.jpg")) == len(records)


def test_half_on_the_cpu_is_one_line(tmp_path: Path) -> None:
    line = _one_error([*_base(COCO8 / "images", tmp_path), "--half"])
    assert line.startswith("error: --half needs a CUDA device")


def test_bad_option_values_are_one_line(tmp_path: Path) -> None:
    base = _base(COCO8 / "images" / IMAGES[0], tmp_path)
    line = _one_error([*base, "--classes", "persn,dog"])
    assert "no class 'persn'; did you mean 'person'?" in line
    assert "--classes 80: the model has classes 0-79" in _one_error([*base, "--classes", "80"])
    assert "--imgsz takes one size or H,W" in _one_error([*base, "--imgsz", "big"])
    assert "--iou must be in [0, 1]" in _one_error([*base, "--iou", "1.5"])
    assert "--max-det must be >= 1" in _one_error([*base, "--max-det", "0"])


def _video(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (320, 240))
    for name in ("000000000009.jpg", "000000000260.jpg", "000000000560.jpg"):
        writer.write(cv2.resize(cv2.imread(str(require(COCO8 / "images" / name))), (320, 240)))
    writer.release()


def test_video_options_select_from_the_full_run_and_write_per_frame_files(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    _video(video)
    runs = {}
    for name, extra in {
        "full": [],
        "some": ["--classes", "truck,spoon", "--max-det", "3", "--save-txt"],
    }.items():
        result = runner.invoke(app, [*_base(video, tmp_path / name), "--imgsz", "320", *extra, "--save-crop"])
        assert result.exit_code == 0, result.output
        runs[name] = read_frame_lines(tmp_path / name / "clip.jsonl")
    header, frames = runs["some"]
    assert header is not None and header["settings"]["classes"] == ["truck", "spoon"]
    assert header["settings"]["max_det"] == 3 and header["settings"]["stride"] == 1
    wanted = {COCO_CLASSES.index("truck"), COCO_CLASSES.index("spoon")}
    full_frames = runs["full"][1]
    assert [f["frame"] for f in frames] == [f["frame"] for f in full_frames] == [0, 1, 2]
    for got, whole in zip(frames, full_frames, strict=True):
        assert got["detections"] == [d for d in whole["detections"] if d["label"] in wanted][:3]
    assert sum(len(f["detections"]) for f in frames) > 3
    labels = tmp_path / "some" / "labels"
    assert sorted(p.name for p in labels.iterdir()) == ["clip_0.txt", "clip_1.txt", "clip_2.txt"]
    for f in frames:
        assert len((labels / f"clip_{f['frame']}.txt").read_text().splitlines()) == len(f["detections"])
    crops = {
        p.relative_to(tmp_path / "some" / "crops").as_posix() for p in (tmp_path / "some").rglob("*.jpg")
    }
    assert len(crops) == sum(len(f["detections"]) for f in frames)
    assert all(c.split("/")[0] in ("truck", "spoon") and "/clip_" in c for c in crops)


def test_eval_scores_infer_detections_with_and_without_header(
    full: tuple[Path, dict, list[dict]], tmp_path: Path
) -> None:
    import json

    ann = COCO8 / "annotations" / "instances.json"
    bare = tmp_path / "bare_detections.json"
    bare.write_text(json.dumps(full[2]))  # what odet infer wrote before the header
    results = []
    for path in (full[0] / "detections.json", bare):
        result = runner.invoke(app, ["eval", "--detections", str(path), "--ann", str(ann), "--no-plots"])
        assert result.exit_code == 0, result.output
        results.append(
            json.loads(path.with_name(path.stem.replace("detections", "metrics") + ".json").read_text())
        )
    assert results[0]["num_detections"] == results[1]["num_detections"] == len(full[2])
    assert results[0]["stats"] == results[1]["stats"] and results[0]["stats"]["mAP"] is not None


def _meta(**changes: object) -> ExportMeta:
    fields = dict(
        arch="rtmdet_tiny", classes=tuple(COCO_CLASSES), cat_ids=tuple(range(80)), canvas=(320, 320), batch=1,
        mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395), to_rgb=False, pad_value=114.0,
        zero_padding=False, test_scale=(320, 320), keep_ratio=True, interpolation="bilinear",
        postprocess="per_level", score_thr=0.001, nms_pre=1000, iou_thr=0.65, max_per_img=300,
        min_bbox_size=0.0, nms=True, level_counts=(1600, 400, 100), strides=(8, 16, 32),
    )  # fmt: skip
    return ExportMeta(**{**fields, **changes})


def test_exported_files_take_the_filters_and_ask_for_a_re_export_otherwise() -> None:
    meta = _meta()
    applied, same = check_exported(
        PredictOptions(classes=("cow",), max_det=5, imgsz=(320,)), meta, COCO_CLASSES
    )
    assert same is meta and applied.labels == (19,) and applied.max_dets == 5
    assert applied.settings == {
        "iou": 0.65,
        "classes": ["cow"],
        "imgsz": [320, 320],
        "max_det": 5,
        "half": False,
    }
    for options, says in [
        (PredictOptions(imgsz=(640,)), "this file's input is 320x320; re-export with --imgsz 640 640"),
        (PredictOptions(iou=0.5), "re-export with --no-nms"),
        (PredictOptions(max_det=400), "keeps at most 300 detections per image"),
        (PredictOptions(half=True), "re-export with --half"),
    ]:
        with pytest.raises(OdetError, match=says):
            check_exported(options, meta, COCO_CLASSES)
    # Without NMS in the graph odet post-processes: the IoU and a larger limit apply there.
    applied, raw = check_exported(PredictOptions(iou=0.5, max_det=400), _meta(nms=False), COCO_CLASSES)
    assert (raw.nms_config().iou_thr, raw.nms_config().max_per_img) == (0.5, 400)
    assert applied.settings["iou"] == 0.5 and applied.max_dets == 400
