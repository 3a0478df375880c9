"""Cached vs non-cached Mosaic and MixUp, and the strong pipeline's data-loading throughput.

What Mosaic and MixUp cost, in ms per 100 images, on COCO128 (the table of RTMDet's design notes).
The dataset reads and decodes the incoming image in both variants (column ``load``); the ``transform``
column times the transform call *including the image loading it causes*:

* **with the cache** the partners come from the cache: no image is read (what ``CachedMosaic`` /
  ``CachedMixUp`` do in training; the cache bookkeeping is timed);
* **without the cache** every partner is read from disk and decoded inside the call (3 for Mosaic, 1
  for MixUp), as YOLOv5/YOLOX-style mixing does.

``mosaic_speedup`` / ``mixup_speedup`` are ratios of the ``transform`` column. The ratios of
``total`` (load + transform: the whole cost of one mixed sample, at most 4× and 2× since the incoming
image is decoded either way) are printed too.

Both variants run the same transform code on the same image sequence, interleaved round by round so
that the load of a shared machine hits them alike; each figure is the median over rounds and the
speedups are ratios of medians measured in this same run (absolute times vary between machines and
runs, the ratios much less). Caches are warmed up (filled) before timing: the steady state of training.

Then the whole strong stage of ``recipes/rtmdet_tiny.yaml`` (cached Mosaic → RandomResize(1280,
0.5-2.0) → crop 640 → HSV → flip → pad → cached MixUp) is run through ``build_loader`` with 0, 1 and 2
worker processes (persistent, so caches stay warm): images per second over the second pass.

Usage::

    python bench/augment.py [--data ../shared/data/coco128] [--images 100] [--rounds 3]

The last line reads ``mosaic_speedup=X mixup_speedup=Y``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from odcli.data import CachedMixUp, CachedMosaic, CocoDetection, build_dataset, build_loader
from odcli.data.mix_cache import DatasetPartners
from odcli.data.pipelines import build_train_pipeline
from odcli.models.zoo import input_spec_of
from odcli.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
Transform = Callable[[dict, np.random.Generator], dict]


def time_transform(
    ds: CocoDetection, t: Transform, order: np.ndarray, warmup: int, seed: int
) -> tuple[float, float]:
    """(load ms, transform ms) summed over ``order`` after ``warmup`` untimed calls (cache fill)."""
    rng = np.random.default_rng(seed)
    for k in range(warmup):
        t(ds.load_raw(int(order[k % len(order)])), rng)
    load = work = 0.0
    for i in order:
        t0 = time.perf_counter()
        sample = ds.load_raw(int(i))
        t1 = time.perf_counter()
        t(sample, rng)
        t2 = time.perf_counter()
        load += t1 - t0
        work += t2 - t1
    return load * 1e3, work * 1e3


def loader_throughput(ds: CocoDetection, workers: int, batch: int, passes: int) -> float:
    """Images per second of the last of ``passes`` passes through a loader over ``ds``."""
    loader = build_loader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=True)
    rate = 0.0
    for _ in range(passes):
        t0, n = time.perf_counter(), 0
        for images, _, _ in loader:
            n += images.shape[0]
        rate = n / (time.perf_counter() - t0)
    del loader  # stops persistent workers
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco128")
    parser.add_argument("--images", type=int, default=100, help="images per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="batch size of the loader throughput runs")
    parser.add_argument("--passes", type=int, default=2, help="passes over the data per loader run")
    args = parser.parse_args()

    ds = CocoDetection(ann_file=args.data / "annotations" / "instances.json", image_dir=args.data / "images")
    n = min(args.images, len(ds))
    print(
        f"COCO128: {len(ds)} images · {n} images per round × {args.rounds} rounds · "
        f"cv2 threads {cv2.getNumThreads()} · torch threads {torch.get_num_threads()}"
    )
    partners = DatasetPartners(ds)
    variants: dict[str, Callable[[], tuple[Transform, int]]] = {
        # (fresh transform, warm-up calls): upstream default cache sizes (RTMDet-s and larger)
        "Mosaic": lambda: (CachedMosaic((640, 640), max_cached_images=40, random_pop=True), 40),
        "Mosaic, cached": lambda: (CachedMosaic((640, 640), max_cached_images=40, random_pop=True), 40),
        "MixUp": lambda: (CachedMixUp((640, 640), ratio_range=(1.0, 1.0), max_cached_images=20), 20),
        "MixUp, cached": lambda: (CachedMixUp((640, 640), ratio_range=(1.0, 1.0), max_cached_images=20), 20),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        order = np.random.default_rng(r).permutation(len(ds))[:n]
        for name, make in variants.items():
            t, warmup = make()
            if not name.endswith("cached"):
                t.use_cache, t.partner_source, warmup = False, partners, 0
            results[name].append(time_transform(ds, t, order, warmup, seed=r))

    per100 = 100.0 / n
    total = {name: statistics.median((a + b) * per100 for a, b in rs) for name, rs in results.items()}
    work = {name: statistics.median(b * per100 for _, b in rs) for name, rs in results.items()}
    load = {name: statistics.median(a * per100 for a, _ in rs) for name, rs in results.items()}
    print()
    print("ms per 100 images (median of rounds)")
    print(f"{'':<10}{'cache':>6}{'load':>8}{'transform':>11}{'total':>8}")
    for name in variants:
        cached = "yes" if name.endswith("cached") else "no"
        label = name.split(",")[0]
        print(f"{label:<10}{cached:>6}{load[name]:>8.0f}{work[name]:>11.0f}{total[name]:>8.0f}")
    print(
        "load: the dataset reads and decodes the incoming image; transform: the call, including the "
        "partner images it reads and decodes"
    )
    mosaic_speedup = work["Mosaic"] / work["Mosaic, cached"]
    mixup_speedup = work["MixUp"] / work["MixUp, cached"]
    print(f"speedup of the cache, transform:   Mosaic {mosaic_speedup:.2f}×  MixUp {mixup_speedup:.2f}×")
    print(
        f"speedup of the cache, load+transform: Mosaic {total['Mosaic'] / total['Mosaic, cached']:.2f}×  "
        f"MixUp {total['MixUp'] / total['MixUp, cached']:.2f}×  (bounds: 4× and 2×)"
    )

    print()
    overrides = [
        f"data.root={args.data.resolve()}",
        "data.train_ann=annotations/instances.json",
        "data.train_images=images",
    ]
    cfg = load_recipe(REPO / "recipes" / "rtmdet_tiny.yaml", overrides)
    spec = input_spec_of(cfg.model)
    for stage in ("strong", "weak"):
        pipeline = build_train_pipeline(cfg.data, spec)
        pipeline.set_stage(stage)
        train_set = build_dataset(cfg.data, cfg.data_root, "train", pipeline)
        for workers in (0, 1, 2) if stage == "strong" else (0,):
            rate = loader_throughput(train_set, workers, args.batch, args.passes)
            print(f"{stage} pipeline (rtmdet_tiny), {workers} workers: {rate:6.1f} images/s")

    print(f"mosaic_speedup={mosaic_speedup:.2f} mixup_speedup={mixup_speedup:.2f}")


if __name__ == "__main__":
    main()
