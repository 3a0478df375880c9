"""`odet profile`: parameter counts, MACs as MMDetection counts them, and a consistent latency split."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

import odcli
from odcli.cli.main import app
from odcli.inference.profiling import count_macs, count_parameters


def test_rtmdet_tiny_macs_equal_upstream_count() -> None:
    model = odcli.build_detector("rtmdet_tiny")
    macs = count_macs(model, torch.zeros(1, 3, 640, 640))
    assert macs == 8_089_002_240  # reference/mmdet/rtmdet_tiny_fp16/model_info.json (mmengine counter)
    assert abs(macs / 8.1e9 - 1) < 0.02  # the published 8.1 G
    assert count_parameters(model) == (4_896_168, 4_896_168)


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
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "torch threads" in result.output
    (row,) = json.loads(out.read_text())
    assert row["params"] == 4_896_168 and row["trainable"] == 4_896_168
    for timing in row["timing"].values():
        parts = timing["preprocess"] + timing["model"] + timing["postprocess"]
        assert abs(parts - timing["total"]) <= 0.05 * timing["total"]
        assert timing["throughput"] > 0


def test_profile_rejects_fp16_on_cpu() -> None:
    result = CliRunner().invoke(app, ["profile", "rtmdet_tiny", "--device", "cpu", "--dtype", "fp16"])
    assert result.exit_code != 0 and "needs a CUDA device" in result.output
