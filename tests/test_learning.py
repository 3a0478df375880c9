"""Learning checks (slow): each detector, from scratch, memorises 8 real COCO images.

Run with ``python -m pytest -q -m slow``. Each test trains a demo recipe on the 8 bundled images
(recipes/data/coco8, taken from COCO128) and requires mAP@0.5 ≥ 0.5 on those same images. The
steps, minutes and final mAP are printed (``-s`` shows them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from odcli.engine.trainer import Trainer
from odcli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def _train_and_score(recipe_name: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    recipe = load_recipe(REPO / "recipes" / recipe_name, [*overrides, "train.eval_interval=1000"])
    trainer = Trainer(recipe, run_dir=run_dir, console=Console(quiet=True))
    start = time.perf_counter()
    trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    stats = trainer.last_eval.stats
    print(
        f"\nlearning check {recipe_name}: {trainer.iter} steps, {minutes:.1f} min, "
        f"mAP {stats['mAP']:.3f}, mAP@0.5 {stats['mAP_50']:.3f}"
    )
    assert (run_dir / "best.safetensors").exists()
    return stats


@pytest.mark.slow
def test_rtmdet_tiny_memorises_eight_coco_images(tmp_path: Path) -> None:
    """RTMDet-tiny, the demo recipe (regression bias 1.0, 50 warm-up steps) trained 300 steps
    instead of 240 at 320 px, for margin. Measured (2 threads): mAP@0.5 0.87 / 0.87 / 0.80 for seeds
    0 / 1 / 2 in ~8 min (torch 2.15); the demo's own 240 steps give 0.75 / 0.78 / 0.79 (torch 2.14.1)."""
    overrides = ["train.epochs=300", "train.cosine_start_epoch=150"]
    assert _train_and_score("demo.yaml", overrides, tmp_path / "run")["mAP_50"] >= 0.5


@pytest.mark.slow
def test_ppyoloe_s_memorises_eight_coco_images(tmp_path: Path) -> None:
    """PP-YOLOE-s (recipes/ppyoloe_s_demo.yaml: 224 px, ATSS then Task-Aligned)."""
    assert _train_and_score("ppyoloe_s_demo.yaml", [], tmp_path / "run")["mAP_50"] >= 0.5


@pytest.mark.slow
def test_retinanet_r18_memorises_eight_coco_images(tmp_path: Path) -> None:
    """RetinaNet R18-FPN with a random backbone (recipes/retinanet_r18_demo.yaml: 256 px)."""
    assert _train_and_score("retinanet_r18_demo.yaml", [], tmp_path / "run")["mAP_50"] >= 0.5
