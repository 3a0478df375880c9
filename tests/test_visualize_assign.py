"""`odet visualize-assign`: the positives it reports are the assigner's, and it finds boxes itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from odcli.assigners.max_iou import MaxIoUAssigner
from odcli.boxes.priors import AnchorConfig, multilevel_anchors
from odcli.cli.main import app
from odcli.cli.options import parse_boxes
from odcli.errors import OdetError

from .conftest import COCO128, require

IMAGE = COCO128 / "images" / "000000000009.jpg"


def test_maxiou_positives_equal_the_assigner(tmp_path: Path) -> None:
    require(IMAGE)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["visualize-assign", str(IMAGE), "--arch", "retinanet_r18", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "assign_000000000009.json").read_text())
    assert report["gt_source"].endswith("instances.json")  # found beside the image, no flags needed
    for name in ("maxiou", "atss", "tal", "dsl"):
        assert (out / f"assign_000000000009_{name}.png").stat().st_size > 10_000
    assert (out / "assign_000000000009.png").exists()

    # Recompute MaxIoU independently on RetinaNet's anchors for the same GT (input pixels).
    sizes = [tuple(s) for s in report["levels"]]
    anchors = torch.cat(multilevel_anchors(AnchorConfig(), sizes))
    gt = torch.tensor(report["gt_boxes_input_pixels"])[None]
    labels = torch.tensor(report["gt_labels"])[None]
    expected = MaxIoUAssigner()(anchors, gt, labels, torch.ones_like(labels, dtype=torch.bool))
    maxiou = next(a for a in report["assigners"] if a["assigner"] == "maxiou")
    for g, positives in enumerate(maxiou["positive_priors"]):
        assert positives == torch.nonzero(expected.gt_index[0] == g).flatten().tolist()
    level_of = np.repeat(np.arange(len(sizes)), [h * w * 9 for h, w in sizes])
    for g, counts in enumerate(maxiou["positives_per_gt_per_level"]):
        assert counts == np.bincount(level_of[maxiou["positive_priors"][g]], minlength=len(sizes)).tolist()


@pytest.mark.parametrize("arch", ["rtmdet_tiny", "ppyoloe_s"])
def test_explicit_boxes_and_one_assigner(tmp_path: Path, arch: str) -> None:
    image = tmp_path / "pic.jpg"
    shutil.copy(require(IMAGE), image)
    args = [
        "visualize-assign",
        str(image),
        "--arch",
        arch,
        "--boxes",
        "10,20,300,400,bowl;320,10,600,200,45",
    ]
    result = CliRunner().invoke(app, [*args, "-a", "dsl", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "assign_pic.json").read_text())
    assert report["gt_labels"] == [45, 45] and [a["assigner"] for a in report["assigners"]] == ["dsl"]
    assert all(sum(c) >= 1 for c in report["assigners"][0]["positives_per_gt_per_level"])


def test_no_boxes_gives_a_one_line_hint(tmp_path: Path) -> None:
    image = tmp_path / "lonely.jpg"
    shutil.copy(require(IMAGE), image)
    result = CliRunner().invoke(app, ["visualize-assign", str(image), "--arch", "rtmdet_tiny"])
    assert result.exit_code != 0
    assert "--boxes" in result.output and "Traceback" not in result.output


def test_parse_boxes_errors() -> None:
    boxes, labels = parse_boxes("0,0,10,10,1; 5,5,20,30,cat", ["a", "b", "cat"])
    assert boxes.shape == (2, 4) and labels.tolist() == [1, 2]
    with pytest.raises(OdetError, match="x2 > x1"):
        parse_boxes("10,0,5,10", ["a"])
