"""Box coders: how a head's regression output maps to boxes and back."""

from __future__ import annotations

import torch


def distance_to_box(
    points: torch.Tensor, distances: torch.Tensor, max_shape: tuple[int, int] | None = None
) -> torch.Tensor:
    """Decode (left, top, right, bottom) distances from points into xyxy boxes.

    Args:
        points: (..., N, 2+) point coordinates in pixels (extra columns ignored).
        distances: (..., N, 4) distances in pixels.
        max_shape: (h, w) to clamp x to [0, w] and y to [0, h]; None for no clamping.
    Returns:
        (..., N, 4) xyxy pixels.
    """
    x1 = points[..., 0] - distances[..., 0]
    y1 = points[..., 1] - distances[..., 1]
    x2 = points[..., 0] + distances[..., 2]
    y2 = points[..., 1] + distances[..., 3]
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    if max_shape is not None:
        h, w = max_shape
        boxes[..., 0::2] = boxes[..., 0::2].clamp(min=0, max=w)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(min=0, max=h)
    return boxes


def box_to_distance(
    points: torch.Tensor, boxes: torch.Tensor, max_dis: float | None = None, eps: float = 0.1
) -> torch.Tensor:
    """Encode xyxy boxes (..., N, 4) as (left, top, right, bottom) distances from points (..., N, 2+).

    With ``max_dis`` the distances are clamped to ``[0, max_dis - eps]`` (distribution heads).
    """
    left = points[..., 0] - boxes[..., 0]
    top = points[..., 1] - boxes[..., 1]
    right = boxes[..., 2] - points[..., 0]
    bottom = boxes[..., 3] - points[..., 1]
    dist = torch.stack([left, top, right, bottom], dim=-1)
    if max_dis is not None:
        dist = dist.clamp(min=0, max=max_dis - eps)
    return dist
