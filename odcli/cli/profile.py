"""``odet profile MODEL…``: parameters, MACs and timed inference (pre-process / model / post-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.errors import OdetError


def _build(target: str) -> tuple[Any, str]:
    """A model from a zoo name, a recipe file or an odet checkpoint; returns (model, label)."""
    import odcli
    from odcli.inference.predictor import load_model

    if target.endswith(".safetensors"):
        return load_model(target, device="cpu", optimize=False).model, Path(target).name
    return odcli.build_detector(target), Path(target).stem if target.endswith(
        (".yaml", ".yml", ".toml")
    ) else target


def _sample_images(n: int, size: int) -> list[Any]:
    """``n`` real COCO-like images if the bundled demo data is there, else random ones (H, W, 3) BGR."""
    import numpy as np

    from odcli.data.image_io import read_image

    demo = Path(__file__).resolve().parents[2] / "recipes" / "data" / "coco8" / "images"
    files = sorted(demo.glob("*.jpg")) if demo.is_dir() else []
    rng = np.random.default_rng(0)
    if files:
        return [read_image(files[i % len(files)]) for i in range(n)]
    return [rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8) for _ in range(n)]


@user_errors
def profile(
    models: list[str] = typer.Argument(..., help="Zoo names (rtmdet_tiny …), recipe files or .safetensors."),
    compare: list[str] = typer.Option([], "--compare", help="More models to put in the same table."),
    size: int = typer.Option(640, "--size", help="Square input size for MACs and timing."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma-separated batch sizes, e.g. 1,8."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, or fp16 (CUDA only)."),
    iters: int = typer.Option(10, "--iters", help="Timed repetitions per measurement (median)."),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize", help="Fold BN + channels-last first."),
    compile_: bool = typer.Option(False, "--compile", help="Also torch.compile the forward (slow start)."),
    data: Path | None = typer.Option(None, "--data", help="Also time this recipe's training data pipeline."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the measurements to this JSON file."),
) -> None:
    """Measure parameters, MACs (multiply-accumulates, as MMDetection counts FLOPs) and latency."""
    import copy

    import torch

    from odcli.inference.predictor import Predictor
    from odcli.inference.profiling import count_macs, count_parameters, time_pipeline
    from odcli.models.fuse import optimize_for_inference
    from odcli.runtime.device import resolve_device

    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise OdetError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise OdetError(f"--batch-sizes must be positive integers, got {batch_sizes!r}")
    dev = resolve_device(device)
    if dtype not in ("fp32", "fp16"):
        raise OdetError(f"--dtype must be fp32 or fp16, got {dtype!r}")
    if dtype == "fp16" and dev.type != "cuda":
        raise OdetError(
            "--dtype fp16 needs a CUDA device (CPU kernels for fp16 convolutions are slow or missing)"
        )
    console.print(f"device {dev} · {dtype} · torch threads {torch.get_num_threads()} · input {size}×{size}")

    rows: list[dict[str, Any]] = []
    for target in [*models, *compare]:
        model, label = _build(target)
        total, trainable = count_parameters(model)
        macs = count_macs(model, torch.zeros(1, 3, size, size))
        model = model.to(dev).eval()
        if optimize:
            model = optimize_for_inference(copy.deepcopy(model))
        if compile_:
            from odcli.models.fuse import compile_for_inference

            model = compile_for_inference(model)
        if dtype == "fp16":
            model = model.half()
        spec = model.input_spec
        model.input_spec = type(spec)(**{**vars(spec), "test_scale": (size, size), "pad_to": (size, size)})
        predictor = Predictor(model)
        row: dict[str, Any] = {
            "model": label,
            "params": total,
            "trainable": trainable,
            "macs": macs,
            "timing": {},
        }
        for bs in sizes:
            t = time_pipeline(predictor, _sample_images(bs, size), iters=iters)
            row["timing"][bs] = vars(t) | {"throughput": t.throughput}
        rows.append(row)

    table = Table(title="odet profile", title_justify="left")
    for col in ("model", "params (trainable)", "MACs"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for bs in sizes:
        table.add_column(f"bs{bs}: pre / model / post = total ms", justify="right")
        table.add_column(f"bs{bs} img/s", justify="right")
    for row in rows:
        cells = [
            row["model"],
            f"{row['params'] / 1e6:.2f}M ({row['trainable'] / 1e6:.2f}M)",
            f"{row['macs'] / 1e9:.2f}G",
        ]
        for bs in sizes:
            t = row["timing"][bs]
            cells.append(
                f"{t['preprocess']:.1f} / {t['model']:.1f} / {t['postprocess']:.1f} = {t['total']:.1f}"
            )
            cells.append(f"{t['throughput']:.1f}")
        table.add_row(*cells)
    console.print(table)
    console.print("MACs: multiply-accumulates as MMDetection reports FLOPs (BN and upsampling included).")

    if data is not None:
        rows_data = _data_throughput(data)
        console.print(
            f"data pipeline of {data.name}: {rows_data['images_per_s']:.1f} images/s (main process)"
        )
        rows.append({"data_pipeline": rows_data})
    if json_out is not None:
        from odcli.weights.checkpoint import write_json_atomic

        write_json_atomic(json_out, rows)


def _data_throughput(recipe_path: Path, n: int = 16) -> dict[str, float]:
    """Images per second through the recipe's training pipeline (decode + augment) in this process."""
    import time

    from odcli.data.coco import CocoDetection
    from odcli.data.pipelines import build_train_pipeline
    from odcli.models.zoo import input_spec_of
    from odcli.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    root = recipe.data_root
    dataset = CocoDetection(
        ann_file=root / recipe.data.train_ann,
        image_dir=root / recipe.data.train_images,
        transforms=build_train_pipeline(recipe.data, input_spec_of(recipe.model)),
    )
    start = time.perf_counter()
    for i in range(n):
        dataset[(i % len(dataset), i)]
    return {"images": n, "images_per_s": n / (time.perf_counter() - start)}


def load_profile_json(path: Path) -> list[dict[str, Any]]:
    """Read what ``--json`` wrote (used by tests and scripts)."""
    return json.loads(path.read_text())
