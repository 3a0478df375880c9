"""Evaluation numbers beyond mAP: the PR curves and the score sweep are pycocotools' own arrays and
matches, precision / recall / F1 at the best-F1 threshold by hand, and the table that shows them.
(The pictures, the confusion matrix and ``odet eval --detections``: ``test_eval_pictures.py``.)"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console

from odcli.evaluation.coco import evaluate_coco
from odcli.evaluation.report import render_eval_table

REPO = Path(__file__).resolve().parents[1]
COCO8_ANN = REPO / "recipes" / "data" / "coco8" / "annotations" / "instances.json"


def coco_index(data: dict) -> COCO:
    """A pycocotools index of a COCO dict (quietly)."""
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


@pytest.fixture(scope="module")
def coco8() -> tuple[dict, COCO]:
    data = json.loads(COCO8_ANN.read_text())
    return data, coco_index(data)


def gt_as_detections(data: dict, shift: float = 0.0, relabel: dict[int, int] | None = None) -> list[dict]:
    """Every annotation as a score-1 detection, moved right by ``shift`` × its width, relabelled."""
    relabel = relabel or {}
    return [
        {
            "image_id": a["image_id"],
            "category_id": relabel.get(a["category_id"], a["category_id"]),
            "bbox": [a["bbox"][0] + shift * a["bbox"][2], *a["bbox"][1:]],
            "score": 1.0,
        }
        for a in data["annotations"]
    ]


def scene() -> COCO:
    """One 200 × 200 image: classes 1 (A), 2 (B), 3 (C); regular boxes and one crowd region of A."""
    boxes = [
        (1, [10, 10, 40, 40], 0),  # id 1: A
        (1, [100, 100, 80, 80], 1),  # id 2: A crowd
        (2, [10, 120, 40, 40], 0),  # id 3: B, never detected
        (3, [120, 10, 40, 40], 0),  # id 4: C, detected as B
    ]
    return coco_index(
        {
            "images": [{"id": 1, "width": 200, "height": 200, "file_name": "x.jpg"}],
            "categories": [{"id": c, "name": n} for c, n in ((1, "A"), (2, "B"), (3, "C"))],
            "annotations": [
                {"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": z}
                for i, (c, b, z) in enumerate(boxes)
            ],
        }
    )


def det(cat: int, box: list[float], score: float) -> dict:
    return {"image_id": 1, "category_id": cat, "bbox": box, "score": score}


# ---------------------------------------------------------------------------------- P / R / F1
def test_precision_recall_f1_at_the_best_threshold_by_hand() -> None:
    # Class A: 1 regular box (+ the crowd region). Three detections: a hit (0.9005), a false positive
    # (0.8005) and a duplicate of the hit (0.7005), also false. Score ≥ t keeps a prefix of them:
    # t = 0.9 → P 1, R 1; t = 0.8 → P ½; t = 0.7 → P ⅓; t = 0.95 → nothing kept, P 0 and R 0.
    dets = [
        det(1, [10, 10, 40, 40], 0.9005),
        det(1, [60, 10, 40, 40], 0.8005),
        det(1, [11, 10, 40, 40], 0.7005),
    ]
    # B: 1 box, found at 0.4005 after a false positive at 0.5005: P ½ R 1 (F1 ⅔) for t ≤ 0.4005.
    dets += [det(2, [60, 150, 40, 40], 0.5005), det(2, [10, 120, 40, 40], 0.4005)]
    sweep = evaluate_coco(scene(), dets).details.sweep
    k_a, k_b = 0, 1
    at = {t: int(np.flatnonzero(np.isclose(sweep.thresholds, t))[0]) for t in (0.4, 0.5, 0.7, 0.8, 0.9, 0.95)}
    assert sweep.num_gt.tolist() == [1, 1, 1]
    assert sweep.precision[k_a, at[0.9]] == 1.0 and sweep.precision[k_a, at[0.8]] == pytest.approx(1 / 2)
    assert sweep.precision[k_a, at[0.7]] == pytest.approx(1 / 3) and sweep.recall[k_a, at[0.7]] == 1.0
    assert np.isnan(sweep.precision[k_a, at[0.95]]) and sweep.recall[k_a, at[0.95]] == 0.0  # nothing kept
    assert sweep.precision[k_b, at[0.4]] == pytest.approx(1 / 2) and sweep.recall[k_b, at[0.5]] == 0.0
    # C: 1 box, never detected: F1 0 everywhere. Mean F1 = (F1_A + F1_B + 0) / 3, best at t ≤ 0.4005:
    # A: P ⅓ R 1 → F1 ½; B: P ½ R 1 → F1 ⅔; so (½ + ⅔) / 3 = 0.3889 at t = 0.400. C keeps no
    # detection: no precision, so the mean precision is over A and B.
    assert sweep.best_threshold == pytest.approx(0.4)
    p, r, f1 = sweep.overall_at_best()
    assert (p, r, f1) == pytest.approx(((1 / 3 + 1 / 2) / 2, 2 / 3, (1 / 2 + 2 / 3) / 3))


def test_the_table_gains_precision_recall_f1(coco8) -> None:
    data, gt = coco8
    result = evaluate_coco(gt, gt_as_detections(data, relabel={1: 3}))
    out = io.StringIO()
    render_eval_table(result, Console(file=out, width=120), prf1=True)
    lines = out.getvalue().splitlines()
    assert any(line.startswith("│ F1 ") for line in lines)  # overall rows in the summary
    person = next(line for line in lines if line.startswith("│ person "))
    cells = [c.strip() for c in person.split("│")[1:7]]
    assert cells == ["person", "0.000", "0.000", "-", "0.000", "0.000"]  # AP, AP50, no precision: none kept
    narrow = io.StringIO()
    render_eval_table(result, Console(file=narrow, width=50), prf1=True)  # the AP table, then a P/R/F1 one
    text = narrow.getvalue()
    assert "Per-class AP" in text and "Per-class precision / recall / F1" in text
    assert max(len(line) for line in text.splitlines()) <= 50


def test_curves_are_pycocotools_own_numbers(coco8) -> None:
    # Jittered, partly relabelled copies of the ground truth with random scores, scored here by a
    # COCOeval of our own: the curves are its arrays, the sweep's recall at threshold 0 its recall.
    data, gt = coco8
    rng = np.random.default_rng(0)
    dets = []
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(3):
            j = rng.normal(0, 0.15, 4)
            cat = a["category_id"] if rng.random() > 0.2 else int(rng.choice(sorted(gt.getCatIds())))
            box = [x + j[0] * w, y + j[1] * h, w * (1 + j[2]), h * (1 + j[3])]
            dets.append(
                {"image_id": a["image_id"], "category_id": cat, "bbox": box, "score": float(rng.random())}
            )
    details = evaluate_coco(gt, dets).details
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        ev.params.maxDets = [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
    np.testing.assert_array_equal(
        details.pr.precision, ev.eval["precision"][:, :, :, 0, -1].astype(np.float32)
    )
    has_gt = details.sweep.has_gt
    np.testing.assert_allclose(details.sweep.recall[has_gt, 0], ev.eval["recall"][0, has_gt, 0, -1])
    assert 0 < details.sweep.best_threshold < 1 and details.confusion_rule == "best F1"
    # The diagonal is pycocotools' true positives at that threshold: recall × ground-truth count.
    sweep, best = details.sweep, details.sweep.best_index
    hits = np.rint(sweep.recall[:, best] * sweep.num_gt).astype(int)
    assert hits.sum() > 0 and np.diag(details.confusion.counts)[:-1].tolist() == hits.tolist()
