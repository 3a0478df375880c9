"""The per-class AP table lists the classes that occur in the evaluated images (all with a flag),
and keeps every class name on one line, on a terminal or in a log file."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

from pycocotools.coco import COCO
from rich.console import Console

from odcli.evaluation.coco import evaluate_coco
from odcli.evaluation.report import render_eval_table

COCO8 = Path(__file__).resolve().parents[1] / "recipes" / "data" / "coco8" / "annotations" / "instances.json"


def _gt_as_results(data: dict) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in data["annotations"]
    ]


def _cells(lines: list[str], name: str) -> bool:
    """Whether ``name`` fills a whole cell of a rendered table (not part of a longer name)."""
    return any(re.search(rf"│ {re.escape(name)} +│", line) for line in lines)


def _render(result, width: int, **kwargs) -> list[str]:
    out = io.StringIO()
    render_eval_table(result, Console(file=out, width=width), **kwargs)  # a file: not a terminal
    return out.getvalue().splitlines()


def test_per_class_table_shows_the_classes_present_unwrapped() -> None:
    data = json.loads(COCO8.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    present = {names[a["category_id"]] for a in data["annotations"] if not a.get("iscrowd")}
    assert len(present) == 26 and len(names) == 80  # coco8: 26 of COCO's 80 classes occur
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates its indexing
        gt = COCO(str(COCO8))
    result = evaluate_coco(gt, _gt_as_results(data))

    lines = _render(result, width=80)
    table = lines[next(i for i, line in enumerate(lines) if "Per-class AP" in line) :]
    listed = {name for name in names.values() if _cells(table, name)}
    assert listed == present  # e.g. no 'toaster' row, which coco8 does not contain
    assert "26 of 80 classes occur (--all-classes lists all)" in table
    multiword = [n for n in present if " " in n]  # 'cell phone', 'dining table', …
    assert multiword and all(_cells(table, n) for n in multiword)  # never wrapped
    assert max(len(line) for line in lines) <= 80

    every = _render(result, width=80, all_classes=True)
    assert all(_cells(every, name) for name in names.values())
    narrow = _render(result, width=40)  # one (class, AP, AP50) group per row still fits
    assert all(_cells(narrow, n) for n in multiword)
