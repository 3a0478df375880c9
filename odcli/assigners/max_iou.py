"""Max-IoU assigner (RetinaNet; MMDetection ``MaxIoUAssigner``).

Each prior looks at the GT it overlaps most:

* IoU ≥ ``pos_iou_thr`` → positive for that GT;
* 0 ≤ IoU < ``neg_iou_thr`` → negative (background);
* in between → ignored (no loss at all).

Then, with ``match_low_quality``, every GT whose best IoU is at least ``min_pos_iou`` also claims
its best prior(s) even below ``pos_iou_thr`` — with ``gt_max_assign_all`` *every* prior tied for
that best IoU — so that no GT is left without a positive. Upstream does this GT by GT in index
order, so when one prior is the best of several GTs, the last of them wins; the vectorised form
below reproduces that. (With ``min_pos_iou = 0`` a GT that overlaps no prior at all claims every
prior with IoU 0 — an upstream quirk kept on purpose for exactness; real boxes always overlap.)

Priors marked invalid (outside an image's padded extent) take no part: they neither count in
a GT's best IoU nor get a label, and come out ignored. The whole batch is processed at once on
(B, G, N) IoU tensors with padded GTs — no Python loop over images or boxes.
"""

from __future__ import annotations

import torch

from odcli.assigners.result import BACKGROUND, IGNORED, AssignResult
from odcli.boxes.overlaps import pairwise_iou


class MaxIoUAssigner:
    """See the module docstring.

    Args:
        pos_iou_thr: IoU at or above which a prior is positive.
        neg_iou_thr: IoU below which a prior is negative.
        min_pos_iou: the least IoU a low-quality match may have.
        match_low_quality: give each GT its best prior(s) even below ``pos_iou_thr``.
        gt_max_assign_all: with low-quality matching, all priors tied for a GT's best IoU (True) or
            only the first of them (False).
    """

    def __init__(
        self,
        *,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float = 0.4,
        min_pos_iou: float = 0.0,
        match_low_quality: bool = True,
        gt_max_assign_all: bool = True,
    ) -> None:
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.match_low_quality = match_low_quality
        self.gt_max_assign_all = gt_max_assign_all

    @torch.no_grad()
    def __call__(
        self,
        priors: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> AssignResult:
        """Assign priors to GTs.

        Args:
            priors: (N, 4) anchors, xyxy pixels (shared by the batch).
            gt_boxes: (B, G, 4) xyxy pixels, padded.
            gt_labels: (B, G) long, padded.
            gt_mask: (B, G) bool, False for padding.
            valid: (B, N) bool, priors that may be assigned; None = all.
        Returns:
            :class:`AssignResult` with ``gt_index`` (:data:`BACKGROUND` negative, :data:`IGNORED`
            ignored or invalid),
            ``labels`` and ``quality`` = IoU with the assigned GT (0 where not positive).
        """
        b, g = gt_boxes.shape[:2]
        n = priors.shape[0]
        device = priors.device
        if valid is None:
            valid = torch.ones((b, n), dtype=torch.bool, device=device)
        # Images without GTs: every valid prior is background. No GT at all, or no prior (upstream's
        # empty assignment): nothing to match, and the max over an empty dimension below would fail.
        gt_index = torch.where(valid, BACKGROUND, IGNORED).to(torch.long)
        if g == 0 or n == 0:
            return AssignResult(
                gt_index=gt_index,
                labels=torch.full((b, n), BACKGROUND, dtype=torch.long, device=device),
                quality=torch.zeros((b, n), device=device),
            )

        # GT × prior layout, as upstream, so max/argmax see the same tensors and break ties alike.
        ious = pairwise_iou(gt_boxes.float(), priors.float())  # (B, G, N)
        usable = gt_mask[:, :, None] & valid[:, None, :]
        # IoUs are ≥ 0, so -1 marks padding GTs / invalid priors below every real overlap.
        ious = ious.masked_fill(~usable, -1.0)
        max_iou, argmax = ious.max(dim=1)  # (B, N): each prior's best GT
        gt_best = ious.max(dim=2).values  # (B, G): each GT's best prior

        has_gt = gt_mask.any(dim=1, keepdim=True)  # (B, 1)
        negative = (max_iou >= 0) & (max_iou < self.neg_iou_thr)
        gt_index = torch.where(has_gt & valid & negative, BACKGROUND, torch.where(has_gt, IGNORED, gt_index))
        gt_index = torch.where(max_iou >= self.pos_iou_thr, argmax, gt_index)

        if self.match_low_quality:
            eligible = gt_mask & (gt_best >= self.min_pos_iou)  # (B, G)
            if self.gt_max_assign_all:
                claims = (ious == gt_best[:, :, None]) & eligible[:, :, None] & usable  # (B, G, N)
            else:
                first = ious.argmax(dim=2)  # (B, G): the first best prior
                claims = torch.zeros_like(usable)
                claims.scatter_(2, first[:, :, None], eligible[:, :, None])
            claimed = claims.any(dim=1)
            # Upstream overwrites GT by GT in order: the highest-index claiming GT wins.
            last = g - 1 - claims.flip(1).to(torch.uint8).argmax(dim=1)
            gt_index = torch.where(claimed, last, gt_index)

        positive = gt_index >= 0
        safe = gt_index.clamp(min=0)
        labels = torch.where(positive, gt_labels.gather(1, safe), BACKGROUND)
        quality = torch.where(positive, ious.gather(1, safe[:, None, :])[:, 0], 0.0)
        return AssignResult(gt_index=gt_index, labels=labels, quality=quality)
