"""Every assigner on empty inputs: no priors (N = 0), no ground truth (G = 0), or neither.

Upstream returns an empty assignment for these, everything background:

* MMDetection's ``MaxIoUAssigner`` and ``DynamicSoftLabelAssigner``: "No ground truth or boxes,
  return empty assignment" — ``gt_inds`` 0 (background) for each of the N priors, ``labels`` -1,
  ``max_overlaps`` 0;
* PaddleDetection's ``ATSSAssigner`` and ``TaskAlignedAssigner`` ("negative batch"): labels
  ``bg_index`` and all-zero scores, shaped (B, N).

odet's encoding of the same: ``gt_index`` -1, ``labels`` -1, ``quality`` 0, each (B, N), on a batch
of B = 2 images — and no warning on the way (an empty reduction warns before it fails). The
constructors refuse the ``topk`` values upstream's own ``topk`` calls refuse.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

from odcli.assigners import (
    AssignResult,
    ATSSAssigner,
    DynamicSoftLabelAssigner,
    MaxIoUAssigner,
    TaskAlignedAssigner,
)

B, C = 2, 3
SHAPES = [(0, 3), (6, 0), (0, 0)]  # (N priors, G ground truths)
STRIDE = 8.0


def _priors(n: int) -> torch.Tensor:
    """(N, 4) xyxy pixels: 16 px squares centred on a row of points ``STRIDE`` apart."""
    cx = torch.arange(n, dtype=torch.float32) * STRIDE + 12.0
    cy = torch.full((n,), 12.0)
    return torch.stack([cx - 8, cy - 8, cx + 8, cy + 8], dim=1)


def _gts(g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, G, 4) boxes over the priors, (B, G) labels, (B, G) all-True mask."""
    boxes = torch.tensor([[4.0, 4.0, 30.0, 22.0]]).repeat(B, g, 1) + torch.arange(g)[None, :, None] * 6.0
    return boxes, torch.arange(B * g).reshape(B, g) % C, torch.ones(B, g, dtype=torch.bool)


def _run_max_iou(n: int, g: int) -> AssignResult:
    return MaxIoUAssigner()(_priors(n), *_gts(g))


def _run_atss(n: int, g: int) -> AssignResult:
    anchors = _priors(n)
    return ATSSAssigner()(anchors, [n], *_gts(g), pred_boxes=anchors.expand(B, -1, -1).clone())


def _run_task_aligned(n: int, g: int) -> AssignResult:
    anchors = _priors(n)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    scores = torch.full((B, n, C), 0.5)
    return TaskAlignedAssigner()(scores, anchors.expand(B, -1, -1).clone(), centers, *_gts(g))


def _run_dsl(n: int, g: int) -> AssignResult:
    anchors = _priors(n)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    priors = torch.cat([centers, torch.full((n, 2), STRIDE)], dim=1)  # [x, y, stride, stride]
    logits = torch.zeros(B, n, C)
    return DynamicSoftLabelAssigner()(logits, anchors.expand(B, -1, -1).clone(), priors, *_gts(g))


RUNS: dict[str, Callable[[int, int], AssignResult]] = {
    "max_iou": _run_max_iou,
    "atss": _run_atss,
    "task_aligned": _run_task_aligned,
    "dynamic_soft_label": _run_dsl,
}


@pytest.mark.parametrize("name", list(RUNS))
def test_empty_inputs_give_an_all_background_assignment(name: str) -> None:
    for n, g in SHAPES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. std() over zero candidates
            result = RUNS[name](n, g)
        where = f"{name} with N={n}, G={g}"
        for field in ("gt_index", "labels", "quality"):
            assert getattr(result, field).shape == (B, n), f"{where}: {field}"
        assert result.gt_index.dtype == torch.long and result.labels.dtype == torch.long, where
        assert result.quality.is_floating_point(), where
        assert torch.equal(result.gt_index, torch.full((B, n), -1)), where
        assert torch.equal(result.labels, torch.full((B, n), -1)), where
        assert torch.equal(result.quality, torch.zeros(B, n)), where
        # MMDetection's own encoding of the same result: 0 = background for every prior.
        assert torch.equal(result.upstream_gt_inds(), torch.zeros(B, n, dtype=torch.long)), where


def test_max_iou_without_gt_keeps_invalid_priors_ignored() -> None:
    """With no GT the valid priors are background and the invalid ones stay out (-2), also at N = 0."""
    valid = torch.tensor([[True, False, True, True, True, True], [True] * 6])
    result = MaxIoUAssigner()(_priors(6), *_gts(0), valid=valid)
    assert result.gt_index.tolist() == [[-1, -2, -1, -1, -1, -1], [-1] * 6]
    empty = MaxIoUAssigner()(_priors(0), *_gts(3), valid=torch.ones(B, 0, dtype=torch.bool))
    assert empty.gt_index.shape == (B, 0)


@pytest.mark.parametrize("topk", [0, -1])
def test_atss_and_task_aligned_refuse_topk_below_one(topk: int) -> None:
    """Paddle's ``topk`` (both upstream assigners call it with their ``topk``) refuses k < 1."""
    with pytest.raises(ValueError, match="Task-Aligned topk must be >= 1"):
        TaskAlignedAssigner(topk=topk)
    with pytest.raises(ValueError, match="ATSS topk must be >= 1"):
        ATSSAssigner(topk=topk)


def test_dsl_refuses_negative_topk_and_keeps_upstreams_k_of_one_for_zero() -> None:
    """Upstream takes ``topk(ious, min(topk, N))``: k < 0 fails there; k = 0 sums no IoU and the
    clamp to 1 gives every GT exactly one prior."""
    with pytest.raises(ValueError, match="Dynamic Soft Label topk must be >= 0"):
        DynamicSoftLabelAssigner(topk=-1)
    anchors = _priors(6)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    priors = torch.cat([centers, torch.full((6, 2), STRIDE)], dim=1)
    boxes, labels, mask = _gts(1)
    result = DynamicSoftLabelAssigner(topk=0)(
        torch.zeros(B, 6, C), anchors.expand(B, -1, -1).clone(), priors, boxes, labels, mask
    )
    assert result.positive.sum(dim=1).tolist() == [1, 1]
