"""PaddleDetection PP-YOLOE-s, converted from its ``.pdparams`` without Paddle, reproduces upstream's
outputs, detections, assignments and losses on real COCO images (batch A), before and after RepVGG
re-parameterisation; parameter counts equal upstream's and the published ones."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import odcli
from odcli.boxes.overlaps import pairwise_iou
from odcli.inference.outputs import read_detections
from odcli.models.fuse import reparameterize
from tests.conftest import COCO128, PPDET_REF, require

# Published (PP-YOLOE / PP-YOLOE+ model zoo) parameter counts, millions: the deployed models
# (RepVGG re-parameterised, BN running statistics not counted; the fixed 17-weight projection is).
PUBLISHED_M = {"s": 7.93, "m": 23.43, "l": 52.20, "x": 98.42}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _upstream_order(t: torch.Tensor, sizes: list[int], dim: int) -> torch.Tensor:
    """Priors concatenated with strides ascending → upstream's order (stride 32, 16, 8)."""
    return torch.cat(list(torch.split(t, sizes, dim=dim))[::-1], dim=dim)


def _sizes(ref: dict) -> list[int]:
    return [c.shape[-2] * c.shape[-1] for c in ref["cls_logits"]]


def _targets(inputs: dict) -> list[dict[str, torch.Tensor]]:
    """Batch A's padded GT (640×640 input pixels) as odet targets."""
    out = []
    for i in range(len(inputs["gt_bbox"])):
        keep = inputs["pad_gt_mask"][i, :, 0] > 0
        out.append(
            {
                "boxes": torch.from_numpy(inputs["gt_bbox"][i][keep]),
                "labels": torch.from_numpy(inputs["gt_class"][i][keep, 0]).long(),
            }
        )
    return out


def _metas(inputs: dict) -> list[dict]:
    """Upstream's ``scale_factor`` is (scale_y, scale_x); odet's is (sx, sy)."""
    sf = inputs["scale_factor"]
    return [{"img_shape": (640, 640), "scale_factor": (float(s[1]), float(s[0]))} for s in sf]


# ------------------------------------------------------------------------------------ parameters
def test_training_parameter_counts_equal_upstream() -> None:
    counts = json.loads(require(_ref_file("params_flops.json")).read_text())["counts"]
    key = "torch_style_parameters(state_dict minus BN running stats)"
    model = odcli.build_detector("ppyoloe_s")
    assert _count(model) == counts["total"][key] == 8_084_605
    parts = [_count(m) for m in (model.backbone, model.neck, model.head)]
    assert parts == [counts[name][key] for name in ("backbone", "neck", "yolo_head")]


def test_deployed_parameter_count_equals_upstream() -> None:
    info = json.loads(require(_ref_file("deploy_state_dict_keys.json")).read_text())
    model = odcli.build_detector("ppyoloe_s", deploy=True)
    assert _count(model) == info["num_elements_minus_bn_running_stats"] == 7_926_277


@pytest.mark.parametrize("size", list(PUBLISHED_M))
@pytest.mark.parametrize("plus", [False, True])
def test_deployed_parameter_counts_equal_published(size: str, plus: bool) -> None:
    name = f"ppyoloe_{'plus_' if plus else ''}{size}"
    deployed = _count(odcli.build_detector(name, deploy=True))
    assert round(deployed / 1e6, 2) == PUBLISHED_M[size], deployed
    training = _count(odcli.build_detector(name))
    assert training > deployed  # the RepVGG 1×1 branches, their BN (and the "+" alphas) go away


def _ref_file(name: str) -> Path:
    return PPDET_REF / "ppyoloe_crn_s_300e_coco" / name


# ----------------------------------------------------------------------------------- conversion
def test_pdparams_converts_key_for_key() -> None:
    from odcli.weights.ppdet import ppyoloe_from_ppdet, read_pdparams

    keys = json.loads(require(_ref_file("state_dict_keys.json")).read_text())["keys"]
    state = ppyoloe_from_ppdet(read_pdparams(_ref_file("model.pdparams")))
    own = odcli.build_detector("ppyoloe_s").state_dict()
    assert set(state) == set(own)
    for entry in keys:
        new = _odet_key(entry["name"])
        assert list(state[new].shape) == entry["shape"]
        assert state[new].dtype == torch.float32
    num_bn = sum(k.endswith("._mean") for k in _names(keys))
    assert sum(k.endswith("num_batches_tracked") for k in own) == num_bn


def _names(entries: list[dict]) -> list[str]:
    return [e["name"] for e in entries]


def _odet_key(name: str) -> str:
    name = name.replace("yolo_head.", "head.", 1)
    return name.replace("._mean", ".running_mean").replace("._variance", ".running_var")


def test_deployed_keys_equal_upstream_deploy_keys(ppyoloe_ref: dict) -> None:
    info = json.loads(require(_ref_file("deploy_state_dict_keys.json")).read_text())
    model = reparameterize(copy.deepcopy(ppyoloe_ref["model"]))
    own = {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == {_odet_key(e["name"]): e["shape"] for e in info["keys"]}
    built = odcli.build_detector("ppyoloe_s", deploy=True).state_dict()
    assert {k: list(v.shape) for k, v in built.items()} == {
        k: list(v.shape) for k, v in model.state_dict().items()
    }


# ------------------------------------------------------------------------------------- outputs
def test_preprocessing_reproduces_upstream_inputs(ppyoloe_ref: dict) -> None:
    from odcli.data import collate, read_image
    from odcli.data.normalize import prepare_batch
    from odcli.inference.predictor import Predictor

    model = ppyoloe_ref["model"]
    predictor = Predictor(model)
    files = json.loads(_ref_file("batch_A/inputs.json").read_text())["files"]
    samples = [predictor.prepare(read_image(require(COCO128 / "images" / f))) for f in files]
    images, _, metas = collate(samples, pad_value=0, size_divisor=32)
    batch = prepare_batch(images, metas, model.input_spec, "cpu")
    assert (batch - ppyoloe_ref["images"]).abs().max() <= 1e-5  # measured 4.8e-7 (float rounding)
    for meta, (sy, sx) in zip(metas, ppyoloe_ref["inputs"]["scale_factor"], strict=True):
        assert meta["scale_factor"] == pytest.approx((sx, sy), rel=1e-6)


def test_raw_head_outputs_match(ppyoloe_ref: dict) -> None:
    ref = np.load(_ref_file("batch_A/head_eval.npz"))
    cls_logits, reg_dists = ppyoloe_ref["cls_logits"], ppyoloe_ref["reg_dists"]
    assert [tuple(c.shape[-2:]) for c in cls_logits] == [(80, 80), (40, 40), (20, 20)]
    for level in range(3):
        up = 2 - level  # upstream levels are stride 32, 16, 8
        assert (cls_logits[level] - torch.from_numpy(ref[f"cls_logit_l{up}"])).abs().max() <= 1e-4
        assert (reg_dists[level] - torch.from_numpy(ref[f"reg_dist_raw_l{up}"])).abs().max() <= 1e-4

    head = ppyoloe_ref["model"].head
    decoded = head.decode(cls_logits, reg_dists)
    sizes = _sizes(ppyoloe_ref)
    assert list(decoded.level_counts) == sizes
    scores_up = _upstream_order(decoded.scores, sizes, 1).transpose(1, 2)
    assert (scores_up - torch.from_numpy(ref["pred_scores"])).abs().max() <= 1e-4
    # Boxes in input pixels against upstream's; per stride, i.e. its expected distances within 1e-3 cells.
    strides = torch.from_numpy(ref["stride_tensor"])
    boxes_up = _upstream_order(decoded.boxes, sizes, 1)
    assert ((boxes_up - torch.from_numpy(ref["pred_bboxes_input"])) / strides).abs().max() <= 1e-3
    view = head.prior_view(cls_logits, reg_dists)
    assert torch.equal(_upstream_order(view.strides[:, None], sizes, 0), strides)
    points = _upstream_order(view.centers, sizes, 0) / strides  # cells
    assert torch.equal(points, torch.from_numpy(ref["anchor_points"]))


def _matched_fraction(ref_rows: np.ndarray, det: dict[str, torch.Tensor]) -> float:
    """Fraction of upstream detections (rows ``[label, score, x1, y1, x2, y2]``) matched one-to-one:
    same label, IoU > 0.99, score within 1e-4."""
    ref = torch.from_numpy(ref_rows)
    iou = pairwise_iou(ref[:, 2:], det["boxes"]) * (ref[:, :1].long() == det["labels"][None, :])
    close = (ref[:, 1:2] - det["scores"][None, :]).abs() <= 1e-4
    ok = (iou > 0.99) & close
    used: set[int] = set()
    matched = 0
    for i in range(len(ref)):  # greedy one-to-one on a few hundred rows: test code only
        for j in torch.nonzero(ok[i]).flatten().tolist():
            if j not in used:
                used.add(j)
                matched += 1
                break
    return matched / max(len(ref), 1)


def _detections_match(model: torch.nn.Module, ref_inputs: dict, images: torch.Tensor) -> None:
    ref = np.load(_ref_file("batch_A/detections.npz"))
    dets = model.predict(images, _metas(ref_inputs))
    start = 0
    for i, det in enumerate(dets):
        n = int(ref["bbox_num"][i])
        rows = ref["bbox"][start : start + n]
        start += n
        assert len(det["scores"]) == n
        assert _matched_fraction(rows, det) >= 0.98


def test_detections_match_as_sets(ppyoloe_ref: dict) -> None:
    _detections_match(ppyoloe_ref["model"], ppyoloe_ref["inputs"], ppyoloe_ref["images"])


def test_reparameterised_model_keeps_outputs_and_detections(ppyoloe_ref: dict) -> None:
    model = reparameterize(copy.deepcopy(ppyoloe_ref["model"])).eval()
    assert _count(model) < _count(ppyoloe_ref["model"])
    with torch.no_grad():
        cls_logits, reg_dists = model(ppyoloe_ref["images"])
    reference = ppyoloe_ref["cls_logits"] + ppyoloe_ref["reg_dists"]
    for a, b in zip(cls_logits + reg_dists, reference, strict=True):
        assert (a - b).abs().max() <= 1e-4
    _detections_match(model, ppyoloe_ref["inputs"], ppyoloe_ref["images"])


# ----------------------------------------------------------------------------- training: losses
RUNS = [("eval_bn", "atss", 0, 1e-4), ("eval_bn", "tal", 100, 1e-4), ("train_bn", "atss", 0, 1e-3)]
RUNS += [("train_bn", "tal", 100, 1e-3)]


def _training_model(ref: dict, bn_mode: str) -> torch.nn.Module:
    model = copy.deepcopy(ref["model"]).train()
    if bn_mode == "eval_bn":  # frozen BN: the head sees exactly the eval-mode features
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    return model


@pytest.mark.parametrize(("bn_mode", "assigner", "epoch", "rtol"), RUNS)
def test_losses_match(ppyoloe_ref: dict, bn_mode: str, assigner: str, epoch: int, rtol: float) -> None:
    expected = json.loads(_ref_file("batch_A/losses.json").read_text())["runs"][f"{bn_mode}/{assigner}"]
    model = _training_model(ppyoloe_ref, bn_mode)
    targets = _targets(ppyoloe_ref["inputs"])
    losses = model.loss(ppyoloe_ref["images"], targets, epoch=epoch)
    for name, value in expected["run1"].items():
        assert losses[name].item() == pytest.approx(value, rel=rtol), name
    # Gradients reach every trainable tensor (the fixed projection excepted).
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("bn_mode", "assigner", "epoch"), [r[:3] for r in RUNS])
def test_assignments_match(ppyoloe_ref: dict, bn_mode: str, assigner: str, epoch: int) -> None:
    ref = np.load(_ref_file("batch_A/assign.npz"))
    runs = json.loads(_ref_file("batch_A/losses.json").read_text())["runs"]
    prefix = f"{bn_mode}_{assigner}_"
    model = _training_model(ppyoloe_ref, bn_mode)
    targets = _targets(ppyoloe_ref["inputs"])
    with torch.no_grad():
        outputs = model(ppyoloe_ref["images"])
        result = model.head.assign(*outputs, targets, epoch=epoch)  # priors in upstream order
    labels = torch.where(result.positive, result.labels, torch.full_like(result.labels, 80))
    assert torch.equal(labels, torch.from_numpy(ref[prefix + "assigned_labels"]).long())
    mask = torch.from_numpy(ref[prefix + "mask_positive"]) > 0  # (B, G, N)
    g = mask.shape[1]
    own = torch.nn.functional.one_hot(result.gt_index.clamp(min=0), g).transpose(1, 2).bool()
    assert torch.equal(own & result.positive[:, None, :], mask)
    assert int(result.positive.sum()) == runs[f"{bn_mode}/{assigner}"]["num_positive_anchors"]
    quality = torch.from_numpy(ref[prefix + "assigned_scores_sum"])
    assert (result.quality - quality).abs().max() <= 1e-4
    pos = result.positive
    boxes = torch.from_numpy(ref[prefix + "assigned_bboxes"])[pos]
    gt = torch.from_numpy(ppyoloe_ref["inputs"]["gt_bbox"])
    batch = pos.nonzero()[:, 0]
    assert torch.equal(gt[batch, result.gt_index[pos]], boxes)


# ------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def converted_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The reference .pdparams converted by the CLI, as trained (RepVGG branches) and deployed."""
    from typer.testing import CliRunner

    from odcli.cli.main import app

    src = require(_ref_file("model.pdparams"))
    root = tmp_path_factory.mktemp("ppyoloe_convert")
    plain, deployed = root / "ppyoloe_s.safetensors", root / "ppyoloe_s_deploy.safetensors"
    for dst, extra in ((plain, []), (deployed, ["--deploy"])):
        result = CliRunner().invoke(
            app, ["convert-weights", str(src), str(dst), "--arch", "ppyoloe_s", *extra]
        )
        assert result.exit_code == 0, result.output
    return plain, deployed


def test_cli_conversion_records_source_and_deploy(
    converted_pair: tuple[Path, Path], ppyoloe_ref: dict
) -> None:
    from odcli.weights.checkpoint import read_meta

    plain, deployed = converted_pair
    meta_plain, meta_deployed = read_meta(plain), read_meta(deployed)
    assert meta_plain["converted_from"] == "paddledetection" and not meta_plain["deploy"]
    assert meta_deployed["deploy"] and meta_deployed["recipe"]["model"]["deploy"]
    assert deployed.stat().st_size < plain.stat().st_size
    reloaded = odcli.load_weights(odcli.build_detector("ppyoloe_s"), plain).state_dict()
    for key, value in ppyoloe_ref["model"].state_dict().items():
        assert torch.equal(reloaded[key], value), key
    # The public loader adopts the deployed form when the weights are in it.
    adopted = odcli.load_weights(odcli.build_detector("ppyoloe_s"), deployed)
    assert _count(adopted) == 7_926_277


def test_deployed_checkpoint_loads_for_inference(
    converted_pair: tuple[Path, Path], ppyoloe_ref: dict
) -> None:
    from odcli.inference.load import load_model
    from odcli.models.layers import RepVGGBlock

    loaded = load_model(converted_pair[1], device="cpu", optimize=False)
    blocks = [m for m in loaded.model.modules() if isinstance(m, RepVGGBlock)]
    assert len(blocks) == 11 and all(b.deployed for b in blocks)
    with torch.no_grad():
        cls_logits, reg_dists = loaded.model(ppyoloe_ref["images"])
    for a, b in zip(
        cls_logits + reg_dists, ppyoloe_ref["cls_logits"] + ppyoloe_ref["reg_dists"], strict=True
    ):
        assert (a - b).abs().max() <= 1e-4
    # BN-folded, channels-last inference model (what infer/eval use): same detections.
    fast = load_model(converted_pair[1], device="cpu").model
    _detections_match(
        fast, ppyoloe_ref["inputs"], ppyoloe_ref["images"].contiguous(memory_format=torch.channels_last)
    )


def test_cli_eval_and_infer_run_the_deployed_model(converted_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from odcli.cli.main import app
    from tests.conftest import REPO

    coco8 = REPO / "recipes" / "data" / "coco8"
    deployed = converted_pair[1]
    runner = CliRunner()
    out = tmp_path / "eval" / "dets.json"
    args = ["eval", str(deployed), "--ann", str(coco8 / "annotations" / "instances.json")]
    args += ["--images", str(coco8 / "images"), "--max-images", "2", "--set", "model.test_scale=[320, 320]"]
    result = runner.invoke(app, [*args, "--out", str(out), "--device", "cpu", "-b", "2"])
    assert result.exit_code == 0, result.output
    assert "mAP_50" in result.stdout and json.loads(out.read_text())
    image = require(COCO128 / "images" / "000000000009.jpg")
    result = runner.invoke(
        app, ["infer", str(image), "-w", str(deployed), "--out", str(tmp_path / "infer"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert read_detections(tmp_path / "infer" / "detections.json")[1]


def test_cli_deploy_refuses_models_without_repvgg(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from odcli.cli.main import app
    from tests.conftest import MMDET_REF

    pth = require(MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth")
    dst = tmp_path / "x.safetensors"
    result = CliRunner().invoke(
        app, ["convert-weights", str(pth), str(dst), "--arch", "rtmdet_tiny", "--deploy"]
    )
    assert (
        result.exit_code != 0 and "RepVGG" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )
    assert not dst.exists()
