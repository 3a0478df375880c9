"""PP-YOLOE's upstream training augmentation (odcli/data/ppdet_*.py, pipeline ``ppyoloe``).

Geometry is checked on painted images, as in test_augment.py: every box has its own colour, so after a
transform (a) the inside of each kept box still shows its colour and (b) every solid pixel of a kept
box's colour lies inside that box. Colour distortion must leave boxes and shapes alone, and its BGR
maths must equal upstream's RGB formulas applied to the channel-reversed image.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.data import ppdet_transforms as ppdet
from odcli.data.datasets import build_dataset
from odcli.data.geometric import RandomFlip
from odcli.data.loader import build_loader
from odcli.data.pipelines import build_train_pipeline
from odcli.errors import OdetError
from odcli.recipe import DataConfig, load_recipe
from tests.conftest import REPO, box_colour, make_sample

DEMO = REPO / "recipes" / "ppyoloe_s_demo.yaml"
BACKGROUND = (10, 10, 10)
FILL_RGB = (123.675, 116.28, 103.53)


def painted(rng: np.random.Generator, h: int, w: int, n: int = 6, first: int = 0, dtype=np.uint8) -> dict:
    """(h, w) image with ``n`` non-overlapping boxes (one per grid cell, >= 12 px), box k painted
    box_colour(first + k) and labelled first + k."""
    img = np.empty((h, w, 3), dtype)
    img[:] = BACKGROUND
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw, ch = w // cols, h // rows
    boxes = []
    for k in range(n):
        cx, cy = (k % cols) * cw, (k // cols) * ch
        bw, bh = int(rng.integers(12, cw - 2)), int(rng.integers(12, ch - 2))
        x1, y1 = cx + int(rng.integers(1, cw - bw)), cy + int(rng.integers(1, ch - bh))
        img[y1 : y1 + bh, x1 : x1 + bw] = box_colour(first + k)
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    return make_sample(img, boxes, np.arange(first, first + n, dtype=np.int64), image_id=first)


def frozen(sample: dict) -> dict:
    """Deep copies of a sample's arrays, to check that a transform did not write to its input."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sample.items()}


def assert_unchanged(sample: dict, before: dict) -> None:
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(sample[k], v, err_msg=f"input {k!r} was modified")
        else:
            assert sample[k] == v


def check_geometry(s: dict, margin: int = 0, tol_px: float = 0.0, tol_val: float = 0.0) -> int:
    """Boxes inside the canvas with positive size, shapes consistent, (a) and (b) of the module
    docstring for every kept box; returns how many box interiors were checked."""
    img, boxes, labels = s["img"], s["boxes"], s["labels"]
    h, w = img.shape[:2]
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4) and labels.dtype == np.int64
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all(), boxes
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all(), boxes
    assert tuple(s["img_shape"]) == tuple(s["pad_shape"]) == (h, w)
    checked = 0
    x = img.astype(np.float64)
    for (x1, y1, x2, y2), lab in zip(boxes, labels, strict=True):
        xa, ya = math.ceil(x1) + margin, math.ceil(y1) + margin
        xb, yb = math.floor(x2) - margin, math.floor(y2) - margin
        if xb > xa and yb > ya:
            diff = np.abs(x[ya:yb, xa:xb] - np.array(box_colour(int(lab)), np.float64))
            assert diff.max() <= tol_val, f"box {lab} at {(x1, y1, x2, y2)} does not cover its colour"
            checked += 1
        solid = cv2.erode(
            np.all(img == np.array(box_colour(int(lab)), img.dtype), axis=-1).astype(np.uint8), None
        )
        ys, xs = np.nonzero(solid)
        assert ((xs >= x1 - tol_px) & (xs + 1 <= x2 + tol_px)).all(), f"colour of box {lab} outside it"
        assert ((ys >= y1 - tol_px) & (ys + 1 <= y2 + tol_px)).all(), f"colour of box {lab} outside it"
    return checked


# ------------------------------------------------------------------------------- RandomDistort
def upstream_rgb(img_rgb: np.ndarray, op: str, delta: float) -> np.ndarray:
    """Upstream's formulas on an RGB image (written from their definitions, float64)."""
    x = img_rgb.astype(np.float64)
    if op == "hue":
        u, w = np.cos(delta * np.pi), np.sin(delta * np.pi)
        bt = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
        tyiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
        ityiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])
        return x @ (ityiq @ bt @ tyiq).T
    if op == "saturation":
        grey = (x * np.array([0.299, 0.587, 0.114])).sum(axis=2, keepdims=True)
        return x * delta + grey * (1 - delta)
    if op == "contrast":
        return x * delta
    return x + delta


@pytest.mark.parametrize("op", ["hue", "saturation", "contrast", "brightness"])
def test_distortion_maths_in_bgr_equals_upstream_rgb(op: str) -> None:
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    before = bgr.copy()
    fn = {
        "hue": ppdet.distort_hue,
        "saturation": ppdet.distort_saturation,
        "contrast": ppdet.distort_contrast,
        "brightness": ppdet.distort_brightness,
    }[op]
    for delta in (-17.3, 0.37, 1.4):
        out = fn(bgr, delta)
        assert out.dtype == np.float32 and out.shape == bgr.shape
        ref = upstream_rgb(bgr[..., ::-1], op, delta)[..., ::-1]  # RGB formula, back to BGR
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(bgr, before)
    # Unclipped, as upstream: a contrast of 1.5 on a bright pixel goes past 255.
    assert ppdet.distort_contrast(np.full((1, 1, 3), 200, np.uint8), 1.5).max() == pytest.approx(300.0)


@pytest.mark.parametrize("seed", range(8))
def test_random_distort_changes_colours_only(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted(rng, 90, 120)
    before = frozen(s)
    for t in (ppdet.RandomDistort(), ppdet.RandomDistort(random_apply=False, random_channel=True)):
        out = t(s, rng)
        assert out["img"].shape == s["img"].shape
        assert out["img"].dtype in (np.uint8, np.float32)
        for k in ("boxes", "labels", "img_shape", "pad_shape", "scale_factor"):
            np.testing.assert_array_equal(out[k], s[k])
        assert_unchanged(s, before)
    always = ppdet.RandomDistort(
        *[(lo, hi, 0.0) for lo, hi in [(-18, 18), (0.5, 1.5), (0.5, 1.5), (0.5, 1.5)]]
    )
    out = always(s, rng)
    assert out["img"].dtype == np.float32 and not np.array_equal(out["img"], s["img"])
    never = ppdet.RandomDistort(*[(0.5, 1.5, 1.0)] * 4)
    assert never(s, rng) is s  # nothing applied: the very same sample, still uint8


# --------------------------------------------------------------------------------- RandomExpand
@pytest.mark.parametrize("seed", range(5))
def test_random_expand_moves_boxes_with_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted(rng, 80, 110)
    before = frozen(s)
    out = ppdet.RandomExpand(ratio=4.0, prob=1.0, fill_value=FILL_RGB)(s, rng)
    assert_unchanged(s, before)
    h, w = out["img"].shape[:2]
    assert 80 < h <= 4 * 80 and 110 < w <= 4 * 110 and out["img"].dtype == np.float32
    assert check_geometry(out) == 6
    # The canvas is the RGB fill in BGR order; the image sits at the boxes' offset.
    dx, dy = (out["boxes"][0, :2] - s["boxes"][0, :2]).astype(int)
    np.testing.assert_array_equal(out["img"][dy : dy + 80, dx : dx + 110], s["img"].astype(np.float32))
    outside = np.ones((h, w), bool)
    outside[dy : dy + 80, dx : dx + 110] = False
    np.testing.assert_array_equal(
        np.unique(out["img"][outside], axis=0), np.array([FILL_RGB[::-1]], np.float32)
    )
    assert out["scale_factor"] == (1.0, 1.0)
    assert ppdet.RandomExpand(prob=0.0)(s, rng) is s
    with pytest.raises(OdetError, match="ratio"):
        ppdet.RandomExpand(ratio=1.0)


# --------------------------------------------------------------------------- IoUConstrainedCrop
@pytest.mark.parametrize("seed", range(12))
def test_random_crop_keeps_boxes_on_their_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = painted(rng, 150, 200, n=9)
    before = frozen(s)
    out = ppdet.IoUConstrainedCrop()(s, rng)
    assert_unchanged(s, before)
    assert 1 <= len(out["boxes"]) <= 9  # a crop always keeps a box (else it is not taken)
    check_geometry(out)
    if out is not s:
        h, w = out["img"].shape[:2]
        assert h < 150 or w < 200


def test_random_crop_respects_its_iou_threshold() -> None:
    rng = np.random.default_rng(0)
    outcomes = {"crop": 0, "none": 0}
    for cover_all in (False, True):
        crop = ppdet.IoUConstrainedCrop(cover_all_box=cover_all)
        for _ in range(150):
            s = painted(rng, 120, 160, n=int(rng.integers(1, 7)))
            window, thresh = crop.sample_crop(s["boxes"], 120, 160, rng)
            if window is None:
                assert thresh is None
                outcomes["none"] += 1
                continue
            outcomes["crop"] += 1
            x1, y1, x2, y2 = window
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
            ratio = ((x2 - x1) / 160) / ((y2 - y1) / 120)  # window aspect relative to the image
            assert 0.5 - 0.05 <= ratio <= 2.0 + 0.05
            iou = ppdet.iou_with_window(s["boxes"], window)
            assert (iou.min() if cover_all else iou.max()) >= thresh
            assert len(crop.crop_boxes(s["boxes"], window)[1]) >= 1
    assert outcomes["crop"] > 50 and outcomes["none"] > 10  # both branches happen


def test_random_crop_drops_boxes_whose_centre_or_area_leaves() -> None:
    boxes = np.array(
        [
            [10, 10, 30, 30],  # inside: kept, shifted
            [0, 0, 12, 12],  # centre (6, 6) left of/above the window: dropped
            [40, 40, 70, 70],  # centre (55, 55) at x2/y2 (exclusive): dropped
            [20, 20, 20, 28],  # zero width: dropped
            [50, 5, 70, 50],  # centre (60, 27.5) right of the window: dropped
        ],
        np.float32,
    )
    cropped, keep = ppdet.IoUConstrainedCrop.crop_boxes(boxes, (8, 8, 55, 55))
    assert keep.tolist() == [0]
    np.testing.assert_array_equal(cropped[0], [2, 2, 22, 22])
    s = painted(np.random.default_rng(0), 60, 60, n=1)
    s["boxes"], s["labels"] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    assert ppdet.IoUConstrainedCrop()(s, np.random.default_rng(0)) is s  # no boxes: untouched
    s = painted(np.random.default_rng(0), 60, 60, n=1)
    impossible = ppdet.IoUConstrainedCrop(thresholds=[1.5], allow_no_crop=False, num_attempts=5)
    assert impossible(s, np.random.default_rng(0)) is s  # nothing found: untouched


# ---------------------------------------------------------------------------- BatchRandomResize
@pytest.mark.parametrize("seed", range(6))
def test_batch_random_resize_one_size_boxes_follow(seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = [painted(rng, 90, 130), painted(rng, 140, 100, first=6, dtype=np.float32), painted(rng, 64, 64)]
    batch = [ppdet.DrawBatchSeed()(s, rng) for s in batch]
    before = [frozen(s) for s in batch]
    bt = ppdet.BatchRandomResize(target_sizes=(96, 128, 192, 256))
    out = bt(batch)
    side, interp = bt.draw(ppdet.batch_rng(batch))  # the draw is a function of the samples
    checked = 0
    for s, o, b in zip(batch, out, before, strict=True):
        assert_unchanged(s, b)
        assert o["img"].shape == (side, side, 3) and o["img"].dtype == np.float32
        h, w = s["img"].shape[:2]
        fx, fy = side / w, side / h
        np.testing.assert_allclose(o["boxes"], s["boxes"] * [fx, fy, fx, fy], rtol=1e-6)
        assert o["scale_factor"] == pytest.approx((fx, fy))
        margin = math.ceil(4.5 * max(fx, fy)) + 1  # lanczos4 reaches 4 source pixels
        checked += check_geometry(o, margin=margin, tol_px=1.5, tol_val=0.01)
    assert checked >= 6, interp
    assert [o["img"].shape for o in bt(batch)] == [o["img"].shape for o in out]  # reproducible


def test_batch_random_resize_draws_sizes_and_interpolations() -> None:
    bt = ppdet.BatchRandomResize()
    draws = [bt.draw(np.random.default_rng(i)) for i in range(400)]
    assert {t for t, _ in draws} == set(ppdet.PPYOLOE_TARGET_SIZES) == set(range(320, 769, 32))
    assert {i for _, i in draws} == {"nearest", "linear", "area", "cubic", "lanczos4"}
    fixed = ppdet.BatchRandomResize([320], random_size=False, random_interp=False)
    assert fixed.draw(np.random.default_rng(0)) == (320, "nearest")
    s = painted(np.random.default_rng(0), 50, 200)
    kept = ppdet.BatchRandomResize([100], keep_ratio=True)([s])[0]
    assert kept["img"].shape[:2] == (25, 100)
    # Every input size lands on exactly t × t (cv2's factors round back to t).
    for h, w in [(1, 1), (3, 997), (479, 640), (427, 640), (333, 500)]:
        img = np.zeros((h, w, 3), np.uint8)
        for t in (320, 544, 768):
            o = ppdet.BatchRandomResize.resize({**s, "img": img}, t, "linear")
            assert o["img"].shape == (t, t, 3)
    with pytest.raises(OdetError, match="positive integers"):
        ppdet.BatchRandomResize([0, 32])


# ------------------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("seed", range(4))
def test_pipeline_geometry_end_to_end(seed: int) -> None:
    data = DataConfig(train_pipeline="ppyoloe", ppyoloe_distort=False, ppyoloe_expand_prob=1.0)
    pipe = build_train_pipeline(data, None)
    rng = np.random.default_rng(seed)
    samples = [pipe(painted(rng, 120, 160, first=9 * i, n=9), rng) for i in range(3)]
    for s in samples:
        check_geometry(s)
    out = pipe.batch_transform(samples)
    side = out[0]["img"].shape[0]
    assert side in data.ppyoloe_target_sizes and all(o["img"].shape == (side, side, 3) for o in out)
    checked = 0
    for o in out:
        f = max(o["scale_factor"])  # this sample's resize factor (expand and crop do not scale)
        checked += check_geometry(o, margin=math.ceil(4.5 * f) + 1, tol_px=f + 0.5, tol_val=0.01)
    assert checked > 0


def test_recipes_use_upstream_reader() -> None:
    for name in ["s", "m", "l", "x", "plus_s", "plus_m", "plus_l", "plus_x"]:
        cfg = load_recipe(REPO / "recipes" / f"ppyoloe_{name}.yaml")
        d = cfg.data
        assert d.train_pipeline == "ppyoloe" and d.flip_prob == 0.5
        assert d.ppyoloe_target_sizes == list(range(320, 769, 32)) and d.ppyoloe_random_interp
        assert d.ppyoloe_distort and d.ppyoloe_crop
        assert (d.ppyoloe_expand_prob, d.ppyoloe_expand_ratio) == (0.5, 4.0)
        assert d.ppyoloe_expand_fill == list(FILL_RGB)
        pipe = build_train_pipeline(d, None)
        kinds = [type(t) for t in pipe.transforms]
        assert kinds == [
            ppdet.RandomDistort,
            ppdet.RandomExpand,
            ppdet.IoUConstrainedCrop,
            RandomFlip,
            ppdet.DrawBatchSeed,
        ]
        distort, _expand, crop = pipe.transforms[:3]
        assert distort.hue == (-18, 18, 0.5) and distort.brightness == (0.5, 1.5, 0.5) and distort.count == 4
        assert crop.thresholds == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9) and crop.scaling == (0.3, 1.0)
        assert (crop.aspect_ratio, crop.num_attempts, crop.allow_no_crop) == ((0.5, 2.0), 50, True)
        bt = pipe.batch_transform
        assert (bt.random_size, bt.random_interp, bt.keep_ratio) == (True, True, False)
    assert DataConfig().ppyoloe_target_sizes == list(range(320, 769, 32))
    with pytest.raises(OdetError, match="probability"):
        build_train_pipeline(DataConfig(train_pipeline="ppyoloe", ppyoloe_expand_prob=1.5), None)


# --------------------------------------------------------------------------------------- loader
def _coco8(sizes: list[int]):
    # The demo with upstream's full per-sample chain (it turns distortion, zoom-out and crop off).
    overrides = [f"data.ppyoloe_target_sizes={sizes}", "data.ppyoloe_expand_prob=0.5"]
    cfg = load_recipe(DEMO, [*overrides, "data.ppyoloe_crop=true", "data.ppyoloe_distort=true"])
    pipe = build_train_pipeline(cfg.data, None)
    return build_dataset(cfg.data, cfg.data_root, "train", pipe), pipe.batch_transform


def test_loader_batches_have_one_size_drawn_per_batch() -> None:
    sizes = [64, 96, 128, 160]
    ds, bt = _coco8(sizes)

    def run(num_workers: int, epochs: int) -> list[int]:
        loader = build_loader(
            ds, batch_size=2, shuffle=True, num_workers=num_workers, seed=5, pad_value=0, size_divisor=32,
            batch_transform=bt,
        )  # fmt: skip
        seen = []
        for _ in range(epochs):
            for images, targets, metas in loader:
                b, c, h, w = images.shape
                assert (b, c) == (2, 3) and h == w and h in sizes and images.dtype == torch.float32
                assert all(tuple(m["img_shape"]) == (h, w) for m in metas)
                for t in targets:
                    boxes = t["boxes"]
                    assert ((boxes >= 0) & (boxes <= h)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
                seen.append(h)
        return seen

    seen = run(0, 3)
    assert len(set(seen)) > 1  # changes between batches
    assert run(0, 3) == seen  # fixed by the loader seed…
    assert run(2, 1) == seen[:4]  # …whatever the number of workers
    train_loader = build_loader(
        ds, batch_size=4, shuffle=True, num_workers=0, seed=1, drop_last=True, pad_value=0, size_divisor=32,
        batch_transform=bt,
    )  # fmt: skip
    train_loader.batch_sampler.set_epoch(0)
    for images, _, _ in train_loader:
        assert images.shape[-1] == images.shape[-2] and images.shape[-1] in sizes


def test_odet_train_ppyoloe_demo_one_step(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "train", str(DEMO), "--run-dir", str(tmp_path / "run"),
        "--set", "train.epochs=1", "--set", "data.num_workers=0", "--set", "data.batch_size=8",
        "--set", "data.ppyoloe_target_sizes=[96, 128]", "--set", "model.test_scale=[96, 96]",
        "--set", "data.ppyoloe_expand_prob=0.5", "--set", "data.ppyoloe_crop=true",
        "--set", "data.ppyoloe_distort=true",
        "--set", "train.log_interval=1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "last.safetensors").exists()
