"""Training pipelines by name: which transforms a family trains with (``data.train_pipeline``).

Each builder reads the ``data`` section of the recipe and the model's input spec; adding a family
means adding one function and one table entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from odcli.data.transforms import Compose, build_train_transforms
from odcli.errors import OdetError


def _rtmdet(data: Any, spec: Any) -> Compose:
    """RTMDet's weak pipeline: random resize → random crop → HSV → flip → pad (Mosaic/MixUp: issue 4)."""
    return build_train_transforms(
        tuple(data.img_scale),
        ratio_range=tuple(data.resize_ratio_range),
        crop_size=tuple(data.crop_size),
        hsv=data.hsv,
        flip_prob=data.flip_prob,
        pad_val=int(spec.pad_value),
    )


TRAIN_PIPELINES: dict[str, Callable[[Any, Any], Compose]] = {
    "rtmdet": _rtmdet,
}


def build_train_pipeline(data: Any, spec: Any) -> Compose:
    """The transforms named by ``data.train_pipeline`` (a :class:`~odcli.recipe.DataConfig`)."""
    builder = TRAIN_PIPELINES.get(data.train_pipeline)
    if builder is None:
        raise OdetError(
            f"unknown data.train_pipeline {data.train_pipeline!r}; choose one of {', '.join(TRAIN_PIPELINES)}"
        )
    return builder(data, spec)
