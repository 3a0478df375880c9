"""torchvision ImageNet checkpoints (``resnet18-f37072fd.pth`` …) → odet backbone state dicts.

odet's ResNet backbone *is* torchvision's trunk under the same attribute names, so converting is
dropping the classifier (``fc.*``) and nothing else. Files are read with the safe unpickler and
never downloaded: point ``model.backbone_weights`` at a local copy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from odcli.errors import OdetError


def backbone_from_torchvision(raw: object, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A loaded torchvision classification checkpoint → backbone state (float32, no ``fc``).

    Accepts a plain state dict (what torchvision publishes) or one nested under ``state_dict`` /
    ``model``. Keys are returned without any prefix (``conv1.weight``, ``layer1.0.bn1.running_mean``…).
    """
    state = raw
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise OdetError(f"{source} holds no state dict of tensors; is it a torchvision ResNet checkpoint?")
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("fc."):  # the ImageNet classifier: a detector has none
            continue
        out[key] = value.float() if value.is_floating_point() else value
    return out


def read_torchvision_backbone(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local torchvision ``.pth`` safely → backbone state (:func:`backbone_from_torchvision`)."""
    from odcli.weights.safe_unpickle import load_torch_checkpoint

    path = Path(path)
    return backbone_from_torchvision(load_torch_checkpoint(path), source=path.name)
