"""Learning checks (slow): each detector, from scratch, memorises 8 real COCO images.

Run with ``python -m pytest -q -m slow``. Each test trains a demo recipe on the 8 bundled images
(recipes/data/coco8, taken from COCO128) and requires mAP@0.5 ≥ 0.5 on those same images. The
steps, minutes and final mAP are printed (``-s`` shows them).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from odcli.engine.trainer import Trainer
from odcli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
COCO128_IMAGES = REPO.parent / "shared" / "data" / "coco128" / "images"


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
    if importlib.util.find_spec("onnxruntime") is not None:
        _int8_stays_close(tmp_path / "run" / "best.safetensors", tmp_path)


def _int8_stays_close(weights: Path, folder: Path) -> None:
    """The trained model exported in float32 and in int8 (calibrated on 64 COCO128 images that are
    not among the 8), both evaluated through ONNX Runtime on the 8 images: int8 keeps mAP@0.5 within
    0.05 and mAP within 0.08 (measured on the demo's 240 steps: 0.750 → 0.751, 0.555 → 0.526)."""
    from typer.testing import CliRunner

    from odcli.cli.main import app

    coco8 = REPO / "recipes" / "data" / "coco8"
    seen = {p.name for p in (coco8 / "images").iterdir()}
    calib = folder / "calib.txt"
    calib.write_text("\n".join(str(p) for p in sorted(COCO128_IMAGES.glob("*.jpg")) if p.name not in seen))
    stats = {}
    for name, flags in (("f32", []), ("int8", ["--int8", "--calib", str(calib)])):
        path = folder / f"{name}.onnx"
        result = CliRunner().invoke(app, ["export", str(weights), "-o", str(path), *flags])
        assert result.exit_code == 0, result.output
        out = folder / f"detections_{name}.json"
        args = ["eval", str(path), "--ann", str(coco8 / "annotations" / "instances.json"),
                "--images", str(coco8 / "images"), "--no-plots", "-o", str(out)]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        stats[name] = json.loads((folder / f"detections_{name}_metrics.json").read_text())["stats"]
    print(f"int8 through ONNX Runtime: mAP {stats['f32']['mAP']:.3f} -> {stats['int8']['mAP']:.3f}, "
          f"mAP@0.5 {stats['f32']['mAP_50']:.3f} -> {stats['int8']['mAP_50']:.3f}")  # fmt: skip
    assert stats["int8"]["mAP_50"] >= stats["f32"]["mAP_50"] - 0.05
    assert stats["int8"]["mAP"] >= stats["f32"]["mAP"] - 0.08


@pytest.mark.slow
def test_ppyoloe_s_memorises_eight_coco_images(tmp_path: Path) -> None:
    """PP-YOLOE-s (recipes/ppyoloe_s_demo.yaml: 224 px, ATSS then Task-Aligned)."""
    assert _train_and_score("ppyoloe_s_demo.yaml", [], tmp_path / "run")["mAP_50"] >= 0.5


@pytest.mark.slow
def test_retinanet_r18_memorises_eight_coco_images(tmp_path: Path) -> None:
    """RetinaNet R18-FPN with a random backbone (recipes/retinanet_r18_demo.yaml: 256 px)."""
    assert _train_and_score("retinanet_r18_demo.yaml", [], tmp_path / "run")["mAP_50"] >= 0.5
