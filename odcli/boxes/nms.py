"""Greedy class-aware NMS that gives, bit for bit, the keep decisions of upstream's NMS kernels, in
vectorised blocks, and stops as soon as enough boxes are kept.

The kernels (torchvision's and mmcv's CPU ``nms``, PaddleDetection's ``NMSFast``) visit the boxes best
first and keep a box unless a box kept before it overlaps it too much. Their overlap is computed in the
boxes' own dtype, with their operation order, which :func:`suppression` repeats
elementwise. mmcv / torchvision::

    xx1 = max(x1_i, x1_j) …  w = max(0, xx2 - xx1)  h = max(0, yy2 - yy1)
    inter = w * h             iou = inter / (area_i + area_j - inter)    area = (x2 - x1) * (y2 - y1)

and suppress when ``iou > thr``, with mmcv's ``float`` threshold (torchvision compares with a
``double``: the two differ only for an IoU of exactly ``float32(thr)`` where that rounds ``thr`` up,
e.g. 0.6 or 0.3; not for 0.5, 0.65, 0.7). PaddleDetection's ``JaccardOverlap`` differs: boxes apart
on an axis (``x1_j > x2_i`` …, strict) overlap 0 without any arithmetic, the intersection sides are
not clamped, an inverted box (x2 < x1 or y2 < y1) has area 0, and it keeps a box iff
``overlap <= thr`` in float32 — so a NaN overlap (two touching empty boxes: 0 / 0) suppresses, which
it does not in mmcv. IEEE float arithmetic is exact per operation, so the same operations on the same
float32 numbers give the same bits in any layout.

Why whole blocks give the sequential answer: in visiting order, box j is kept iff it survives every
kept box of the blocks before (one (kept × block) overlap test) and every *kept* earlier box of its
own block. With S[i, j] = "i before j, same label, i would suppress j", the block's keep vector g is
the unique solution of ``g_j = alive_j ∧ ¬∃ i < j: g_i ∧ S[i, j]`` (unique: g_j depends only on
g_i, i < j). Iterating ``x ← alive ∧ ¬(Sᵀx)`` from ``x = alive`` fixes one more leading position per
step (position j is right once all i < j are), so it reaches g within the block size, and a vector
that the step leaves unchanged is that unique solution: the loop stops there. Stopping after the
first ``max_keep`` kept boxes is exact too: a box's fate depends only on the boxes visited before it.
"""

from __future__ import annotations

import torch

#: Boxes per block, and kept boxes compared with a block at once: every overlap matrix stays below
#: ATen's parallel grain (32768 elements), so its ops run on the calling thread. On a small CPU that
#: is shared, waking a second thread for a 0.1 ms op can cost milliseconds; the network pays that
#: once per layer, NMS would pay it per op.
BLOCK = 128
KEPT_ROWS = 255


def box_areas(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy → (...,) ``(x2 - x1) * (y2 - y1)``, the kernels' area (no +1)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _larger(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``std::max(a, b)`` = ``a < b ? b : a`` (also for NaN, unlike ``torch.maximum``)."""
    return torch.where(a < b, b, a)


def _smaller(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``std::min(a, b)`` = ``b < a ? b : a``."""
    return torch.where(b < a, b, a)


def paddle_areas(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy → (...,) PaddleDetection's ``BBoxArea`` (normalized): 0 for an inverted box."""
    inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return torch.where(inverted, 0.0, box_areas(boxes))


def suppression(
    earlier: torch.Tensor,
    earlier_areas: torch.Tensor,
    later: torch.Tensor,
    later_areas: torch.Tensor,
    iou_thr: float,
    *,
    paddle: bool = False,
) -> torch.Tensor:
    """(E, L) bool: would box i of ``earlier`` (E, 4), once kept, suppress box j of ``later`` (L, 4)?

    mmcv's kernel (areas: :func:`box_areas`), or with ``paddle`` PaddleDetection's overlap
    (``JaccardOverlap`` of the candidate, ``later``, and a kept box, ``earlier``) and rule, keep iff
    overlap <= thr (areas: :func:`paddle_areas`). Labels are not looked at (the caller masks them).
    """
    ex1, ey1, ex2, ey2 = (earlier[:, k, None] for k in range(4))
    lx1, ly1, lx2, ly2 = (later[None, :, k] for k in range(4))
    if paddle:
        apart = (ex1 > lx2) | (ex2 < lx1) | (ey1 > ly2) | (ey2 < ly1)
        inter = (_smaller(lx2, ex2) - _larger(lx1, ex1)) * (_smaller(ly2, ey2) - _larger(ly1, ey1))
        overlap = torch.where(apart, 0.0, inter / (later_areas[None, :] + earlier_areas[:, None] - inter))
        return ~(overlap <= iou_thr)
    dw = _smaller(ex2, lx2) - _larger(ex1, lx1)
    dh = _smaller(ey2, ly2) - _larger(ey1, ly1)
    zero = dw.new_zeros(())
    inter = _larger(zero, dw) * _larger(zero, dh)
    iou = inter / (earlier_areas[:, None] + later_areas[None, :] - inter)
    return iou > iou_thr


class GreedyNMS:
    """Greedy NMS fed in visiting order (best first), block by block, until ``max_keep`` boxes are kept.

    Args:
        iou_thr: overlap threshold, compared in the boxes' dtype.
        max_keep: stop after this many kept boxes.
        paddle: PaddleDetection's overlap and rule (:func:`suppression`) instead of mmcv's.
    """

    def __init__(self, iou_thr: float, max_keep: int, *, paddle: bool = False) -> None:
        self.iou_thr = iou_thr
        self.max_keep = max_keep
        self.paddle = paddle
        self._areas_of = paddle_areas if paddle else box_areas
        self._boxes: list[torch.Tensor] = []
        self._areas: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._ids: list[torch.Tensor] = []
        self.count = 0

    @property
    def done(self) -> bool:
        """Whether ``max_keep`` boxes are kept (nothing fed later can change the result)."""
        return self.count >= self.max_keep

    def kept(self) -> torch.Tensor:
        """The ids (as fed) of the kept boxes, in visiting order (K,) long."""
        if not self._ids:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat(self._ids)

    def feed(self, boxes: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        """Visit ``boxes`` (n, 4) with ``labels`` (n,) and caller ``ids`` (n,), in this order, after
        everything fed before. Boxes of different labels never suppress each other."""
        for start in range(0, len(boxes), BLOCK):
            if self.done:
                return
            end = start + BLOCK
            self._block(boxes[start:end], labels[start:end], ids[start:end])

    def _block(self, boxes: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        areas = self._areas_of(boxes)
        alive = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
        if self.count:
            kept_labels = torch.cat(self._labels)
            present = torch.zeros(int(torch.maximum(kept_labels.max(), labels.max())) + 1, dtype=torch.bool)
            present[labels] = True
            near = present[kept_labels].nonzero()[:, 0]  # only kept boxes of this block's labels matter
            kept_boxes, kept_areas = torch.cat(self._boxes), torch.cat(self._areas)
            for start in range(0, len(near), KEPT_ROWS):
                rows = near[start : start + KEPT_ROWS]
                hit = suppression(
                    kept_boxes[rows], kept_areas[rows], boxes, areas, self.iou_thr, paddle=self.paddle
                )
                alive &= ~(hit & (kept_labels[rows][:, None] == labels[None, :])).any(dim=0)
        if not bool(alive.any()):
            return
        pairs = suppression(boxes, areas, boxes, areas, self.iou_thr, paddle=self.paddle)
        pairs &= labels[:, None] == labels[None, :]
        pairs = pairs.triu_(diagonal=1)  # only an earlier box suppresses a later one
        keep = alive
        while True:  # fixed point of keep = alive ∧ ¬(Sᵀ keep): the sequential answer (module docstring)
            step = alive & ~(pairs & keep[:, None]).any(dim=0)
            if torch.equal(step, keep):
                break
            keep = step
        idx = keep.nonzero()[:, 0][: self.max_keep - self.count]
        if idx.numel():
            self._boxes.append(boxes[idx])
            self._areas.append(areas[idx])
            self._labels.append(labels[idx])
            self._ids.append(ids[idx])
            self.count += idx.numel()
