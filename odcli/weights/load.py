"""Loading weights into a detector from any supported file.

* ``.safetensors`` — odet's own format (see :mod:`odcli.weights.checkpoint`); EMA weights are
  preferred when the file has them.
* ``.pth`` — an MMDetection checkpoint, converted on the fly (safe unpickling, fp16 upcast).
* ``.pdparams`` — a PaddleDetection checkpoint, read without Paddle by an unpickler that can only
  build numpy arrays (:mod:`odcli.weights.ppdet`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from odcli.errors import OdetError


def read_state_dict(path: str | Path, *, arch: str) -> dict[str, torch.Tensor]:
    """Read ``path`` and return an odet-layout state dict in float32 for a model of family ``arch``."""
    path = Path(path)
    if not path.is_file():
        raise OdetError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from odcli.weights.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        state = ckpt.model_state
        if ckpt.ema_state:  # the averaged weights are the ones to deploy
            state = {
                k.removeprefix("module."): v for k, v in ckpt.ema_state.items() if k.startswith("module.")
            }
    elif suffix in {".pth", ".pt", ".ckpt"}:
        state = _from_mmdet(path, arch=arch)
    elif suffix == ".pdparams":
        state = _from_ppdet(path, arch=arch)
    else:
        raise OdetError(
            f"unsupported weights file {path.name}: expected .safetensors, an MMDetection .pth "
            "or a PaddleDetection .pdparams"
        )
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def _mmdet_converters() -> dict[str, Callable[[dict[str, torch.Tensor]], tuple[dict, list[str]]]]:
    """Family name → function renaming an MMDetection state dict to odet keys."""
    from odcli.weights.mmdet import retinanet_from_mmdet, rtmdet_from_mmdet

    return {"rtmdet": rtmdet_from_mmdet, "retinanet": retinanet_from_mmdet}


def _from_ppdet(path: Path, *, arch: str) -> dict[str, torch.Tensor]:
    from odcli.weights.ppdet import ppyoloe_from_ppdet, read_pdparams

    converters = {"ppyoloe": ppyoloe_from_ppdet}
    converter = converters.get(arch.partition("_")[0])
    if converter is None:
        raise OdetError(f"no PaddleDetection converter for architecture {arch!r} (PP-YOLOE only)")
    return converter(read_pdparams(path))


def _from_mmdet(path: Path, *, arch: str) -> dict[str, torch.Tensor]:
    from odcli.weights.safe_unpickle import load_torch_checkpoint

    raw = load_torch_checkpoint(path)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OdetError(f"{path.name} holds no state_dict of tensors; is it an MMDetection checkpoint?")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    converter = _mmdet_converters().get(arch.partition("_")[0])
    if converter is None:
        raise OdetError(f"no MMDetection converter for architecture {arch!r}")
    converted, _ = converter(state)
    return converted


def assign_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """Copy ``state`` into ``model``; every key and shape must match.

    Raises :class:`OdetError` naming the tensors that do not fit (missing, unexpected, wrong
    shape) — the usual sign of a checkpoint for another architecture or size.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("shape mismatch", wrong), ("missing", missing), ("unexpected", unexpected)):
            if items:
                shown = ", ".join(items[:4]) + (f" … (+{len(items) - 4})" if len(items) > 4 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        arch = getattr(model, "arch", type(model).__name__)
        raise OdetError(f"{source} does not fit {arch}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load odet ``.safetensors``, MMDetection ``.pth`` or PaddleDetection ``.pdparams`` weights into
    ``model`` (in place); returns it. A model with RepVGG blocks is re-parameterised first when the
    weights are in that (deployed) form."""
    from odcli.models.fuse import adopt_deployed_form

    arch = getattr(model, "arch", "")
    state = read_state_dict(path, arch=arch)
    adopt_deployed_form(model, state)  # RepVGG weights saved re-parameterised (PP-YOLOE --deploy)
    assign_state_dict(model, state, source=Path(path).name)
    return model


def load_backbone_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Initialise ``model.backbone`` from ImageNet weights (in place); returns ``model``.

    ``path`` is a torchvision classification checkpoint (``.pth``, e.g. ``resnet18-f37072fd.pth``)
    or an odet ``.safetensors`` made from one by ``odet convert-weights --from torchvision``. Every
    backbone tensor must be present with its shape; the rest of the model is left as it is.
    """
    path = Path(path)
    if not path.is_file():
        raise OdetError(f"backbone weights not found: {path} (check model.backbone_weights)")
    if path.suffix.lower() == ".safetensors":
        from odcli.weights.checkpoint import load_checkpoint

        state = {
            k.removeprefix("backbone."): v.float() if v.is_floating_point() else v
            for k, v in load_checkpoint(path).model_state.items()
            if k.startswith("backbone.")
        }
    elif path.suffix.lower() in {".pth", ".pt"}:
        from odcli.weights.torchvision import read_torchvision_backbone

        state = read_torchvision_backbone(path)
    else:
        raise OdetError(
            f"unsupported backbone weights {path.name}: expected a torchvision .pth or a .safetensors"
        )
    assign_state_dict(model.backbone, state, source=path.name)
    return model
