"""The picture of an assignment (:mod:`odcli.viz.assignment`) that reads without the terminal.

One strip per assigner: a title naming the assigner and what it ran on (its mode), then one panel per
FPN level side by side — the image cropped to its own pixels (no letterbox padding), faded to grey so
that colour belongs to the ground truth only — each GT's box outlined and tagged with its index in
its own colour (:func:`~odcli.viz.palette.gt_colors`: boxes near each other never share one), and
every positive prior's grid cell filled in the colour of the GT it learns. Each panel names its level
(stride, grid size) and counts positives per GT; a legend on the right lists GT index, class, colour
and positives per level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from odcli.viz.assignment import SQUARE_STRIDES, STATIC_SCORE, ImageAssignment
from odcli.viz.palette import gt_colors, ink_for

__all__ = ["TITLES", "draw_assignment", "figure_colors", "stack_rows"]

#: Assigner name → what it is and its rule, for the strip's title (ASCII: OpenCV's fonts have no ≥).
TITLES = {
    "maxiou": "MaxIoU (RetinaNet): IoU >= 0.5 positive, < 0.4 negative, plus each GT's best prior",
    "atss": "Adaptive Training Sample Selection: 9 nearest priors per level, IoU >= mean + std of theirs, "
    "centre inside the GT",
    "tal": "Task-Aligned (PP-YOLOE): 13 best of score x IoU^6, centre inside the GT",
    "dsl": "Dynamic Soft Label (RTMDet): k cheapest of class + 3 x (-log IoU) + centre costs, "
    "k = sum of the 13 best IoUs",
}

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (20, 20, 20)
_MUTED = (90, 90, 90)
_LINE = 20  # px per text line at scale 0.45
_GAP = 6  # px between panels
_MAX_COLUMNS = 3  # panels in a row: more would make each too small to see the finest level's cells
_SWATCH = 16  # px, the legend's colour squares (solid, exact colour)
_LEGEND_ROW = _SWATCH + 6  # px per GT in the legend
_LEGEND_TOP = 2 * _LINE + 8  # px of the legend's heading
_FILL_ALPHA = 0.6  # positive cells: the GT colour over the faded image, so the image still shows


def _text_width(text: str, scale: float, thickness: int = 1) -> int:
    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _put(
    canvas: np.ndarray,
    text: str,
    x: int,
    baseline: int,
    *,
    scale: float = 0.45,
    color: tuple[int, int, int] = _INK,
    thickness: int = 1,
) -> None:
    """Anti-aliased ``text`` on ``canvas`` (in place), its baseline at ``baseline`` px."""
    cv2.putText(canvas, text, (x, baseline), _FONT, scale, color, thickness, cv2.LINE_AA)


def _wrap(text: str, width: int, scale: float) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` px wide (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(f"{lines[-1]} {word}", scale) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _text_block(lines: Sequence[tuple[str, float, int]], width: int) -> np.ndarray:
    """White (h, width, 3) block of wrapped lines, each (text, scale, thickness)."""
    wrapped = [(ln, scale, thick) for text, scale, thick in lines for ln in _wrap(text, width - 12, scale)]
    heights = [round(_LINE * scale / 0.45) + 2 for _, scale, _ in wrapped]
    block = np.full((sum(heights) + 8, width, 3), 255, np.uint8)
    y = 4
    for (line, scale, thick), h in zip(wrapped, heights, strict=True):
        _put(block, line, 6, y + h - 6, scale=scale, thickness=thick)
        y += h
    return block


def figure_colors(assigned: ImageAssignment) -> list[tuple[int, int, int]]:
    """The BGR colour of each GT in every picture of ``assigned``: neighbours within 3% of the
    image's longer side count as touching (:func:`~odcli.viz.palette.gt_colors`)."""
    return gt_colors(assigned.gt_boxes, margin=0.03 * max(assigned.content_shape))


def _faded(assigned: ImageAssignment, width: int) -> tuple[np.ndarray, float]:
    """The image's own pixels (padding cropped), resized to ``width`` px, grey and faded → (base, scale)."""
    h, w = assigned.content_shape
    scale = width / w
    crop = assigned.image[:h, :w]
    small = cv2.resize(crop, (width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (3, 3), 0).astype(np.float32)
    # Light, flat and slightly soft: the photo stays legible as context behind the coloured marks, and
    # its ~8 grey levels without pixel noise keep the PNG about three times smaller than the photo's.
    grey = np.round((grey * 0.38 + 255 * 0.58) / 12) * 12
    return cv2.cvtColor(grey.clip(0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR), scale


def _panel(
    base: np.ndarray,
    scale: float,
    assigned: ImageAssignment,
    name: str,
    level: int,
    colors: list[tuple[int, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """One level's picture → (panel (h, w, 3) uint8, positives per GT (G,) on this level).

    ``base`` is :func:`_faded`'s image, ``scale`` panel px per input px.
    """
    view = assigned.view
    cell = 2 ** _level_name(assigned, level) * scale  # a grid cell, in panel pixels
    panel = base.copy()
    if cell >= 14:  # the grid itself where its cells are large enough to see: lines between the priors
        first = view.centers[sum(view.num_per_level[:level])].cpu().numpy() * scale
        xs = np.arange((first[0] - cell / 2) % cell, panel.shape[1], cell).astype(int)
        ys = np.arange((first[1] - cell / 2) % cell, panel.shape[0], cell).astype(int)
        panel[:, xs] = (panel[:, xs] * 0.85).astype(np.uint8)
        panel[ys, :] = (panel[ys, :] * 0.85).astype(np.uint8)

    gt_index = assigned.results[name].gt_index[0].cpu().numpy()
    pos = np.nonzero((view.levels == level).cpu().numpy() & (gt_index >= 0))[0]
    # One mark per (location, GT): an anchor head has several anchors on each location.
    centres = view.centers.cpu().numpy()[pos] * scale
    marks = np.unique(np.column_stack([np.round(centres, 2), gt_index[pos]]), axis=0)
    panel = _mark_cells(panel, marks, cell, colors)
    _draw_gts(panel, assigned.gt_boxes * scale, colors)
    return panel, np.bincount(gt_index[pos], minlength=len(colors))


def _mark_cells(
    panel: np.ndarray, marks: np.ndarray, cell: float, colors: list[tuple[int, int, int]]
) -> np.ndarray:
    """``panel`` with the grid cell of each mark (M, 3) ``[x, y, GT index]`` (panel px) filled.

    Cells tile the panel (inclusive corners, no overlap). Large ones are translucent with a darker rim
    and the prior's point in full colour; cells of a few pixels are solid, to be seen at all, with a
    1 px gap between neighbours so that they can be counted.
    """
    inset = 1 if cell >= 8 else 2
    lo = np.round(marks[:, :2] - cell / 2).astype(int)
    hi = np.round(marks[:, :2] + cell / 2).astype(int) - inset
    gts = marks[:, 2].astype(int)
    if cell < 8:
        for (x1, y1), (x2, y2), g in zip(lo, hi, gts, strict=True):
            cv2.rectangle(panel, (x1, y1), (x2, y2), colors[g], cv2.FILLED)
        return panel
    fill = panel.copy()
    for (x1, y1), (x2, y2), g in zip(lo, hi, gts, strict=True):
        cv2.rectangle(fill, (x1, y1), (x2, y2), colors[g], cv2.FILLED)
    panel = cv2.addWeighted(fill, _FILL_ALPHA, panel, 1 - _FILL_ALPHA, 0)
    dot = max(1, round(cell / 7))
    for (x1, y1), (x2, y2), (cx, cy), g in zip(lo, hi, np.round(marks[:, :2]).astype(int), gts, strict=True):
        # The rim is the GT's colour darkened: pale colours (lime, cyan) still stand out on light grey.
        cv2.rectangle(panel, (x1, y1), (x2, y2), tuple(int(c * 0.6) for c in colors[g]), 1)
        cv2.circle(panel, (cx, cy), dot, colors[g], cv2.FILLED, cv2.LINE_AA)
    return panel


def _draw_gts(panel: np.ndarray, boxes: np.ndarray, colors: list[tuple[int, int, int]]) -> None:
    """Each GT box (G, 4) xyxy panel px outlined in its colour, its index in a tag at the top left."""
    h, w = panel.shape[:2]
    for g, box in enumerate(boxes):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(panel, (x1, y1), (x2, y2), colors[g], 2, cv2.LINE_AA)
        tag = str(g)
        tw = _text_width(tag, 0.4)
        tx, ty = min(max(x1, 0), w - tw - 4), min(max(y1, 0), h - 15)
        cv2.rectangle(panel, (tx, ty), (tx + tw + 4, ty + 14), colors[g], cv2.FILLED)
        _put(panel, tag, tx + 2, ty + 11, scale=0.4, color=ink_for(colors[g]))


def _per_gt_line(counts: np.ndarray, width: int) -> str:
    """The line ``per GT  0:3  1:0 …`` fitting ``width`` px: zeros dropped, then the tail cut, if needed."""
    full = "per GT  " + "  ".join(f"{g}:{c}" for g, c in enumerate(counts))
    if _text_width(full, 0.4) <= width:
        return full
    nonzero = [f"{g}:{c}" for g, c in enumerate(counts) if c]
    line = "per GT (others 0)  " + "  ".join(nonzero)
    while nonzero and _text_width(line, 0.4) > width:
        nonzero.pop()
        line = "per GT (others 0)  " + "  ".join(nonzero) + " ..."
    return line


def _legend_rows(assigned: ImageAssignment, name: str, classes: Sequence[str]) -> tuple[list[str], str]:
    """The legend's line per GT (index, class, positives per level and in all) and its subheading."""
    summary = next(s for s in assigned.summaries if s.assigner == name)
    levels = "/".join(f"P{_level_name(assigned, lv)}" for lv in range(len(assigned.view.level_sizes)))
    rows = []
    for g, label in enumerate(assigned.gt_labels.tolist()):
        cls = classes[label] if 0 <= label < len(classes) else f"class {label}"
        per_level = summary.counts[g]
        rows.append(f"{g} {cls[:14]}  {'/'.join(map(str, per_level))} = {sum(per_level)}")
    return rows, f"per level {levels} = all"


def _legend_column_width(rows: list[str], sub: str) -> int:
    return _SWATCH + 14 + max([_text_width(r, 0.42) for r in rows] + [_text_width(sub, 0.42), 150])


def _legend(
    rows: list[str], sub: str, colors: list[tuple[int, int, int]], per_column: int, height: int = 0
) -> np.ndarray:
    """The legend: a heading, then per GT a solid swatch of its colour and its row, ``per_column``
    GTs to a column (GT 0 at the top left); at least ``height`` px tall."""
    col_w = _legend_column_width(rows, sub)
    columns = max(1, math.ceil(len(rows) / per_column))
    legend = np.full(
        (max(height, _LEGEND_TOP + per_column * _LEGEND_ROW), columns * col_w + 8, 3), 255, np.uint8
    )
    _put(legend, "GT  class  positives", 8, 16, scale=0.45, thickness=1)
    _put(legend, sub, 8, 16 + _LINE, scale=0.42, color=_MUTED)
    for i, row in enumerate(rows):
        x = 8 + (i // per_column) * col_w
        y = _LEGEND_TOP + (i % per_column) * _LEGEND_ROW
        legend[y : y + _SWATCH, x : x + _SWATCH] = colors[i]
        _put(legend, row, x + _SWATCH + 8, y + _SWATCH - 3, scale=0.42)
    return legend


def _with_legend(
    panels: list[np.ndarray], columns: int, rows: list[str], sub: str, colors: list[tuple[int, int, int]]
) -> np.ndarray:
    """The panels in a grid with the legend where it costs least space: in the grid's empty slot, else
    as one column on the right, else (many GTs) in as many columns as fit below the panels."""
    ph, pw = panels[0].shape[:2]
    empty = -len(panels) % columns
    fits = max(1, (ph - _LEGEND_TOP) // _LEGEND_ROW)
    if empty and len(rows) <= fits:
        legend = _legend(rows, sub, colors, fits)
        if legend.shape[1] + 10 <= empty * pw + (empty - 1) * _GAP and legend.shape[0] <= ph:
            return _grid(panels, columns, legend)
    grid = _grid(panels, columns)
    if len(rows) <= (grid.shape[0] - _LEGEND_TOP) // _LEGEND_ROW:
        legend = _legend(rows, sub, colors, len(rows), grid.shape[0])
        return np.hstack([grid, np.full((grid.shape[0], 10, 3), 255, np.uint8), legend])
    per_row = max(1, (grid.shape[1] - 8) // _legend_column_width(rows, sub))
    return _white_vstack([grid, _legend(rows, sub, colors, math.ceil(len(rows) / per_row))])


def _white_vstack(parts: list[np.ndarray], gap: int = 0) -> np.ndarray:
    """``parts`` one under the other, left-aligned, white to the widest's width and ``gap`` px below each."""
    width = max(part.shape[1] for part in parts)
    return np.vstack(
        [np.pad(part, ((0, gap), (0, width - part.shape[1]), (0, 0)), constant_values=255) for part in parts]
    )


def _level_name(assigned: ImageAssignment, level: int) -> int:
    """The level's FPN index (P3 for stride 8): log2 of its stride."""
    first = sum(assigned.view.num_per_level[:level])  # priors are listed level-major
    return round(math.log2(float(assigned.view.strides[first])))


def _ran_on(name: str, mode: str, anchors: bool) -> str:
    """What assigner ``name`` ranked, in words: the anchors, squares around points, or predictions."""
    if mode == "predictions":
        return "Ranked the model's own predictions for this image (boxes and class scores)."
    side = SQUARE_STRIDES.get(name, 5.0)
    if mode == "static":
        own = "its anchor" if anchors else f"a square of {side:g} strides around its point"
        return (
            f"Static mode: each prior's prediction is taken to be its own box ({own}) with score "
            f"{STATIC_SCORE:g} for every class, so the positives follow the geometry alone, not a model."
        )
    boxes = "the head's anchors" if anchors else f"squares of {side:g} strides around the prior points"
    return f"Needs no predictions: ranks {boxes} by their IoU with the GTs."


def draw_assignment(
    assigned: ImageAssignment,
    name: str,
    classes: Sequence[str],
    *,
    model: str = "",
    width: int = 1200,
) -> np.ndarray:
    """The picture of assigner ``name``: title, mode, one panel per level, legend.

    Args:
        assigned: what :func:`~odcli.viz.assignment.assign_image` made of the image (with ``name``).
        classes: class names of the GT labels.
        model: what the priors came from (e.g. ``"rtmdet_tiny, untrained"``), named in the title.
        width: px of the panels side by side: up to three levels in a row (RetinaNet's five in two rows),
            each an equal share; the legend comes on their right.
    Returns:
        (H, W, 3) uint8 BGR picture.
    """
    summary = next(s for s in assigned.summaries if s.assigner == name)
    colors = figure_colors(assigned)
    num_levels = len(assigned.view.level_sizes)
    columns = min(num_levels, _MAX_COLUMNS)
    panel_w = (width - _GAP * (columns - 1)) // columns
    base, scale = _faded(assigned, panel_w)
    panels = [
        _framed(*_panel(base, scale, assigned, name, lv, colors), assigned, lv) for lv in range(num_levels)
    ]
    grid = _with_legend(panels, columns, *_legend_rows(assigned, name, classes), colors)
    title = f"{name.upper()}  -  {TITLES.get(name, name)}"
    ran_on = _ran_on(name, summary.mode, assigned.view.anchors is not None)
    mode = f"Priors of {model or 'the model'}. {ran_on}"
    key = "Numbered boxes: the GTs (see the legend). Filled cells: positive priors, in the colour of their GT"
    if assigned.view.per_location > 1:
        key += f" (the {assigned.view.per_location} anchors of one location share its cell)"
    key += "."
    header = _text_block([(title, 0.55, 2), (mode, 0.45, 1), (key, 0.42, 1)], grid.shape[1])
    return np.vstack([header, grid])


def _framed(picture: np.ndarray, counts: np.ndarray, assigned: ImageAssignment, level: int) -> np.ndarray:
    """A level's ``picture`` under its title line (level, stride, grid, positives), over the line of
    its positives per GT ``counts`` (G,)."""
    width = picture.shape[1]
    h, w = assigned.view.level_sizes[level]
    p = _level_name(assigned, level)
    head = f"P{p} | stride {2**p} | {w}x{h} grid | {int(counts.sum())} positives"
    top = np.full((_LINE + 6, width, 3), 255, np.uint8)
    _put(top, head, 2, _LINE - 2, scale=0.47)
    bottom = np.full((_LINE + 4, width, 3), 255, np.uint8)
    _put(bottom, _per_gt_line(counts, width - 4), 2, _LINE - 4, scale=0.4, color=_MUTED)
    return np.vstack([top, picture, bottom])


def _grid(panels: list[np.ndarray], columns: int, legend: np.ndarray | None = None) -> np.ndarray:
    """Equal-sized ``panels`` in rows of ``columns``, white between and in the last row's empty
    slots, where ``legend`` (if given, and it must fit) goes."""
    ph, pw = panels[0].shape[:2]
    empty = -len(panels) % columns
    slot = np.full((ph, empty * pw + max(empty - 1, 0) * _GAP, 3), 255, np.uint8)
    if legend is not None:
        slot[: legend.shape[0], 10 : 10 + legend.shape[1]] = legend
    cells = panels + ([slot] if empty else [])
    gap = np.full((ph, _GAP, 3), 255, np.uint8)
    rows = [
        np.hstack([part for panel in cells[i : i + columns] for part in (panel, gap)][:-1])
        for i in range(0, len(panels), columns)
    ]
    return _white_vstack(rows, _GAP)[:-_GAP]


def stack_rows(rows: list[np.ndarray], heading: str = "") -> np.ndarray:
    """Strips of possibly different widths, one under the other on white, under a ``heading`` line."""
    stacked = _white_vstack(rows, 10)
    if not heading:
        return stacked
    return np.vstack([_text_block([(heading, 0.5, 1)], stacked.shape[1]), stacked])
