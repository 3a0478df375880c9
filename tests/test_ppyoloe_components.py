"""PP-YOLOE components against PaddleDetection's own outputs on synthetic cases (reference
``ppdet/components``), plus the pieces upstream has no file for: RepVGG re-parameterisation, the
configuration, and the safe ``.pdparams`` reader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import odcli
from odcli.assigners.atss import ATSSAssigner
from odcli.assigners.task_aligned import TaskAlignedAssigner
from odcli.boxes.coders import distance_to_box
from odcli.boxes.overlaps import pairwise_iou
from odcli.boxes.postprocess import NMSConfig, multiclass_nms
from odcli.errors import OdetError
from odcli.losses.distribution_focal import distribution_focal_loss
from odcli.losses.iou import giou_loss_eps_added
from odcli.losses.varifocal import varifocal_loss
from odcli.models.layers import ChannelAttention, RepVGGBlock
from tests.conftest import PPDET_REF, require

COMPONENTS = PPDET_REF / "components"


def _load(name: str) -> dict[str, torch.Tensor]:
    data = np.load(require(COMPONENTS / f"{name}.npz"))
    return {k: torch.from_numpy(data[k]) for k in data.files}


def _head(num_classes: int = 80) -> torch.nn.Module:
    return odcli.build_detector("ppyoloe_s", num_classes=num_classes).head


# -------------------------------------------------------------------------------------- priors
def test_anchors_points_and_strides() -> None:
    ref = _load("anchors")
    head = _head()
    # A 160 (h) × 128 (w) input: levels 5×4, 10×8, 20×16, given to the head strides ascending.
    feats = [torch.zeros(1, 80, 160 // s, 128 // s) for s in (8, 16, 32)]
    dists = [torch.zeros(1, 68, 160 // s, 128 // s) for s in (8, 16, 32)]
    view = head.prior_view(feats, dists)  # strides ascending; upstream lists stride 32 first

    def upstream_order(t: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(t.split(view.num_per_level))[::-1])

    assert view.num_per_level[::-1] == ref["num_anchors_list"].tolist()
    points_px, strides = upstream_order(view.centers), upstream_order(view.strides)[:, None]
    assert torch.equal(points_px, ref["train_anchor_points"])
    assert torch.equal(strides, ref["train_stride_tensor"])
    assert torch.equal(head.anchor_boxes(points_px, strides), ref["train_anchors_xyxy"])
    assert torch.equal(points_px / strides, ref["eval_anchor_points_grid_units"])


# ----------------------------------------------------------------------------------- assigners
def _inputs(ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ref["in_gt_bboxes"], ref["in_gt_labels"][..., 0].long(), ref["in_pad_gt_mask"][..., 0] > 0


def _check_assignment(result, ref: dict[str, torch.Tensor], prefix: str, num_classes: int = 80) -> None:
    labels = torch.where(result.positive, result.labels, torch.full_like(result.labels, num_classes))
    assert torch.equal(labels, ref[prefix + "assigned_labels"].long())
    mask = ref[prefix + "mask_positive"] > 0
    own = torch.nn.functional.one_hot(result.gt_index.clamp(min=0), mask.shape[1]).transpose(1, 2).bool()
    assert torch.equal(own & result.positive[:, None, :], mask)
    one_hot = torch.nn.functional.one_hot(result.labels.clamp(min=0), num_classes)
    scores = one_hot * result.positive[..., None] * result.quality[..., None]
    assert (scores - ref[prefix + "assigned_scores"]).abs().max() <= 1e-6
    pos = result.positive
    gt = ref["in_gt_bboxes"][pos.nonzero()[:, 0], result.gt_index[pos]]
    assert torch.equal(gt, ref[prefix + "assigned_bboxes"][pos])


@pytest.mark.parametrize("with_pred", [True, False])
def test_atss_assigner_matches_upstream(with_pred: bool) -> None:
    ref = _load("atss_assigner")
    gt_boxes, gt_labels, gt_mask = _inputs(ref)
    result = ATSSAssigner(topk=9)(
        ref["in_anchors_xyxy"],
        ref["in_num_anchors_list"].tolist(),
        gt_boxes,
        gt_labels,
        gt_mask,
        ref["in_pred_bboxes"] if with_pred else None,
    )
    _check_assignment(result, ref, "with_pred_bboxes_" if with_pred else "without_pred_bboxes_")
    assert int(result.positive.sum()) == 39


def test_task_aligned_assigner_matches_upstream() -> None:
    ref = _load("tal_assigner")
    gt_boxes, gt_labels, gt_mask = _inputs(ref)
    result = TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0)(
        ref["in_pred_scores"], ref["in_pred_bboxes"], ref["in_anchor_points"], gt_boxes, gt_labels, gt_mask
    )
    _check_assignment(result, ref, "")
    assert int(result.positive.sum()) == 69


def test_assigners_handle_images_without_ground_truth() -> None:
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]])
    empty = (torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.bool))
    atss = ATSSAssigner()(anchors, [2], *empty)
    tal = TaskAlignedAssigner()(torch.rand(2, 2, 3), anchors.expand(2, -1, -1), anchors[:, :2] + 1, *empty)
    for result in (atss, tal):
        assert not result.positive.any() and result.quality.abs().sum() == 0


# -------------------------------------------------------------------------------------- losses
def test_varifocal_loss_matches_upstream() -> None:
    ref = _load("varifocal_loss")
    args = (ref["pred_score"], ref["gt_score"], ref["label_onehot"])
    assert varifocal_loss(*args).sum().item() == pytest.approx(ref["loss_default"].item(), rel=1e-5)
    other = varifocal_loss(*args, alpha=0.5, gamma=1.5).sum().item()
    assert other == pytest.approx(ref["loss_alpha0.5_gamma1.5"].item(), rel=1e-5)


def test_varifocal_gradient_flows_through_its_weight() -> None:
    """Upstream multiplies BCE by α·p^γ without detaching it; so does odet."""
    p = torch.tensor([0.3], requires_grad=True)
    varifocal_loss(p, torch.zeros(1), torch.zeros(1)).sum().backward()
    x = 0.3
    bce, dbce = -np.log(1 - x), 1 / (1 - x)
    expected = 0.75 * (2 * x * bce + x**2 * dbce)
    assert p.grad.item() == pytest.approx(expected, rel=1e-5)


def test_distribution_focal_loss_matches_upstream() -> None:
    ref = _load("df_loss")
    loss = distribution_focal_loss(ref["pred_dist_logits"], ref["target_ltrb"]).mean(-1, keepdim=True)
    assert loss.shape == ref["loss"].shape
    torch.testing.assert_close(loss, ref["loss"], rtol=1e-5, atol=1e-6)


def test_giou_and_box_coding_match_upstream() -> None:
    """The functions the head's loss and decoding run: its GIoU loss, the distance coder it decodes
    with and its DFL targets, against PaddleDetection's ``GIoULoss`` / ``distance2bbox`` /
    ``bbox2distance``."""
    ref = _load("bbox_utils")
    giou = giou_loss_eps_added(ref["giou_pred"], ref["giou_gt"], eps=1e-10)
    torch.testing.assert_close(giou[:, None], ref["giou_loss"], rtol=1e-6, atol=1e-6)
    head = _head()
    torch.testing.assert_close(distance_to_box(ref["points"], ref["distance_ltrb"]), ref["distance2bbox"])
    targets = head.distance_targets(ref["bbox2distance_points"], ref["bbox2distance_bbox"])
    torch.testing.assert_close(targets, ref["bbox2distance_clipped"])


def test_hardsigmoid_and_swish_match_paddle() -> None:
    ref = _load("activations")
    gate = ChannelAttention(1).gate
    assert (gate(ref["x"]) - ref["hardsigmoid_ppdet"]).abs().max() <= 2e-7
    assert (torch.nn.SiLU()(ref["x"]) - ref["swish_ppdet"]).abs().max() <= 1e-6


# ------------------------------------------------------------------------------------------ NMS
@pytest.mark.parametrize(("variant", "iou_thr", "keep"), [("crn", 0.6, 100), ("plus", 0.7, 300)])
def test_multiclass_nms_matches_upstream(variant: str, iou_thr: float, keep: int) -> None:
    ref = _load(f"multiclass_nms_{variant}")
    cfg = NMSConfig(score_thr=0.01, nms_pre=1000, iou_thr=iou_thr, max_per_img=keep)
    start = 0
    for i in range(ref["bboxes"].shape[0]):
        n = int(ref["out_bbox_num"][i])
        rows = ref["out_bbox"][start : start + n]
        start += n
        det = multiclass_nms(ref["bboxes"][i], ref["scores"][i].t(), cfg)
        assert len(det["scores"]) == n
        iou = pairwise_iou(rows[:, 2:], det["boxes"]) * (rows[:, :1].long() == det["labels"][None])
        best, j = iou.max(dim=1)
        assert bool(((best > 0.999) & ((rows[:, 1] - det["scores"][j]).abs() <= 1e-6)).all())
        # upstream's indices count the boxes of the whole batch
        offset = i * ref["bboxes"].shape[1]
        assert sorted((ref["out_index"][start - n : start, 0] - offset).tolist()) == sorted(
            _source_index(ref["bboxes"][i], det["boxes"]).tolist()
        )


def _source_index(boxes: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Index of each picked box among the input boxes (upstream's ``nms_keep_idx``)."""
    return (picked[:, None, :] == boxes[None, :, :]).all(-1).float().argmax(dim=1)


# -------------------------------------------------------------------------------------- RepVGG
@pytest.mark.parametrize("alpha", [False, True])
def test_repvgg_reparameterisation_is_exact(alpha: bool) -> None:
    torch.manual_seed(0)
    block = RepVGGBlock(8, 8, alpha=alpha)
    for bn in (block.conv1.bn, block.conv2.bn):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_()
    if alpha:
        block.alpha.data.fill_(0.7)
    block.eval()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        expected = block(x)
        block.switch_to_deploy()
        got = block(x)
    assert block.deployed and block.conv1 is None and block.alpha is None
    assert sorted(k for k, _ in block.named_parameters()) == ["conv.bias", "conv.weight"]
    assert (got - expected).abs().max() <= 1e-5


def test_bn_folding_for_inference_keeps_outputs() -> None:
    from odcli.models.fuse import optimize_for_inference

    torch.manual_seed(0)
    model = odcli.build_detector("ppyoloe_plus_s", num_classes=3).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        cls_a, reg_a = model(x)
        optimize_for_inference(model)
        cls_b, reg_b = model(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(cls_a + reg_a, cls_b + reg_b, strict=True):
        assert (a - b).abs().max() <= 1e-4


# -------------------------------------------------------------------------------- configuration
def test_variants_resolve_upstream_settings() -> None:
    from odcli.models.zoo import model_config

    base, plus = model_config("ppyoloe_l"), model_config("ppyoloe_plus_l")
    assert (base.plus, plus.plus) == (False, True)
    assert (base.static_assigner_epoch, plus.static_assigner_epoch) == (100, 30)
    assert (base.max_per_img, base.nms_iou_thr, plus.max_per_img, plus.nms_iou_thr) == (100, 0.6, 300, 0.7)
    assert (base.width_mult, base.depth_mult) == (1.0, 1.0)
    assert plus.std == [255.0, 255.0, 255.0] and plus.mean == [0.0, 0.0, 0.0]
    spec = odcli.build_detector("ppyoloe_s").input_spec
    assert spec.to_rgb and not spec.keep_ratio and spec.interpolation == "cubic"
    assert spec.mean == (123.675, 116.28, 103.53) and spec.std == (58.395, 57.12, 57.375)
    alphas = [n for n, _ in odcli.build_detector("ppyoloe_plus_s").named_parameters() if n.endswith("alpha")]
    assert len(alphas) == 6 and all(n.startswith("backbone.") for n in alphas)


def test_config_errors_are_one_line() -> None:
    with pytest.raises(OdetError, match="unknown model"):
        odcli.build_detector("ppyoloe_xs")
    with pytest.raises(OdetError, match="contradicts"):
        odcli.build_detector("ppyoloe_s", plus=True)


def test_loss_switches_assigner_at_static_epoch_and_survives_empty_targets() -> None:
    torch.manual_seed(0)
    model = odcli.build_detector("ppyoloe_s", num_classes=4, static_assigner_epoch=2).train()
    images = torch.randn(2, 3, 96, 96)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    calls: list[str] = []
    head = model.head
    for name in ("static_assigner", "assigner"):
        inner = getattr(head, name)
        setattr(head, name, lambda *a, _f=inner, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    for epoch in (0, 1, 2):
        losses = model.loss(images, targets, epoch=epoch)
        assert set(losses) == {"loss", "loss_cls", "loss_iou", "loss_dfl", "loss_l1"}
        assert all(torch.isfinite(v) for v in losses.values())
    assert calls == ["static_assigner", "static_assigner", "assigner"]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = model.loss(images, empty, epoch=5)
    losses["loss"].backward()
    assert losses["loss_iou"].item() == 0 and losses["loss_cls"].item() > 0


# ------------------------------------------------------------------------------ .pdparams reader
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pdparams_reader_refuses_code_and_runs_nothing(tmp_path: Path) -> None:
    from odcli.weights.ppdet import read_pdparams

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(
        pickle.dumps({"backbone.stem.conv1.conv.weight": np.zeros(3, np.float32), "x": _Evil(marker)}, 4)
    )
    with pytest.raises(OdetError) as info:
        read_pdparams(evil)
    message = str(info.value)
    assert "\n" not in message and "refusing" in message and "system" in message
    assert not marker.exists()
    # The same through the public loader.
    with pytest.raises(OdetError):
        odcli.load_weights(odcli.build_detector("ppyoloe_s"), evil)
    assert not marker.exists()


def test_pdparams_reader_reads_plain_arrays_and_rejects_junk(tmp_path: Path) -> None:
    from odcli.weights.ppdet import PADDLE_NAME_TABLE_KEY, read_pdparams

    good = tmp_path / "ok.pdparams"
    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b._mean": np.ones(2, np.float32)}
    good.write_bytes(pickle.dumps({**arrays, PADDLE_NAME_TABLE_KEY: {"a.weight": "conv_0.w_0"}}, 4))
    out = read_pdparams(good)
    assert set(out) == set(arrays) and np.array_equal(out["a.weight"], arrays["a.weight"])
    objects = tmp_path / "objects.pdparams"
    objects.write_bytes(pickle.dumps({"a": np.array([1, "x"], dtype=object)}, 4))
    with pytest.raises(OdetError, match=r"refusing|dtype"):
        read_pdparams(objects)
    truncated = tmp_path / "cut.pdparams"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(OdetError, match="cannot read"):
        read_pdparams(truncated)


def test_paddle_linear_weights_are_transposed() -> None:
    from odcli.weights.ppdet import ppdet_to_odet

    w = np.arange(6, dtype=np.float32).reshape(2, 3)  # Paddle Linear: [in, out]
    arrays = {"fc.weight": w, "bn._mean": np.zeros(3, np.float32), "bn._variance": np.ones(3, np.float32)}
    out = ppdet_to_odet(arrays, linear_weights=lambda key: key == "fc.weight")
    assert out["fc.weight"].shape == (3, 2) and torch.equal(out["fc.weight"], torch.from_numpy(w).t())
    assert set(out) == {"fc.weight", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}


# ------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("size", ["s", "m", "l", "x", "plus_s", "plus_m", "plus_l", "plus_x"])
def test_recipes_hold_upstream_settings(size: str) -> None:
    from odcli.models.zoo import model_config
    from odcli.recipe import load_recipe
    from tests.conftest import REPO

    recipe = load_recipe(REPO / "recipes" / f"ppyoloe_{size}.yaml")
    assert recipe.model == model_config(f"ppyoloe_{size}")  # every model value is the upstream default
    plus = size.startswith("plus_")
    train = recipe.train
    assert (train.optimizer, train.momentum, train.weight_decay, train.norm_decay) == ("sgd", 0.9, 5e-4, 0.0)
    assert (train.lr, train.base_batch_size, train.epochs) == ((0.001, 64, 80) if plus else (0.025, 160, 300))
    assert (train.ema, train.ema_momentum) == (True, pytest.approx(0.0002))
    assert recipe.data.train_pipeline == "ppyoloe" and recipe.data.batch_size == (8 if plus else 20)
