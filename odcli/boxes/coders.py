"""Box coders: how a head's regression output maps to boxes and back (distance and delta-xywh)."""

from __future__ import annotations

import math

import torch


def clip_boxes(boxes: torch.Tensor, max_shape: tuple[int, int]) -> torch.Tensor:
    """Clamp xyxy boxes (..., 4) **in place** to the image: x to [0, w], y to [0, h]; returns ``boxes``.

    ``max_shape`` is (h, w) in the boxes' pixels (a meta's ``img_shape``).
    """
    h, w = max_shape
    boxes[..., 0::2] = boxes[..., 0::2].clamp(min=0, max=w)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(min=0, max=h)
    return boxes


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
    return boxes if max_shape is None else clip_boxes(boxes, max_shape)


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


def box_to_delta(
    priors: torch.Tensor,
    boxes: torch.Tensor,
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
    stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Encode xyxy ``boxes`` relative to xyxy ``priors`` as normalised (dx, dy, dw, dh) (DeltaXYWH).

    dx = (gx − px) / pw, dy = (gy − py) / ph, dw = log(gw / pw), dh = log(gh / ph), then
    (delta − means) / stds. Widths are x2 − x1 (no +1), as upstream.

    Args:
        priors: (..., N, 4) anchors, xyxy pixels.
        boxes: (..., N, 4) target boxes, xyxy pixels.
    Returns:
        (..., N, 4) deltas (unitless).
    """
    priors = priors.float()
    boxes = boxes.float()
    px = (priors[..., 0] + priors[..., 2]) * 0.5
    py = (priors[..., 1] + priors[..., 3]) * 0.5
    pw = priors[..., 2] - priors[..., 0]
    ph = priors[..., 3] - priors[..., 1]
    gx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    gy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    gw = boxes[..., 2] - boxes[..., 0]
    gh = boxes[..., 3] - boxes[..., 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return (deltas - deltas.new_tensor(means)) / deltas.new_tensor(stds)


def delta_to_box(
    priors: torch.Tensor,
    deltas: torch.Tensor,
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
    stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
    max_shape: tuple[int, int] | None = None,
    wh_ratio_clip: float = 16 / 1000,
) -> torch.Tensor:
    """Decode normalised (dx, dy, dw, dh) deltas on xyxy ``priors`` into xyxy boxes (DeltaXYWH).

    The log-size deltas are clamped to ±|log(wh_ratio_clip)| (≈ ±4.135 for 16/1000) so ``exp``
    cannot blow up. The arithmetic follows upstream's order step by step (centre + size·d, then
    half-sizes), which keeps the result bit-identical to MMDetection's decoder.

    Args:
        priors: (..., N, 4) anchors, xyxy pixels.
        deltas: (..., N, 4) normalised deltas.
        max_shape: (h, w) to clamp x to [0, w] and y to [0, h]; None for no clamping.
    Returns:
        (..., N, 4) xyxy pixels.
    """
    d = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    centre = (priors[..., :2] + priors[..., 2:]) * 0.5
    size = priors[..., 2:] - priors[..., :2]
    limit = abs(math.log(wh_ratio_clip))
    new_centre = centre + size * d[..., :2]
    new_size = size * d[..., 2:].clamp(min=-limit, max=limit).exp()
    boxes = torch.cat([new_centre - new_size * 0.5, new_centre + new_size * 0.5], dim=-1)
    return boxes if max_shape is None else clip_boxes(boxes, max_shape)
