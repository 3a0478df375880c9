"""The block-wise greedy NMS (``odcli.boxes.nms.GreedyNMS``) keeps exactly the boxes that upstream's
kernels keep: torchvision's ``nms`` / ``batched_nms`` (MMDetection-style heads) on random and adversarial
inputs, and PaddleDetection's ``NMSFast`` (a plain loop over its definition) for PP-YOLOE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from odcli.boxes.nms import BLOCK, KEPT_ROWS, GreedyNMS
from tests.nms_oracles import mmcv_shift, paddle_nms, scalar_mmcv_nms, visiting_order


def greedy(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    thr: float,
    max_keep: int = 10**9,
    *,
    paddle: bool = False,
) -> torch.Tensor:
    """Ids (positions in ``boxes``) kept by GreedyNMS when fed in ``order``."""
    nms = GreedyNMS(thr, max_keep, paddle=paddle)
    nms.feed(boxes[order], labels[order], order)
    return nms.kept()


def random_boxes(gen: torch.Generator, n: int, *, extent: float = 200.0, size: float = 60.0) -> torch.Tensor:
    """(n, 4) boxes on a 1/8 px grid — so that identical coordinates, shared edges and exact IoU
    ratios occur — crowded enough that most overlap: x1, y1 in [0, extent), sides in [0, size)."""
    xy = torch.randint(0, int(extent * 8), (n, 2), generator=gen).float() / 8
    wh = torch.randint(0, int(size * 8), (n, 2), generator=gen).float() / 8
    return torch.cat([xy, xy + wh], dim=1)


def adversarial(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes with duplicates, empty and inverted boxes, and scores with many exact ties."""
    boxes = random_boxes(gen, n)
    if n:
        dup = torch.randint(0, n, (n // 4,), generator=gen)
        boxes[torch.randint(0, n, (n // 4,), generator=gen)] = boxes[dup]  # exact duplicates
    boxes[::11, 2] = boxes[::11, 0]  # zero width
    boxes[::13, 3] = boxes[::13, 1] - 3  # inverted
    boxes[::17, 2:] = boxes[::17, :2]  # points
    scores = torch.randint(0, 12, (n,), generator=gen).float() / 12  # ties everywhere
    return boxes, scores


@pytest.mark.parametrize(
    ("n", "thr"),
    [(n, thr) for n in (0, 1, 5, BLOCK - 1, BLOCK, BLOCK + 1, 700) for thr in (0.5, 0.65, 0.7)]
    + [(3000, 0.65)],
)
def test_single_class_equals_torchvision_nms(n: int, thr: float) -> None:
    gen = torch.Generator().manual_seed(n)
    for boxes, scores in (
        (random_boxes(gen, n), torch.rand(n, generator=gen)),
        adversarial(gen, n),
    ):
        ref = torchvision.ops.nms(boxes, scores, thr)
        ours = greedy(boxes, torch.zeros(n, dtype=torch.long), visiting_order(scores), thr)
        assert torch.equal(ours, ref)


def test_many_kept_boxes_span_blocks_and_kept_row_chunks() -> None:
    """Sparse boxes: thousands kept, so each block meets more than KEPT_ROWS kept boxes of its label."""
    gen = torch.Generator().manual_seed(1)
    boxes = random_boxes(gen, 4000, extent=3000.0, size=40.0)
    scores = torch.rand(4000, generator=gen)
    ref = torchvision.ops.nms(boxes, scores, 0.5)
    assert len(ref) > 2 * KEPT_ROWS + BLOCK
    assert torch.equal(greedy(boxes, torch.zeros(4000, dtype=torch.long), visiting_order(scores), 0.5), ref)


@pytest.mark.parametrize("n", [300, 1000])  # torchvision's coordinate trick up to 1000 boxes on CPU
def test_classes_equal_batched_nms_coordinate_trick(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    boxes, scores = adversarial(gen, n)
    labels = torch.randint(0, 80, (n,), generator=gen)
    ref = torchvision.ops.batched_nms(boxes, scores, labels, 0.65)
    ours = greedy(mmcv_shift(boxes, labels), labels, visiting_order(scores), 0.65)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("num_classes", [3, 80])
def test_classes_equal_batched_nms_per_class_path(num_classes: int) -> None:
    """Above 1000 boxes torchvision runs its kernel class by class on the unshifted boxes: labels mask
    the classes apart in GreedyNMS the same way."""
    n = 2500
    gen = torch.Generator().manual_seed(num_classes)
    boxes, scores = adversarial(gen, n)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    ref = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    # torchvision visits each class in the order of its own sort of that class's scores; a stable
    # sort by score of those per-class orders, concatenated, visits every class in its order.
    per_class = [
        idx[visiting_order(scores[idx])]
        for c in range(num_classes)
        for idx in [(labels == c).nonzero()[:, 0]]
    ]
    cat = torch.cat(per_class)
    order = cat[scores[cat].sort(descending=True, stable=True)[1]]
    ours = greedy(boxes, labels, order, 0.5)
    assert set(ours.tolist()) == set(ref.tolist())
    assert torch.equal(scores[ours], scores[ref])  # both best first


@pytest.mark.parametrize("max_keep", [0, 1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 300])
def test_stops_after_max_keep_with_the_first_kept(max_keep: int) -> None:
    gen = torch.Generator().manual_seed(7)
    boxes, scores = adversarial(gen, 2000)
    labels = torch.randint(0, 5, (2000,), generator=gen)
    shifted, order = mmcv_shift(boxes, labels), visiting_order(scores)
    full = torchvision.ops.nms(shifted, scores, 0.65)
    assert len(full) > 300
    assert torch.equal(greedy(shifted, labels, order, 0.65, max_keep), full[:max_keep])
    nms = GreedyNMS(0.65, max_keep)  # fed in pieces of any size, it is done once max_keep are kept
    for piece in order.split(97):
        nms.feed(shifted[piece], labels[piece], piece)
    assert nms.done and torch.equal(nms.kept(), full[:max_keep])


def shifted_pair(width: float, dx: float) -> torch.Tensor:
    """Two unit-height boxes of ``width``, the second moved right by ``dx``."""
    return torch.tensor([[0.0, 0.0, width, 1.0], [dx, 0.0, dx + width, 1.0]])


def float32_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """The kernels' IoU of two boxes (4,), in float32, as a Python float (exact)."""
    w = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    h = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    inter = w * h
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def triples_at(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a box pair (A, B) at the boundary IoU: A, B and a copy C of B moved by a hair, scores
    descending, repeated with a gap. B is kept iff IoU(A, B) passes; C (overlapping B, not A,
    heavily) then falls, else it is kept: one wrong comparison flips two decisions."""
    a, b = pair
    c = b + torch.tensor([0.0, 0.01, 0.0, 0.01])
    one = torch.stack([a, b, c])
    boxes = torch.cat([one + torch.tensor([100.0 * k, 0, 100.0 * k, 0]) for k in range(5)])
    scores = torch.linspace(1.0, 0.1, len(boxes))
    return boxes, scores


@pytest.mark.parametrize(("thr", "width", "dx"), [(0.5, 3.0, 1.0), (0.65, 33.0, 7.0), (0.7, 17.0, 3.0)])
def test_iou_exactly_at_the_threshold_equals_torchvision(thr: float, width: float, dx: float) -> None:
    """(w - dx) / (w + dx) = thr exactly, so the float32 IoU is float32(thr), which rounds thr down
    (or is it): not above thr in float32 nor in double, so both rules keep B."""
    pair = shifted_pair(width, dx)
    iou = float32_iou(*pair)
    assert iou == np.float32(thr) and iou <= thr
    boxes, scores = triples_at(pair)
    ref = torchvision.ops.nms(boxes, scores, thr)
    assert len(ref) == 10  # A and B of each triple
    labels = torch.zeros(len(boxes), dtype=torch.long)
    assert torch.equal(greedy(boxes, labels, visiting_order(scores), thr), ref)
    # One float32 step above the threshold: B falls, C stays.
    above = shifted_pair(width, dx - 2e-5)
    assert float32_iou(*above) > np.float32(thr)
    boxes, scores = triples_at(above)
    ref = torchvision.ops.nms(boxes, scores, thr)
    assert len(ref) == 10 and 2 in ref.tolist()
    assert torch.equal(greedy(boxes, labels, visiting_order(scores), thr), ref)


@pytest.mark.parametrize(("thr", "width", "dx"), [(0.6, 8.0, 2.0), (0.3, 13.0, 7.0)])
def test_iou_at_a_threshold_that_float32_rounds_up(thr: float, width: float, dx: float) -> None:
    """float32(0.6) > 0.6: an IoU of exactly float32(0.6) is above the double torchvision compares
    with but not above mmcv's ``float`` threshold, and passes Paddle's ``overlap <= thr`` in float:
    GreedyNMS follows mmcv and Paddle (the upstreams), B is kept."""
    pair = shifted_pair(width, dx)
    iou = float32_iou(*pair)
    assert iou == np.float32(thr) and iou > thr  # the case where the two comparisons differ
    boxes, scores = triples_at(pair)
    order = visiting_order(scores)
    ref = scalar_mmcv_nms(boxes.numpy(), order.tolist(), thr)
    assert len(ref) == 10
    labels = torch.zeros(len(boxes), dtype=torch.long)
    assert greedy(boxes, labels, order, thr).tolist() == ref
    assert greedy(boxes, labels, order, thr, paddle=True).tolist() == ref


def test_scalar_oracle_equals_torchvision_on_adversarial_boxes() -> None:
    """The plain loop used above is torchvision's kernel where the two thresholds agree."""
    gen = torch.Generator().manual_seed(3)
    boxes, scores = adversarial(gen, 150)
    order = visiting_order(scores)
    assert (
        scalar_mmcv_nms(boxes.numpy(), order.tolist(), 0.65)
        == torchvision.ops.nms(boxes, scores, 0.65).tolist()
    )


def degenerate_boxes() -> torch.Tensor:
    """Where PaddleDetection's overlap differs from mmcv's: empty boxes that touch (0 / 0: NaN,
    suppresses), empty boxes apart (0 without arithmetic: kept), inverted boxes (area 0, unclamped
    intersection), boxes sharing an edge."""
    return torch.tensor(
        [
            [5.0, 5.0, 5.0, 5.0],  # a point
            [5.0, 5.0, 5.0, 5.0],  # the same point: NaN overlap, suppressed by Paddle only
            [9.0, 9.0, 9.0, 9.0],  # another point, apart: overlap 0
            [5.0, 5.0, 5.0, 8.0],  # a vertical segment through the first point: NaN
            [0.0, 0.0, 10.0, 10.0],
            [6.0, 0.0, 4.0, 10.0],  # inverted inside the big box
            [6.0, 0.0, 4.0, 10.0],  # the same inverted box: area 0, intersection -20
            [10.0, 0.0, 20.0, 10.0],  # shares an edge with the big box
            [10.0, 0.0, 20.0, 10.0],
            [2.0, 1.0, 8.0, 9.0],
            [3.0, 1.0, 9.0, 9.0],
            [30.0, 30.0, 30.0, 40.0],  # segments, overlapping and apart
            [30.0, 35.0, 30.0, 45.0],
            [31.0, 30.0, 31.0, 40.0],
        ]
    )


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.6, 0.7])
def test_paddle_rule_equals_nmsfast_on_degenerate_boxes(thr: float) -> None:
    boxes = degenerate_boxes()
    ref = paddle_nms(boxes.numpy(), thr)
    assert (
        greedy(
            boxes, torch.zeros(len(boxes), dtype=torch.long), torch.arange(len(boxes)), thr, paddle=True
        ).tolist()
        == ref
    )
    if thr == 0.6:
        assert ref[:3] == [0, 2, 4]  # the duplicate point falls, the far one stays


@pytest.mark.parametrize("n", [BLOCK + 5, 900])
def test_paddle_rule_equals_nmsfast_on_random_boxes(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    boxes, _ = adversarial(gen, n)
    labels = torch.randint(0, 3, (n,), generator=gen)
    ours = greedy(boxes, labels, torch.arange(n), 0.6, paddle=True)
    ref = [
        i
        for c in range(3)
        for idx in [(labels == c).nonzero()[:, 0]]
        for i in idx[paddle_nms(boxes[idx].numpy(), 0.6)].tolist()
    ]
    assert sorted(ours.tolist()) == sorted(ref)
