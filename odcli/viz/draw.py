"""Detections drawn on an image: coloured boxes with a filled "name score" tag per box."""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = ["class_color", "draw_detections"]

# Hue step of the golden ratio: consecutive class indices land far apart on the colour wheel, so
# neighbouring labels (person / bicycle / car ...) never get near-identical colours.
_GOLDEN = 0.618033988749895
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@functools.lru_cache(maxsize=1024)
def class_color(label: int) -> tuple[int, int, int]:
    """Deterministic, saturated BGR colour of class ``label`` (same colour in every image and run)."""
    hue = (0.05 + label * _GOLDEN) % 1.0
    # Alternate two saturation/value levels so classes whose hues come close still differ in tone.
    sat, val = (0.85, 0.95) if label % 2 == 0 else (0.65, 0.8)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(b * 255), int(g * 255), int(r * 255)


def _text_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a ``bgr`` background (ITU-R BT.601 luma)."""
    b, g, r = bgr
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _as_numpy(x: Any, dtype: type) -> np.ndarray:
    """Tensor (any device) / array / list → NumPy array of ``dtype``."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def draw_detections(
    img_bgr: np.ndarray,
    boxes: Any,
    scores: Any,
    labels: Any,
    classes: Sequence[str],
    *,
    score_thr: float = 0.3,
    max_dets: int = 100,
    show_scores: bool = True,
) -> np.ndarray:
    """Return a copy of ``img_bgr`` with the detections drawn on it.

    Args:
        img_bgr: (H, W, 3) uint8 BGR image (a (H, W) grey image is accepted too); not modified.
        boxes: (N, 4) xyxy boxes in the image's pixels (tensor or array).
        scores: (N,) confidences in [0, 1].
        labels: (N,) contiguous class indices into ``classes``.
        classes: class names; a label outside it is shown as ``class <label>``.
        score_thr: draw only detections with ``score >= score_thr``.
        max_dets: draw at most this many (the highest-scoring ones).
        show_scores: tag each box with "name score"; False: the name only (ground-truth boxes).

    Returns:
        (H, W, 3) uint8 BGR annotated copy.
    """
    if img_bgr.ndim == 2:
        canvas = cv2.cvtColor(img_bgr, cv2.COLOR_GRAY2BGR)
    elif img_bgr.ndim == 3 and img_bgr.shape[2] == 3:
        canvas = img_bgr.copy()
    else:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {img_bgr.shape}")
    if canvas.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {canvas.dtype}")
    canvas = np.ascontiguousarray(canvas)

    b = _as_numpy(boxes, np.float64).reshape(-1, 4)
    s = _as_numpy(scores, np.float64).reshape(-1)
    lab = _as_numpy(labels, np.int64).reshape(-1)
    if not len(b) == len(s) == len(lab):
        raise ValueError(f"{len(b)} boxes, {len(s)} scores and {len(lab)} labels do not match")
    order = np.argsort(-s, kind="stable")
    order = order[s[order] >= score_thr][: max(0, max_dets)]
    if order.size == 0:
        return canvas

    h, w = canvas.shape[:2]
    # Line and text size follow the image size: ~2 px lines on a 640×480 photo, ~4 px on 4K.
    short = min(h, w)
    thickness = max(1, round(short / 300))
    font_scale = float(np.clip(short / 1000, 0.35, 1.2))
    font_thick = max(1, thickness - 1)
    pad = max(2, thickness)

    # Lowest score first so the most confident boxes and tags end up on top.
    for i in order[::-1]:
        label = int(lab[i])
        color = class_color(label)
        x1, y1, x2, y2 = (round(float(v)) for v in np.clip(b[i], [0, 0, 0, 0], [w - 1, h - 1, w - 1, h - 1]))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)

        name = classes[label] if 0 <= label < len(classes) else f"class {label}"
        text = f"{name} {s[i]:.2f}" if show_scores else name
        (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, font_thick)
        tag_w, tag_h = tw + 2 * pad, th + baseline + pad
        # Tag sits on top of the box; when the box touches the top edge, tuck it inside instead.
        ty1 = y1 - tag_h if y1 - tag_h >= 0 else min(y1, h - tag_h)
        tx1 = min(x1, max(0, w - tag_w))  # keep it on the canvas at the right edge
        ty1 = max(0, ty1)
        cv2.rectangle(canvas, (tx1, ty1), (tx1 + tag_w, ty1 + tag_h), color, cv2.FILLED)
        cv2.putText(
            canvas,
            text,
            (tx1 + pad, ty1 + th + pad // 2),
            _FONT,
            font_scale,
            _text_color(color),
            font_thick,
            cv2.LINE_AA,
        )
    return canvas
