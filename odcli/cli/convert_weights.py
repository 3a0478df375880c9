"""``odet convert-weights``: an upstream checkpoint (MMDetection detector, PaddleDetection ``.pdparams``
detector, torchvision ImageNet backbone) → an odet ``.safetensors`` file; ``--deploy`` re-parameterises
RepVGG blocks (PP-YOLOE)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from odcli.cli.common import console, user_errors
from odcli.errors import OdetError

if TYPE_CHECKING:
    from torch import nn


@user_errors
def convert_weights(
    src: Path = typer.Argument(..., help="Upstream checkpoint (.pth, fp16 or fp32) or an odet .safetensors."),
    dst: Path = typer.Argument(..., help="Output odet checkpoint; must end with .safetensors."),
    arch: str = typer.Option(..., "--arch", help="Zoo model the weights belong to, e.g. rtmdet_tiny."),
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
    import odcli
    from odcli.models.fuse import adopt_deployed_form, reparameterize
    from odcli.models.zoo import model_config
    from odcli.weights.checkpoint import save_checkpoint
    from odcli.weights.load import assign_state_dict, read_state_dict

    if dst.suffix != ".safetensors":
        raise OdetError(f"output must be a .safetensors file, got {dst.name!r} (e.g. {dst.stem}.safetensors)")
    if num_classes < 1:
        raise OdetError(f"--num-classes must be >= 1, got {num_classes}")
    if source_format not in ("mmdet", "torchvision", "ppdet"):
        raise OdetError(f"--from must be 'mmdet', 'ppdet' or 'torchvision', got {source_format!r}")
    if source_format == "ppdet" and src.suffix.lower() != ".pdparams":
        raise OdetError(f"--from ppdet expects a PaddleDetection .pdparams file, got {src.name!r}")
    model = odcli.build_detector(arch, num_classes=num_classes)
    if source_format == "torchvision":
        _convert_torchvision_backbone(model, src, dst, arch=arch)
        return
    # Everything is checked (read, key/shape match) before dst is touched: a failed conversion
    # leaves no file behind.
    state = read_state_dict(src, arch=arch)
    deploy = adopt_deployed_form(model, state) or deploy  # a source already re-parameterised stays so
    assign_state_dict(model, state, source=src.name)
    config_overrides: dict[str, bool] = {}
    if deploy:
        if not any(hasattr(m, "switch_to_deploy") for m in model.modules()):
            raise OdetError(f"--deploy re-parameterises RepVGG blocks; {arch} has none (PP-YOLOE does)")
        reparameterize(model)
        config_overrides["deploy"] = True

    from odcli.data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES

    if num_classes == len(COCO_CLASSES):
        classes, cat_ids = list(COCO_CLASSES), list(COCO_CATEGORY_IDS)
    else:
        classes = [f"class_{i}" for i in range(num_classes)]
        cat_ids = list(range(1, num_classes + 1))
    model_cfg = model_config(arch, num_classes=num_classes, **config_overrides)
    meta = {
        "arch": arch,
        "recipe": {"model": dataclasses.asdict(model_cfg)},
        "classes": classes,
        "cat_ids": cat_ids,
        "source": src.name,
        "converted_from": _FRAMEWORKS.get(src.suffix.lower(), "mmdetection"),
        "deploy": deploy,
    }
    model_state = model.state_dict()
    save_checkpoint(dst, model_state=model_state, meta=meta)

    params = sum(p.numel() for p in model.parameters())
    table = Table(title="converted", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")  # paths wrap instead of being cut with an ellipsis
    table.add_row("arch", arch + (" (deployed: RepVGG re-parameterised)" if deploy else ""))
    table.add_row("classes", f"{num_classes}" + (" (COCO)" if num_classes == 80 else ""))
    table.add_row("parameters", f"{params / 1e6:.2f} M")
    table.add_row("tensors", str(len(model_state)))
    table.add_row("source", str(src))
    table.add_row("output", str(dst))
    console.print(table)


_FRAMEWORKS = {".pdparams": "paddledetection", ".safetensors": "odet"}


def _convert_torchvision_backbone(model: nn.Module, src: Path, dst: Path, *, arch: str) -> None:
    """torchvision ImageNet ResNet → an odet file holding only ``backbone.*`` (for model.backbone_weights)."""
    from odcli.weights.checkpoint import save_checkpoint
    from odcli.weights.load import assign_state_dict
    from odcli.weights.torchvision import read_torchvision_backbone

    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "layer4"):
        raise OdetError(f"--from torchvision converts ResNet backbones; {arch} has no ResNet backbone")
    # Checked against the backbone before dst is touched: a failed conversion leaves no file.
    assign_state_dict(backbone, read_torchvision_backbone(src), source=src.name)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    meta = {"arch": arch, "backbone_only": True, "source": src.name, "converted_from": "torchvision"}
    save_checkpoint(dst, model_state=state, meta=meta)

    table = Table(title="converted (backbone only)", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    table.add_row("arch", arch)
    table.add_row("parameters", f"{sum(p.numel() for p in backbone.parameters()) / 1e6:.2f} M")
    table.add_row("tensors", str(len(state)))
    table.add_row("source", str(src))
    table.add_row("output", str(dst))
    table.add_row("use as", f"--set model.backbone_weights={dst}")
    console.print(table)
