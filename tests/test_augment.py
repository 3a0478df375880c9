"""RTMDet's strong augmentation: cached Mosaic/MixUp, large-scale jitter, the two-stage switch, YOLO data.

Geometry is checked on painted images: every box of every synthetic image has its own colour (unique
across images, so mixed images stay decodable) and the background/padding colours are not in the
palette. After a transform, (a) the inside of each output box still shows its colour and (b) every
"solid" pixel of a colour (3×3 neighbourhood of that exact colour) lies inside a box with that label,
so boxes and pixels moved together in both directions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.data import (
    CachedMixUp,
    CachedMosaic,
    CocoDetection,
    Compose,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    StagedPipeline,
    YoloDetection,
    YOLOXHSVRandomAug,
    build_dataset,
    build_loader,
)
from odcli.data.mix import blend_half
from odcli.data.mix_cache import DatasetPartners
from odcli.data.pipelines import build_train_pipeline
from odcli.errors import OdetError
from odcli.models.zoo import input_spec_of
from odcli.recipe import load_recipe
from tests.conftest import COCO8, DEMO, REPO, box_colour, coco8_class_names, make_sample, write_yolo_dataset

BACKGROUND = (10, 10, 10)
PAD = 114
BOXES_PER_IMAGE = 6


def painted(rng: np.random.Generator, h: int, w: int, first_label: int, image_id: int = 0) -> dict:
    """An (h, w) image with BOXES_PER_IMAGE non-overlapping integer boxes (one per grid cell, >= 10 px,
    >= 3 px apart), box k painted box_colour(first_label + k) and labelled first_label + k."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    gx, gy = 3, 2
    cw, ch = w // gx, h // gy
    boxes = []
    for k in range(BOXES_PER_IMAGE):
        cx, cy = (k % gx) * cw, (k // gx) * ch
        bw, bh = int(rng.integers(10, cw - 3)), int(rng.integers(10, ch - 3))
        x1, y1 = cx + int(rng.integers(0, cw - 3 - bw + 1)), cy + int(rng.integers(0, ch - 3 - bh + 1))
        img[y1 : y1 + bh, x1 : x1 + bw] = box_colour(first_label + k)
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    labels = np.arange(first_label, first_label + BOXES_PER_IMAGE, dtype=np.int64)
    return make_sample(img, boxes, labels, image_id=image_id)


def stream(seed: int, count: int, sizes: tuple[tuple[int, int], ...] = ((120, 180), (180, 120), (90, 150))):
    """``count`` painted samples with distinct label ranges (image i: labels 6i..6i+5)."""
    rng = np.random.default_rng(seed)
    return [
        painted(rng, *sizes[i % len(sizes)], first_label=BOXES_PER_IMAGE * i, image_id=i)
        for i in range(count)
    ]


def check_canvas(s: dict, positive: bool = True) -> None:
    """Boxes inside the image (and with positive width/height when ``positive``); shapes consistent."""
    h, w = s["img"].shape[:2]
    b = s["boxes"]
    assert b.dtype == np.float32 and b.shape == (len(s["labels"]), 4)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    if positive:
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all(), b
    assert tuple(s["img_shape"]) == (h, w) or tuple(s["pad_shape"]) == (h, w)


def check_painted(
    s: dict,
    boxes: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    margin: int = 3,
    tol: float = 2.0,
) -> int:
    """(a) and (b) of the module docstring for ``boxes``/``labels`` (default: all of ``s``); returns the
    number of boxes whose inside was checked."""
    img = s["img"].astype(np.int16)
    boxes = s["boxes"] if boxes is None else boxes
    labels = s["labels"] if labels is None else labels
    checked = 0
    for (x1, y1, x2, y2), lab in zip(boxes, labels, strict=True):
        xa, ya, xb, yb = (
            int(np.ceil(x1)) + margin,
            int(np.ceil(y1)) + margin,
            int(x2) - margin,
            int(y2) - margin,
        )
        if xb > xa and yb > ya:
            diff = np.abs(img[ya:yb, xa:xb] - np.array(box_colour(int(lab)), np.int16))
            assert diff.max() <= 1, f"box {lab} at {(x1, y1, x2, y2)} does not cover its colour"
            checked += 1
    kernel = np.ones((3, 3), np.uint8)
    for lab in np.unique(labels):
        mask = np.all(s["img"] == np.array(box_colour(int(lab)), np.uint8), axis=-1).astype(np.uint8)
        ys, xs = np.nonzero(cv2.erode(mask, kernel))
        if not len(xs):
            continue
        own = boxes[labels == lab]
        inside = np.zeros(len(xs), bool)
        for x1, y1, x2, y2 in own:
            inside |= (xs >= x1 - tol) & (xs + 1 <= x2 + tol) & (ys >= y1 - tol) & (ys + 1 <= y2 + tol)
        assert inside.all(), (
            f"colour of label {lab} outside its boxes at {(xs[~inside][:3], ys[~inside][:3])}"
        )
    return checked


# --------------------------------------------------------------------------------------------------
# Single-image transforms, large-scale jitter
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [(0.1, 2.0), (0.5, 2.0)])
def test_random_resize_large_scale_jitter_keeps_boxes_on_pixels(ratio: tuple[float, float]) -> None:
    t = RandomResize((160, 160), ratio_range=ratio)
    rng = np.random.default_rng(1)
    longs = []
    for s in stream(0, 12):
        out = t(s, rng)
        check_canvas(out, positive=False)  # a 0.1× resize may squash a box; RandomCrop removes it later
        check_painted(out)
        longs.append(max(out["img"].shape[:2]))
    assert min(longs) >= int(160 * ratio[0]) - 1 and max(longs) <= 160 * ratio[1]
    assert max(longs) - min(longs) > 100  # the jitter really spans the range


def test_random_crop_clips_and_drops_empty_boxes() -> None:
    rng = np.random.default_rng(2)
    t = RandomCrop((70, 50))
    dropped = 0
    for s in stream(3, 10):
        out = t(s, rng)
        assert out["img"].shape[:2] == (50, 70)
        check_canvas(out)  # clipped into the window, no zero-size box left
        check_painted(out, margin=2)
        dropped += len(s["boxes"]) - len(out["boxes"])
    assert dropped > 0


def test_flip_pad_hsv_keep_boxes() -> None:
    rng = np.random.default_rng(4)
    for s in stream(5, 6):
        flipped = RandomFlip(1.0)(s, rng)
        check_painted(flipped)
        padded = Pad(size=(200, 200), pad_val=PAD)(s, rng)
        assert padded["img"].shape[:2] == (200, 200) and (padded["img"][190:, 190:] == PAD).all()
        check_painted(padded)
        jittered = YOLOXHSVRandomAug()(s, rng)
        np.testing.assert_array_equal(jittered["boxes"], s["boxes"])
        for x1, y1, x2, y2 in s["boxes"].astype(int):  # per-pixel maps: each box stays one colour
            inner = jittered["img"][y1:y2, x1:x2].reshape(-1, 3).astype(int)
            # (±1: OpenCV's vectorised and scalar HSV→BGR paths round differently)
            assert (inner.max(axis=0) - inner.min(axis=0)).max() <= 1


def test_transforms_never_write_their_inputs() -> None:
    """Read-only inputs: any in-place write raises. This is what makes caching sample dicts safe."""
    rng = np.random.default_rng(6)
    samples = stream(7, 8)
    for s in samples:
        s["img"].flags.writeable = False
        s["boxes"].flags.writeable = False
        s["labels"].flags.writeable = False
    mosaic = CachedMosaic((64, 64), max_cached_images=5, pad_val=PAD)
    mixup = CachedMixUp((64, 64), ratio_range=(0.5, 1.5), max_cached_images=3, pad_val=PAD)
    steps = [
        RandomResize((100, 100)),
        RandomCrop((60, 60)),
        YOLOXHSVRandomAug(),
        RandomFlip(1.0),
        Pad((256, 256)),
    ]
    for s in samples:
        for t in steps:
            t(s, rng)
        check_canvas(mixup(mosaic(s, rng), rng))
    entry = mosaic.cache.entries[0]
    with pytest.raises(ValueError):
        entry["img"][0, 0] = 0  # the cache's view is read-only


# --------------------------------------------------------------------------------------------------
# CachedMosaic / CachedMixUp
# --------------------------------------------------------------------------------------------------


def test_cached_mosaic_geometry() -> None:
    rng = np.random.default_rng(8)
    t = CachedMosaic(img_scale=(96, 80), max_cached_images=6, random_pop=True, pad_val=PAD)
    checked = mosaics = 0
    for i, s in enumerate(stream(9, 16, sizes=((120, 180), (60, 50), (200, 90)))):
        out = t(s, rng)
        if i < 4:
            assert out is s  # <= 4 cached samples: passes through unchanged, as upstream
            continue
        mosaics += 1
        assert out["img"].shape == (160, 192, 3) and out["img_shape"] == out["pad_shape"] == (160, 192)
        check_canvas(out)
        checked += check_painted(out)
        assert (out["img"] == PAD).all(axis=-1).any()  # the canvas around the tiles is padding
        assert len(t.cache) <= 6
    assert mosaics == 12 and checked > 30


def test_cached_mosaic_removes_boxes_outside_the_canvas() -> None:
    # A tile larger than its quadrant is cut at the canvas border; boxes in the cut part must go.
    rng = np.random.default_rng(10)
    t = CachedMosaic(img_scale=(100, 100), center_ratio_range=(0.5, 0.5), max_cached_images=8)
    samples = stream(11, 6, sizes=((100, 100),))
    for s in samples[:-1]:
        t(s, rng)
    out = t.combine([samples[-1]] * 4, rng)  # centre (50, 50): each 100×100 tile keeps one 50×50 corner
    check_canvas(out)  # boxes of the cut parts are gone, not squashed onto the border
    check_painted(out)
    # A box in the top-left grid cell (x < 33, y < 50) is entirely cut from the top-left tile.
    assert len(out["boxes"]) < 4 * BOXES_PER_IMAGE


class _Split(CachedMixUp):
    """MixUp whose output shows only one side of the blend (``side``), to test each side's geometry;
    records how many boxes came from the current image."""

    def __init__(self, side: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.side = side
        self.n_own = -1

    def blend(self, img: np.ndarray, partner: np.ndarray) -> np.ndarray:
        if self.side == "own":
            return img.copy()
        if self.side == "partner":
            return np.ascontiguousarray(partner)
        return super().blend(img, partner)

    def mix(self, sample: dict, partner: dict, rng: np.random.Generator) -> dict:
        self.n_own = len(sample["boxes"])
        return super().mix(sample, partner, rng)


@pytest.mark.parametrize("ratio", [(1.0, 1.0), (0.5, 1.5)])
def test_cached_mixup_geometry_and_blend(ratio: tuple[float, float]) -> None:
    kw = {
        "img_scale": (128, 128),
        "ratio_range": ratio,
        "max_cached_images": 4,
        "random_pop": False,
        "pad_val": PAD,
    }
    sides = {side: _Split(side, **kw) for side in ("own", "partner", "real")}
    mixed = checked = 0
    for i, s in enumerate(stream(12, 12, sizes=((120, 180), (96, 96), (200, 90)))):
        outs = {side: t(s, np.random.default_rng(i)) for side, t in sides.items()}
        if outs["real"] is s:
            continue
        mixed += 1
        n_own = sides["real"].n_own
        for out in outs.values():
            assert out["img"].shape == s["img"].shape
            check_canvas(out)
            np.testing.assert_array_equal(out["boxes"], outs["real"]["boxes"])
        np.testing.assert_array_equal(outs["own"]["boxes"][:n_own], s["boxes"])
        check_painted(outs["own"], s["boxes"], s["labels"])
        checked += check_painted(
            outs["partner"], outs["partner"]["boxes"][n_own:], outs["partner"]["labels"][n_own:]
        )
        # The real image is the truncated average of the two sides, as upstream's float formula.
        expected = 0.5 * outs["own"]["img"].astype(np.float32) + 0.5 * outs["partner"]["img"].astype(
            np.float32
        )
        np.testing.assert_array_equal(outs["real"]["img"], expected.astype(np.uint8))
    assert mixed >= 9 and checked > 10


def test_blend_half_equals_float_formula() -> None:
    rng = np.random.default_rng(13)
    a, b = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        blend_half(a, b), (0.5 * a.astype(np.float32) + 0.5 * b.astype(np.float32)).astype(np.uint8)
    )


def test_strong_composition_keeps_boxes_on_pixels() -> None:
    """Mosaic → large-scale jitter → crop → flip → pad → MixUp (own side), as the strong stage runs."""
    mixup = _Split("own", img_scale=(128, 128), max_cached_images=5, ratio_range=(1.0, 1.0), pad_val=PAD)
    pipe = Compose([
        CachedMosaic((128, 128), max_cached_images=5, random_pop=False, pad_val=PAD),
        RandomResize((256, 256), ratio_range=(0.1, 2.0)),
        RandomCrop((128, 128)),
        RandomFlip(0.5),
        Pad((128, 128), pad_val=PAD),
        mixup,
    ])  # fmt: skip
    checked = 0
    for i, s in enumerate(stream(14, 14)):
        mixup.n_own = -1
        out = pipe(s, np.random.default_rng(100 + i))
        assert out["img"].shape == (128, 128, 3)
        check_canvas(out)
        n = len(out["boxes"]) if mixup.n_own < 0 else mixup.n_own
        checked += check_painted(out, out["boxes"][:n], out["labels"][:n])
    assert checked > 10


def test_cache_size_and_fifo_eviction() -> None:
    rng = np.random.default_rng(15)
    fifo = CachedMosaic((64, 64), max_cached_images=5, random_pop=False)
    rand = CachedMixUp((64, 64), max_cached_images=3, random_pop=True)
    for i, s in enumerate(stream(16, 12, sizes=((60, 60),))):
        fifo(s, rng)
        rand(s, rng)
        assert len(fifo.cache) == min(i + 1, 5) and len(rand.cache) == min(i + 1, 3)
        assert [e["image_id"] for e in fifo.cache.entries] == list(range(max(0, i - 4), i + 1))
        assert {e["image_id"] for e in rand.cache.entries} <= set(range(i + 1))
    fifo.clear_cache()
    assert len(fifo.cache) == 0


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count image decodes of CocoDetection."""
    import odcli.data.coco as coco_module

    calls: list[int] = []
    real = coco_module.read_image

    def counted(path: object) -> np.ndarray:
        calls.append(1)
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(coco_module, "read_image", counted)
    return calls


def test_partners_come_from_the_cache_not_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    ds = CocoDetection(ann_file=COCO8 / "annotations/instances.json", image_dir=COCO8 / "images")
    ds.transforms = Compose([
        CachedMosaic((64, 64), max_cached_images=5),
        RandomCrop((64, 64)),
        CachedMixUp((64, 64), max_cached_images=3),
    ])  # fmt: skip
    for k in range(12):
        ds[(k % len(ds), k)]
    assert len(calls) == 12  # one decode per sample: the incoming image only
    calls.clear()
    ds.transforms = CachedMosaic((64, 64), use_cache=False, partner_source=DatasetPartners(ds))
    for k in range(3):
        ds[(k, k)]
    assert len(calls) == 3 * 4  # without the cache every partner is read and decoded
    with pytest.raises(OdetError, match="partner_source"):
        CachedMixUp(use_cache=False)


# --------------------------------------------------------------------------------------------------
# Two stages, switched inside (persistent) workers
# --------------------------------------------------------------------------------------------------


class _Tag:
    """A transform that records which stage produced the sample (in ``file_name``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return {**sample, "file_name": self.name}


class _TinyDataset(torch.utils.data.Dataset):
    supports_seeded_index = True

    def __init__(self, transforms: StagedPipeline) -> None:
        self.transforms = transforms

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, seed = key
        s = painted(np.random.default_rng(i), 40, 60, 0, image_id=i)
        return self.transforms(s, np.random.default_rng(seed))


def test_stage_switch_reaches_persistent_workers() -> None:
    pipe = StagedPipeline([("strong", _Tag("strong")), ("weak", _Tag("weak"))])
    loader = build_loader(
        _TinyDataset(pipe), batch_size=2, shuffle=True, num_workers=2, persistent_workers=True
    )
    seen = []
    for epoch in range(3):
        if epoch == 2:
            pipe.set_stage("weak")  # between epochs, before the iterator exists (as the trainer does)
        seen.append({m["file_name"] for _, _, metas in loader for m in metas})
    assert seen == [{"strong"}, {"strong"}, {"weak"}]
    with pytest.raises(OdetError, match="unknown pipeline stage"):
        pipe.set_stage("medium")


def test_stage_switch_releases_the_strong_caches() -> None:
    mosaic = CachedMosaic((64, 64), max_cached_images=4)
    pipe = StagedPipeline([("strong", Compose([mosaic])), ("weak", Compose([RandomFlip(0.5)]))])
    for s in stream(17, 3, sizes=((60, 60),)):
        pipe(s, np.random.default_rng(0))
    assert len(mosaic.cache) == 3
    pipe.set_stage("weak")
    pipe(stream(18, 1)[0], np.random.default_rng(0))
    assert len(mosaic.cache) == 0


def test_recipes_carry_upstream_strong_settings() -> None:
    expected = {  # mosaic cache, mixup cache, random_pop, mixup prob, ratio range
        "tiny": (20, 10, False, 0.5, (0.5, 2.0)),
        "s": (40, 20, True, 1.0, (0.5, 2.0)),
        "m": (40, 20, True, 1.0, (0.1, 2.0)),
        "l": (40, 20, True, 1.0, (0.1, 2.0)),
        "x": (40, 20, True, 1.0, (0.1, 2.0)),
    }
    for size, (mosaic_n, mixup_n, random_pop, prob, ratio) in expected.items():
        cfg = load_recipe(REPO / "recipes" / f"rtmdet_{size}.yaml")
        assert cfg.data.train_pipeline == "rtmdet_strong" and cfg.train.switch_epoch == 280
        pipe = build_train_pipeline(cfg.data, input_spec_of(cfg.model))
        assert isinstance(pipe, StagedPipeline) and pipe.names == ["strong", "weak"]
        strong, weak = pipe.stages
        mosaic, resize, crop, _hsv, _flip, pad, mixup = strong.transforms
        assert (mosaic.max_cached_images, mixup.max_cached_images) == (mosaic_n, mixup_n)
        assert mosaic.random_pop is mixup.random_pop is random_pop and mixup.prob == prob
        assert mosaic.img_scale == mixup.img_scale == (640, 640) and mixup.ratio_range == (1.0, 1.0)
        assert resize.scale == (1280, 1280) and resize.ratio_range == ratio
        assert crop.crop_size == pad.size == (640, 640) and mosaic.pad_val == mixup.pad_val == 114
        assert weak.transforms[0].scale == (640, 640) and weak.transforms[0].ratio_range == ratio
    demo = load_recipe(DEMO)
    assert demo.data.train_pipeline == "rtmdet" and demo.train.switch_epoch is None


SMALL = [
    "--set", "model.test_scale=[64, 64]",
    "--set", "data.img_scale=[32, 32]",
    "--set", "data.crop_size=[64, 64]",
    "--set", "data.batch_size=4",
    "--set", "data.train_pipeline=rtmdet_strong",
    "--set", "data.mosaic_cache=5",
    "--set", "data.mixup_cache=3",
]  # fmt: skip


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """A single intra-op thread for the duration of a test: on a small, shared CPU two spinning OpenMP
    threads can make a tiny model's training step many times slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
def test_training_switches_pipeline_in_persistent_workers_on_yolo_data(yolo8: Path, tmp_path: Path) -> None:
    """Strong → weak inside 2 persistent workers, on YOLO-format data (train, in-training eval, eval)."""
    yolo = [
        "--set", "data.format=yolo", "--set", f"data.root={yolo8}",
        "--set", "data.train_images=images/train", "--set", "data.val_images=images/train",
    ]  # fmt: skip
    args = [
        "train", str(DEMO), *SMALL, *yolo,
        "--set", "data.num_workers=2", "--set", "data.persistent_workers=true",
        "--set", "model.nms_pre=200", "--set", "train.epochs=2", "--set", "train.switch_epoch=1",
        "--set", "train.warmup_iters=2", "--set", "train.cosine_start_epoch=1",
        "--set", "train.eval_interval=5", "--set", "train.log_interval=1", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "switching to the weak pipeline at epoch 2 (train.switch_epoch=1)" in result.output
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["epoch"] for r in records if "loss" in r} == {1, 2}  # kept training after the switch
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert any("mAP" in r for r in records)  # evaluated on the YOLO validation folder

    out = tmp_path / "eval" / "detections.json"
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "run" / "best.safetensors"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_name("metrics.json").read_text())["ann_file"].endswith("labels/train")


# --------------------------------------------------------------------------------------------------
# YOLO-format data and `odet visualize-data`
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coco8 rewritten as a YOLO dataset (images/train + labels/train + classes.txt)."""
    root = tmp_path_factory.mktemp("yolo8")
    write_yolo_dataset(root, {"train": list(range(8))})
    (root / "classes.txt").write_text("\n".join(coco8_class_names()) + "\n")
    return root


def test_yolo_dataset_matches_coco(yolo8: Path, tmp_path: Path) -> None:
    coco = CocoDetection(ann_file=COCO8 / "annotations/instances.json", image_dir=COCO8 / "images")
    yolo = YoloDetection(image_dir=yolo8 / "images/train")
    assert yolo.classes == coco.classes and yolo.cat_ids == list(range(1, 81))
    assert len(yolo) == len(coco)
    for i in range(len(coco)):
        assert yolo.image_path(i).name == coco.image_path(i).name
        cb, cl = coco.annotations(i)
        yb, yl = yolo.annotations(i)
        np.testing.assert_array_equal(yl, cl)
        np.testing.assert_allclose(yb, cb, atol=1e-2)
    s = yolo[(0, 1)]
    assert s["img"].shape[:2] == tuple(s["ori_shape"])
    assert sorted(yolo.coco.getImgIds()) == yolo.image_ids  # an in-memory COCO index for evaluation
    assert len(yolo.coco.getAnnIds()) == sum(len(yolo.annotations(i)[0]) for i in range(len(yolo)))

    # names from data.yaml ({index: name}); malformed lines fail with file:line
    alt = tmp_path / "alt"
    (alt / "images").mkdir(parents=True)
    (alt / "labels").mkdir()
    (alt / "images/a.jpg").symlink_to(COCO8 / "images/000000000009.jpg")
    (alt / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    (alt / "labels/a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    ds = YoloDetection(image_dir=alt / "images")
    assert ds.classes == ["cat", "dog"] and ds.annotations(0)[1].tolist() == [1]
    (alt / "labels/a.txt").write_text("1 0.5 0.5\n")
    with pytest.raises(OdetError, match=r"a\.txt:1"):
        YoloDetection(image_dir=alt / "images")
    (alt / "labels/a.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(OdetError, match="not an index"):
        YoloDetection(image_dir=alt / "images")


def test_build_dataset_and_visualize_data_on_yolo(yolo8: Path, tmp_path: Path) -> None:
    cfg = load_recipe(DEMO, ["data.format=yolo", f"data.root={yolo8}", "data.train_images=images/train"])
    assert isinstance(build_dataset(cfg.data, cfg.data_root, "train"), YoloDetection)
    out = tmp_path / "grid.png"
    args = [
        "visualize-data", str(DEMO), *SMALL, "--set", "data.format=yolo", "--set", f"data.root={yolo8}",
        "--set", "data.train_images=images/train", "--num", "4", "--tile", "96", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape == (2 * 100 + 4, 2 * 100 + 4, 3)
    bad = CliRunner().invoke(app, ["visualize-data", str(DEMO), "--stage", "strong", "--out", str(out)])
    assert bad.exit_code != 0 and "single stage" in bad.output and "Traceback" not in bad.output
