"""``odet profile MODEL…``: parameters, MACs and timed inference (pre-process / model / post-process),
PyTorch models and exported files side by side (``--compare``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.cli.options import check_at_least, check_fraction, compile_option, device_option, parse_batch_sizes


@user_errors
def profile(
    models: list[str] = typer.Argument(
        ..., help="Zoo names (rtmdet_tiny …), recipe files, .safetensors or exported files (.onnx, .xml …)."
    ),
    compare: list[str] = typer.Option(
        [],
        "--compare",
        metavar="MODEL|RUNTIME",
        help="More rows in the same table, timed in the same rounds: another model or exported file "
        "(model.onnx runs in ONNX Runtime, model.xml in OpenVINO), or a runtime — onnxruntime, openvino, "
        "tensorrt — to export each MODEL for it (at --size, NMS in the graph, into a temporary folder; "
        "a zoo name with its own random weights). Repeatable.",
    ),
    size: int | None = typer.Option(
        None,
        "--size",
        help="Square input size for MACs and timing. Default: an exported file's canvas, else 640.",
    ),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma-separated batch sizes, e.g. 1,8."),
    device: str = device_option(),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, or fp16 (CUDA only)."),
    iters: int = typer.Option(10, "--iters", help="Timed repetitions per measurement (median)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed rounds before them."),
    score_thr: float = typer.Option(
        0.0,
        "--score-thr",
        help="Time the detections scoring at least this, as odet infer asks for them (its default: 0.3); "
        "0: every detection of the upstream test config, as odet eval.",
    ),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize", help="Fold BN + channels-last first."),
    compile_: bool = compile_option("forward too (slow start)."),
    data: Path | None = typer.Option(None, "--data", help="Also time this recipe's training data pipeline."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the measurements to this JSON file."),
) -> None:
    """Measure parameters, MACs (multiply-accumulates, as MMDetection counts FLOPs) and latency.

    Latency: the median of each stage over --iters runs, and of the whole pipeline (one predictor
    call on the raw images, as odet infer makes it) timed end to end in runs of its own. Every row
    runs once per round, so the speed-up column (the first row's total over each row's) holds on a
    busy machine. PyTorch rows run as infer runs them (BN folded, channels-last); an exported file's
    "model" stage is its whole graph, post-processing included when NMS is in it.
    """
    import torch

    from odcli.export.compare import COMPARE_FORMATS, expand_compare
    from odcli.inference.profiling import DEFAULT_SIZE, check_dtype, data_pipeline_throughput, profile_models
    from odcli.runtime.device import resolve_device

    sizes = parse_batch_sizes(batch_sizes)
    check_at_least(size, "--size", 32)
    check_at_least(iters, "--iters")
    check_at_least(warmup, "--warmup", 0)
    check_fraction(score_thr, "--score-thr")
    dev = resolve_device(device)
    check_dtype(dtype, dev)  # before the header, not after the first model is built
    with tempfile.TemporaryDirectory(prefix="odet-profile-") as tmp:
        if any(entry in COMPARE_FORMATS for entry in compare):
            size = size or DEFAULT_SIZE
            console.print(f"exporting for {', '.join(c for c in compare if c in COMPARE_FORMATS)} …")
        targets = expand_compare(models, compare, size or DEFAULT_SIZE, Path(tmp))
        rows = profile_models(
            targets, size=size, batch_sizes=sizes, device=dev, dtype=dtype, iters=iters,
            optimize=optimize, compile_model=compile_, min_score=score_thr or None, warmup=warmup,
        )  # fmt: skip
    side, asked = rows[0].size, f"score >= {score_thr:g}" if score_thr else "upstream test config"
    console.print(
        f"device {dev} · {dtype} · torch threads {torch.get_num_threads()} · input {side}×{side} · {asked}"
    )

    table = Table(title="odet profile", title_justify="left")
    for col in ("model", "params (trainable)", "MACs"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for bs in sizes:
        table.add_column(f"bs{bs}: pre / model / post · total ms", justify="right")
        table.add_column(f"bs{bs} img/s", justify="right")
        if len(rows) > 1:
            table.add_column(f"bs{bs} speed-up", justify="right")
    for row in rows:
        cells = [row.model, f"{row.params / 1e6:.2f}M ({row.trainable / 1e6:.2f}M)", f"{row.macs / 1e9:.2f}G"]
        for bs in sizes:
            t = row.timing[bs]
            cells.append(f"{t.preprocess:.1f} / {t.model:.1f} / {t.postprocess:.1f} · {t.total:.1f}")
            cells.append(f"{t.throughput:.1f}")
            if len(rows) > 1:
                cells.append(f"{row.speedup[bs]:.2f}×")
        table.add_row(*cells)
    console.print(table)
    console.print(
        "MACs: multiply-accumulates as MMDetection reports FLOPs (BN and upsampling included). Stage "
        "times and the total are medians of separate runs: the stages need not add up to the total."
        + (f" Speed-up: {rows[0].model}'s total ÷ each row's, from the same rounds." if len(rows) > 1 else "")
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
