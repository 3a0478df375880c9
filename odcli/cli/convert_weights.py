"""``odet convert-weights``: an upstream checkpoint (MMDetection detector, PaddleDetection ``.pdparams``
detector, torchvision ImageNet backbone) → an odet ``.safetensors`` file; ``--deploy`` re-parameterises
RepVGG blocks (PP-YOLOE)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.cli.options import arch_option


@user_errors
def convert_weights(
    src: Path = typer.Argument(..., help="Upstream checkpoint (.pth, fp16 or fp32) or an odet .safetensors."),
    dst: Path = typer.Argument(..., help="Output odet checkpoint; must end with .safetensors."),
    arch: str = arch_option("The model the weights belong to.", required=True),
    num_classes: int = typer.Option(80, "--num-classes", help="Classes of the source model (80 = COCO)."),
    source_format: str = typer.Option(
        "mmdet",
        "--from",
        help="Source framework: mmdet (a whole detector) or torchvision (an ImageNet ResNet → "
        "backbone-only weights for model.backbone_weights). PaddleDetection .pdparams files are "
        "recognised by their suffix (or say --from ppdet).",
    ),
    deploy: bool = typer.Option(
        False,
        "--deploy",
        help="Re-parameterise RepVGG blocks (PP-YOLOE) into single 3×3 convs: a smaller, faster model "
        "with the same outputs; infer/eval rebuild this form from the checkpoint.",
    ),
) -> None:
    """Convert upstream weights into an odet checkpoint that `odet infer` / `odet eval` can use directly."""
    from odcli.weights.convert import convert_checkpoint

    done = convert_checkpoint(
        src, dst, arch=arch, num_classes=num_classes, source_format=source_format, deploy=deploy
    )
    title = "converted (backbone only)" if done.backbone_only else "converted"
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")  # paths wrap instead of being cut with an ellipsis
    table.add_row("arch", done.arch + (" (deployed: RepVGG re-parameterised)" if done.deploy else ""))
    if not done.backbone_only:
        table.add_row("classes", f"{done.num_classes}" + (" (COCO)" if done.num_classes == 80 else ""))
    table.add_row("parameters", f"{done.parameters / 1e6:.2f} M")
    table.add_row("tensors", str(done.tensors))
    table.add_row("source", str(done.source))
    table.add_row("output", str(done.output))
    if done.backbone_only:
        table.add_row("use as", f"--set model.backbone_weights={done.output}")
    console.print(table)
