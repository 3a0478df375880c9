"""Recipe values the code cannot use are refused where the recipe is read: one line, exit 2.

Every ``--set`` below used to end in a traceback (``ValueError``, ``IndexError``, ``assert``, a
division by zero) from deep inside model building or training, or to run on with a setting that
means nothing (an NMS IoU of 1.5). Through the real CLI each must now stop with exactly one line on
stderr that names the key and the bad value, exit status 2, no traceback, and no file written: the
run never starts. The same holds for an MMDetection RTMDet checkpoint whose head convs are not shared
across levels, in ``odet convert-weights`` and ``odet infer --arch``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.errors import OdetError
from odcli.recipe import load_recipe
from tests.conftest import DEMO, MMDET_REF, REPO, require, small_demo_args

RETINANET_DEMO = REPO / "recipes" / "retinanet_r18_demo.yaml"
PPYOLOE_DEMO = REPO / "recipes" / "ppyoloe_s_demo.yaml"
IMAGE = REPO / "recipes" / "data" / "coco8" / "images" / "000000000009.jpg"

# Seconds-long runs, so that a value that is *not* refused shows as a finished run, not a wait.
_SHORT = ["train.epochs=1", "train.warmup_iters=0"]
_RETINANET_SMALL = [
    "model.test_scale=[64, 64]", "data.img_scale=[64, 64]", "data.batch_size=2", "data.num_workers=0",
    "model.nms_pre=100",
]  # fmt: skip
_PPYOLOE_SMALL = [
    "model.test_scale=[64, 64]", "data.ppyoloe_target_sizes=[64]", "data.batch_size=2", "data.num_workers=0",
    "data.persistent_workers=false", "model.nms_pre=100",
]  # fmt: skip


def _sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


FAMILY_ARGS: dict[str, tuple[Path, list[str]]] = {
    "rtmdet": (DEMO, [*small_demo_args(), *_sets(_SHORT)]),
    "retinanet": (RETINANET_DEMO, _sets([*_RETINANET_SMALL, *_SHORT])),
    "ppyoloe": (PPYOLOE_DEMO, _sets([*_PPYOLOE_SMALL, *_SHORT])),
}

# (family, settings, words the error line must hold). What each did before, in the comment.
RECIPE_CASES: list[tuple[str, list[str], list[str]]] = [
    # issue 12, item 10
    (
        "ppyoloe",
        ["model.neck_out_channels=[768, 384]"],
        ["model.neck_out_channels", "[768, 384]", "3 integers"],
    ),
    ("ppyoloe", ["model.backbone_layers=[]"], ["model.backbone_layers", "[]", "4 integers"]),  # assert
    ("rtmdet", ["train.ema_momentum=0"], ["train.ema_momentum", "(0, 1)", "0.0"]),  # EMA ValueError
    ("rtmdet", ["train.warmup_start_factor=2"], ["train.warmup_start_factor", "[0, 1]", "2.0"]),
    # the rest of TrainConfig: optimiser / schedule / EMA / seeding ValueErrors
    ("rtmdet", ["train.ema_gamma=0"], ["train.ema_gamma", "> 0"]),
    ("rtmdet", ["train.min_lr_ratio=2"], ["train.min_lr_ratio", "[0, 1]", "2.0"]),
    ("rtmdet", ["train.optimizer=sgd", "train.momentum=-1"], ["train.momentum", "-1.0"]),
    ("rtmdet", ["train.cosine_start_epoch=-1"], ["train.cosine_start_epoch", ">= 0", "-1"]),
    ("rtmdet", ["train.schedule=multistep", "train.milestones=[-1]"], ["train.milestones", "[-1]"]),
    ("rtmdet", ["train.seed=-1"], ["train.seed", "-1"]),  # NumPy: expected non-negative integer
    ("rtmdet", ["train.device=gpu0"], ["train.device", "'gpu0'", "cuda:N"]),  # torch RuntimeError
    # RTMDet model
    ("rtmdet", ["model.expand_ratio=0"], ["model.expand_ratio", "> 0", "0.0"]),  # conv groups
    ("rtmdet", ["model.bn_eps=0"], ["model.bn_eps", "> 0"]),  # batch_norm eps
    ("rtmdet", ["model.mean=[1, 2]"], ["model.mean", "[1.0, 2.0]", "3 numbers"]),  # size mismatch
    ("rtmdet", ["model.std=[58, 57, 0]"], ["model.std", "3 positive numbers"]),  # NaN loss
    ("rtmdet", ["model.test_scale=[64]"], ["model.test_scale", "[64]", "2 integers"]),  # unpack
    ("rtmdet", ["model.assigner_topk=-1"], ["model.assigner_topk", ">= 0", "-1"]),  # topk k < 0
    ("rtmdet", ["model.nms_pre=-1"], ["model.nms_pre", ">= 1", "-1"]),  # topk k < 0
    ("rtmdet", ["model.nms_iou_thr=1.5"], ["model.nms_iou_thr", "[0, 1]", "1.5"]),  # ran on
    # RetinaNet model
    ("retinanet", ["model.fpn_channels=0"], ["model.fpn_channels", ">= 1", "0"]),  # division by zero
    ("retinanet", ["model.fpn_start_level=-1"], ["model.fpn_start_level", "[0, 3]", "-1"]),
    ("retinanet", ["model.prior_prob=0"], ["model.prior_prob", "(0, 1)", "0.0"]),  # division by zero
    ("retinanet", ["model.prior_prob=1"], ["model.prior_prob", "(0, 1)", "1.0"]),  # log(0)
    (
        "retinanet",
        ["model.anchor_strides=[8, 16, 32, 64, 0]"],
        ["model.anchor_strides", "[8, 16, 32, 64, 0]"],
    ),
    ("retinanet", ["model.scales_per_octave=0"], ["model.scales_per_octave", ">= 1"]),  # empty conv
    ("retinanet", ["model.anchor_ratios=[]"], ["model.anchor_ratios", "[]"]),  # empty conv
    ("retinanet", ["model.coder_means=[0, 0]"], ["model.coder_means", "4 numbers", "[0.0, 0.0]"]),
    ("retinanet", ["model.wh_ratio_clip=0"], ["model.wh_ratio_clip", "(0, 1)"]),  # math domain error
    ("retinanet", ["model.size_divisor=0"], ["model.size_divisor", ">= 1", "0"]),  # division by zero
    ("retinanet", ["model.test_scale=[1, 2, 3]"], ["model.test_scale", "[1, 2, 3]"]),  # unpack
    ("retinanet", ["model.nms_pre=-1"], ["model.nms_pre", ">= 1"]),
    # PP-YOLOE model
    ("ppyoloe", ["model.backbone_layers=[3, 6, 6]"], ["model.backbone_layers", "[3, 6, 6]"]),  # IndexError
    ("ppyoloe", ["model.backbone_channels=[64, 128, 256, 512]"], ["model.backbone_channels", "5 integers"]),
    ("ppyoloe", ["model.neck_out_channels=[768, 384, 0]"], ["model.neck_out_channels", "[768, 384, 0]"]),
    ("ppyoloe", ["model.width_mult=0"], ["model.width_mult", "> 0"]),  # division by zero
    ("ppyoloe", ["model.neck_stage_num=0"], ["model.neck_stage_num", ">= 1"]),  # channel mismatch
    ("ppyoloe", ["model.reg_max=0"], ["model.reg_max", ">= 1", "0"]),  # cross_entropy target -1
    ("ppyoloe", ["model.mean=[1, 2]"], ["model.mean", "3 numbers"]),  # IndexError
    ("ppyoloe", ["model.atss_topk=-1"], ["model.atss_topk", ">= 1", "-1"]),  # topk k < 0
    ("ppyoloe", ["model.tal_topk=0"], ["model.tal_topk", ">= 1", "0"]),  # ran on: no positives at all
    ("ppyoloe", ["model.static_assigner_epoch=0", "model.tal_topk=-1"], ["model.tal_topk", "-1"]),
    ("ppyoloe", ["model.nms_pre=0"], ["model.nms_pre", "-1 for all"]),  # upstream keeps none
    # issue 13: one name per setting; PP-YOLOE's nms_top_k is nms_pre like the other families'
    ("ppyoloe", ["model.nms_top_k=100"], ["model.nms_top_k", "renamed", "model.nms_pre"]),
    ("rtmdet", ["model.nms_top_k=100"], ["model.nms_top_k", "renamed", "model.nms_pre"]),
    ("ppyoloe", ["data.ppyoloe_expand_fill=[1, 2]"], ["data.ppyoloe_expand_fill", "3 numbers"]),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _one_line_error(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``odet ARGS`` in-process; check exit 2, one stderr line, no traceback, no file written."""
    monkeypatch.chdir(tmp_path)  # default outputs (runs/) would land here
    monkeypatch.setenv("COLUMNS", "400")  # one logical line must not be wrapped into several
    before = _files(tmp_path)
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output + result.stderr, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1, result.stderr
    created = _files(tmp_path) - before
    assert not created, f"left behind: {sorted(map(str, created))}"
    return lines[0]


@pytest.mark.parametrize(
    ("family", "settings", "words"), RECIPE_CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in RECIPE_CASES]
)
def test_unusable_recipe_value_is_one_line_before_training(
    family: str, settings: list[str], words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, small = FAMILY_ARGS[family]
    args = ["train", str(recipe), *small, *_sets(settings), "--run-dir", str(tmp_path / "run")]
    line = _one_line_error(args, tmp_path, monkeypatch)
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_batch_size=0", "data.val_batch_size"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.flip_prob=2", "data.flip_prob"),
        ("data.mosaic_prob=-0.5", "data.mosaic_prob"),
        ("data.mixup_prob=1.5", "data.mixup_prob"),
        ("data.ppyoloe_expand_prob=2", "data.ppyoloe_expand_prob"),
        ("data.ppyoloe_expand_ratio=0.5", "data.ppyoloe_expand_ratio"),
        ("data.min_size=-1", "data.min_size"),
    ],
)
def test_data_values_are_refused_when_the_recipe_is_read(setting: str, key: str) -> None:
    """Before, these were caught only once the loader or pipeline was built (or never, when the
    transform was off); now ``load_recipe`` itself refuses them, for every command that reads one."""
    with pytest.raises(OdetError, match=rf"^{key} must be .*, got "):
        load_recipe(DEMO, [setting])


@pytest.fixture(scope="module")
def nonshared_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RTMDet-tiny's MMDetection checkpoint with level 1's first cls conv made different from
    level 0's: the layout of a head trained with ``share_conv=False``."""
    ckpt = torch.load(
        require(MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"), map_location="cpu", weights_only=True
    )
    key = "bbox_head.cls_convs.1.0.conv.weight"
    ckpt["state_dict"][key] = ckpt["state_dict"][key] + 0.01
    path = tmp_path_factory.mktemp("nonshared") / "rtmdet_tiny_nonshared.pth"
    torch.save(ckpt, path)
    return path


_NONSHARED_WORDS = ["bbox_head.cls_convs.1.0.conv.weight", "does not share its convs across levels"]


def test_convert_refuses_a_head_without_shared_convs(
    nonshared_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "out.safetensors"
    args = ["convert-weights", str(nonshared_checkpoint), str(dst), "--arch", "rtmdet_tiny"]
    line = _one_line_error(args, tmp_path, monkeypatch)
    for word in _NONSHARED_WORDS:
        assert word in line, (word, line)


def test_infer_refuses_a_head_without_shared_convs(
    nonshared_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["infer", str(IMAGE), "--weights", str(nonshared_checkpoint), "--arch", "rtmdet_tiny"]
    line = _one_line_error([*args, "--out", str(tmp_path / "out"), "--device", "cpu"], tmp_path, monkeypatch)
    for word in _NONSHARED_WORDS:
        assert word in line, (word, line)
