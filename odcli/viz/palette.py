"""Colours that tell ground-truth boxes apart in one picture: a qualitative palette and a colouring of
the boxes in which boxes that overlap or lie close together never share a colour.

:func:`~odcli.viz.draw.class_color` colours a *class* the same everywhere; here the point is the
opposite: within one image, each GT (often several of one class, side by side) needs its own colour.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["ALIKE", "GT_PALETTE", "gt_colors", "hex_color", "ink_for", "neighbours", "write_png"]

#: BGR. Saturated colours of distinct hue and lightness (after Sasha Trubetskoy's "20 distinct
#: colours", the pale ones left out: they vanish on the faded grey photo the marks are drawn on), the
#: most vivid first (most images use only the first few), the dark ones last.
GT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (75, 25, 230),  # red
    (216, 99, 67),  # blue
    (75, 180, 60),  # green
    (49, 130, 245),  # orange
    (230, 50, 240),  # magenta
    (244, 212, 66),  # cyan
    (180, 30, 145),  # purple
    (36, 99, 154),  # brown
    (144, 153, 70),  # teal
    (69, 239, 191),  # lime
    (117, 0, 0),  # navy
    (0, 0, 128),  # maroon
    (0, 128, 128),  # olive
)

#: CIELAB distance below which two colours count as alike for neighbouring GTs (purple and magenta
#: are 29 apart, orange and brown 34, red and blue 103).
ALIKE = 45.0


def ink_for(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on a ``bgr`` background (ITU-R BT.601 luma)."""
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def hex_color(bgr: tuple[int, int, int]) -> str:
    """``"#rrggbb"`` of a BGR colour (how the JSON report and the legend name it)."""
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


def neighbours(boxes: np.ndarray, margin: float) -> np.ndarray:
    """(G, G) bool: boxes that overlap or whose gap is at most ``margin`` pixels along both axes.

    Args:
        boxes: (G, 4) xyxy pixels.
        margin: pixels; boxes this close count as neighbours even without touching.
    Returns:
        symmetric matrix, False on the diagonal.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    gap_x = np.maximum(b[:, None, 0], b[None, :, 0]) - np.minimum(b[:, None, 2], b[None, :, 2])
    gap_y = np.maximum(b[:, None, 1], b[None, :, 1]) - np.minimum(b[:, None, 3], b[None, :, 3])
    near = (gap_x <= margin) & (gap_y <= margin)
    np.fill_diagonal(near, False)
    return near


def _lab(colors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(K, 3) CIELAB of BGR colours: distances there follow how different colours look."""
    bgr = np.asarray(colors, np.float32).reshape(1, -1, 3) / 255.0
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).reshape(-1, 3)


def gt_colors(boxes: np.ndarray, margin: float) -> list[tuple[int, int, int]]:
    """One palette colour per GT, chosen in GT order: among the colours no neighbour
    (:func:`neighbours`) has yet, the least used so far; of those the first in palette order that
    does not look alike (:data:`ALIKE`) any neighbour's colour, else the one most unlike them. So
    every GT has its own colour while the palette lasts, neighbours look different where the
    palette allows, and beyond the palette's size neighbours still differ wherever fewer than
    ``len(GT_PALETTE)`` of them crowd one box.

    Args:
        boxes: (G, 4) xyxy pixels.
        margin: pixels, see :func:`neighbours`.
    Returns:
        G BGR tuples from :data:`GT_PALETTE`.
    """
    near = neighbours(boxes, margin)
    lab = _lab(GT_PALETTE)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=-1)  # (K, K)
    uses = np.zeros(len(GT_PALETTE), np.int64)
    chosen: list[int] = []
    for g in range(len(near)):  # greedy colouring: G is small (boxes of one image), not a hot path
        taken = [chosen[j] for j in np.nonzero(near[g, :g])[0]]
        free = [c for c in range(len(GT_PALETTE)) if c not in taken] or list(range(len(GT_PALETTE)))
        least = min(uses[c] for c in free)
        free = [c for c in free if uses[c] == least]
        unlike = [c for c in free if not taken or distance[c, taken].min() >= ALIKE]
        pick = unlike[0] if unlike else max(free, key=lambda c: distance[c, taken].min())
        uses[pick] += 1
        chosen.append(pick)
    return [GT_PALETTE[c] for c in chosen]


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Save (H, W, 3) uint8 BGR ``image`` as an indexed PNG of its 256 most frequent colours.

    Pictures drawn on a flat background hold few colours: the 256 most frequent cover ~98% of the
    pixels, among them every solid colour drawn (boxes, swatches, text), which stay exact; the rest
    (anti-aliased edges) take the nearest of them. The file is ~40% smaller than cv2's RGB PNG.
    """
    from PIL import Image  # a dependency of odet; imported here so that importing viz stays light

    rgb = np.ascontiguousarray(image[..., ::-1]).reshape(-1, 3).astype(np.int32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    keys, counts = np.unique(packed, return_counts=True)  # (np.unique's return_inverse is 10x slower)
    kept = keys[np.argsort(-counts, kind="stable")[:256]]
    unpack = np.array([16, 8, 0])
    kept_rgb, keys_rgb = (kept[:, None] >> unpack) & 255, (keys[:, None] >> unpack) & 255
    nearest = ((keys_rgb[:, None, :] - kept_rgb[None]) ** 2).sum(-1).argmin(axis=1).astype(np.uint8)
    index = nearest[np.searchsorted(keys, packed)]
    indexed = Image.fromarray(index.reshape(image.shape[:2]), mode="P")
    indexed.putpalette(kept_rgb.astype(np.uint8).flatten().tolist())
    indexed.save(str(path), format="PNG", compress_level=6)  # 9: 4x the time for 3% less
