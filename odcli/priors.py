"""Prior generators: the points (RTMDet, PP-YOLOE) a dense head predicts from."""

from __future__ import annotations

import torch


def grid_points(
    featmap_size: tuple[int, int],
    stride: int,
    *,
    offset: float = 0.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Points of one level, row-major (y outer, x inner) → (H·W, 4) as ``[x, y, stride, stride]`` pixels.

    ``offset`` is in cells: 0 puts the point on the cell's top-left corner (RTMDet), 0.5 at its centre.
    """
    h, w = featmap_size
    xs = ((torch.arange(w, device=device) + offset) * stride).to(dtype)
    ys = ((torch.arange(h, device=device) + offset) * stride).to(dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    s = torch.full_like(xx, float(stride))
    return torch.stack([xx, yy, s, s], dim=-1).reshape(-1, 4)


def multilevel_points(
    featmap_sizes: list[tuple[int, int]],
    strides: list[int] | tuple[int, ...],
    *,
    offset: float = 0.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """:func:`grid_points` for every level; returns one (H_l·W_l, 4) tensor per level."""
    return [
        grid_points(size, stride, offset=offset, device=device, dtype=dtype)
        for size, stride in zip(featmap_sizes, strides, strict=True)
    ]
