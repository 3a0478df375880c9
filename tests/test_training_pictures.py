"""Training pictures: ``curves.png`` drawn where the logged data puts it, ``odet plot`` (one run, runs
overlaid, ``--metric``, one-line errors), one batch per pipeline stage, and life without matplotlib."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from odcli.cli.main import app
from odcli.data import sample as sample_module
from odcli.data.datasets import build_dataset
from odcli.data.pipelines import build_train_pipeline
from odcli.engine.metrics_log import MetricsLogger
from odcli.models.zoo import input_spec_of
from odcli.recipe import load_recipe
from odcli.viz.batches import augmented_samples, draw_stage_batches
from odcli.viz.curves import COLORS, DrawnCurves, draw_curves, smooth
from odcli.viz.draw import class_color
from odcli.viz.run_logs import curves_of, read_run_history
from odcli.viz.run_pictures import CurvesPicture
from tests.conftest import DEMO, small_demo_args

PLOTS_NOTE = 'pip install "odet[plots]"'


def _write_run(run: Path, *, start: float, end: float, iters: int = 120, ipe: int = 10) -> None:
    """Logs of a made-up run, written by the trainer's own logger: the loss goes linearly from
    ``start`` to ``end`` (components 40 / 60 % of it), lr 0.01, an evaluation every 3 epochs with mAP
    rising linearly from 0.1 to 0.5 (mAP_50 = mAP + 0.2, mAP_75 = mAP · 0.8)."""
    run.mkdir(parents=True)
    log = MetricsLogger(run, tensorboard=False)
    for i in range(1, iters + 1):
        loss = start + (end - start) * (i - 1) / (iters - 1)
        epoch = (i - 1) // ipe + 1
        log.log_iter({"epoch": epoch, "iter": i, "lr": 0.01, "loss": loss, "loss_cls": 0.4 * loss,
                      "loss_bbox": 0.6 * loss, "data_time": 0.01, "iter_time": 0.1})  # fmt: skip
        if i % ipe == 0:
            record = {"epoch": epoch, "iter": i, "loss": loss, "lr": 0.01, "time": 1.0}
            if epoch % 3 == 0:
                m = 0.1 + 0.4 * i / iters
                log.log_eval({"epoch": epoch, "iter": i, "mAP": m})
                record.update({"mAP": m, "mAP_50": m + 0.2, "mAP_75": 0.8 * m, "mAP_s": -1.0})
            log.log_epoch(record)
    log.close()


def _mask(img: np.ndarray, hex_color: str, tol: int = 40) -> np.ndarray:
    """(H, W) pixels within ``tol`` (per channel) of the matplotlib colour ``hex_color``."""
    rgb = [int(hex_color[k : k + 2], 16) for k in (1, 3, 5)]
    return (np.abs(img.astype(int) - rgb[::-1]) <= tol).all(axis=-1)


def _rows_at(mask: np.ndarray, box: tuple[int, int, int, int], part: slice) -> np.ndarray:
    """Rows, as fractions of the panel's height from its top, of the mask's pixels in ``part`` of
    the panel's columns (its frame left out)."""
    x0, y0, x1, y1 = box
    inner = mask[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3]
    cols = np.arange(inner.shape[1])[part]
    rows, _ = np.nonzero(inner[:, cols])
    return rows / inner.shape[0]


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_smooth_is_a_centred_gaussian_that_skips_nan() -> None:
    kernel_sum = 1 + 2 * math.exp(-0.5) + 2 * math.exp(-2)  # sigma 1: weights e^(-d²/2), d = -2..2
    out = smooth(np.array([0.0, 0.0, 3.0, 0.0, 0.0]), 1.0)
    assert out[2] == pytest.approx(3 / kernel_sum)
    assert out[0] == pytest.approx(3 * math.exp(-2) / (1 + math.exp(-0.5) + math.exp(-2)))  # renormalised
    line = np.arange(40.0)
    np.testing.assert_allclose(smooth(line, 2.0)[6:-6], line[6:-6])  # centred: no lag on a trend
    with_gap = smooth(np.array([1.0, np.nan, 1.0, 1.0, 1.0]), 1.0)
    assert np.isnan(with_gap[1]) and np.allclose(with_gap[[0, 2, 3, 4]], 1.0)


def _near_value(mask: np.ndarray, picture: DrawnCurves, key: str, x: float, y: float) -> bool:
    """Whether ``mask`` has a pixel within 3 px of where panel ``key`` puts the value (x, y)."""
    x0, y0, x1, y1 = picture.panels[key]
    xmin, xmax, ymin, ymax = picture.limits[key]
    col = round(x0 + (x - xmin) / (xmax - xmin) * (x1 - x0))
    row = round(y0 + (ymax - y) / (ymax - ymin) * (y1 - y0))
    return bool(mask[row - 3 : row + 4, col - 1 : col + 2].any())


def test_curves_lie_where_the_logged_data_puts_them(tmp_path: Path) -> None:
    run = tmp_path / "falling"
    _write_run(run, start=2.0, end=0.2)
    curves = curves_of(read_run_history(run), "falling")
    assert curves.iters_per_epoch == 10 and list(curves.losses) == ["loss", "loss_cls", "loss_bbox"]
    assert list(curves.metrics) == ["mAP", "mAP_50", "mAP_75"]  # mAP_s: -1 everywhere, nothing to draw
    picture = draw_curves([curves], tmp_path / "curves.png")
    img = cv2.imread(str(picture.path))
    # 5 panels (3 losses, lr, COCO AP): 3 + 2 panels of 360 × 260 px under a 70 px title band.
    assert img.shape == (590, 1080, 3) and picture.size == (1080, 590)
    assert list(picture.panels) == ["loss", "loss_cls", "loss_bbox", "lr", "mAP"]
    blue, orange = _mask(img, COLORS[0]), _mask(img, COLORS[1])
    loss = picture.panels["loss"]
    start, finish = _rows_at(blue, loss, slice(0, 15)), _rows_at(blue, loss, slice(-15, None))
    assert start.size > 10 and finish.size > 10
    assert start.max() < 0.2 and finish.min() > 0.8  # falling: top left to bottom right
    for i in (20, 60, 100):  # the loss line passes through its logged values (and not elsewhere)
        value = 2.0 - 1.8 * (i - 1) / 119
        wrong = value - 0.4 if value > 1 else value + 0.4
        assert _near_value(blue, picture, "loss", i, value) and not _near_value(
            blue, picture, "loss", i, wrong
        )
        assert _near_value(blue, picture, "loss_cls", i, 0.4 * value)
    for i in (30, 60, 90, 120):  # evaluations: mAP in the first colour, mAP_50 in the second
        m = 0.1 + 0.4 * i / 120
        assert _near_value(blue, picture, "mAP", i, m) and _near_value(orange, picture, "mAP", i, m + 0.2)
        assert not _near_value(blue, picture, "mAP", i, m + 0.2)
    assert not orange[loss[1] : loss[3], loss[0] : loss[2]].any()  # one colour for one run's loss
    lr_rows = _rows_at(blue, picture.panels["lr"], slice(None))
    assert lr_rows.size > 50 and np.ptp(lr_rows) < 0.05  # a constant lr is a flat line
    assert _near_value(blue, picture, "lr", 60, 0.01)


def test_plot_overlays_runs_in_one_colour_each(tmp_path: Path, monkeypatch) -> None:
    _write_run(tmp_path / "a", start=2.0, end=0.2)
    _write_run(tmp_path / "b", start=1.9, end=1.9)  # a run whose loss stays high
    monkeypatch.chdir(tmp_path)
    code, out = _run(["plot", "a", "b"])
    assert code == 0, out
    assert "curves of 2 runs" in out and (tmp_path / "curves_compare.png").exists()
    runs = [curves_of(read_run_history(tmp_path / name), name) for name in ("a", "b")]
    picture = draw_curves(runs, tmp_path / "direct.png")  # the same drawing, with its panel places
    img = cv2.imread(str(tmp_path / "curves_compare.png"))
    assert img.shape[:2] == (picture.size[1], picture.size[0]) == (615, 1080)  # 3 + 3, a legend row
    loss = picture.panels["loss"]
    a, b = _mask(img, COLORS[0]), _mask(img, COLORS[1])
    assert _rows_at(a, loss, slice(0, 15)).max() < 0.25 and _rows_at(a, loss, slice(-15, None)).min() > 0.8
    for part in (slice(0, 15), slice(-15, None)):  # b: flat, near the top at both ends
        rows = _rows_at(b, loss, part)
        assert rows.size > 4 and rows.max() < 0.2
    for i in (20, 100):
        assert _near_value(a, picture, "loss", i, 2.0 - 1.8 * (i - 1) / 119)
        assert _near_value(b, picture, "loss", i, 1.9) and not _near_value(a, picture, "loss", i, 1.9)
    assert list(picture.panels) == ["loss", "loss_cls", "loss_bbox", "lr", "mAP", "mAP_50"]


def test_plot_metric_chooses_the_panels(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write_run(run, start=2.0, end=0.2)
    code, out = _run(["plot", str(run), "--metric", "mAP_50", "-m", "loss_cls"])
    assert code == 0, out
    assert "2 panels" in out
    img = cv2.imread(str(run / "curves.png"))  # one run: redrawn in its directory
    assert img.shape == (330, 720, 3)  # 2 panels side by side
    code, out = _run(["plot", str(run), "--metric", "mAP50"])
    assert code == 2 and out.count("\n") == 1
    assert "--metric mAP50: no values in the logs" in out and "mAP_50" in out and "loss_cls" in out


def test_plot_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_text('{"epoch": 1, "it')  # cut by a kill
    _write_run(tmp_path / "run", start=1.0, end=0.5)
    cases = {
        "is not an odet run directory": ["plot", str(tmp_path / "empty")],
        "is not a directory": ["plot", str(tmp_path / "missing")],
        "no records yet": ["plot", str(tmp_path / "fresh")],
        "is given twice": ["plot", str(tmp_path / "run"), str(tmp_path / "run")],
        "choose a .png, .pdf or .svg": ["plot", str(tmp_path / "run"), "--out", str(tmp_path / "c.gif")],
    }
    for message, args in cases.items():
        code, out = _run(args)
        assert code == 2 and message in out and out.count("\n") == 1 and "Traceback" not in out, out


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    _write_run(tmp_path / "run", start=1.0, end=0.5)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    code, out = _run(["plot", str(tmp_path / "run")])
    assert code == 2 and PLOTS_NOTE in out and out.count("\n") == 1
    assert not (tmp_path / "run" / "curves.png").exists()


_TRAIN = [
    *small_demo_args(),
    "--set", "train.epochs=2",
    "--set", "train.eval_interval=1",
    "--set", "train.log_interval=1",
    "--set", "train.warmup_iters=2",
]  # fmt: skip


def test_a_training_run_leaves_curves_and_its_batch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, out = _run(["train", str(DEMO), *_TRAIN, "--run-dir", str(run)])
    assert code == 0, out
    pictures = "curves.png, eval/confusion.png, eval/f1.png, eval/pr.png, train_batch.jpg"
    assert f"training pictures: {pictures} in" in out and "note:" not in out
    # The last evaluation's numbers beside its pictures; each picture a real image.
    assert json.loads((run / "eval" / "metrics.json").read_text())["epoch"] == 2
    for name in ("pr", "f1", "confusion"):
        picture = cv2.imread(str(run / "eval" / f"{name}.png"))
        assert picture is not None and min(picture.shape[:2]) > 300 and picture.std() > 10
    curves = cv2.imread(str(run / "curves.png"))
    # losses (total, cls, bbox), lr, COCO AP, AP by size, AR: 7 panels in a 4 × 2 grid.
    assert curves.shape == (590, 1440, 3)
    assert _mask(curves, COLORS[0]).sum() > 500 and _mask(curves, COLORS[2]).sum() > 50  # lines, AP75
    batch = cv2.imread(str(run / "train_batch.jpg"))
    # The batch as training draws it: 2 images (data.batch_size) in 320 px tiles, a caption above.
    cfg = load_recipe(DEMO, [s for s in _TRAIN if s != "--set"])
    dataset = build_dataset(
        cfg.data, cfg.data_root, "train", build_train_pipeline(cfg.data, input_spec_of(cfg.model))
    )
    samples = augmented_samples(dataset, 2, cfg.train.seed)
    grid_h = 320 + 2 * 4
    assert batch.shape[1] == 2 * 324 + 4 and batch.shape[0] > grid_h
    top = batch.shape[0] - grid_h + 4
    tiles = [batch[top : top + 320, x : x + 320] for x in (4, 328)]
    for k, s in enumerate(samples):
        h, w = s["img"].shape[:2]
        f = 320 / max(h, w)
        size = (round(w * f), round(h * f))
        expected = cv2.resize(s["img"], size, interpolation=cv2.INTER_AREA).astype(int)
        own = np.median(np.abs(tiles[k][: size[1], : size[0]].astype(int) - expected))
        other = np.median(np.abs(tiles[1 - k][: size[1], : size[0]].astype(int) - expected))
        assert own < 8 < other, (k, own, other)  # each tile is its sample (boxes aside), not the other
        colours = {int(label) for label in s["labels"]}
        found = [
            c for c in colours if (np.abs(tiles[k].astype(int) - class_color(c)) <= 30).all(-1).sum() > 20
        ]
        assert len(found) >= max(1, len(colours) // 2), (colours, found)  # the class tags are drawn


def test_training_without_matplotlib_notes_it_once_and_goes_on(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    run = tmp_path / "run"
    code, out = _run(["train", str(DEMO), *_TRAIN, "--set", "train.epochs=1", "--run-dir", str(run)])
    assert code == 0, out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and PLOTS_NOTE in notes[0] and "curves.png" in notes[0]
    assert not (run / "curves.png").exists() and cv2.imread(str(run / "train_batch.jpg")) is not None
    assert (run / "best.safetensors").exists()


def test_curves_redraw_after_evaluations_within_their_time_share(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _write_run(run_dir, start=2.0, end=0.2)
    history = read_run_history(run_dir)
    # What CurvesPicture reads of the trainer's RunView (the rest is the model and data).
    view = SimpleNamespace(run_dir=run_dir, recipe=load_recipe(DEMO), history=history, epoch=12)
    eager = CurvesPicture(max_share=1e9)  # drawing may take all the time: every evaluation draws
    assert eager.draw(view, final=False) == [run_dir / "curves.png"]
    assert eager.draw(view, final=True) == []  # nothing logged since: nothing to redraw
    history.iterations.append({**history.iterations[-1], "iter": 121})
    assert eager.draw(view, final=False) == [run_dir / "curves.png"]
    (run_dir / "curves.png").unlink()
    frugal = CurvesPicture(max_share=1e-9)  # evaluations come too soon to draw; the end always draws
    assert frugal.draw(view, final=False) == [] and not (run_dir / "curves.png").exists()
    assert frugal.draw(view, final=True) == [run_dir / "curves.png"]
    assert cv2.imread(str(run_dir / "curves.png")).shape == (590, 1080, 3)


def test_one_batch_per_stage_without_touching_the_training(tmp_path: Path) -> None:
    sets = [s for s in small_demo_args() if s != "--set"] + ["data.train_pipeline=rtmdet_strong"]
    cfg = load_recipe(DEMO, sets)
    pipeline = build_train_pipeline(cfg.data, input_spec_of(cfg.model))
    train_set = build_dataset(cfg.data, cfg.data_root, "train", pipeline)  # what the trainer holds
    rng_states = (np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    fallback = sample_module.process_rng().bit_generator.state
    paths = draw_stage_batches(cfg, tmp_path, dataset=train_set)
    assert [p.name for p in paths] == ["train_batch_strong.jpg", "train_batch_weak.jpg"]
    # The training's own pipeline is still at its first stage with empty caches, and no random
    # number was taken from the streams training draws from.
    assert train_set.transforms is pipeline and pipeline.stage == "strong"
    assert all(len(t.cache) == 0 for t in pipeline.stages[0].transforms if hasattr(t, "cache"))
    assert np.array_equal(np.random.get_state()[1], rng_states[0])
    assert torch.equal(torch.get_rng_state(), rng_states[1])
    assert sample_module.process_rng().bit_generator.state == fallback
    strong, weak = (cv2.imread(str(p)) for p in paths)
    assert strong.shape == weak.shape and np.abs(strong.astype(int) - weak).mean() > 20  # Mosaic differs


def test_plot_help_names_its_arguments() -> None:
    result = CliRunner().invoke(app, ["plot", "-h"], terminal_width=200)
    assert result.exit_code == 0
    usage = [line.strip() for line in result.stdout.splitlines() if "Usage:" in line]
    assert usage == ["Usage: odet plot [OPTIONS] RUN_DIR..."]
    assert "--metric" in result.stdout and "--out" in result.stdout
