"""RetinaNet's pieces: anchors, coder, assigner and losses against MMDetection's own outputs
(reference/mmdet/components), and the backbone / neck / head / weights behaviour on small inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file
from typer.testing import CliRunner

import odcli
from odcli.assigners import MaxIoUAssigner
from odcli.boxes.coders import box_to_delta, delta_to_box
from odcli.boxes.priors import AnchorConfig, anchor_valid_flags, base_anchors, multilevel_anchors
from odcli.errors import OdetError
from odcli.losses import l1_loss, sigmoid_focal_loss

from .conftest import MMDET_REF, require

COMP = MMDET_REF / "components"
EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads((require(COMP) / "components.json").read_text())


@pytest.fixture(scope="module")
def assign_ref() -> dict:
    return load_file(require(COMP / "assigners.safetensors"))


# ------------------------------------------------------------------------------ anchors, coder
def test_anchors_and_valid_flags_equal_upstream(spec: dict) -> None:
    ref = load_file(require(COMP / "retinanet_anchors.safetensors"))
    cfg = AnchorConfig()
    assert cfg.num_base_anchors == 9
    for level, stride in enumerate(cfg.strides):
        assert torch.equal(base_anchors(cfg, stride), ref[f"base_anchors.{level}"])
    info = spec["retinanet_anchors"]
    for tag in ("640", "800x1216"):
        sizes = [tuple(s) for s in info[f"featmap_sizes_{tag}"]]
        for level, anchors in enumerate(multilevel_anchors(cfg, sizes)):
            assert torch.equal(anchors, ref[f"anchors_{tag}.{level}"])
    sizes = [tuple(s) for s in info["featmap_sizes_800x1216"]]
    flags = anchor_valid_flags(cfg, sizes, torch.tensor([[800, 1088]]))
    for level, f in enumerate(flags):
        assert torch.equal(f[0], ref[f"valid_flags_800x1216_pad800x1088.{level}"])
        assert int(f.sum()) == info["valid_counts"][level]


def test_delta_xywh_coder_equals_upstream() -> None:
    ref = load_file(require(COMP / "delta_xywh_coder.safetensors"))
    priors, gt, deltas = ref["proposals"], ref["gt_bboxes"], ref["deltas_random"]
    stds2 = (0.1, 0.1, 0.2, 0.2)
    assert torch.equal(box_to_delta(priors, gt), ref["encode"])
    assert torch.equal(delta_to_box(priors, ref["encode"]), ref["decode_of_encode"])
    assert torch.equal(delta_to_box(priors, deltas), ref["decode_random"])
    assert torch.equal(
        delta_to_box(priors, deltas, max_shape=(480, 640)), ref["decode_random_maxshape480x640"]
    )
    assert torch.equal(box_to_delta(priors, gt, stds=stds2), ref["stds2_encode"])
    assert torch.equal(
        delta_to_box(priors, deltas, stds=stds2, max_shape=(480, 640)),
        ref["stds2_decode_random_maxshape480x640"],
    )


# ------------------------------------------------------------------------------------ assigner
def _assign(assigner: MaxIoUAssigner, priors, boxes_list, labels_list, valid=None):
    """Run the assigner on a batch given as per-image lists (padded here)."""
    g = max(len(b) for b in boxes_list)
    boxes = torch.zeros(len(boxes_list), g, 4)
    labels = torch.zeros(len(boxes_list), g, dtype=torch.long)
    mask = torch.zeros(len(boxes_list), g, dtype=torch.bool)
    for i, (b, lb) in enumerate(zip(boxes_list, labels_list, strict=True)):
        boxes[i, : len(b)], labels[i, : len(b)], mask[i, : len(b)] = b, lb, True
    return assigner(priors, boxes, labels, mask, valid)


def test_max_iou_assigner_equals_upstream(spec: dict, assign_ref: dict) -> None:
    priors, gt, labels = assign_ref["maxiou.priors"], assign_ref["gt_bboxes"], assign_ref["gt_labels"].long()
    result = _assign(MaxIoUAssigner(), priors, [gt], [labels])
    expected = assign_ref["maxiou.assigned_gt_inds"].long()
    ours = result.upstream_gt_inds()[0]
    info = spec["assigners"]["maxiou"]
    assert int((ours > 0).sum()) == info["num_pos"]
    assert int((ours == 0).sum()) == info["num_neg"]
    assert int((ours == -1).sum()) == info["num_ignore"]
    assert torch.equal(ours, expected)
    assert torch.equal(result.labels[0], assign_ref["maxiou.labels"].long())
    pos = expected > 0
    torch.testing.assert_close(result.quality[0][pos], assign_ref["maxiou.max_overlaps"][pos], rtol=0, atol=0)


def test_max_iou_batches_like_single_images(assign_ref: dict) -> None:
    """Two images with different GT counts (and one with none) in one call = each image alone."""
    priors, gt, labels = assign_ref["maxiou.priors"], assign_ref["gt_bboxes"], assign_ref["gt_labels"].long()
    assigner = MaxIoUAssigner()
    images = [(gt, labels), (gt[5:].flip(0), labels[5:].flip(0)), (gt[:0], labels[:0])]
    batch = _assign(assigner, priors, [b for b, _ in images], [lb for _, lb in images])
    for i, (b, lb) in enumerate(images):
        if len(b):
            single = _assign(assigner, priors, [b], [lb])
            assert torch.equal(batch.gt_index[i], single.gt_index[0])
            assert torch.equal(batch.labels[i], single.labels[0])
        else:  # no GT: every anchor is background
            assert (batch.gt_index[i] == -1).all()


def test_max_iou_invalid_priors_take_no_part(assign_ref: dict) -> None:
    """Upstream assigns among the valid anchors only: same result as dropping the invalid ones,
    including each GT's low-quality best match; invalid anchors come out ignored (-2)."""
    priors, gt, labels = assign_ref["maxiou.priors"], assign_ref["gt_bboxes"], assign_ref["gt_labels"].long()
    valid = (priors[:, 0] + priors[:, 2]) / 2 < 300  # a left strip of the image
    full = _assign(MaxIoUAssigner(), priors, [gt], [labels], valid[None])
    subset = _assign(MaxIoUAssigner(), priors[valid], [gt], [labels])
    assert torch.equal(full.gt_index[0][valid], subset.gt_index[0])
    assert (full.gt_index[0][~valid] == -2).all()


def test_max_iou_low_quality_tie_goes_to_the_last_gt() -> None:
    """Upstream loops over GTs and overwrites: a prior that is the best of two GTs ends with the later one."""
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 12.0], [0.0, 0.0, 12.0, 10.0]])  # IoU 10/12 with prior 0, both
    result = _assign(MaxIoUAssigner(), priors, [boxes], [torch.tensor([3, 7])])
    assert result.gt_index[0].tolist() == [1, -1]
    assert result.labels[0].tolist() == [7, -1]


def test_max_iou_without_any_gt_in_the_batch() -> None:
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]])
    valid = torch.tensor([[True, False], [True, True]])
    result = MaxIoUAssigner()(
        priors,
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool),
        valid,
    )
    assert result.gt_index.tolist() == [[-1, -2], [-1, -1]]


# -------------------------------------------------------------------------------------- losses
def test_focal_and_l1_losses_equal_upstream(spec: dict) -> None:
    ref = load_file(require(COMP / "losses.safetensors"))
    values = {r["key"]: r["value"] for r in spec["losses"]["results"]}
    focal = sigmoid_focal_loss(ref["logits"], ref["labels"].long(), gamma=2.0, alpha=0.25)
    torch.testing.assert_close(focal, ref["out.focal_none"], rtol=1e-6, atol=1e-7)
    weighted = (focal * ref["label_weights"][:, None]).sum() / (16.0 + EPS)
    assert weighted.item() == pytest.approx(values["focal_retinanet_style"], rel=1e-6)
    assert focal.mean().item() == pytest.approx(values["focal_mean"], rel=1e-6)
    l1 = l1_loss(ref["deltas_pred"], ref["deltas_target"])
    assert ((l1 * ref["deltas_weights"]).sum() / (16.0 + EPS)).item() == pytest.approx(
        values["l1_retinanet_style"], rel=1e-6
    )
    assert l1.mean().item() == pytest.approx(values["l1_mean"], rel=1e-6)


# ------------------------------------------------------------------------ backbone, neck, head
def test_backbone_is_torchvision_resnet_without_classifier() -> None:
    model = odcli.build_detector("retinanet_r18")
    reference = torchvision.models.resnet18(weights=None).state_dict()
    ours = model.backbone.state_dict()
    assert set(ours) == {k for k in reference if not k.startswith("fc.")}
    assert all(ours[k].shape == reference[k].shape for k in ours)
    assert isinstance(model.backbone.layer1[0], torchvision.models.resnet.BasicBlock)
    r50 = odcli.build_detector("retinanet_r50").backbone
    assert isinstance(r50.layer1[0], torchvision.models.resnet.Bottleneck)
    assert r50.layer2[0].conv2.stride == (2, 2)  # "pytorch" style: stride on the 3×3 conv


def test_frozen_stages_and_norm_eval_survive_train_mode() -> None:
    torch.manual_seed(0)
    model = odcli.build_detector("retinanet_r18", num_classes=3).train()
    backbone = model.backbone
    frozen = [backbone.conv1, backbone.bn1, backbone.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in backbone.layer2.parameters())
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)  # norm_eval
    assert not backbone.layer1.training and backbone.layer2.training and model.head.training
    running = [bn.running_mean.clone() for bn in bns]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])}]
    sum(model.loss(torch.randn(1, 3, 96, 96), targets).values()).backward()
    assert all(torch.equal(bn.running_mean, r) for bn, r in zip(bns, running, strict=True))
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert backbone.layer2[0].conv1.weight.grad is not None


def test_fpn_upsamples_to_exact_lateral_sizes_and_p7_has_no_relu() -> None:
    torch.manual_seed(0)
    model = odcli.build_detector("retinanet_r18", num_classes=3).eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 200, 200))  # C3..C5: 25, 13, 7 (odd sizes)
        outs = model.neck(feats)
        assert [tuple(o.shape[-2:]) for o in outs] == [(25, 25), (13, 13), (7, 7), (4, 4), (2, 2)]
        neck = model.neck
        assert torch.equal(outs[3], neck.fpn_convs[3](feats[3]))  # P6 from C5 ('on_input')
        assert torch.equal(outs[4], neck.fpn_convs[4](outs[3]))  # P7 from P6, no ReLU
        top = neck.lateral_convs[2](feats[3])
        mid = (
            neck.lateral_convs[1](feats[2])
            + top.repeat_interleave(2, -1).repeat_interleave(2, -2)[..., :13, :13]
        )
        assert torch.allclose(outs[1], neck.fpn_convs[1](mid), atol=1e-5)  # nearest, 7 → 13


def test_head_initialisation() -> None:
    torch.manual_seed(0)
    head = odcli.build_detector("retinanet_r18").head
    assert torch.allclose(head.cls_pred.bias, torch.full_like(head.cls_pred.bias, -math.log(99)))
    assert head.cls_pred.weight.shape[0] == 9 * 80 and head.reg_pred.weight.shape[0] == 9 * 4
    for conv in (*head.cls_convs, *head.reg_convs, head.reg_pred):
        assert abs(conv.weight.std().item() - 0.01) < 1e-3 and not conv.bias.any()


def test_image_without_boxes_gives_finite_cls_and_zero_box_loss() -> None:
    torch.manual_seed(0)
    model = odcli.build_detector("retinanet_r18", num_classes=3).train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    for targets in (
        [empty, empty],
        [empty, {"boxes": torch.tensor([[8.0, 8.0, 90.0, 70.0]]), "labels": torch.tensor([2])}],
    ):
        losses = model.loss(torch.randn(2, 3, 128, 128), targets)
        assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0
        if targets[1]["labels"].numel() == 0:
            assert losses["loss_bbox"].item() == 0.0
        sum(losses.values()).backward()


def test_folded_model_matches() -> None:
    """BN folded into the backbone convs (odet infer/eval) keeps the outputs."""
    import copy

    from odcli.models.fuse import optimize_for_inference

    torch.manual_seed(0)
    model = odcli.build_detector("retinanet_r18", num_classes=3).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)  # the residual BNs start at 0 (zero_init_residual)
    folded = optimize_for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        ref, out = model(x), folded(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(ref[0] + ref[1], out[0] + out[1], strict=True):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())


# ------------------------------------------------------------------------- ImageNet weights
@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A torchvision-layout resnet18 checkpoint (random weights; nothing is downloaded)."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("imagenet") / "resnet18-f37072fd.pth"
    torch.save(state, path)
    return path, state


def test_backbone_weights_from_torchvision_checkpoint(fake_imagenet: tuple[Path, dict]) -> None:
    from odcli.weights.load import load_backbone_weights

    path, state = fake_imagenet
    model = odcli.build_detector("retinanet_r18")
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    load_backbone_weights(model, path)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    assert not model.backbone.conv1.weight.requires_grad  # still frozen after loading


def test_convert_weights_from_torchvision(fake_imagenet: tuple[Path, dict], tmp_path: Path) -> None:
    from odcli.cli.main import app
    from odcli.weights.checkpoint import read_meta
    from odcli.weights.load import load_backbone_weights

    path, state = fake_imagenet
    out = tmp_path / "resnet18.safetensors"
    args = ["convert-weights", str(path), str(out), "--from", "torchvision", "--arch", "retinanet_r18"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_meta(out)["backbone_only"] is True
    model = load_backbone_weights(odcli.build_detector("retinanet_r18"), out)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key

    # the wrong depth: one line naming the tensors, and no file written
    bad = tmp_path / "bad.safetensors"
    result = CliRunner().invoke(app, [*args[:2], str(bad), *args[3:-1], "retinanet_r50"])
    assert result.exit_code != 0 and "does not fit resnet50" in result.output
    assert "Traceback" not in result.output and not bad.exists()
    result = CliRunner().invoke(app, [*args[:4], "paddle", *args[5:]])
    assert result.exit_code != 0 and "--from must be" in result.output


def test_missing_backbone_weights_is_one_line(tmp_path: Path) -> None:
    from odcli.weights.load import load_backbone_weights

    with pytest.raises(OdetError) as err:
        load_backbone_weights(odcli.build_detector("retinanet_r18"), tmp_path / "resnet18.pth")
    assert "backbone weights not found" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ pipeline
def test_retinanet_train_pipeline_resizes_and_does_not_pad() -> None:
    from odcli.data.pipelines import build_train_pipeline
    from odcli.models.zoo import input_spec_of
    from odcli.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "retinanet_r18.yaml")
    pipeline = build_train_pipeline(recipe.data, input_spec_of(recipe.model))
    sample = {
        "img": np.zeros((480, 640, 3), np.uint8),
        "boxes": np.array([[10, 20, 110, 220]], np.float32),
        "labels": np.array([4]),
        "image_id": 1,
        "file_name": "x.jpg",
        "ori_shape": (480, 640),
        "img_shape": (480, 640),
        "pad_shape": (480, 640),
        "scale_factor": (1.0, 1.0),
    }
    out = pipeline(sample, np.random.default_rng(0))
    assert out["img"].shape[:2] == (800, 1067) == out["img_shape"] == out["pad_shape"]
    assert out["boxes"][0, 3] - out["boxes"][0, 1] == pytest.approx(200 * 800 / 480, rel=1e-5)
