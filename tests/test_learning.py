"""Learning check (slow): RTMDet-tiny from scratch memorises 8 real COCO images.

Run with ``python -m pytest -q -m slow``. It trains the bundled demo recipe (8 images from
COCO128, 320 px) for 300 steps and requires mAP@0.5 ≥ 0.5 on those same images.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from odcli.engine.trainer import Trainer
from odcli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rtmdet_tiny_memorises_eight_coco_images(tmp_path: Path) -> None:
    # The demo recipe trained twice as long (300 steps of 8 images; ~8 min on 2 CPU cores).
    overrides = ["train.epochs=300", "train.cosine_start_epoch=150", "train.eval_interval=1000"]
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", overrides)
    trainer = Trainer(recipe, run_dir=tmp_path / "run", console=Console(quiet=True))
    start = time.perf_counter()
    trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    stats = trainer.last_eval.stats
    print(
        f"\nlearning check: {trainer.iter} steps, {minutes:.1f} min, "
        f"mAP {stats['mAP']:.3f}, mAP@0.5 {stats['mAP_50']:.3f}"
    )
    assert stats["mAP_50"] >= 0.5
    assert (tmp_path / "run" / "best.safetensors").exists()


@pytest.mark.slow
def test_ppyoloe_s_memorises_eight_coco_images(tmp_path: Path) -> None:
    """PP-YOLOE-s from scratch (recipes/ppyoloe_s_demo.yaml: 224 px, ATSS then Task-Aligned)."""
    recipe = load_recipe(REPO / "recipes" / "ppyoloe_s_demo.yaml", ["train.eval_interval=1000"])
    trainer = Trainer(recipe, run_dir=tmp_path / "run", console=Console(quiet=True))
    start = time.perf_counter()
    trainer.fit()
    minutes = (time.perf_counter() - start) / 60
    stats = trainer.last_eval.stats
    print(
        f"\nlearning check: {trainer.iter} steps, {minutes:.1f} min, "
        f"mAP {stats['mAP']:.3f}, mAP@0.5 {stats['mAP_50']:.3f}"
    )
    assert stats["mAP_50"] >= 0.5
