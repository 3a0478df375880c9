"""What any head exposes so that every assigner can be run on its priors (``odet visualize-assign``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PriorView:
    """A head's priors for one image, flattened level-major, plus its predictions for them.

    Attributes:
        centers: (N, 2) prior centre points, input pixels.
        strides: (N,) stride of each prior's level.
        levels: (N,) level index (0 = finest).
        level_sizes: feature-map (h, w) of each level.
        per_location: priors per feature-map location (RetinaNet 9, point heads 1).
        anchors: (N, 4) xyxy anchor boxes for anchor-based heads, else None.
        logits: (1, N, C) class logits predicted for each prior.
        boxes: (1, N, 4) decoded predicted boxes, xyxy input pixels.
    """

    centers: torch.Tensor
    strides: torch.Tensor
    levels: torch.Tensor
    level_sizes: list[tuple[int, int]]
    per_location: int
    anchors: torch.Tensor | None
    logits: torch.Tensor
    boxes: torch.Tensor

    @property
    def num_per_level(self) -> list[int]:
        return [h * w * self.per_location for h, w in self.level_sizes]
