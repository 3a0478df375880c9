"""Upstream checkpoints → odet ``.safetensors`` files (``odet convert-weights``).

:func:`convert_checkpoint` converts a whole detector (an MMDetection ``.pth``, a PaddleDetection
``.pdparams``, or an odet file re-saved, optionally with RepVGG blocks re-parameterised) or a
torchvision ImageNet ResNet into backbone-only weights (for ``model.backbone_weights``). Everything
is read and checked against the model (every key and shape) before the output is written, so a
failed conversion leaves no file behind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from odcli.data.coco_classes import default_class_names
from odcli.errors import OdetError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["SOURCE_FORMATS", "Conversion", "convert_checkpoint"]

SOURCE_FORMATS = ("mmdet", "ppdet", "torchvision")
#: ``converted_from`` recorded in the meta, by source suffix (anything else: an MMDetection .pth).
_FRAMEWORKS = {".pdparams": "paddledetection", ".safetensors": "odet"}


@dataclass
class Conversion:
    """What :func:`convert_checkpoint` wrote.

    Attributes:
        arch: the zoo model the weights belong to.
        num_classes: classes of the model (80 = COCO).
        deploy: RepVGG blocks re-parameterised.
        backbone_only: only ``backbone.*`` tensors (from torchvision).
        parameters: parameters of what was converted (the backbone alone when backbone_only).
        tensors: tensors written.
        source, output: the files read and written.
    """

    arch: str
    num_classes: int
    deploy: bool
    backbone_only: bool
    parameters: int
    tensors: int
    source: Path
    output: Path


def _check_arguments(src: Path, dst: Path, num_classes: int, source_format: str) -> None:
    if dst.suffix != ".safetensors":
        raise OdetError(f"output must be a .safetensors file, got {dst.name!r} (e.g. {dst.stem}.safetensors)")
    if num_classes < 1:
        raise OdetError(f"--num-classes must be >= 1, got {num_classes}")
    if source_format not in SOURCE_FORMATS:
        raise OdetError(f"--from must be 'mmdet', 'ppdet' or 'torchvision', got {source_format!r}")
    if source_format == "ppdet" and src.suffix.lower() != ".pdparams":
        raise OdetError(f"--from ppdet expects a PaddleDetection .pdparams file, got {src.name!r}")


def convert_checkpoint(
    src: Path,
    dst: Path,
    *,
    arch: str,
    num_classes: int = 80,
    source_format: str = "mmdet",
    deploy: bool = False,
) -> Conversion:
    """Convert ``src`` into the odet checkpoint ``dst`` for zoo model ``arch``.

    Args:
        src: an MMDetection ``.pth`` (fp16 or fp32), a PaddleDetection ``.pdparams``, an odet
            ``.safetensors``, or (``source_format="torchvision"``) a torchvision ResNet ``.pth``.
        dst: the output; must end with ``.safetensors``.
        num_classes: classes of the source model; the meta gets :func:`default_class_names`.
        source_format: ``mmdet`` (a whole detector; ``.pdparams`` are recognised by their suffix),
            ``ppdet`` or ``torchvision``.
        deploy: re-parameterise RepVGG blocks (PP-YOLOE) into single 3×3 convs; a source that is
            already in that form stays so.

    Raises:
        OdetError: bad arguments, an unreadable source, weights that do not fit ``arch``,
            ``deploy`` for a model without RepVGG blocks.
    """
    from odcli.models.zoo import build_model

    _check_arguments(src, dst, num_classes, source_format)
    model = build_model(arch, num_classes=num_classes)
    if source_format == "torchvision":
        parameters, tensors = _convert_torchvision_backbone(model, src, dst, arch=arch)
    else:
        parameters, tensors, deploy = _convert_detector(model, src, dst, arch=arch, deploy=deploy)
    return Conversion(
        arch=arch,
        num_classes=num_classes,
        deploy=deploy and source_format != "torchvision",
        backbone_only=source_format == "torchvision",
        parameters=parameters,
        tensors=tensors,
        source=src,
        output=dst,
    )


def _convert_detector(
    model: nn.Module, src: Path, dst: Path, *, arch: str, deploy: bool
) -> tuple[int, int, bool]:
    """A whole detector → ``dst`` with its meta; returns (parameters, tensors, whether deployed)."""
    from odcli.models.fuse import adopt_deployed_form, reparameterize
    from odcli.models.zoo import model_config
    from odcli.weights.checkpoint import save_checkpoint
    from odcli.weights.load import assign_state_dict, read_state_dict

    state = read_state_dict(src, arch=arch)
    deploy = adopt_deployed_form(model, state) or deploy  # a source already re-parameterised stays so
    assign_state_dict(model, state, source=src.name)
    config_overrides: dict[str, bool] = {}
    if deploy:
        if not any(hasattr(m, "switch_to_deploy") for m in model.modules()):
            raise OdetError(f"--deploy re-parameterises RepVGG blocks; {arch} has none (PP-YOLOE does)")
        reparameterize(model)
        config_overrides["deploy"] = True
    num_classes = model.num_classes
    classes, cat_ids = default_class_names(num_classes)
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
    return sum(p.numel() for p in model.parameters()), len(model_state), deploy


def _convert_torchvision_backbone(model: nn.Module, src: Path, dst: Path, *, arch: str) -> tuple[int, int]:
    """torchvision ImageNet ResNet → an odet file holding only ``backbone.*`` (for
    model.backbone_weights); returns (backbone parameters, tensors)."""
    from odcli.weights.checkpoint import save_checkpoint
    from odcli.weights.load import assign_state_dict
    from odcli.weights.torchvision import read_torchvision_backbone

    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "layer4"):
        raise OdetError(f"--from torchvision converts ResNet backbones; {arch} has no ResNet backbone")
    assign_state_dict(backbone, read_torchvision_backbone(src), source=src.name)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    meta = {"arch": arch, "backbone_only": True, "source": src.name, "converted_from": "torchvision"}
    save_checkpoint(dst, model_state=state, meta=meta)
    return sum(p.numel() for p in backbone.parameters()), len(state)
