"""``odet convert-weights``: an upstream (MMDetection) checkpoint → an odet ``.safetensors`` file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from odcli.errors import OdetError


@user_errors
def convert_weights(
    src: Path = typer.Argument(..., help="Upstream checkpoint (.pth, fp16 or fp32) or an odet .safetensors."),
    dst: Path = typer.Argument(..., help="Output odet checkpoint; must end with .safetensors."),
    arch: str = typer.Option(..., "--arch", help="Zoo model the weights belong to, e.g. rtmdet_tiny."),
    num_classes: int = typer.Option(80, "--num-classes", help="Classes of the source model (80 = COCO)."),
) -> None:
    """Convert upstream weights into an odet checkpoint that `odet infer` / `odet eval` can use directly."""
    import odcli
    from odcli.engine.checkpoint import save_checkpoint
    from odcli.weights import assign_state_dict, read_state_dict
    from odcli.zoo import model_config

    if dst.suffix != ".safetensors":
        raise OdetError(f"output must be a .safetensors file, got {dst.name!r} (e.g. {dst.stem}.safetensors)")
    if num_classes < 1:
        raise OdetError(f"--num-classes must be >= 1, got {num_classes}")
    model = odcli.build_detector(arch, num_classes=num_classes)
    # Everything is checked (read, key/shape match) before dst is touched: a failed conversion
    # leaves no file behind.
    state = read_state_dict(src, arch=arch)
    assign_state_dict(model, state, source=src.name)

    if num_classes == len(COCO_CLASSES):
        classes, cat_ids = list(COCO_CLASSES), list(COCO_CATEGORY_IDS)
    else:
        classes = [f"class_{i}" for i in range(num_classes)]
        cat_ids = list(range(1, num_classes + 1))
    meta = {
        "arch": arch,
        "recipe": {"model": dataclasses.asdict(model_config(arch, num_classes=num_classes))},
        "classes": classes,
        "cat_ids": cat_ids,
        "source": src.name,
        "converted_from": "mmdetection",
    }
    model_state = model.state_dict()
    save_checkpoint(dst, model_state=model_state, meta=meta)

    params = sum(p.numel() for p in model.parameters())
    table = Table(title="converted", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")  # paths wrap instead of being cut with an ellipsis
    table.add_row("arch", arch)
    table.add_row("classes", f"{num_classes}" + (" (COCO)" if num_classes == len(COCO_CLASSES) else ""))
    table.add_row("parameters", f"{params / 1e6:.2f} M")
    table.add_row("tensors", str(len(model_state)))
    table.add_row("source", str(src))
    table.add_row("output", str(dst))
    console.print(table)
