"""odet: dense one-stage detectors (RTMDet, RetinaNet, PP-YOLOE), exact to their upstream implementations.

Public API::

    model = odcli.build_detector("rtmdet_tiny", num_classes=80)
    odcli.load_weights(model, "rtmdet_tiny.pth")          # or an odet .safetensors, a Paddle .pdparams
    cls_scores, bbox_preds = model(images)                # raw outputs per level
    dets = model.predict(images, metas)                   # boxes/scores/labels per image
    losses = model.loss(images, targets)                  # {"loss": total, "loss_cls": …, …}

The names are imported on first use: ``odet --help`` (which imports this package) must not pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "build_detector", "list_models", "load_weights"]

_LAZY = {
    "build_detector": "odcli.recipe",
    "list_models": "odcli.models.zoo",
    "load_weights": "odcli.weights.load",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'odcli' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
