"""`odet profile`: parameter counts, MACs as MMDetection counts them, a latency split whose total is
measured (end to end, against an independent timing), and `--data` through the recipe's own dataset."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import odcli
from odcli.cli.main import app
from odcli.data.image_io import read_image
from odcli.inference.predictor import Predictor
from odcli.inference.profiling import count_macs, count_parameters
from odcli.models.fuse import optimize_for_inference
from tests.conftest import COCO8, coco8_class_names, write_yolo_dataset


def test_rtmdet_tiny_macs_equal_upstream_count() -> None:
    model = odcli.build_detector("rtmdet_tiny")
    macs = count_macs(model, torch.zeros(1, 3, 640, 640))
    assert macs == 8_089_002_240  # reference/mmdet/rtmdet_tiny_fp16/model_info.json (mmengine counter)
    assert abs(macs / 8.1e9 - 1) < 0.02  # the published 8.1 G
    assert count_parameters(model) == (4_896_168, 4_896_168)


def _median_ms(predictor: Predictor, images: list, runs: int = 5) -> float:
    """Median wall time (ms) of one end-to-end predictor call, timed here, independently of odcli's timer."""
    predictor(images)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        predictor(images)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def test_profile_command_reports_and_splits_latency(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    args = [
        "profile",
        "rtmdet_tiny",
        "--size",
        "160",
        "--iters",
        "5",
        "--batch-sizes",
        "1,2",
        "--device",
        "cpu",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "torch threads" in result.output
    (row,) = json.loads(out.read_text())
    assert row["params"] == 4_896_168 and row["trainable"] == 4_896_168

    # The same model on the same images (the bundled coco8, in file order), timed here end to end.
    model = odcli.build_detector("rtmdet_tiny", test_scale=[160, 160])
    predictor = Predictor(optimize_for_inference(model.eval()))
    files = sorted((COCO8 / "images").glob("*.jpg"))
    assert set(row["timing"]) == {"1", "2"}
    for bs, timing in row["timing"].items():
        parts = [timing["preprocess"], timing["model"], timing["postprocess"]]
        # The total is timed end to end in runs of its own, each doing all three stages: no stage
        # takes longer (the margin is for a loaded machine; leaving the forward out breaks it).
        assert all(0 < part <= 1.5 * timing["total"] for part in parts), timing
        assert timing["throughput"] == pytest.approx(1000 * int(bs) / timing["total"])
        ours = _median_ms(predictor, [read_image(f) for f in files[: int(bs)]])
        assert ours / 3 <= timing["total"] <= 3 * ours, (timing, ours)


def test_profile_data_reads_a_yolo_recipe(tmp_path: Path) -> None:
    # `--data` builds the recipe's training set as training does: YOLO folders here, no COCO JSON.
    write_yolo_dataset(tmp_path / "yolo", {"train": [0, 1, 2, 3, 4]})
    (tmp_path / "yolo" / "classes.txt").write_text("\n".join(coco8_class_names()) + "\n")
    recipe = tmp_path / "yolo.yaml"
    recipe.write_text(
        "model: {arch: rtmdet, size: tiny}\n"
        "data: {format: yolo, root: yolo, train_images: images/train, img_scale: [64, 64], "
        "crop_size: [64, 64]}\n"
    )
    out = tmp_path / "profile.json"
    args = ["profile", "rtmdet_tiny", "--size", "64", "--iters", "1", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--data", str(recipe), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "data pipeline of yolo.yaml" in result.output
    data = json.loads(out.read_text())[-1]["data_pipeline"]
    assert data["format"] == "yolo" and data["dataset_images"] == 5
    assert data["images"] == 16 and data["images_per_s"] > 0


def test_profile_rejects_fp16_on_cpu() -> None:
    result = CliRunner().invoke(app, ["profile", "rtmdet_tiny", "--device", "cpu", "--dtype", "fp16"])
    assert result.exit_code != 0 and "needs a CUDA device" in result.output
