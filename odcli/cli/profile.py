"""``odet profile MODEL…``: parameters, MACs and timed inference (pre-process / model / post-process)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.cli.options import check_at_least, compile_option, device_option, parse_batch_sizes


@user_errors
def profile(
    models: list[str] = typer.Argument(..., help="Zoo names (rtmdet_tiny …), recipe files or .safetensors."),
    compare: list[str] = typer.Option([], "--compare", help="More models to put in the same table."),
    size: int = typer.Option(640, "--size", help="Square input size for MACs and timing."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma-separated batch sizes, e.g. 1,8."),
    device: str = device_option(),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, or fp16 (CUDA only)."),
    iters: int = typer.Option(10, "--iters", help="Timed repetitions per measurement (median)."),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize", help="Fold BN + channels-last first."),
    compile_: bool = compile_option("forward too (slow start)."),
    data: Path | None = typer.Option(None, "--data", help="Also time this recipe's training data pipeline."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the measurements to this JSON file."),
) -> None:
    """Measure parameters, MACs (multiply-accumulates, as MMDetection counts FLOPs) and latency.

    Latency: the median of each stage over --iters runs, and of the whole pipeline (one predictor
    call on the raw images) timed end to end in runs of its own.
    """
    import torch

    from odcli.inference.profiling import check_dtype, data_pipeline_throughput, profile_models
    from odcli.runtime.device import resolve_device

    sizes = parse_batch_sizes(batch_sizes)
    check_at_least(size, "--size", 32)
    check_at_least(iters, "--iters")
    dev = resolve_device(device)
    check_dtype(dtype, dev)  # before the header, not after the first model is built
    console.print(f"device {dev} · {dtype} · torch threads {torch.get_num_threads()} · input {size}×{size}")
    rows = profile_models(
        [*models, *compare], size=size, batch_sizes=sizes, device=dev, dtype=dtype, iters=iters,
        optimize=optimize, compile_model=compile_,
    )  # fmt: skip

    table = Table(title="odet profile", title_justify="left")
    for col in ("model", "params (trainable)", "MACs"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for bs in sizes:
        table.add_column(f"bs{bs}: pre / model / post · total ms", justify="right")
        table.add_column(f"bs{bs} img/s", justify="right")
    for row in rows:
        cells = [row.model, f"{row.params / 1e6:.2f}M ({row.trainable / 1e6:.2f}M)", f"{row.macs / 1e9:.2f}G"]
        for bs in sizes:
            t = row.timing[bs]
            cells.append(f"{t.preprocess:.1f} / {t.model:.1f} / {t.postprocess:.1f} · {t.total:.1f}")
            cells.append(f"{t.throughput:.1f}")
        table.add_row(*cells)
    console.print(table)
    console.print(
        "MACs: multiply-accumulates as MMDetection reports FLOPs (BN and upsampling included). Stage "
        "times and the total are medians of separate runs: the stages need not add up to the total."
    )

    report: list[dict] = [row.to_dict() for row in rows]
    if data is not None:
        throughput = data_pipeline_throughput(data)
        console.print(
            f"data pipeline of {data.name}: {throughput['images_per_s']:.1f} images/s (main process)"
        )
        report.append({"data_pipeline": throughput})
    if json_out is not None:
        from odcli.weights.checkpoint import write_json_atomic

        write_json_atomic(json_out, report)
