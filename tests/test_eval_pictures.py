"""Evaluation pictures, read back pixel by pixel: PR curves, P/R/F1 against the score threshold and
the confusion matrix (its matching rule on a hand-made scene); ``odet eval --detections`` scoring the
ground truth as detections through the command itself; ``--no-plots``, no matplotlib, the training
hook. (The numbers by hand and against pycocotools: ``test_eval_numbers.py``.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.evaluation.coco import evaluate_coco
from odcli.viz.confusion import draw_confusion, reduce_confusion
from odcli.viz.eval_pictures import EvalPicturesHook, draw_evaluation_pictures, picture_prefix
from odcli.viz.pr_curves import MEAN_COLOR, draw_pr_curves
from tests.test_eval_numbers import COCO8_ANN, coco_index, det, gt_as_detections, scene

runner = CliRunner()


@pytest.fixture(scope="module")
def coco8() -> tuple[dict, COCO]:
    data = json.loads(COCO8_ANN.read_text())
    return data, coco_index(data)


# --------------------------------------------------------------------------------- pixel readers
def _line_rows(
    img: np.ndarray, box: tuple[int, int, int, int], color: str, tol: int = 40
) -> list[np.ndarray]:
    """For each pixel column strictly inside ``box``, the rows (image pixels) of ``color``."""
    x0, y0, x1, y1 = box
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
    inside = img[y0 + 2 : y1 - 1, x0 + 2 : x1 - 1, ::-1].astype(np.int32)  # BGR → RGB
    hit = np.abs(inside - rgb).max(axis=2) <= tol
    return [np.flatnonzero(hit[:, c]) + y0 + 2 for c in range(hit.shape[1])]


def _y_of(box: tuple[int, int, int, int], precision: float, top: float = 1.03) -> float:
    """Image row of ``precision`` in a PR panel whose y axis runs 0 … ``top``."""
    _, y0, _, y1 = box
    return y1 - precision / top * (y1 - y0)


def _assert_curve_at(img: np.ndarray, box: tuple[int, int, int, int], precision: float) -> None:
    """The mean curve crosses (nearly) every column of ``box`` at ``precision``, and its highest
    pixel in each column is there (the legend's sample line sits lower)."""
    cols = _line_rows(img, box, MEAN_COLOR)
    want = _y_of(box, precision)
    tops = [rows.min() for rows in cols if rows.size]
    assert len(tops) >= 0.97 * len(cols)
    near = [abs(t - want) <= 3 for t in tops]
    assert sum(near) >= 0.97 * len(cols), (want, sorted(set(tops))[:10])


def _cell_colored(img: np.ndarray, box: tuple[int, int, int, int], n: int, row: int, col: int) -> bool:
    """Whether cell (row, col) of an n × n matrix drawn in ``box`` is tinted (not white / grey):
    the median saturation of its central half, where the number it holds covers little."""
    x0, y0, x1, y1 = box
    cw, ch = (x1 - x0) / n, (y1 - y0) / n
    patch = img[
        int(y0 + (row + 0.25) * ch) : int(y0 + (row + 0.75) * ch),
        int(x0 + (col + 0.25) * cw) : int(x0 + (col + 0.75) * cw),
    ].astype(np.int32)
    saturation = patch.max(axis=2) - patch.min(axis=2)
    return float(np.median(saturation)) > 40


def _colored_cells(path: Path, box: tuple[int, int, int, int], n: int) -> set[tuple[int, int]]:
    img = cv2.imread(str(path))
    return {(r, c) for r in range(n) for c in range(n) if _cell_colored(img, box, n, r, c)}


# ---------------------------------------------------------------------- odet eval --detections
def test_eval_of_ground_truth_as_detections_is_perfect(coco8, tmp_path: Path) -> None:
    data, _ = coco8
    dets = tmp_path / "gt_detections.json"
    dets.write_text(json.dumps(gt_as_detections(data)))
    result = runner.invoke(app, ["eval", "--detections", str(dets), "--ann", str(COCO8_ANN)])
    assert result.exit_code == 0, result.output
    assert "Per-class AP, and P / R / F1" in result.stdout and "pictures   →" in result.stdout

    metrics = json.loads((tmp_path / "gt_metrics.json").read_text())
    assert metrics["stats"]["mAP"] == pytest.approx(1.0) and metrics["stats"]["mAP_50"] == pytest.approx(1.0)
    prf1 = metrics["prf1"]
    assert (prf1["P"], prf1["R"], prf1["F1"], prf1["score_thr"]) == (1.0, 1.0, 1.0, 1.0)
    assert len(prf1["per_class"]) == 26 and all(c["F1"] == 1.0 for c in prf1["per_class"])
    assert set(metrics["pr_curves"]["precision_50"]) == set(metrics["pr_curves"]["precision_50_95"]) == {1.0}
    counts = np.array(metrics["confusion"]["counts"])
    assert counts.shape == (81, 81) and metrics["confusion"]["labels"][-1] == "background"
    assert np.trace(counts) == counts.sum() == len(data["annotations"]) == 42  # coco8 has no crowd box

    # The PR curves: a horizontal line at precision 1 across both panels. (Drawn again for the
    # panels' places, which the command does not print.)
    _, gt = coco8
    picture = draw_pr_curves(evaluate_coco(gt, gt_as_detections(data)).details, tmp_path / "again.png")
    pr = cv2.imread(str(tmp_path / "gt_pr.png"))
    assert pr.shape[1] == 1100 and 400 < pr.shape[0] < 600 and pr.shape[:2] == picture.size[::-1]
    for box in picture.panels.values():
        _assert_curve_at(pr, box, 1.0)
    # The confusion matrix: 19 classes, "other" (7 more) and background; tinted cells only on the
    # diagonal, the background row and column empty.
    confusion = draw_confusion(evaluate_coco(gt, gt_as_detections(data)).details, tmp_path / "cm.png")
    n = len(confusion.labels)
    assert n == 21 and confusion.labels[-2:] == ["other (7)", "background"]
    assert cv2.imread(str(tmp_path / "gt_confusion.png")).shape[:2] == confusion.size[::-1]
    assert _colored_cells(tmp_path / "gt_confusion.png", confusion.panels["matrix"], n) == {
        (i, i) for i in range(n - 1)
    }
    assert cv2.imread(str(tmp_path / "gt_f1.png")).shape[1] == 1300


def test_shifted_boxes_move_ap_and_the_curve_down(coco8, tmp_path: Path) -> None:
    # 15 % of the width to the right: IoU 0.85 / 1.15 = 0.74, a hit at IoU 0.50 … 0.70 (5 of 10
    # thresholds), a miss above: precision 1 at IoU 0.5, 0.5 averaged over 0.50:0.95.
    data, gt = coco8
    result = evaluate_coco(gt, gt_as_detections(data, shift=0.15))
    assert result.stats["mAP_50"] == pytest.approx(1.0) and result.stats["mAP"] == pytest.approx(
        0.5, abs=0.02
    )
    assert np.allclose(result.details.pr.overall(None), 0.5, atol=0.03)
    picture = draw_pr_curves(result.details, tmp_path / "pr.png")
    img = cv2.imread(str(picture.path))
    _assert_curve_at(img, picture.panels["iou50"], 1.0)
    _assert_curve_at(img, picture.panels["iou50_95"], float(np.mean(result.details.pr.overall(None))))
    top_band = [r for r in _line_rows(img, picture.panels["iou50_95"], MEAN_COLOR) if r.size]
    assert all(r.min() > _y_of(picture.panels["iou50_95"], 0.8) for r in top_band)  # nothing left at the top

    # A hundred widths away, off the image: every detection a false positive, every box missed.
    far = evaluate_coco(gt, gt_as_detections(data, shift=100.0))
    counts = far.details.confusion.counts
    assert far.stats["mAP_50"] == 0.0 and np.trace(counts) == 0
    assert counts[-1, :-1].sum() == counts[:-1, -1].sum() == 42


# ------------------------------------------------------------------------------ confusion rule
def test_confusion_matrix_follows_the_documented_rule(tmp_path: Path) -> None:
    dets = [
        det(1, [10, 10, 40, 40], 0.9),  # A on A: diagonal
        det(1, [110, 110, 30, 30], 0.8),  # A inside A's crowd region: ignored, as pycocotools does
        det(2, [110, 110, 30, 30], 0.7),  # B inside A's crowd region: a false positive of B
        det(2, [12, 10, 40, 40], 0.6),  # B on A, whose box is taken: a false positive of B
        det(2, [121, 10, 40, 40], 0.5),  # B on C (IoU 0.95): C detected as B
        det(3, [60, 60, 10, 10], 0.05),  # below the threshold: not counted
    ]
    result = evaluate_coco(scene(), dets, confusion_score_thr=0.25)
    cm = result.details.confusion
    assert (cm.iou, cm.score_thr, result.details.confusion_rule) == (0.5, 0.25, "fixed")
    expected = np.array(
        [  # predicted A, B, C, background
            [1, 0, 0, 0],  # true A
            [0, 0, 0, 1],  # true B: missed
            [0, 1, 0, 0],  # true C: taken for B
            [0, 2, 0, 0],  # background: two false positives of B
        ]
    )
    np.testing.assert_array_equal(cm.counts, expected)
    shares = cm.normalised()  # each row over its sum
    assert shares[3, 1] == shares[2, 1] == shares[1, 3] == shares[0, 0] == 1.0

    # The picture puts the tint exactly where the counts are (no "other": 3 classes).
    picture = draw_confusion(result.details, tmp_path / "cm.png")
    assert picture.labels == ["A", "B", "C", "background"]
    assert _colored_cells(picture.path, picture.panels["matrix"], 4) == {(0, 0), (1, 3), (2, 1), (3, 1)}


def test_relabelled_class_lands_off_the_diagonal(coco8, tmp_path: Path) -> None:
    data, gt = coco8
    person, car = 1, 3
    result = evaluate_coco(gt, gt_as_detections(data, relabel={person: car}))
    d = result.details
    p, c = d.names.index("person"), d.names.index("car")
    n_person = sum(a["category_id"] == person for a in data["annotations"])
    n_car = sum(a["category_id"] == car for a in data["annotations"])
    assert d.confusion.counts[p, c] == n_person and d.confusion.counts[p, p] == 0
    assert d.confusion.counts[c, c] == n_car and np.trace(d.confusion.counts) == 42 - n_person
    picture = draw_confusion(d, tmp_path / "cm.png")
    row, col = picture.labels.index("person"), picture.labels.index("car")
    cells = _colored_cells(picture.path, picture.panels["matrix"], len(picture.labels))
    assert (row, col) in cells and (row, row) not in cells and (col, col) in cells


# ----------------------------------------------------------------- switches, hook, no matplotlib
def test_no_plots_and_no_matplotlib_keep_the_numbers(coco8, tmp_path: Path, monkeypatch) -> None:
    data, _ = coco8
    dets = tmp_path / "a_detections.json"
    dets.write_text(json.dumps(gt_as_detections(data)))
    args = ["eval", "--detections", str(dets), "--ann", str(COCO8_ANN)]
    result = runner.invoke(app, [*args, "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "prf1" in json.loads((tmp_path / "a_metrics.json").read_text())
    assert not list(tmp_path.glob("*.png")) and "note:" not in result.stdout

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and 'pip install "odet[plots]"' in notes[0]
    assert not list(tmp_path.glob("*.png")) and "confusion" in json.loads(
        (tmp_path / "a_metrics.json").read_text()
    )


def test_bad_detections_options_are_one_line(coco8, tmp_path: Path) -> None:
    dets = tmp_path / "d.json"
    dets.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1]}]))
    for args, message in (
        (["--ann", str(COCO8_ANN)], "invalid detection"),
        ([], "--detections needs the ground truth"),
        (["x.safetensors", "--ann", str(COCO8_ANN)], "drop TARGET"),
        (["--ann", str(COCO8_ANN), "--confusion-thr", "2"], "--confusion-thr must be a score"),
    ):
        result = runner.invoke(app, ["eval", "--detections", str(dets), *args])
        assert result.exit_code != 0 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_hook_writes_each_evaluation_into_the_run(coco8, tmp_path: Path, monkeypatch) -> None:
    from odcli.engine.hooks import RunView

    data, gt = coco8
    perfect, shifted = (
        evaluate_coco(gt, gt_as_detections(data)),
        evaluate_coco(gt, gt_as_detections(data, 0.15)),
    )
    unused = dict.fromkeys(("recipe", "history", "model", "eval_model", "val_set", "device"))

    def view(epoch: int, result) -> RunView:
        return RunView(
            run_dir=tmp_path / "run",
            classes=[],
            epoch=epoch,
            iter=4 * epoch,
            best_map=1.0,
            last_eval=result,
            **unused,
        )

    eval_dir = tmp_path / "run" / "eval"
    names = [eval_dir / n for n in ("metrics.json", "pr.png", "f1.png", "confusion.png")]
    hook = EvalPicturesHook(max_share=1e-9)  # a drawing makes the next evaluation wait "forever"
    hook.after_evaluation(view(1, perfect), perfect)
    assert sorted(eval_dir.iterdir()) == sorted(names) and [p.path for p in hook.pictures] == names[1:]
    assert json.loads(names[0].read_text())["epoch"] == 1
    # The next evaluation comes too soon: its numbers are written, its pictures wait for the end.
    assert hook.draw(view(2, shifted), final=False) == names[:1]
    assert json.loads(names[0].read_text())["stats"]["mAP"] == pytest.approx(0.5, abs=0.02)
    assert hook.draw(view(2, shifted), final=True) == names[1:]
    img = cv2.imread(str(names[1]))
    _assert_curve_at(
        img, hook.pictures[0].panels["iou50_95"], float(np.mean(shifted.details.pr.overall(None)))
    )
    assert hook.draw(view(2, shifted), final=True) == []  # nothing new

    notes: list[str] = []
    hook = EvalPicturesHook(max_share=None, note=notes.append)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for epoch in (3, 4):
        hook.after_evaluation(view(epoch, perfect if epoch == 3 else shifted), perfect)
    # no pictures, the training goes on, one note in all, the numbers of the last evaluation
    assert len(notes) == 1 and "odet[plots]" in notes[0] and hook.pictures == []
    assert json.loads(names[0].read_text())["epoch"] == 4


def test_picture_names_follow_the_metrics_file(coco8, tmp_path: Path) -> None:
    assert picture_prefix(Path("run/x_metrics.json")) == "x_"
    assert picture_prefix(Path("metrics.json")) == "" and picture_prefix(Path("m.json")) == "m_"
    reduced, labels, summed = reduce_confusion(np.diag([5, 0, 3, 0]), ["a", "b", "c"], max_classes=20)
    assert (
        labels == ["a", "c", "background"]
        and summed == 0
        and reduced.tolist() == [[5, 0, 0], [0, 3, 0], [0, 0, 0]]
    )
    data, gt = coco8
    pictures = draw_evaluation_pictures(evaluate_coco(gt, gt_as_detections(data)), tmp_path, prefix="x_")
    sizes = [p.path.stat().st_size for p in pictures]
    assert [p.path.name for p in pictures] == ["x_pr.png", "x_f1.png", "x_confusion.png"]
    assert all(10_000 < s < 200_000 for s in sizes), sizes  # readable, not bloated
    # Perfect detections: precision, recall and F1 are 1 at every threshold up to the scores (1).
    f1 = pictures[1]
    img = cv2.imread(str(f1.path))
    assert img.shape[:2] == f1.size[::-1] and set(f1.panels) == {"precision", "recall", "f1"}
    for box in f1.panels.values():
        _assert_curve_at(img, box, 1.0)
