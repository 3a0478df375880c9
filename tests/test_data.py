"""Tests of odcli.data: reference preprocessing, box/pixel consistency, the COCO dataset, batching."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from odcli.data import (
    CocoDetection,
    Compose,
    FilterDegenerate,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    Resize,
    YOLOXHSVRandomAug,
    build_dataset,
    build_loader,
    build_test_transforms,
    build_train_transforms,
    collate,
    normalize,
    read_image,
)
from odcli.data.geometric import rescale_size
from odcli.errors import OdetError
from odcli.recipe import DataConfig
from tests.conftest import COCO8, COCO128, MMDET_REF, make_sample, require

COCO128_ANN = COCO128 / "annotations/instances.json"
COCO128_IMG = COCO128 / "images"


@pytest.fixture
def shared_fixtures() -> None:
    """COCO128 and the MMDetection references from ../shared: a test using them fails under CI when
    they are missing and skips, saying why, elsewhere (:func:`tests.conftest.require`)."""
    require(COCO128_ANN)
    require(MMDET_REF / "inputs")


needs_shared = pytest.mark.usefixtures("shared_fixtures")

RTMDET_MEAN = [103.53, 116.28, 123.675]  # BGR order: RTMDet eats BGR
RTMDET_STD = [57.375, 57.12, 58.395]


def chw_sha256(img: np.ndarray) -> str:
    """sha256 of an (H, W, 3) uint8 image laid out as CHW bytes (the references' convention)."""
    return hashlib.sha256(np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()).hexdigest()


def raw_sample(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """A Sample dict around a synthetic image."""
    return make_sample(img, boxes, labels, image_id=1, file_name="synthetic.jpg")


@pytest.fixture(scope="module")
def coco128() -> CocoDetection:
    return CocoDetection(ann_file=require(COCO128_ANN), image_dir=COCO128_IMG)


# --------------------------------------------------------------------------------------------------
# Reference preprocessing (MMDetection 3.3 outputs)
# --------------------------------------------------------------------------------------------------


@needs_shared
def test_rtmdet_test_pipeline_matches_reference(coco128: CocoDetection) -> None:
    ref = json.loads((MMDET_REF / "inputs/rtmdet_batchA.json").read_text())
    coco128.transforms = build_test_transforms((640, 640), pad_val=114)
    try:
        samples = [coco128[coco128.image_ids.index(im["img_id"])] for im in ref["images"]]
    finally:
        coco128.transforms = None
    for s, im in zip(samples, ref["images"], strict=True):
        # CHW byte layout is the one the reference hashes (HWC bytes give a different digest).
        assert chw_sha256(s["img"]) == im["pipeline_output_sha256"]
        assert list(s["ori_shape"]) == im["ori_shape"]
        assert list(s["img_shape"]) == im["img_shape"]  # padded shape, as upstream for RTMDet
        assert list(s["pad_shape"]) == im["pad_shape"]
        assert list(s["scale_factor"]) == im["scale_factor"]
        # Scale 1.0 for both images: our scaled boxes equal upstream's (unscaled) loss inputs.
        np.testing.assert_array_equal(s["boxes"], np.asarray(im["gt_bboxes_in_input_coords"], np.float32))
        np.testing.assert_array_equal(s["labels"], im["gt_labels"])

    images, _, _ = collate(samples)
    inputs = normalize(images, RTMDET_MEAN, RTMDET_STD, to_rgb=False)
    from safetensors.torch import load_file

    expected = load_file(str(MMDET_REF / "inputs/rtmdet_batchA.safetensors"))["inputs"]
    assert inputs.shape == expected.shape == (2, 3, 640, 640)
    assert inputs.dtype == torch.float32
    assert (inputs - expected).abs().max().item() <= 1e-6


@needs_shared
def test_retinanet_resize_matches_reference() -> None:
    ref = json.loads((MMDET_REF / "inputs/retinanet_batchA.json").read_text())
    pre = ref["data_preprocessor"]
    samples = []
    for im in ref["images"]:
        img = read_image(COCO128_IMG / im["img_path"])
        s = build_test_transforms((1333, 800), pad=False)(raw_sample(img, np.zeros((0, 4))))
        assert list(s["img"].transpose(2, 0, 1).shape) == im["pipeline_output_chw_uint8_shape"]
        assert chw_sha256(s["img"]) == im["pipeline_output_sha256"]
        assert list(s["img_shape"]) == im["img_shape"]  # unpadded for RetinaNet
        assert s["scale_factor"] == pytest.approx(im["scale_factor"], abs=1e-12)
        samples.append(s)

    # Upstream batches to a multiple of 32 and pads with 0 *after* normalising.
    images, _, metas = collate(samples, pad_value=0, size_divisor=pre["pad_size_divisor"])
    assert list(images.shape[2:]) == ref["images"][0]["batch_input_shape"]
    x = normalize(images, pre["mean"], pre["std"], to_rgb=True, valid_hw=[m["img_shape"] for m in metas])
    for i, m in enumerate(metas):
        h, w = m["img_shape"]
        assert x[i, :, h:, :].abs().sum() == 0 and x[i, :, :, w:].abs().sum() == 0
        assert (x[i, :, :h, :w] != 0).float().mean() > 0.99
    # Channel 0 is R after the swap: compare with the R plane of the BGR source.
    r = (float(images[0, 2, 0, 0]) - pre["mean"][0]) / pre["std"][0]
    assert x[0, 0, 0, 0].item() == pytest.approx(r, rel=1e-6)


def test_rescale_size_matches_mmcv_rule() -> None:
    assert rescale_size(640, 480, (1333, 800))[:2] == (1067, 800)
    assert rescale_size(640, 426, (1333, 800))[:2] == (1202, 800)
    assert rescale_size(1000, 500, (640, 640))[:2] == (640, 320)
    assert rescale_size(333, 500, (640, 640))[:2] == (426, 640)  # 333 * 1.28 = 426.24


# --------------------------------------------------------------------------------------------------
# Boxes follow the pixels
# --------------------------------------------------------------------------------------------------

COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255], [128, 255, 64]],
    dtype=np.uint8,
)


def painted_sample(rng: np.random.Generator, h: int, w: int, n: int) -> dict:
    """Black image with ``n`` non-overlapping integer boxes, box k painted COLOURS[k]; label = k."""
    img = np.zeros((h, w, 3), np.uint8)
    cols = int(np.ceil(np.sqrt(n)))
    cell_w, cell_h = w // cols, h // cols
    boxes = []
    for k in range(n):
        cx, cy = (k % cols) * cell_w, (k // cols) * cell_h
        bw = int(rng.integers(cell_w // 3, cell_w - 2))
        bh = int(rng.integers(cell_h // 3, cell_h - 2))
        x1 = cx + int(rng.integers(1, cell_w - bw))
        y1 = cy + int(rng.integers(1, cell_h - bh))
        img[y1 : y1 + bh, x1 : x1 + bw] = COLOURS[k]
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    return raw_sample(img, np.asarray(boxes, np.float32))


def assert_boxes_follow_pixels(out: dict, n_in: int, tol: float) -> None:
    """Each kept box encloses the pixels of its colour (within ``tol`` px) and contains its colour; the
    colours of removed boxes are gone; every box is non-degenerate and inside the canvas."""
    img, boxes, labels = out["img"], out["boxes"], out["labels"]
    h, w = img.shape[:2]
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and len(boxes) == len(labels)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    for k in range(n_in):
        ys, xs = np.nonzero((img == COLOURS[k]).all(axis=2))
        if k not in labels:
            assert len(xs) == 0, f"box {k} was removed but its pixels are still visible"
            continue
        x1, y1, x2, y2 = boxes[list(labels).index(k)]
        if (x2 - x1) >= 3 and (y2 - y1) >= 3:
            assert len(xs) > 0, f"box {k} kept but its colour is not in the image"
        if len(xs):
            assert xs.min() >= x1 - tol and xs.max() + 1 <= x2 + tol
            assert ys.min() >= y1 - tol and ys.max() + 1 <= y2 + tol


@pytest.mark.parametrize("seed", range(6))
def test_random_resize_boxes_follow_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted_sample(rng, 300, 400, 5)
    out = RandomResize((640, 640), ratio_range=(0.5, 2.0))(s, rng)
    h, w = out["img"].shape[:2]
    assert out["img_shape"] == out["pad_shape"] == (h, w)
    assert out["scale_factor"] == pytest.approx((w / 400, h / 300))
    assert_boxes_follow_pixels(out, 5, tol=1.0)


@pytest.mark.parametrize("seed", range(10))
def test_random_crop_boxes_follow_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted_sample(rng, 500, 700, 7)
    out = RandomCrop((300, 250))(s, rng)
    assert out["img"].shape[:2] == out["img_shape"] == (250, 300)
    assert len(out["boxes"]) >= 1  # never a crop without boxes when the input had some
    assert_boxes_follow_pixels(out, 7, tol=0.0)
    # Crop larger than the image: the whole image is kept.
    out = RandomCrop((900, 900))(s, rng)
    np.testing.assert_array_equal(out["img"], s["img"])
    np.testing.assert_array_equal(out["boxes"], s["boxes"])


def test_random_crop_fallback_keeps_a_box() -> None:
    img = np.zeros((1000, 1000, 3), np.uint8)
    img[5:15, 980:995] = COLOURS[0]
    s = raw_sample(img, np.array([[980, 5, 995, 15]], np.float32))
    crop = RandomCrop((100, 100), max_tries=1)
    for seed in range(20):
        out = crop(s, np.random.default_rng(seed))
        assert len(out["boxes"]) == 1
        assert_boxes_follow_pixels(out, 1, tol=0.0)
    # No boxes in: a plain random crop with no boxes out.
    out = crop(raw_sample(img, np.zeros((0, 4))), np.random.default_rng(0))
    assert out["img"].shape == (100, 100, 3) and out["boxes"].shape == (0, 4)


@pytest.mark.parametrize("seed", range(4))
def test_random_flip_boxes_follow_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted_sample(rng, 200, 333, 4)
    out = RandomFlip(prob=1.0)(s, rng)
    np.testing.assert_array_equal(out["img"], s["img"][:, ::-1])
    assert_boxes_follow_pixels(out, 4, tol=0.0)
    twice = RandomFlip(prob=1.0)(out, rng)
    np.testing.assert_array_equal(twice["boxes"], s["boxes"])
    assert RandomFlip(prob=0.0)(s, rng) is s


def test_pad_keeps_boxes_and_fills_value() -> None:
    rng = np.random.default_rng(0)
    s = painted_sample(rng, 300, 500, 4)
    out = Pad(size=(640, 640), pad_val=114)(s)
    assert out["img"].shape == (640, 640, 3)
    assert out["pad_shape"] == out["img_shape"] == (640, 640)
    assert (out["img"][300:] == 114).all() and (out["img"][:, 500:] == 114).all()
    np.testing.assert_array_equal(out["img"][:300, :500], s["img"])
    np.testing.assert_array_equal(out["boxes"], s["boxes"])
    assert_boxes_follow_pixels(out, 4, tol=0.0)
    kept = Pad(size=None, size_divisor=32, img_shape_is_padded=False)(s)
    assert kept["img"].shape[:2] == kept["pad_shape"] == (320, 512) and kept["img_shape"] == (300, 500)
    with pytest.raises(OdetError):
        Pad(size=(400, 400))(s)


def test_resize_exact_and_keep_ratio() -> None:
    rng = np.random.default_rng(1)
    s = painted_sample(rng, 300, 400, 4)
    out = Resize((200, 100), keep_ratio=False)(s)
    assert out["img"].shape[:2] == (100, 200) and out["scale_factor"] == (0.5, 1 / 3)
    assert_boxes_follow_pixels(out, 4, tol=1.0)
    out = Resize((640, 640))(s)
    assert out["img"].shape[:2] == (480, 640)
    np.testing.assert_allclose(out["boxes"], s["boxes"] * 1.6, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_train_pipeline_shapes_and_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted_sample(rng, 427, 640, 6)
    out = build_train_transforms(hsv=False)(s, rng)
    assert out["img"].shape == (640, 640, 3) and out["img"].dtype == np.uint8
    assert out["img_shape"] == out["pad_shape"] == (640, 640)
    assert len(out["boxes"]) >= 1
    assert_boxes_follow_pixels(out, 6, tol=1.0)
    # Same seed, same augmentation.
    again = build_train_transforms()(s, np.random.default_rng(99))
    np.testing.assert_array_equal(again["img"], build_train_transforms()(s, np.random.default_rng(99))["img"])


def test_filter_degenerate_counts() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5, 9], [1, 1, 3, 0], [2, 2, 4, 4]], np.float32)
    f = FilterDegenerate()
    out = f(raw_sample(np.zeros((20, 20, 3), np.uint8), boxes))
    np.testing.assert_array_equal(out["labels"], [0, 3])
    assert f.dropped == 2


def test_hsv_lut_equals_direct_arithmetic() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    for gains in ([5, 30, -30], [-5, -30, 30], [0, 0, 0], [3, 0, -17]):
        g = np.array(gains, np.int16)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + g[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + g[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + g[2], 0, 255)
        expected = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        np.testing.assert_array_equal(YOLOXHSVRandomAug.apply(img, g), expected)
    aug = YOLOXHSVRandomAug()
    for _ in range(50):
        g = aug.gains(rng)
        assert g.dtype == np.int16 and abs(int(g[0])) <= 5 and abs(int(g[1])) <= 30 and abs(int(g[2])) <= 30


# --------------------------------------------------------------------------------------------------
# COCO dataset and image reading
# --------------------------------------------------------------------------------------------------


@needs_shared
def test_coco128_labels_and_counts(coco128: CocoDetection) -> None:
    label_map = json.loads((MMDET_REF / "label_map.json").read_text())
    assert len(coco128) == 128
    assert coco128.classes == label_map["classes"]
    assert coco128.cat_id_to_label == {int(k): v for k, v in label_map["coco_category_id_to_label"].items()}
    assert coco128.cat_ids[72] == 82 and coco128.cat_ids[79] == 90
    assert coco128.crowd_boxes == 10 and coco128.dropped_boxes == 0
    s = coco128.load_raw(0)
    assert s["img"].dtype == np.uint8 and s["img"].shape[2] == 3
    assert s["boxes"].dtype == np.float32 and s["labels"].dtype == np.int64
    assert s["ori_shape"] == s["img_shape"] == s["pad_shape"] == s["img"].shape[:2]


@needs_shared
def test_coco_filters(tmp_path: Path) -> None:
    data = json.loads(COCO128_ANN.read_text())
    with_boxes = {a["image_id"] for a in data["annotations"]}
    ds = CocoDetection(ann_file=COCO128_ANN, image_dir=COCO128_IMG, filter_empty=True)
    assert set(ds.image_ids) == with_boxes
    ds = CocoDetection(ann_file=COCO128_ANN, image_dir=COCO128_IMG, min_size=400)
    assert all(min(ds.coco.imgs[i]["width"], ds.coco.imgs[i]["height"]) >= 400 for i in ds.image_ids)
    assert 0 < len(ds) < 128
    ds = CocoDetection(ann_file=COCO128_ANN, image_dir=COCO128_IMG, classes=["dog", "person"])
    assert ds.classes == ["person", "dog"] and ds.cat_ids == [1, 18]
    with pytest.raises(OdetError, match="unknown class"):
        CocoDetection(ann_file=COCO128_ANN, image_dir=COCO128_IMG, classes=["dragon"])


def _small_ann(tmp_path: Path, mutate=None) -> Path:
    """Annotation file with images 9 and 25 of COCO128 (optionally mutated), written to tmp_path."""
    data = json.loads(COCO128_ANN.read_text())
    keep = {9, 25}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    if mutate is not None:
        mutate(data)
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


@needs_shared
def test_zero_size_box_dropped_and_counted(tmp_path: Path) -> None:
    def add_bad(data: dict) -> None:
        base = copy.deepcopy(data["annotations"][0])
        for k, bbox in enumerate(([10, 10, 0, 20], [10, 10, 20, 0], [10, 10, -5, 20])):
            data["annotations"].append({**base, "id": 10**9 + k, "bbox": bbox, "area": 0.0})

    ds = CocoDetection(ann_file=_small_ann(tmp_path, add_bad), image_dir=COCO128_IMG)
    (tmp_path / "ref").mkdir()
    ref = CocoDetection(ann_file=_small_ann(tmp_path / "ref"), image_dir=COCO128_IMG)
    assert ds.dropped_boxes == 3
    for i in range(len(ds)):
        b, lab = ds.annotations(i)
        rb, rlab = ref.annotations(i)
        np.testing.assert_array_equal(b, rb)
        np.testing.assert_array_equal(lab, rlab)
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


@needs_shared
def test_missing_and_corrupt_images_raise(tmp_path: Path) -> None:
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    ds = CocoDetection(ann_file=_small_ann(tmp_path), image_dir=img_dir)
    with pytest.raises(OdetError) as e:
        ds.load_raw(0)
    assert "not found" in _one_line_error(e) and "000000000009.jpg" in str(e.value)

    (img_dir / "000000000009.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(OdetError) as e:
        ds[0]
    assert "decode" in _one_line_error(e)

    data = (COCO128_IMG / "000000000025.jpg").read_bytes()
    (img_dir / "000000000025.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(OdetError) as e:
        ds.load_raw(1)
    assert "truncated" in _one_line_error(e)

    (img_dir / "000000000025.jpg").write_bytes(b"")
    with pytest.raises(OdetError) as e:
        ds.load_raw(1)
    _one_line_error(e)

    # A complete file with trailing bytes after the end-of-image marker is fine.
    (img_dir / "000000000025.jpg").write_bytes(data + b"\x00" * 16)
    np.testing.assert_array_equal(ds.load_raw(1)["img"], read_image(COCO128_IMG / "000000000025.jpg"))


@needs_shared
def test_bad_annotation_files_raise(tmp_path: Path) -> None:
    cases = {
        "missing": None,
        "invalid": "{not json",
        "list": "[]",
        "no_images": json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}),
        "no_cats": json.dumps(
            {"images": [{"id": 1, "file_name": "a.jpg", "width": 2, "height": 2}], "categories": []}
        ),
        "bad_ann": json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 2, "height": 2}],
                "categories": [{"id": 1, "name": "a"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1}],
            }
        ),
    }
    for name, text in cases.items():
        p = tmp_path / f"{name}.json"
        if text is not None:
            p.write_text(text)
        with pytest.raises(OdetError) as e:
            CocoDetection(ann_file=p, image_dir=tmp_path)
        _one_line_error(e)
    with pytest.raises(OdetError, match="image directory not found"):
        CocoDetection(ann_file=COCO128_ANN, image_dir=tmp_path / "nope")


def test_build_dataset_recipe_split_or_explicit_files(tmp_path: Path) -> None:
    ann = COCO8 / "annotations/instances.json"
    data = DataConfig(val_ann="annotations/instances.json", val_images="images")
    # The recipe's split, or the same files named explicitly (odet eval --ann/--images): one dataset.
    from_recipe = build_dataset(data, COCO8, "val")
    explicit = build_dataset(DataConfig(), tmp_path, "val", ann=ann, images=COCO8 / "images")
    assert len(from_recipe) == len(explicit) == 8
    assert explicit.image_ids == from_recipe.image_ids and explicit.cat_ids == from_recipe.cat_ids
    # One path given, the other one from the recipe.
    assert build_dataset(data, COCO8, "val", images=COCO8 / "images").image_ids == from_recipe.image_ids
    assert build_dataset(data, COCO8, "val", ann=ann).image_dir == COCO8 / "images"
    # Missing: a given path names its flag; a recipe path its key (and the flag when the other was given).
    with pytest.raises(OdetError, match=r"annotation file not found: .*none\.json \(check --ann\)$"):
        build_dataset(data, COCO8, "val", ann=tmp_path / "none.json")
    with pytest.raises(OdetError, match=r"image directory not found: .*nope \(check --images\)$"):
        build_dataset(data, COCO8, "val", images=tmp_path / "nope")
    with pytest.raises(
        OdetError, match=r"validation annotations not found: .*data\.val_ann.*, or pass --ann\)$"
    ):
        build_dataset(DataConfig(), tmp_path, "val", images=COCO8 / "images")
    with pytest.raises(OdetError, match=r"validation images not found: .*data\.val_images=…\)$"):
        build_dataset(DataConfig(), tmp_path, "val")

    # The split's filters apply to explicit files as to the recipe's: training drops an unannotated image.
    unannotated = json.loads(ann.read_text())
    unannotated["annotations"] = [a for a in unannotated["annotations"] if a["image_id"] != 9]
    (tmp_path / "ann.json").write_text(json.dumps(unannotated))
    filters = DataConfig(min_size=0)
    train = build_dataset(filters, tmp_path, "train", ann=tmp_path / "ann.json", images=COCO8 / "images")
    val = build_dataset(filters, tmp_path, "val", ann=tmp_path / "ann.json", images=COCO8 / "images")
    assert 9 not in train.image_ids and len(train) == 7 and len(val) == 8


# --------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------


def test_collate_pads_to_largest() -> None:
    a = raw_sample(np.full((10, 20, 3), 7, np.uint8), np.array([[1, 1, 5, 5]]))
    b = raw_sample(np.full((15, 12, 3), 9, np.uint8), np.zeros((0, 4)))
    images, targets, metas = collate([a, b], pad_value=114)
    assert images.shape == (2, 3, 15, 20) and images.dtype == torch.uint8
    assert (images[0, :, 10:] == 114).all() and (images[1, :, :, 12:] == 114).all()
    assert (images[0, :, :10, :20] == 7).all()
    assert targets[0]["boxes"].dtype == torch.float32 and targets[0]["boxes"].shape == (1, 4)
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].dtype == torch.int64
    assert set(metas[0]) == {"image_id", "file_name", "ori_shape", "img_shape", "pad_shape", "scale_factor"}
    # BGR -> RGB swap puts the output channels in the order mean/std are given.
    img = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(img, [30, 20, 10], [1, 2, 5], to_rgb=True)
    assert out.flatten().tolist() == [0.0, 0.0, 0.0]


def test_build_loader_shapes_and_reproducibility() -> None:
    ds = CocoDetection(
        ann_file=COCO8 / "annotations/instances.json",
        image_dir=COCO8 / "images",
        transforms=build_train_transforms(),
    )
    assert len(ds) == 8 and len(ds.classes) == 80
    assert {"000000000009.jpg", "000000000025.jpg"} <= {ds.coco.imgs[i]["file_name"] for i in ds.image_ids}

    def epoch(num_workers: int) -> list:
        loader = build_loader(ds, batch_size=4, shuffle=True, num_workers=num_workers, seed=3)
        return list(loader)

    two = epoch(2)
    assert len(two) == 2
    for images, targets, metas in two:
        assert images.shape == (4, 3, 640, 640) and images.dtype == torch.uint8
        assert len(targets) == len(metas) == 4
        for t, m in zip(targets, metas, strict=True):
            assert t["boxes"].shape[1] == 4 and t["boxes"].shape[0] == t["labels"].shape[0]
            assert m["img_shape"] == m["pad_shape"] == (640, 640)
    # Augmentation and order depend on the seed only, not on the number of workers.
    zero = epoch(0)
    for (ia, ta, ma), (ib, tb, mb) in zip(two, zero, strict=True):
        assert torch.equal(ia, ib)
        assert [m["image_id"] for m in ma] == [m["image_id"] for m in mb]
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb, strict=True))
    # A second epoch of the same loader draws new augmentations.
    loader = build_loader(ds, batch_size=8, shuffle=False, num_workers=0, seed=3)
    first, second = next(iter(loader))[0], next(iter(loader))[0]
    assert not torch.equal(first, second)
    with pytest.raises(OdetError):
        build_loader(ds, batch_size=0, shuffle=False, num_workers=0)


def test_compose_without_rng_uses_process_generator() -> None:
    s = painted_sample(np.random.default_rng(0), 100, 120, 2)
    pipe = Compose([RandomFlip(0.5), Resize((64, 64))])
    runs = []
    for seed in (5, 6, 5):
        # The generator restarts when torch's seed changes (as it does in each DataLoader worker).
        torch.manual_seed(seed)
        runs.append(np.stack([pipe(s)["boxes"] for _ in range(8)]))
    np.testing.assert_array_equal(runs[0], runs[2])
    assert not np.array_equal(runs[0], runs[1])
