"""Converted MMDetection RTMDet-tiny weights reproduce upstream outputs on real COCO images."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import odcli
from odcli.boxes.overlaps import pairwise_iou
from odcli.errors import OdetError

PUBLISHED_PARAMS = {  # total parameters, 80 classes (tiny exact from the reference, others published)
    "rtmdet_tiny": (4_896_168, 0),
    "rtmdet_s": (8.89e6, 0.005e6),
    "rtmdet_m": (24.71e6, 0.005e6),
    "rtmdet_l": (52.3e6, 0.05e6),
    "rtmdet_x": (94.86e6, 0.005e6),
}


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_parameter_counts_equal_published(name: str) -> None:
    model = odcli.build_detector(name, num_classes=80)
    total = sum(p.numel() for p in model.parameters())
    expected, tol = PUBLISHED_PARAMS[name]
    assert abs(total - expected) <= tol, total


def test_tiny_parameter_split_equals_upstream() -> None:
    model = odcli.build_detector("rtmdet_tiny")
    counts = [sum(p.numel() for p in m.parameters()) for m in (model.backbone, model.neck, model.head)]
    assert counts == [2_348_700, 2_188_944, 358_524]


def test_raw_head_outputs_match(rtmdet_ref: dict) -> None:
    model = rtmdet_ref["model"].eval()
    ref = load_file(rtmdet_ref["root"] / "batchA_head_outputs.safetensors")
    with torch.no_grad():
        cls_scores, bbox_preds = model(rtmdet_ref["inputs"])
    for level in range(3):
        assert cls_scores[level].shape == ref[f"cls_scores.{level}"].shape
        assert (cls_scores[level] - ref[f"cls_scores.{level}"]).abs().max() <= 2e-3
        assert (bbox_preds[level] - ref[f"bbox_preds.{level}"]).abs().max() <= 2e-2


def test_feature_statistics_match(rtmdet_ref: dict) -> None:
    model = rtmdet_ref["model"].eval()
    stats = load_file(rtmdet_ref["root"] / "batchA_feature_stats.safetensors")
    with torch.no_grad():
        backbone = model.backbone(rtmdet_ref["inputs"])
        neck = model.neck(backbone)
    for prefix, feats in (("backbone", backbone), ("neck", neck)):
        for i, f in enumerate(feats):
            assert list(f.shape) == stats[f"{prefix}.{i}.shape"].tolist()
            for stat, value in (("mean", f.mean(dim=(0, 2, 3))), ("std", f.std(dim=(0, 2, 3)))):
                ref = stats[f"{prefix}.{i}.channel_{stat}"]
                torch.testing.assert_close(
                    value, ref.to(value.dtype), rtol=1e-3, atol=1e-3 * ref.abs().max().item()
                )


def _match(ref_boxes, ref_scores, ref_labels, boxes, scores, labels) -> torch.Tensor:
    """For each reference detection: matched (same label, IoU > 0.99, score within 1e-4)."""
    iou = pairwise_iou(ref_boxes, boxes) * (ref_labels[:, None] == labels[None, :])
    best, j = iou.max(dim=1)
    return (best > 0.99) & ((ref_scores - scores[j]).abs() <= 1e-4)


def test_detections_match_as_sets(rtmdet_ref: dict) -> None:
    model = rtmdet_ref["model"].eval()
    ref = load_file(rtmdet_ref["root"] / "batchA_predictions.safetensors")
    metas = [
        {"img_shape": m["img_shape"], "scale_factor": m["scale_factor"]} for m in rtmdet_ref["meta"]["images"]
    ]
    for rescale, tag in ((True, ""), (False, "norescale.")):
        dets = model.predict(rtmdet_ref["inputs"], metas, rescale=rescale)
        for i, det in enumerate(dets):
            rb, rs, rl = (ref[f"img{i}.{tag}{k}"] for k in ("bboxes", "scores", "labels"))
            assert len(det["boxes"]) == len(rb) == 300
            ok = _match(rb, rs, rl.long(), det["boxes"], det["scores"], det["labels"])
            # Only the tail can differ: detections ranked near the max_per_img cut-off.
            assert ok.float().mean() >= 0.98
            assert ok[:250].all()


def test_training_losses_match(rtmdet_ref: dict) -> None:
    model = rtmdet_ref["model"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = json.loads((rtmdet_ref["root"] / "batchA_losses.json").read_text())["run1"]
    targets = [
        {"boxes": torch.tensor(m["gt_bboxes_in_input_coords"]), "labels": torch.tensor(m["gt_labels"])}
        for m in rtmdet_ref["meta"]["images"]
    ]
    model.train()
    try:
        losses = model.loss(rtmdet_ref["inputs"], targets)
    finally:
        model.load_state_dict(state)  # train-mode BN updated the running stats
        model.eval()
    assert losses["loss_cls"].item() == pytest.approx(ref["loss_cls_sum"], rel=1e-3)
    assert losses["loss_bbox"].item() == pytest.approx(ref["loss_bbox_sum"], rel=1e-3)


def test_image_without_boxes_gives_finite_cls_and_zero_box_loss() -> None:
    torch.manual_seed(0)
    model = odcli.build_detector("rtmdet_tiny", num_classes=3).train()
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    losses = model.loss(images, targets)
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0
    assert losses["loss_bbox"].item() == 0.0
    sum(losses.values()).backward()


def test_wrong_size_checkpoint_names_the_tensors(rtmdet_ref: dict) -> None:
    model = odcli.build_detector("rtmdet_s")
    with pytest.raises(OdetError) as err:
        odcli.load_weights(model, rtmdet_ref["root"] / "checkpoint_fp16.pth")
    message = str(err.value)
    assert "\n" not in message
    assert (
        "does not fit rtmdet_s" in message
        and "shape mismatch" in message
        and "backbone.stem.0.conv.weight" in message
    )


def test_inference_optimised_model_matches(rtmdet_ref: dict) -> None:
    """BN folded into convs + channels-last keeps the outputs within the reference tolerance."""
    import copy

    from odcli.models.fuse import optimize_for_inference

    model = optimize_for_inference(copy.deepcopy(rtmdet_ref["model"]).eval())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    ref = load_file(rtmdet_ref["root"] / "batchA_head_outputs.safetensors")
    with torch.no_grad():
        cls_scores, bbox_preds = model(rtmdet_ref["inputs"].contiguous(memory_format=torch.channels_last))
    for level in range(3):
        assert (cls_scores[level] - ref[f"cls_scores.{level}"]).abs().max() <= 2e-3
        assert (bbox_preds[level] - ref[f"bbox_preds.{level}"]).abs().max() <= 2e-2
