"""RTMDet's model-free pieces against MMDetection's own outputs (reference/mmdet/components)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from odcli.assigners import DynamicSoftLabelAssigner
from odcli.boxes.coders import box_to_distance, distance_to_box
from odcli.boxes.priors import multilevel_points
from odcli.losses import giou_loss, quality_focal_loss

from .conftest import MMDET_REF, require

COMP = MMDET_REF / "components"


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads((require(COMP) / "components.json").read_text())


def test_point_priors_equal_upstream() -> None:
    ref = load_file(require(COMP / "rtmdet_points.safetensors"))
    sizes = [(80, 80), (40, 40), (20, 20)]
    for offset, prefix in ((0.0, "points_offset0."), (0.5, "points_offset0.5.")):
        ours = multilevel_points(sizes, (8, 16, 32), offset=offset)
        for level in range(3):
            assert torch.equal(ours[level], ref[f"{prefix}{level}"])


def test_distance_coder_equal_upstream() -> None:
    ref = load_file(require(COMP / "distance_transforms.safetensors"))
    pts, dist, gt = ref["points"], ref["distances"], ref["gt_bboxes"]
    assert torch.equal(distance_to_box(pts, dist), ref["distance2bbox"])
    assert torch.equal(distance_to_box(pts, dist, max_shape=(480, 640)), ref["distance2bbox_maxshape480x640"])
    assert torch.equal(
        distance_to_box(pts, dist, max_shape=(480, 640)), ref["distance_point_coder_decode_maxshape480x640"]
    )
    assert torch.equal(box_to_distance(pts, gt), ref["bbox2distance"])
    assert torch.equal(box_to_distance(pts, gt, max_dis=16, eps=0.01), ref["bbox2distance_maxdis16_eps0.01"])


def test_dynamic_soft_label_assigner_equals_upstream() -> None:
    ref = load_file(require(COMP / "assigners.safetensors"))
    assigner = DynamicSoftLabelAssigner(topk=13, iou_weight=3.0, soft_center_radius=3.0)
    gt_boxes, gt_labels = ref["gt_bboxes"], ref["gt_labels"].long()
    result = assigner(
        ref["dsl.pred_logits"][None],
        ref["dsl.pred_bboxes"][None],
        ref["dsl.priors"],
        gt_boxes[None],
        gt_labels[None],
        torch.ones(1, len(gt_labels), dtype=torch.bool),
    )
    expected = ref["dsl.assigned_gt_inds"].long()
    assert int((expected > 0).sum()) == 41
    assert torch.equal(result.upstream_gt_inds()[0], expected)
    pos = expected > 0
    assert torch.equal(result.labels[0][pos], ref["dsl.labels"].long()[pos])
    torch.testing.assert_close(result.quality[0][pos], ref["dsl.max_overlaps"][pos], rtol=0, atol=1e-6)


def test_dsl_assigner_batches_like_single_images() -> None:
    """Two images with different GT counts in one call = each image alone (padding is inert)."""
    ref = load_file(require(COMP / "assigners.safetensors"))
    assigner = DynamicSoftLabelAssigner()
    logits, boxes, priors = ref["dsl.pred_logits"], ref["dsl.pred_bboxes"], ref["dsl.priors"]
    gt_boxes, gt_labels = ref["gt_bboxes"], ref["gt_labels"].long()
    flipped_logits = logits.flip(0)
    single_a = assigner(
        logits[None], boxes[None], priors, gt_boxes[None], gt_labels[None], torch.ones(1, 8).bool()
    )
    single_b = assigner(
        flipped_logits[None],
        boxes[None],
        priors,
        gt_boxes[None, :3],
        gt_labels[None, :3],
        torch.ones(1, 3).bool(),
    )
    mask = torch.tensor([[True] * 8, [True] * 3 + [False] * 5])
    both = assigner(
        torch.stack([logits, flipped_logits]),
        torch.stack([boxes, boxes]),
        priors,
        torch.stack([gt_boxes, gt_boxes]),
        torch.stack([gt_labels, gt_labels]),
        mask,
    )
    assert torch.equal(both.gt_index[0], single_a.gt_index[0])
    assert torch.equal(both.gt_index[1], single_b.gt_index[0])


def test_dsl_assigner_without_gt_is_all_background() -> None:
    assigner = DynamicSoftLabelAssigner()
    priors = multilevel_points([(4, 4)], (8,))[0]
    result = assigner(
        torch.randn(2, 16, 3),
        torch.rand(2, 16, 4) * 32,
        priors,
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool),
    )
    assert (result.gt_index == -1).all() and (result.quality == 0).all()


def _loss_value(spec: dict, key: str) -> float:
    return next(r["value"] for r in spec["losses"]["results"] if r["key"] == key)


def test_quality_focal_loss_equals_upstream(spec: dict) -> None:
    ref = load_file(require(COMP / "losses.safetensors"))
    logits, labels, quality = ref["logits"], ref["labels"].long(), ref["quality"]
    num_classes = logits.shape[1]
    target = torch.zeros_like(logits)
    pos = (labels >= 0) & (labels < num_classes)
    target[pos.nonzero()[:, 0], labels[pos]] = quality[pos]
    per_sample = quality_focal_loss(logits, target).sum(dim=1)
    torch.testing.assert_close(per_sample, ref["out.qfl_none"], rtol=1e-5, atol=1e-6)
    weighted = (per_sample * ref["label_weights"]).sum()
    assert weighted.item() == pytest.approx(_loss_value(spec, "qfl_rtmdet_style"), rel=1e-5)
    dense = quality_focal_loss(logits, ref["qfl_dense_target"]).sum() / 16.0
    assert dense.item() == pytest.approx(_loss_value(spec, "qfl_dense_target"), rel=1e-5)


def test_giou_loss_equals_upstream(spec: dict) -> None:
    ref = load_file(require(COMP / "losses.safetensors"))
    per_box = giou_loss(ref["pred_boxes"], ref["target_boxes"])
    torch.testing.assert_close(per_box, ref["out.giou_none"], rtol=1e-5, atol=1e-6)
    weighted = 2.0 * (per_box * ref["box_weights"]).sum()
    assert weighted.item() == pytest.approx(_loss_value(spec, "giou_rtmdet_style"), rel=1e-5)


@pytest.mark.parametrize("reg_bias_init", [0.0, 1.0])
def test_regression_bias_init_sets_the_first_boxes(reg_bias_init: float) -> None:
    """Upstream's zero bias makes RTMDet-tiny's first boxes near-empty: the DSL positives overlap
    their GT by ~0.002 IoU, which is also their GIoU loss weight, so box learning barely starts.
    ``reg_bias_init=1`` starts each box one stride from its point per side: positives overlap by
    ≥ 0.1 and the boxes learn from the first step (recipes/demo.yaml)."""
    from odcli.models.rtmdet import RTMDetConfig, build_rtmdet

    torch.manual_seed(0)
    model = build_rtmdet(RTMDetConfig(num_classes=3, reg_bias_init=reg_bias_init)).train()
    head = model.head
    assert all(torch.equal(conv.bias, torch.full((4,), reg_bias_init)) for conv in head.reg_preds)
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 60, 90], [70, 5, 120, 40]]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[30.0, 30, 100, 110]]), "labels": torch.tensor([2])},
    ]
    with torch.no_grad():
        cls_scores, bbox_preds = model(images)
        assign = head.assign(cls_scores, bbox_preds, targets)  # what the loss trains with
    matched_iou = assign.quality[assign.positive]
    for b, num_gt in enumerate((2, 1)):  # every GT has a positive
        assert set(assign.gt_index[b][assign.positive[b]].tolist()) == set(range(num_gt))
    if reg_bias_init == 0.0:
        assert float(matched_iou.mean()) < 0.01
    else:
        for pred, stride in zip(bbox_preds, head.strides, strict=True):
            assert 0.5 * stride < float(pred.min()) and float(pred.max()) < 1.5 * stride
        assert float(matched_iou.min()) > 0.1
