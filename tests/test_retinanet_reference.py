"""Converted MMDetection RetinaNet-R18 weights reproduce upstream outputs on real COCO images.

Batch A is built by odet's own test pipeline (the reference ships only its hash); one forward pass
(the ``retinanet_ref`` fixture) feeds every comparison. Tolerances are the reference README's.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import odcli
from odcli.assigners.result import IGNORED
from odcli.boxes.overlaps import pairwise_iou
from odcli.errors import OdetError

from .conftest import MMDET_REF, require

R18_SPLIT = (11_176_512, 3_770_368, 6_463_220)  # backbone / neck / head, 80 classes


def _count(module: torch.nn.Module, *, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def test_r18_parameter_counts_equal_upstream() -> None:
    model = odcli.build_detector("retinanet_r18", num_classes=80)
    assert tuple(_count(m) for m in (model.backbone, model.neck, model.head)) == R18_SPLIT
    assert _count(model) == 21_410_100
    # frozen_stages=1: stem + layer1 are not trainable, as MMDetection counts them.
    assert _count(model, trainable=True) == 21_252_596
    assert _count(model.backbone, trainable=True) == 11_019_008


def test_r50_parameter_counts_equal_upstream() -> None:
    model = odcli.build_detector("retinanet_r50", num_classes=80)
    assert _count(model) == 37_968_692
    assert _count(model, trainable=True) == 37_743_348  # the published "37.74M"


def test_pipeline_reproduces_upstream_input(retinanet_ref: dict) -> None:
    assert all(retinanet_ref["digests_ok"])
    assert tuple(retinanet_ref["inputs"].shape) == (2, 3, 800, 1216)
    for ours, ref in zip(retinanet_ref["metas"], retinanet_ref["meta"]["images"], strict=True):
        assert list(ours["img_shape"]) == ref["img_shape"]
        assert list(ours["ori_shape"]) == ref["ori_shape"]
        assert list(ours["scale_factor"]) == pytest.approx(ref["scale_factor"], abs=0)


def test_feature_statistics_match(retinanet_ref: dict) -> None:
    stats = load_file(retinanet_ref["root"] / "batchA_feature_stats.safetensors")
    for prefix in ("backbone", "neck"):
        for i, f in enumerate(retinanet_ref[prefix]):
            assert list(f.shape) == stats[f"{prefix}.{i}.shape"].tolist()
            for stat, value in (("mean", f.mean(dim=(0, 2, 3))), ("std", f.std(dim=(0, 2, 3)))):
                ref = stats[f"{prefix}.{i}.channel_{stat}"]
                # measured: ≤ 3e-6 abs on values up to ~4.5
                assert (value - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_raw_head_outputs_match(retinanet_ref: dict) -> None:
    """Logits within 1e-4 and deltas within 5e-5 abs (measured 3.1e-5 / 8.4e-6), on the stored
    rows/cols of every level, plus the per-channel means of the full maps."""
    ref = load_file(retinanet_ref["root"] / "batchA_head_outputs.safetensors")
    for name, tol in (("cls_scores", 1e-4), ("bbox_preds", 5e-5)):
        outputs = retinanet_ref[name]
        assert len(outputs) == 5
        for level, out in enumerate(outputs):
            rows, cols = ref[f"{name}.{level}.rows"], ref[f"{name}.{level}.cols"]
            sub = out[:, :, rows][:, :, :, cols]
            assert sub.shape == ref[f"{name}.{level}"].shape
            assert (sub - ref[f"{name}.{level}"]).abs().max() <= tol
            assert (out.mean(dim=(0, 2, 3)) - ref[f"{name}.{level}.channel_mean"]).abs().max() <= tol


def _matched(ref_boxes, ref_scores, ref_labels, boxes, scores, labels) -> torch.Tensor:
    """For each reference detection: a detection of the same label with IoU > 0.99, score within 1e-5."""
    iou = pairwise_iou(ref_boxes, boxes) * (ref_labels[:, None] == labels[None, :])
    best, j = iou.max(dim=1)
    return (best > 0.99) & ((ref_scores - scores[j]).abs() <= 1e-5)


def test_detections_match_as_sets(retinanet_ref: dict) -> None:
    model = retinanet_ref["model"]
    ref = load_file(retinanet_ref["root"] / "batchA_predictions.safetensors")
    metas = [
        {"img_shape": m["img_shape"], "scale_factor": m["scale_factor"]}
        for m in retinanet_ref["meta"]["images"]
    ]
    for rescale, tag in ((True, ""), (False, "norescale.")):
        dets = model.head.predict(
            retinanet_ref["cls_scores"], retinanet_ref["bbox_preds"], metas, rescale=rescale
        )
        for i, det in enumerate(dets):
            rb, rs, rl = (ref[f"img{i}.{tag}{k}"] for k in ("bboxes", "scores", "labels"))
            assert len(det["boxes"]) == len(rb) == 100
            assert _matched(rb, rs, rl.long(), det["boxes"], det["scores"], det["labels"]).all()


def test_training_losses_match(retinanet_ref: dict) -> None:
    """Upstream's loss on batch A with its GT exactly as given (unscaled) and each image's own
    pad_shape; measured rel. error 3e-7."""
    ref = json.loads((retinanet_ref["root"] / "batchA_losses.json").read_text())["run1"]
    targets = [
        {
            "boxes": torch.tensor(m["gt_bboxes_in_input_coords"]),
            "labels": torch.tensor(m["gt_labels"]),
            "pad_shape": tuple(m["pad_shape"]),
        }
        for m in retinanet_ref["meta"]["images"]
    ]
    head = retinanet_ref["model"].head
    losses = head.loss(retinanet_ref["cls_scores"], retinanet_ref["bbox_preds"], targets)
    assert losses["loss_cls"].item() == pytest.approx(ref["loss_cls_sum"], rel=1e-4)
    assert losses["loss_bbox"].item() == pytest.approx(ref["loss_bbox_sum"], rel=1e-4)


def test_unrounded_pad_shape_is_rounded_like_upstream(retinanet_ref: dict) -> None:
    """The trainer passes the resized size (800, 1067); upstream's valid region is it rounded up
    to 32 (800, 1088). Both must give the reference valid flags."""
    ref = load_file(require(MMDET_REF / "components" / "retinanet_anchors.safetensors"))
    head = retinanet_ref["model"].head
    expected = torch.cat([ref[f"valid_flags_800x1216_pad800x1088.{level}"] for level in range(5)])
    no_gt = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    for pad in ((800, 1067), (800, 1088)):
        # Without GTs every valid anchor is background and every invalid one ignored.
        targets = [{**no_gt, "pad_shape": pad}, no_gt]
        result = head.assign(retinanet_ref["cls_scores"], retinanet_ref["bbox_preds"], targets)
        flags = result.gt_index != IGNORED
        assert torch.equal(flags[0], expected)
        assert flags[1].all()  # no pad_shape: the whole input counts


def test_wrong_size_checkpoint_names_the_tensors(retinanet_ref: dict) -> None:
    model = odcli.build_detector("retinanet_r50")
    with pytest.raises(OdetError) as err:
        odcli.load_weights(model, retinanet_ref["root"] / "checkpoint_fp16.pth")
    message = str(err.value)
    assert "\n" not in message
    assert "does not fit retinanet_r50" in message and "shape mismatch" in message


def test_converted_file_reproduces_the_model(retinanet_ref: dict, tmp_path) -> None:
    """`odet convert-weights` (fp16 .pth → .safetensors) gives the same float32 tensors."""
    from typer.testing import CliRunner

    from odcli.cli.main import app

    out = tmp_path / "retinanet_r18.safetensors"
    src = retinanet_ref["root"] / "checkpoint_fp16.pth"
    result = CliRunner().invoke(app, ["convert-weights", str(src), str(out), "--arch", "retinanet_r18"])
    assert result.exit_code == 0, result.output
    model = odcli.load_weights(odcli.build_detector("retinanet_r18"), out)
    ours = retinanet_ref["model"].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[key]), key
