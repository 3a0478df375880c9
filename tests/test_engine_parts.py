"""Engine parts: EMA, learning-rate schedules, param groups, checkpoints, COCO evaluation."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from rich.console import Console
from torch import nn

from odcli.engine.ema import ModelEMA
from odcli.engine.schedules import (
    FlatCosineSchedule,
    MultiStepSchedule,
    build_param_groups,
    schedule_from_state_dict,
)
from odcli.errors import OdetError
from odcli.evaluation.coco import detections_to_coco, evaluate_coco
from odcli.evaluation.report import render_eval_table
from odcli.weights import checkpoint as ckpt_mod
from odcli.weights.checkpoint import load_checkpoint, read_meta, save_checkpoint, write_json_atomic
from tests.conftest import COCO128, require

# ----------------------------------------------------------------------------------------------
# EMA


class _Toy(nn.Module):
    """One scalar weight, one float buffer, one integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("running", torch.tensor(10.0, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0, dtype=torch.int64))

    def set(self, w: float, running: float, count: int) -> None:
        with torch.no_grad():
            self.w.fill_(w)
            self.running.fill_(running)
            self.count.fill_(count)


def test_ema_two_blending_steps_by_hand() -> None:
    model = _Toy()
    ema = ModelEMA(model, momentum=0.1, gamma=10)
    assert not ema.module.training and not ema.module.w.requires_grad

    model.set(2.0, 20.0, 1)
    ema.update(model)  # first update copies
    assert ema.steps == 1
    assert ema.module.w.item() == 2.0 and ema.module.running.item() == 20.0

    # update 2: m = 0.9 * exp(-2/10) + 0.1 = 0.8368576777701836; ema = 2 + m * (4 - 2)
    model.set(4.0, 40.0, 2)
    ema.update(model)
    assert ema.module.w.item() == pytest.approx(3.6737153555403674, rel=1e-12)
    assert ema.module.running.item() == pytest.approx(36.737153555403674, rel=1e-12)  # buffer followed
    assert ema.module.count.item() == 2  # integer buffer copied

    # update 3: m = 0.9 * exp(-3/10) + 0.1 = 0.766736398613546; ema = 3.67371... * (1 - m)
    model.set(0.0, 0.0, 3)
    ema.update(model)
    assert ema.module.w.item() == pytest.approx(0.8569440743020633, rel=1e-12)
    assert ema.steps == 3


def test_ema_without_buffer_averaging_copies_buffers() -> None:
    model = _Toy()
    ema = ModelEMA(model, momentum=0.1, gamma=10, update_buffers=False)
    model.set(2.0, 20.0, 1)
    ema.update(model)
    model.set(4.0, 40.0, 2)
    ema.update(model)
    assert ema.module.w.item() == pytest.approx(3.6737153555403674, rel=1e-12)
    assert ema.module.running.item() == 40.0


def test_ema_shared_tensor_blended_once_per_key_like_upstream() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(1, 1, bias=False, dtype=torch.float64)
            self.b = self.a  # two state-dict keys, one tensor (like RTMDet's shared head convs)

    model = Shared()
    ema = ModelEMA(model, momentum=0.1, gamma=10)
    with torch.no_grad():
        model.a.weight.fill_(2.0)
        ema.update(model)
        model.a.weight.fill_(4.0)
        ema.update(model)
    m = 0.9 * math.exp(-2 / 10) + 0.1
    expected = 4.0 - (1 - m) ** 2 * (4.0 - 2.0)  # two lerps with the same weight
    assert ema.module.a.weight.item() == pytest.approx(expected, rel=1e-12)


def test_ema_state_dict_round_trip_and_wrapper() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    wrapped = nn.DataParallel(model)  # keys must not gain the wrapper's "module." prefix
    ema = ModelEMA(wrapped)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        model(torch.randn(2, 3, 8, 8))  # moves BN running stats
        ema.update(wrapped)
    state = ema.state_dict()
    assert int(state["steps"]) == 3 and "module.0.weight" in state

    other = ModelEMA(model)
    other.load_state_dict(state)
    assert other.steps == 3
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, other.module.state_dict()[k])
    ema.update(model)
    other.update(model)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, other.module.state_dict()[k])

    with pytest.raises(OdetError):
        ModelEMA(nn.Linear(2, 2)).load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# schedules


def _mmengine_chained(
    base: float, total: int, warmup: int, start: float, cos_start: float, eta_min: float
) -> list[float]:
    """Replays mmengine's chained LinearLR (by iter) + CosineAnnealingLR (converted to iters)."""
    lr, out, span = base, [], total - cos_start
    tw = warmup - 1
    for t in range(total):
        if t < warmup:
            lr = lr * start if t == 0 else lr * (1 + (1 - start) / (tw * start + (t - 1) * (1 - start)))
        if t >= cos_start and t - cos_start > 0:
            s = t - cos_start
            lr = (1 + math.cos(math.pi * s / span)) / (1 + math.cos(math.pi * (s - 1) / span)) * (
                lr - eta_min
            ) + eta_min
        out.append(lr)
    return out


def test_flat_cosine_hand_values() -> None:
    s = FlatCosineSchedule(
        base_lr=0.004, total_iters=3000, warmup_iters=1000, cosine_start_iter=1500, min_lr=0.0002
    )
    assert s.lr_at(0) == pytest.approx(4e-8, rel=1e-12)
    assert s.lr_at(500) == pytest.approx(0.004 * (1e-5 + (1 - 1e-5) * 500 / 999), rel=1e-12)
    assert s.lr_at(999) == pytest.approx(0.004, rel=1e-12)  # warm-up ends at W - 1 (mmengine)
    assert s.lr_at(1000) == s.lr_at(1499) == s.lr_at(1500) == pytest.approx(0.004, rel=1e-12)
    assert s.lr_at(2250) == pytest.approx(0.0021, rel=1e-12)  # cosine mid-point: (base + min) / 2
    assert s.lr_at(2999) == pytest.approx(0.00020000416716477932, rel=1e-9)
    assert s.lr_at(3000) == pytest.approx(0.0002, rel=1e-12)


@pytest.mark.parametrize(
    ("total", "warmup", "cos_start"),
    [(3000, 1000, 1500), (40, 30, 20), (20, 8, 4)],  # the last two overlap warm-up and cosine
)
def test_flat_cosine_matches_chained_upstream(total: int, warmup: int, cos_start: int) -> None:
    s = FlatCosineSchedule(
        base_lr=0.004,
        total_iters=total,
        warmup_iters=warmup,
        warmup_start_factor=1e-5,
        cosine_start_iter=cos_start,
        min_lr=0.0002,
    )
    ref = _mmengine_chained(0.004, total, warmup, 1e-5, cos_start, 0.0002)
    for t, want in enumerate(ref):
        assert s.lr_at(t) == pytest.approx(want, rel=1e-9, abs=1e-15), t
    assert schedule_from_state_dict(json.loads(json.dumps(s.state_dict()))) == s


def test_multistep_values_and_apply() -> None:
    s = MultiStepSchedule(base_lr=0.01, warmup_iters=500, milestones=(800, 1100))
    assert s.lr_at(0) == pytest.approx(1e-5, rel=1e-12)
    assert s.lr_at(499) == pytest.approx(0.01, rel=1e-12)
    assert s.lr_at(799) == pytest.approx(0.01, rel=1e-12)
    assert s.lr_at(800) == pytest.approx(0.001, rel=1e-12)
    assert s.lr_at(1099) == pytest.approx(0.001, rel=1e-12)
    assert s.lr_at(1100) == pytest.approx(0.0001, rel=1e-12)
    early = MultiStepSchedule(base_lr=0.01, warmup_iters=500, milestones=(100,))
    assert early.lr_at(100) == pytest.approx(0.01 * (0.001 + 0.999 * 100 / 499) * 0.1, rel=1e-12)
    assert schedule_from_state_dict(json.loads(json.dumps(s.state_dict()))) == s

    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.5}], lr=1.0)
    assert s.apply(opt, 900) == pytest.approx(0.001)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.0005)


def test_bad_schedule_settings_rejected() -> None:
    with pytest.raises(ValueError):
        FlatCosineSchedule(base_lr=0.1, total_iters=10, warmup_iters=1, cosine_start_iter=5, min_lr=0.0)
    with pytest.raises(ValueError):
        FlatCosineSchedule(base_lr=0.1, total_iters=10, warmup_iters=2, cosine_start_iter=10, min_lr=0.0)


def test_param_groups_no_decay_on_norm_and_bias() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)
            self.gn = nn.GroupNorm(2, 8)
            self.fc = nn.Linear(8, 2)
            self.fc_again = self.fc  # shared module: its parameters must appear once
            self.scale = nn.Parameter(torch.ones(1))

    net = Net()
    groups = build_param_groups(net, weight_decay=0.05)
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed)) == len(list(net.parameters()))
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(net.conv.weight)] == decay_of[id(net.fc.weight)] == decay_of[id(net.scale)] == 0.05
    for p in (net.conv.bias, net.fc.bias, net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias):
        assert decay_of[id(p)] == 0.0
    torch.optim.AdamW(groups, lr=1e-3)  # accepted as-is by torch

    same = build_param_groups(net, weight_decay=1e-4, norm_decay=1e-4, bias_decay=1e-4)
    assert len(same) == 1


# ----------------------------------------------------------------------------------------------
# checkpoints


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.head_again = self.head  # shared storage in state_dict: safetensors refuses it unhandled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x)))).mean()


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    opt.zero_grad()
    model(x).backward()
    opt.step()


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_round_trip_resumes_adamw_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.AdamW(build_param_groups(model, weight_decay=0.05), lr=1e-2)
    ema = ModelEMA(model)
    _train_step(model, opt, seed=1)
    ema.update(model)

    meta = {"arch": "toy", "epoch": 1, "iter": 1, "classes": ["a", "b"], "cat_ids": [1, 3], "recipe": {}}
    path = tmp_path / "ck" / "last.safetensors"
    save_checkpoint(
        path, model_state=model.state_dict(), meta=meta, ema_state=ema.state_dict(), optimizer=opt
    )
    assert path.is_file() and _no_temp_files(path.parent)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)

    ck = load_checkpoint(path)
    assert ck.meta == {"format": "odet-checkpoint/1", **meta}
    assert read_meta(path) == ck.meta
    assert ck.ema_state is not None and int(ck.ema_state["steps"]) == 1
    assert ck.optimizer_state is not None

    restored = _Net()
    restored.load_state_dict(ck.model_state)
    restored_opt = torch.optim.AdamW(build_param_groups(restored, weight_decay=0.05), lr=1e-2)
    restored_opt.load_state_dict(ck.optimizer_state)
    restored_ema = ModelEMA(restored)
    restored_ema.load_state_dict(ck.ema_state)

    _train_step(model, opt, seed=2)
    _train_step(restored, restored_opt, seed=2)
    ema.update(model)
    restored_ema.update(restored)
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for (name, a), b in zip(
        ema.module.state_dict().items(), restored_ema.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_sgd_state_and_extra_tensors(tmp_path: Path) -> None:
    model = _Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    _train_step(model, opt, seed=3)
    path = tmp_path / "sgd.safetensors"
    save_checkpoint(
        path, model_state=model.state_dict(), meta={}, optimizer=opt, extra_tensors={"rng": torch.arange(4)}
    )
    ck = load_checkpoint(path)
    assert ck.ema_state is None and torch.equal(ck.extra_tensors["rng"], torch.arange(4))
    fresh = torch.optim.SGD(_Net().parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    fresh.load_state_dict(ck.optimizer_state)
    for i, st in opt.state_dict()["state"].items():
        assert torch.equal(st["momentum_buffer"], fresh.state_dict()["state"][i]["momentum_buffer"])


def test_failed_write_keeps_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model_state={"w": torch.ones(3)}, meta={"epoch": 1})
    before = path.read_bytes()

    def broken_save(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"partial")  # a half-written file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "save_file", broken_save)
    with pytest.raises(OdetError, match="No space left"):
        save_checkpoint(path, model_state={"w": torch.zeros(3)}, meta={"epoch": 2})
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path) and os.listdir(tmp_path) == ["last.safetensors"]
    assert read_meta(path)["epoch"] == 1


def test_bad_checkpoint_files_give_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, model_state={"w": torch.randn(64, 64)}, meta={"epoch": 3})
    data = path.read_bytes()

    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "header_cut.safetensors": data[:20],
        "text.safetensors": b"hello, this is not a checkpoint at all",
        "model.pth": b"PK\x03\x04" + b"\0" * 64,
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        for reader in (load_checkpoint, read_meta):
            with pytest.raises(OdetError) as info:
                reader(tmp_path / name)
            assert "\n" not in str(info.value)
    with pytest.raises(OdetError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")

    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(OdetError, match="without odet metadata"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_write_json_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    write_json_atomic(target, {"mAP": 0.5, "classes": ["ä"]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"mAP": 0.5, "classes": ["ä"]}
    assert _no_temp_files(target.parent)


# ----------------------------------------------------------------------------------------------
# COCO evaluation


@pytest.fixture(scope="module")
def coco_gt() -> COCO:
    ann = require(COCO128 / "annotations" / "instances.json")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann))


def _gt_as_detections(coco_gt: COCO, shift: float = 0.0) -> tuple[list[dict], list[dict], list[int]]:
    """Every annotation (crowd ones included) as a score-1 detection, optionally shifted right."""
    cat_ids = sorted(coco_gt.getCatIds())
    label_of = {c: i for i, c in enumerate(cat_ids)}
    dets, metas = [], []
    for image_id in sorted(coco_gt.getImgIds()):
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
        boxes = torch.tensor(
            [[x + shift * w, y, x + shift * w + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
            dtype=torch.float32,
        ).reshape(-1, 4)
        dets.append(
            {
                "boxes": boxes,
                "scores": torch.ones(len(anns)),
                "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            }
        )
        metas.append({"image_id": image_id})
    return dets, metas, cat_ids


def test_ground_truth_as_detections_scores_perfect(coco_gt: COCO) -> None:
    # Crowd regions (10 in COCO128) are fed too: a detection on a crowd box matches that crowd
    # region and is ignored (neither hit nor false positive), so precision stays 1 everywhere and
    # every non-crowd box is recovered at IoU 1 -> mAP is exactly 1.
    dets, metas, cat_ids = _gt_as_detections(coco_gt)
    results = detections_to_coco(dets, metas, cat_ids)
    assert len(results) == len(coco_gt.getAnnIds())
    assert results[0]["category_id"] in cat_ids and len(results[0]["bbox"]) == 4
    res = evaluate_coco(coco_gt, results)
    assert res.stats["mAP"] == pytest.approx(1.0, abs=1e-9)
    assert res.stats["AR@100"] == pytest.approx(1.0, abs=1e-9)
    present = [ap for _, ap, _ in res.per_class if not math.isnan(ap)]
    assert present and all(ap == pytest.approx(1.0) for ap in present)
    assert any(math.isnan(ap) for _, ap, _ in res.per_class)  # COCO128 lacks some classes
    assert "Average Precision" in res.summary_text

    out = io.StringIO()
    render_eval_table(res, Console(file=out, width=120))
    assert "mAP" in out.getvalue() and "person" in out.getvalue()


def test_shifted_boxes_score_lower(coco_gt: COCO) -> None:
    # Shifting by 15 % of the width gives IoU 0.85 / 1.15 = 0.739: a hit at IoU 0.50..0.70
    # (5 of the 10 thresholds), a miss from 0.75 on -> mAP 0.5, mAP_50 1, mAP_75 0.
    dets, metas, cat_ids = _gt_as_detections(coco_gt, shift=0.15)
    res = evaluate_coco(coco_gt, detections_to_coco(dets, metas, cat_ids))
    assert res.stats["mAP"] == pytest.approx(0.5, abs=0.01)
    assert res.stats["mAP_50"] == pytest.approx(1.0, abs=1e-9)
    assert res.stats["mAP_75"] == pytest.approx(0.0, abs=0.01)  # a few overlapping GTs can still match


def test_empty_and_foreign_results(coco_gt: COCO) -> None:
    res = evaluate_coco(coco_gt, [])
    assert set(res.stats.values()) == {0.0}
    by_name = {n: ap for n, ap, _ in res.per_class}
    assert by_name["person"] == 0.0 and math.isnan(by_name["hair drier"])
    with pytest.raises(OdetError, match="not in the annotation file"):
        evaluate_coco(coco_gt, [{"image_id": -5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])
