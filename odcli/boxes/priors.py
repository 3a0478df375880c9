"""Prior generators: the points (RTMDet, PP-YOLOE) and anchors (RetinaNet) a dense head predicts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


# ------------------------------------------------------------------------------------- anchors
@dataclass(frozen=True)
class AnchorConfig:
    """Settings of an anchor generator (MMDetection ``AnchorGenerator`` with octave scales).

    Attributes:
        strides: pixel stride of each level, ascending (RetinaNet: 8 … 128); also each level's
            base anchor size.
        octave_base_scale: anchor size of the first octave scale, in strides.
        scales_per_octave: scales 2^(k / scales_per_octave), k = 0 … scales_per_octave − 1.
        ratios: aspect ratios h / w.
        center_offset: anchor centre within its cell, in cells (0 = the cell's top-left corner).
    """

    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    center_offset: float = 0.0

    @property
    def num_base_anchors(self) -> int:
        """Anchors per feature-map location (RetinaNet: 3 ratios × 3 scales = 9)."""
        return len(self.ratios) * self.scales_per_octave


def base_anchors(cfg: AnchorConfig, stride: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The A anchors of one location of a level with stride ``stride`` → (A, 4) xyxy pixels.

    Order: ratio-major (index = ratio_idx · scales_per_octave + scale_idx), as upstream's default
    ``scale_major=True``. Sizes: w = stride · scale / √r, h = stride · scale · √r. The scales are
    computed in float64 and rounded once to float32, and the products are formed in upstream's
    order, so the anchors are bit-identical to MMDetection's.
    """
    octave = np.array([2 ** (k / cfg.scales_per_octave) for k in range(cfg.scales_per_octave)])
    scales = torch.tensor(octave * cfg.octave_base_scale, dtype=dtype)
    h_ratios = torch.tensor(cfg.ratios, dtype=dtype).sqrt()
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
    cx = cy = cfg.center_offset * stride
    return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)


def grid_anchors(
    cfg: AnchorConfig,
    featmap_size: tuple[int, int],
    stride: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """All anchors of one level → (H·W·A, 4) xyxy pixels, flattened (y, x, anchor).

    The base anchors are shifted by (col·stride, row·stride); the centre offset lives in the base
    anchors themselves.
    """
    h, w = featmap_size
    base = base_anchors(cfg, stride, dtype).to(device)
    xs = torch.arange(w, device=device).to(dtype) * stride
    ys = torch.arange(h, device=device).to(dtype) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (base[None] + shifts).reshape(-1, 4)


def multilevel_anchors(
    cfg: AnchorConfig,
    featmap_sizes: list[tuple[int, int]],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """:func:`grid_anchors` for every level of ``cfg.strides``; one (H_l·W_l·A, 4) tensor per level."""
    return [
        grid_anchors(cfg, size, stride, device=device, dtype=dtype)
        for size, stride in zip(featmap_sizes, cfg.strides, strict=True)
    ]


def anchor_valid_flags(
    cfg: AnchorConfig,
    featmap_sizes: list[tuple[int, int]],
    pad_shapes: torch.Tensor,
) -> list[torch.Tensor]:
    """Which anchors lie on each image's own padded extent, per level → (B, H_l·W_l·A) bool.

    Upstream's rule: on a level of stride s, the cells with row < ceil(pad_h / s) and
    col < ceil(pad_w / s) are valid (all A anchors of a cell share its flag). Anchors over the
    batch canvas beyond an image's padded size therefore get no training signal.

    Args:
        pad_shapes: (B, 2) long, each image's padded (h, w) in input pixels.
    """
    device = pad_shapes.device
    flags = []
    for (h, w), stride in zip(featmap_sizes, cfg.strides, strict=True):
        # Integer ceil division: exact where float division could round.
        valid_h = torch.div(pad_shapes[:, 0] + stride - 1, stride, rounding_mode="floor").clamp(max=h)
        valid_w = torch.div(pad_shapes[:, 1] + stride - 1, stride, rounding_mode="floor").clamp(max=w)
        rows = torch.arange(h, device=device)[None, :, None] < valid_h[:, None, None]
        cols = torch.arange(w, device=device)[None, None, :] < valid_w[:, None, None]
        cell = rows & cols  # (B, H, W)
        flags.append(cell[..., None].expand(-1, h, w, cfg.num_base_anchors).reshape(len(pad_shapes), -1))
    return flags
