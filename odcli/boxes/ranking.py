"""Upstream's NMS candidates of one image, visited best first and produced lazily, band by band.

Both upstream post-processing styles choose (prior, class) pairs scoring above ``score_thr``, at most
``cap`` per *group* — per pyramid level (MMDetection's ``nms_pre``) or per class (PaddleDetection's
``nms_top_k``) — and run NMS over them best first. Ties are broken by a pair's *key*, its position in
upstream's flattening (MMDetection: prior-major ``prior · C + class``, priors level-major;
PaddleDetection: class-major ``class · N + prior``): upstream sorts the pairs that pass the threshold
by score. Among exactly equal scores we keep that order (a stable sort): PaddleDetection's sort is
stable; MMDetection's ``torch.sort`` is not guaranteed to be (from about 100 elements), so there an
exact tie may be visited in another order upstream — on the reference images the detections are the
same either way (tests/test_exact_postprocess.py). So there is one visiting order — score descending,
key ascending — and a pair is a candidate iff its rank in that order *within its group* is below
``cap``.

Greedy NMS that stops after ``max_per_img`` kept boxes needs only a prefix of that order, and a
caller's display threshold ``min_score`` only the prefix of pairs scoring at least it (the order is
by score). :func:`visit_candidates` produces that prefix in bands without ranking the rest: band j
holds every eligible pair with ``t_j <= score < t_{j-1}``, where ``t_j`` is the best score of the
``size_j``-th best prior (so only those priors' rows are read, and the band is never empty), sorted
by key and then stably by score. A pair's rank within its group is the number of its group's pairs
in earlier bands plus its position among them in its own band.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

#: Priors read per band grow by this factor, so the rows read again are a fraction of the work.
GROWTH = 4


def _ranks_in_groups(groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For pairs in visiting order with ``groups`` (n,) long: each one's position among the pairs of
    its own group (n,), and the pairs per group (G,)."""
    counts = torch.bincount(groups, minlength=num_groups)
    sorted_groups, perm = groups.sort(stable=True)  # group-major, visiting order kept inside a group
    starts = counts.cumsum(0) - counts
    position = torch.empty_like(groups)
    position[perm] = torch.arange(len(groups), device=groups.device) - starts[sorted_groups]
    return position, counts


def visit_candidates(
    scores: torch.Tensor,
    best: torch.Tensor,
    *,
    score_thr: float,
    cap: int,
    capped: torch.Tensor,
    level_starts: list[int] | None = None,
    min_score: float | None = None,
    first: int = 1024,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield the candidate pairs ``(priors (n,), classes (n,), scores (n,))`` in visiting order, band
    by band.

    Args:
        scores: (N, C) one image's scores.
        best: (N,) each prior's best score (``scores.amax(1)``).
        score_thr: pairs must score above it.
        cap: candidates per group; only groups flagged in ``capped`` (G,) bool are checked (a group
            with at most ``cap`` pairs above ``score_thr`` keeps them all).
        level_starts: MMDetection's layout: groups are levels, the priors ``[level_starts[g],
            level_starts[g + 1])``, keys prior-major. None: PaddleDetection's, groups are classes
            and keys class-major.
        min_score: only pairs scoring at least this (in the scores' dtype) are visited; every pair
            below it comes after every pair above it, so leaving them out changes no visited rank.
        first: priors read for the first band (then ``GROWTH`` times more each band).

    A capped group that has given its ``cap`` candidates takes no part in later bands. The caller
    stops iterating once it needs no more pairs.
    """
    num_priors, num_classes = scores.shape
    floor = best > score_thr
    if min_score is not None:
        floor &= best >= min_score
    alive = floor  # priors that may still hold a pair to visit
    dead_classes = torch.zeros(num_classes, dtype=torch.bool, device=scores.device)
    if level_starts is not None:
        starts = torch.tensor(level_starts, device=scores.device)
        ends = [*level_starts[1:], num_priors]
    seen = torch.zeros(len(capped), dtype=torch.long, device=scores.device)
    full = torch.zeros_like(capped)
    upper, size = float("inf"), first  # pairs scoring at least ``upper`` are visited
    while True:
        left = int(alive.sum())
        if left == 0:
            return
        low = (
            None
            if size >= left
            else torch.where(alive, best, float("-inf")).topk(size, sorted=False).values.min()
        )
        rows = alive if low is None else alive & (best >= low)
        priors = rows.nonzero()[:, 0]
        block = scores[priors]  # (n, C)
        pick = (block > score_thr) & (block < upper)
        if min_score is not None:
            pick &= block >= min_score
        if low is not None:
            pick &= block >= low
        if level_starts is None and bool(dead_classes.any()):
            pick &= ~dead_classes
        row, cls = pick.nonzero(as_tuple=True)
        prior, value = priors[row], block[row, cls]
        key = prior * num_classes + cls if level_starts is not None else cls * num_priors + prior
        order = key.sort().indices
        value, again = value[order].sort(descending=True, stable=True)
        order = order[again]
        prior, cls = prior[order], cls[order]
        if bool(capped.any()):
            groups = cls if level_starts is None else torch.searchsorted(starts, prior, right=True) - 1
            position, counts = _ranks_in_groups(groups, len(capped))
            keep = ~capped[groups] | (seen[groups] + position < cap)
            seen += counts
            prior, cls, value = prior[keep], cls[keep], value[keep]
            newly_full = capped & ~full & (seen >= cap)
            if bool(newly_full.any()):  # their later pairs cannot be candidates
                full |= newly_full
                if level_starts is None:
                    dead_classes |= newly_full
                    if bool(dead_classes.all()):
                        low = None
                else:
                    alive = alive.clone()
                    for level in newly_full.nonzero()[:, 0].tolist():  # a handful of levels
                        alive[level_starts[level] : ends[level]] = False
        if len(prior):
            yield prior, cls, value
        if low is None:
            return
        upper, size = float(low), size * GROWTH


def capped_candidates(flat_group: torch.Tensor, score_thr: float, cap: int) -> torch.Tensor:
    """(P_g,) bool: the pairs of one group (scores ``flat_group`` by key) that are candidates — above
    ``score_thr`` and among the group's first ``cap`` in visiting order (ties at the cut: lower key)."""
    above = flat_group > score_thr
    if int(above.sum()) <= cap:
        return above
    cut = flat_group.topk(cap, sorted=False).values.min()  # the cap-th best score (> score_thr here)
    over = flat_group > cut
    ties = flat_group == cut
    return over | (ties & (ties.cumsum(0) <= cap - int(over.sum())))
