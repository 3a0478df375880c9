"""Shared paths and fixtures: the upstream references and the COCO128 images live in ../shared."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"
MMDET_REF = REFERENCE / "mmdet"
PPDET_REF = REFERENCE / "ppdet"
COCO128 = SHARED / "data" / "coco128"


DEMO = REPO / "recipes" / "demo.yaml"


def small_demo_args(size: int = 64, batch_size: int = 2, nms_pre: int = 100) -> list[str]:
    """``--set`` arguments that shrink ``recipes/demo.yaml`` to a seconds-long CLI run: ``size`` px
    images, ``batch_size`` images per step, data loaded in the main process, ``nms_pre`` pairs per level."""
    settings = [
        f"model.test_scale=[{size}, {size}]",
        f"data.img_scale=[{size}, {size}]",
        f"data.crop_size=[{size}, {size}]",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        f"model.nms_pre={nms_pre}",
    ]
    return [arg for setting in settings for arg in ("--set", setting)]


COCO8 = REPO / "recipes" / "data" / "coco8"


def box_colour(label: int) -> tuple[int, int, int]:
    """Distinct BGR colour of ``label`` for painted test images (216 of them): no channel equals the
    pad value 114, a background of (10, 10, 10) or PP-YOLOE's (fractional) expand fill."""
    steps = (40, 76, 112, 148, 184, 220)
    return steps[label % 6], steps[(label // 6) % 6], steps[(label // 36) % 6]


def make_sample(
    img: Any, boxes: Any, labels: Any = None, *, image_id: int = 0, file_name: str | None = None
) -> dict:
    """An untransformed sample dict (``odcli.data.sample.Sample``) around a synthetic (H, W, 3) image:
    ``boxes`` as (N, 4) float32 xyxy pixels, ``labels`` (N,) int64 (default 0..N-1), shapes (H, W),
    scale factor (1, 1); ``file_name`` defaults to ``<image_id>.png``."""
    import numpy as np

    h, w = img.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return {
        "img": img,
        "boxes": boxes,
        "labels": np.arange(len(boxes), dtype=np.int64) if labels is None else labels,
        "image_id": image_id,
        "file_name": f"{image_id}.png" if file_name is None else file_name,
        "ori_shape": (h, w),
        "img_shape": (h, w),
        "pad_shape": (h, w),
        "scale_factor": (1.0, 1.0),
    }


def write_yolo_dataset(root: Path, splits: dict[str, list[int]]) -> dict[str, list[str]]:
    """Rewrite coco8 as an Ultralytics YOLO dataset under ``root``: for each split name, the coco8
    images of the given indices (0..7) symlinked into ``images/<split>/`` with their labels in
    ``labels/<split>/`` (``class cx cy w h`` normalised; crowd boxes left out). No names file.

    Returns:
        split name → the image file names written there.
    """
    data = json.loads((COCO8 / "annotations" / "instances.json").read_text())
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(cats)}
    images = sorted(data["images"], key=lambda im: im["file_name"])
    written: dict[str, list[str]] = {}
    for split, picks in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in picks:
            im = images[i]
            (root / "images" / split / im["file_name"]).symlink_to(COCO8 / "images" / im["file_name"])
            lines = []
            for a in data["annotations"]:
                if a["image_id"] == im["id"] and not a.get("iscrowd", 0):
                    x, y, w, h = a["bbox"]
                    cx, cy = (x + w / 2) / im["width"], (y + h / 2) / im["height"]
                    nw, nh = w / im["width"], h / im["height"]
                    lines.append(f"{index[a['category_id']]} {cx:.8f} {cy:.8f} {nw:.8f} {nh:.8f}")
            label = root / "labels" / split / Path(im["file_name"]).with_suffix(".txt")
            label.write_text("\n".join(lines))
            written.setdefault(split, []).append(im["file_name"])
    return written


def coco8_class_names() -> list[str]:
    data = json.loads((COCO8 / "annotations" / "instances.json").read_text())
    return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]


RTMDET_PTH = MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference RTMDet-tiny .pth converted to an odet checkpoint with ``odet convert-weights``."""
    from typer.testing import CliRunner

    from odcli.cli.main import app

    require(RTMDET_PTH)
    dst = tmp_path_factory.mktemp("convert") / "rtmdet_tiny.safetensors"
    result = CliRunner().invoke(app, ["convert-weights", str(RTMDET_PTH), str(dst), "--arch", "rtmdet_tiny"])
    assert result.exit_code == 0, result.output
    assert "rtmdet_tiny" in result.stdout and "468" in result.stdout  # summary: arch, tensors
    return dst


#: Set by ``.ci/run``: there the upstream fixtures in ../shared must be present, so a missing one fails.
IN_CI = os.environ.get("ODET_CI") == "1"


def require(path: Path) -> Path:
    """The shared fixture at ``path``. Absent: the calling test fails under CI (``ODET_CI=1``, set by
    ``.ci/run``) — a reference test that silently skips proves nothing — and skips, saying why, in a
    plain checkout without ``../shared``."""
    if not path.exists():
        if IN_CI:
            pytest.fail(f"missing shared fixture {path}: CI runs with ../shared beside the checkout")
        pytest.skip(f"missing shared fixture {path} (clone ../shared beside the checkout to run this)")
    return path


@pytest.fixture(scope="session")
def rtmdet_ref() -> dict:
    """RTMDet-tiny reference: the batch-A inputs, metadata and converted model."""
    import torch
    from safetensors.torch import load_file

    import odcli

    root = require(MMDET_REF / "rtmdet_tiny_fp16")
    model = odcli.build_detector("rtmdet_tiny", num_classes=80)
    odcli.load_weights(model, root / "checkpoint_fp16.pth")
    torch.manual_seed(0)
    return {
        "model": model,
        "inputs": load_file(MMDET_REF / "inputs" / "rtmdet_batchA.safetensors")["inputs"],
        "meta": json.loads((MMDET_REF / "inputs" / "rtmdet_batchA.json").read_text()),
        "root": root,
    }


@pytest.fixture(scope="session")
def retinanet_ref() -> dict:
    """RetinaNet-R18 reference: batch A built by odet's own test pipeline, the converted model, and
    its raw outputs (one forward pass shared by the tests: it takes ~10 s on a small CPU).

    The outputs are computed in **train** mode on purpose: with ``norm_eval`` (and no BN outside
    the backbone) they must equal upstream's eval-mode outputs, so the comparison also checks that
    ``model.train()`` leaves every backbone BN in eval mode.
    """
    import hashlib

    import numpy as np
    import torch

    import odcli
    from odcli.data import build_test_transforms, collate, read_image
    from odcli.data.normalize import prepare_batch

    root = require(MMDET_REF / "retinanet_r18_fp16")
    meta = json.loads((MMDET_REF / "inputs" / "retinanet_batchA.json").read_text())
    model = odcli.build_detector("retinanet_r18", num_classes=80)
    odcli.load_weights(model, root / "checkpoint_fp16.pth")
    transforms = build_test_transforms(scale=(1333, 800), pad=False)
    samples, digests_ok = [], []
    for image in meta["images"]:
        img = read_image(require(COCO128 / "images" / image["img_path"]))
        h, w = img.shape[:2]
        sample = transforms(
            {
                "img": img,
                "boxes": np.zeros((0, 4), np.float32),
                "labels": np.zeros((0,), np.int64),
                "image_id": image["img_id"],
                "file_name": image["img_path"],
                "ori_shape": (h, w),
                "img_shape": (h, w),
                "pad_shape": (h, w),
                "scale_factor": (1.0, 1.0),
            }
        )
        chw = np.ascontiguousarray(sample["img"].transpose(2, 0, 1))  # upstream hashes uint8 BGR CHW
        digests_ok.append(hashlib.sha256(chw.tobytes()).hexdigest() == image["pipeline_output_sha256"])
        samples.append(sample)
    images, _, metas = collate(samples, pad_value=0, size_divisor=32)
    inputs = prepare_batch(images, metas, model.input_spec, "cpu")
    model.train()
    with torch.no_grad():
        backbone = model.backbone(inputs)
        neck = model.neck(backbone)
        cls_scores, bbox_preds = model.head(neck)
    model.eval()
    return {
        "model": model,
        "inputs": inputs,
        "metas": metas,
        "meta": meta,
        "digests_ok": digests_ok,
        "backbone": backbone,
        "neck": neck,
        "cls_scores": cls_scores,
        "bbox_preds": bbox_preds,
        "root": root,
    }


@pytest.fixture(scope="session")
def ppyoloe_ref() -> dict:
    """PP-YOLOE-s reference: the converted ``.pdparams`` model (eval mode), batch A as upstream
    preprocessed it, and the model's raw outputs on it (one forward pass shared by the tests)."""
    import numpy as np
    import torch

    import odcli

    root = require(PPDET_REF / "ppyoloe_crn_s_300e_coco")
    model = odcli.build_detector("ppyoloe_s", num_classes=80)
    odcli.load_weights(model, root / "model.pdparams")
    model.eval()
    inputs = dict(np.load(root / "batch_A" / "inputs.npz"))
    images = torch.from_numpy(inputs["image"])
    with torch.no_grad():
        cls_logits, reg_dists = model(images)
    return {
        "model": model,
        "root": root,
        "inputs": inputs,
        "images": images,
        "cls_logits": cls_logits,
        "reg_dists": reg_dists,
    }
