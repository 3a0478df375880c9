"""Running an exported TorchScript file (``torch.jit.load``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision  # noqa: F401  (registers torchvision::nms, which the traced NMS calls)

from odcli.errors import OdetError
from odcli.inference.backends.base import ExportedBackend
from odcli.inference.backends.meta import METADATA_KEY, ExportMeta

__all__ = ["TorchScriptBackend"]


class TorchScriptBackend(ExportedBackend):
    """A TorchScript module written by ``odet export --format torchscript``.

    Args:
        path: the file. device: ``cpu``, ``cuda`` or ``cuda:N`` (where the module runs).
    """

    name = "torchscript"

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        path = Path(path)
        extra = {f"{METADATA_KEY}.json": ""}
        try:
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        except RuntimeError as exc:
            raise OdetError(
                f"{path.name} is not a loadable TorchScript file: {str(exc).strip().splitlines()[0]}"
            ) from None
        if not extra[f"{METADATA_KEY}.json"]:
            raise OdetError(f"{path.name} was not written by odet export (no odet metadata)")
        self.meta = ExportMeta.from_json(extra[f"{METADATA_KEY}.json"], source=path.name)
        self.device = torch.device(device)
        self.output_names = self.meta.output_names

    @torch.no_grad()
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(feeds[k]).to(self.device) for k in self.meta.input_names]
        outputs = self.module(*args)
        return {k: v.cpu().numpy() for k, v in zip(self.output_names, outputs, strict=True)}
