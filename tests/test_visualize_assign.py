"""`odet visualize-assign`: the positives it reports are the assigner's, and it finds boxes itself."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from odcli.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from odcli.assigners.max_iou import MaxIoUAssigner
from odcli.assigners.task_aligned import TaskAlignedAssigner
from odcli.boxes.priors import AnchorConfig, multilevel_anchors, multilevel_points
from odcli.cli.main import app
from odcli.cli.options import parse_boxes
from odcli.errors import OdetError
from odcli.viz.assignment import STATIC_BOX_STRIDES, STATIC_SCORE
from odcli.viz.palette import GT_PALETTE, gt_colors, neighbours

from .conftest import COCO128, MMDET_REF, require

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


# --------------------------------------------------------------------------- readable pictures (issue 15)


@pytest.fixture(scope="module")
def rtmdet_untrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """``odet visualize-assign`` of COCO image 9 (8 GTs: 3 bowls, broccoli, 4 oranges) on an untrained
    RTMDet-tiny: (output folder, its JSON report, the printed output)."""
    require(IMAGE)
    out = tmp_path_factory.mktemp("assign_rtmdet")
    result = CliRunner().invoke(
        app, ["visualize-assign", str(IMAGE), "--arch", "rtmdet_tiny", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "assign_000000000009.json").read_text()), result.output


def _bgr(hex_color: str) -> tuple[int, int, int]:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return b, g, r


def _square_priors(levels: list[list[int]], strides: tuple[int, ...], side: float) -> torch.Tensor:
    """RTMDet's points (offset 0), level-major → (N, 4) ``[x, y, stride, stride]``, plus the square
    boxes of ``side`` strides around them as columns 4:8."""
    points = torch.cat(multilevel_points([tuple(s) for s in levels], strides))
    half = points[:, 2:3] * side / 2
    return torch.cat([points, points[:, :2] - half, points[:, :2] + half], dim=1)


def test_static_mode_positives_are_the_assigners_on_the_priors_own_boxes(
    rtmdet_untrained: tuple[Path, dict, str],
) -> None:
    """Untrained, tal and dsl used to give 0/0/0 for every GT; static mode gives every GT positives,
    and they are exactly what the assigners make of predictions equal to 5-stride squares scored 0.5."""
    _, report, output = rtmdet_untrained
    by_name = {a["assigner"]: a for a in report["assigners"]}
    assert by_name["tal"]["mode"] == by_name["dsl"]["mode"] == "static"
    assert by_name["maxiou"]["mode"] == by_name["atss"]["mode"] == "geometry"
    assert "5 strides" in by_name["dsl"]["mode_means"] and "0.5" in by_name["dsl"]["mode_means"]
    assert "static mode" in output and "tal static" in output
    for name in ("tal", "dsl"):
        assert all(sum(c) >= 1 for c in by_name[name]["positives_per_gt_per_level"]), name

    priors = _square_priors(report["levels"], (8, 16, 32), 5.0)
    gt = torch.tensor(report["gt_boxes_input_pixels"])[None]
    labels = torch.tensor(report["gt_labels"])[None]
    mask = torch.ones_like(labels, dtype=torch.bool)
    boxes, logits = priors[None, :, 4:], torch.zeros((1, len(priors), 80))
    expected = {
        "tal": TaskAlignedAssigner()(logits.sigmoid(), boxes, priors[:, :2], gt, labels, mask),
        "dsl": DynamicSoftLabelAssigner()(logits, boxes, priors[:, :4], gt, labels, mask),
    }
    for name, assigned in expected.items():
        for g, positives in enumerate(by_name[name]["positive_priors"]):
            assert positives == torch.nonzero(assigned.gt_index[0] == g).flatten().tolist(), (name, g)


def test_static_flag_with_weights_equals_no_weights_and_predictions_differ(
    tmp_path: Path, rtmdet_untrained: tuple[Path, dict, str]
) -> None:
    """Static mode depends on the geometry only: with (reference) weights and --static it gives the
    untrained run's positives; without --static the weights' own predictions are ranked."""
    weights = require(MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth")
    base = [
        "visualize-assign",
        str(IMAGE),
        "--arch",
        "rtmdet_tiny",
        "-w",
        str(weights),
        "-a",
        "tal",
        "-a",
        "dsl",
    ]
    reports = {}
    for flag in ("--static", None):
        out = tmp_path / str(flag)
        result = CliRunner().invoke(app, [*base, *([flag] if flag else []), "-o", str(out)])
        assert result.exit_code == 0, result.output
        reports[flag] = {
            a["assigner"]: a for a in json.loads((out / "assign_000000000009.json").read_text())["assigners"]
        }
    untrained = {a["assigner"]: a for a in rtmdet_untrained[1]["assigners"]}
    for name in ("tal", "dsl"):
        assert reports["--static"][name]["mode"] == "static"
        assert reports["--static"][name]["positive_priors"] == untrained[name]["positive_priors"]
        assert reports[None][name]["mode"] == "predictions"
    assert reports[None]["tal"]["positive_priors"] != untrained["tal"]["positive_priors"]


def test_legend_swatches_hold_every_gt_colour_in_order(rtmdet_untrained: tuple[Path, dict, str]) -> None:
    """The legend (right of the panels) has one solid swatch per GT in the GT's colour, GT 0 on top."""
    out, report, _ = rtmdet_untrained
    picture = cv2.imread(str(out / "assign_000000000009_dsl.png"))
    assert picture is not None and 1000 <= picture.shape[1] <= 1800 and picture.shape[0] <= 700
    colors = report["gt_colors"]
    assert len(colors) == 8
    centres = []
    for code in colors:
        solid = np.all(picture == _bgr(code), axis=-1).astype(np.uint8)
        core = cv2.erode(solid, np.ones((14, 14), np.uint8))  # only blocks ≥ 14 × 14 px survive
        count, _, _, stats_centres = cv2.connectedComponentsWithStats(core)
        assert count == 2, f"{code}: {count - 1} solid swatches"  # background + one swatch
        centres.append(stats_centres[1])
    xs, ys = np.array(centres).T
    assert xs.max() - xs.min() < 1 and xs.min() > 0.8 * picture.shape[1]  # one column, on the right
    assert np.all(np.diff(ys) > 10)  # GT 0 … 7 from the top


def test_neighbouring_gts_get_different_colours(rtmdet_untrained: tuple[Path, dict, str]) -> None:
    """On the image, every two overlapping GTs differ (here all 8 differ); the colouring keeps
    touching boxes apart also beyond the palette's size, and keeps neighbours' colours unalike."""
    _, report, _ = rtmdet_untrained
    colors, boxes = report["gt_colors"], np.array(report["gt_boxes_input_pixels"])
    assert len(set(colors)) == len(colors)
    # Overlapping GTs (9 pairs here) also look unlike: CIELAB distance ≥ 45 (purple/magenta are 29).
    lab = cv2.cvtColor(np.array([[_bgr(c) for c in colors]], np.float32) / 255, cv2.COLOR_BGR2LAB)[0]
    lo, hi = (
        np.maximum(boxes[:, None, :2], boxes[None, :, :2]),
        np.minimum(boxes[:, None, 2:], boxes[None, :, 2:]),
    )
    overlapping = np.triu(np.all(hi > lo, axis=-1), k=1)
    assert overlapping.sum() >= 5
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    assert distance[overlapping].min() >= 45, distance[overlapping]
    # 30 boxes in a row, each touching the next: neighbours differ, and far ones may share colours.
    row = np.array([[i * 10.0, 0.0, i * 10.0 + 10.0, 10.0] for i in range(30)])
    chain = gt_colors(row, margin=0.0)
    assert all(a != b for a, b in itertools.pairwise(chain)) and len(set(chain)) == len(GT_PALETTE)
    # 13 boxes stacked on one spot: all 13 palette colours, none twice.
    assert len(set(gt_colors(np.tile([[0.0, 0.0, 50.0, 50.0]], (13, 1)), margin=0.0))) == 13
    assert np.array_equal(neighbours(boxes, 0.0), overlapping | overlapping.T)


def _uniform_grey_fraction(picture: np.ndarray, run: int = 64) -> float:
    """Fraction of pixels in horizontal runs of ≥ ``run`` identical grey, non-white pixels: letterbox
    padding (a photo, even faded, is never that flat over 64 px)."""
    grey = (picture.max(-1) == picture.min(-1)) & (picture[..., 0] < 250)
    same = np.zeros(picture.shape[:2], bool)
    same[:, 1:] = np.all(picture[:, 1:] == picture[:, :-1], axis=-1) & grey[:, 1:] & grey[:, :-1]
    # Length of the run of equal pixels ending at each pixel, row by row (cumulative sum reset at breaks).
    idx = np.where(~same, np.arange(same.shape[1])[None], 0)
    length = np.arange(same.shape[1])[None] - np.maximum.accumulate(idx, axis=1) + 1
    return float((length >= run).mean())


def test_pictures_have_no_grey_padding_and_a_small_file(rtmdet_untrained: tuple[Path, dict, str]) -> None:
    """The letterbox padding of the 640 × 640 network input (rows 480-639 here) is cropped away."""
    out, _, _ = rtmdet_untrained
    for name in ("maxiou", "atss", "tal", "dsl"):
        path = out / f"assign_000000000009_{name}.png"
        assert _uniform_grey_fraction(cv2.imread(str(path))) < 0.01, name
        assert path.stat().st_size < 200_000, name
    assert (out / "assign_000000000009.png").stat().st_size < 400_000


def test_help_explains_static_mode() -> None:
    result = CliRunner().invoke(app, ["visualize-assign", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--static" in text and "static mode" in text
    # The help's numbers are the ones static mode uses.
    assert f"score {STATIC_SCORE:g} for every class" in text and f"{STATIC_BOX_STRIDES:g} strides" in text
