"""``odet export WEIGHTS -o OUT``: a detector as an ONNX, OpenVINO, TorchScript or TensorRT file that
carries its own preprocessing, post-processing and metadata."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.cli.options import WEIGHTS_HELP, arch_option


@user_errors
def export(
    weights: Path = typer.Argument(..., help=WEIGHTS_HELP),
    out: Path = typer.Option(
        ..., "--out", "-o", help="File to write: .onnx, .xml (OpenVINO, + .bin), .torchscript or .engine."
    ),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="onnx, openvino, torchscript or tensorrt. Default: from -o's suffix."
    ),
    arch: str | None = arch_option("Needed for upstream .pth / .pdparams files."),
    imgsz: tuple[int, int] | None = typer.Option(
        None,
        "--imgsz",
        metavar="H W",
        help="Input canvas height and width (multiples of 32); the test resize targets it. "
        "Default: the model's test size (RetinaNet: 1344 1344, holding its 1333x800 fit either way).",
    ),
    batch: int | None = typer.Option(None, "--batch", help="Fixed batch size (default 1)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Any batch size (not with --batch)."),
    nms: bool = typer.Option(
        True,
        "--nms/--no-nms",
        help="Upstream post-processing (thresholds, top-k, class-aware NMS, max per image) in the graph; "
        "--no-nms: every prior's boxes and scores instead.",
    ),
    half: bool = typer.Option(
        False,
        "--half",
        help="fp16 weights and compute (GPU runtimes; ONNX Runtime's CPU provider cannot run it).",
    ),
    opset: int | None = typer.Option(
        None, "--opset", help="ONNX opset (default 18, the oldest the exporter writes)."
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Quantise the network to int8 (ONNX; static, calibrated on --calib): 1.6-1.9x faster "
        "than float32 on CPUs with VNNI, at some accuracy: check it with odet eval.",
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration images for --int8: a folder (recursive) or a .txt list."
    ),
    calib_images: int = typer.Option(64, "--calib-images", help="How many of them (the first, sorted)."),
) -> None:
    """Export a detector (BN folded; normalisation, decoding and NMS inside) with its metadata."""
    from odcli.export.run import export_model

    done = export_model(
        weights, out, fmt=fmt, arch=arch, imgsz=imgsz or None, batch=batch, dynamic_batch=dynamic_batch,
        nms=nms, half=half, opset=opset, int8=int8, calib=calib, calib_images=calib_images,
    )  # fmt: skip
    meta = done.meta
    layout = meta.layout()
    table = Table(title=f"exported ({meta.format})", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    precision = "" if meta.precision == "float32" else f" · {meta.precision}"
    table.add_row("arch", f"{meta.arch} · {meta.num_classes} classes{precision}")
    if meta.int8:
        table.add_row("calibration", meta.calibration)
    for kind in ("inputs", "outputs"):
        for name, spec in layout[kind].items():
            shape = "×".join(str(d) for d in spec["shape"])
            table.add_row(f"{kind[:-1]} {name}", f"{shape} {spec['dtype']}: {spec['meaning']}")
    if meta.nms:
        table.add_row(
            "post-processing",
            f"{meta.postprocess}: score > {meta.score_thr}, nms_pre {meta.nms_pre}, IoU {meta.iou_thr}, "
            f"max {meta.max_per_img}",
        )
    for path in done.files:
        table.add_row("file", f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    table.add_row("took", f"{done.seconds:.1f} s")
    console.print(table)
