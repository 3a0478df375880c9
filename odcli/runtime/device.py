"""Which device a command runs on."""

from __future__ import annotations

import torch

from odcli.errors import OdetError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OdetError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device
