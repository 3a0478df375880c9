"""Post-processing helpers against hand-computed values and upstream's threshold-then-sort order."""

from __future__ import annotations

import pytest
import torch

from odcli.boxes.postprocess import select_topk


def test_select_topk_hand_computed() -> None:
    scores = torch.tensor([[0.10, 0.90, 0.02], [0.50, 0.04, 0.70]])  # 2 priors × 3 classes
    top, labels, priors = select_topk(scores, score_thr=0.05, k=3)
    torch.testing.assert_close(top, torch.tensor([0.90, 0.70, 0.50]))
    assert labels.tolist() == [1, 2, 0] and priors.tolist() == [0, 1, 1]
    # Fewer than k above the threshold: only those, still best first; the threshold is strict.
    top, labels, priors = select_topk(scores, score_thr=0.5, k=10)
    assert top.tolist() == pytest.approx([0.90, 0.70])
    assert labels.tolist() == [1, 2] and priors.tolist() == [0, 1]
    assert select_topk(scores, score_thr=0.95, k=5)[0].numel() == 0


@pytest.mark.parametrize(("thr", "k"), [(0.001, 1000), (0.3, 1000), (0.999, 50), (0.0, 7)])
def test_select_topk_equals_threshold_then_full_sort(thr: float, k: int) -> None:
    """Upstream (``filter_scores_and_topk``): keep pairs > thr, sort them all, take the first k."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randperm(400 * 80, generator=gen).float().div(400 * 80).reshape(400, 80)  # distinct
    keep = scores > thr
    ref_scores, order = scores[keep].sort(descending=True)
    ref_idx = keep.nonzero()[order[:k]]
    top, labels, priors = select_topk(scores, thr, k)
    assert torch.equal(top, ref_scores[:k])
    assert torch.equal(labels, ref_idx[:, 1]) and torch.equal(priors, ref_idx[:, 0])
