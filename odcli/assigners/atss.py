"""ATSS assigner as PP-YOLOE uses it for its first epochs (PaddleDetection ``ATSSAssigner``).

Per image, on padded ground truths (the whole batch at once, tensors (B, G, N)):

1. IoU of every GT with every anchor box (squares of ``grid_cell_scale · stride`` around the points)
   and the distance between their centres;
2. on every pyramid level, the ``topk`` anchors nearest to the GT centre are candidates;
3. the GT's threshold is mean + **unbiased** standard deviation of its candidates' IoUs (all
   levels together); candidates with IoU strictly above it whose centre lies inside the GT are
   positive;
4. an anchor positive for several GTs goes to the GT with the largest anchor IoU (among *all*
   GTs, as upstream does);
5. the quality of a positive (its soft classification target) is the IoU between the GT and the
   anchor's *predicted* box when predictions are given, else 1.

Ties between equal distances are broken by ``torch.topk`` on CPU exactly as Paddle's CPU ``topk``
breaks them (both run ``std::partial_sort`` / ``std::nth_element`` over the same sequence), as long
as the anchors come in upstream's order — which is why PP-YOLOE's head lists levels coarsest first
when it assigns.
"""

from __future__ import annotations

import torch

from odcli.assigners.result import BACKGROUND, AssignResult, resolve_multiple
from odcli.boxes.overlaps import aligned_iou_eps_added, pairwise_iou_eps_added, points_inside_boxes_eps


class ATSSAssigner:
    """Adaptive Training Sample Selection (Zhang et al. 2020), PaddleDetection's variant.

    Args:
        topk: candidates per level per GT (upstream 9); at least 1 (Paddle's ``topk`` refuses k < 1).
        eps: ε of the "centre inside the GT" test (upstream 1e-9).
    """

    def __init__(self, *, topk: int = 9, eps: float = 1e-9) -> None:
        if topk < 1:
            raise ValueError(f"ATSS topk must be >= 1 (candidates per level per GT), got {topk}")
        self.topk = topk
        self.eps = eps

    @torch.no_grad()
    def __call__(
        self,
        anchors: torch.Tensor,
        num_per_level: list[int],
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
        pred_boxes: torch.Tensor | None = None,
    ) -> AssignResult:
        """Assign anchors to GTs.

        Args:
            anchors: (N, 4) anchor boxes, xyxy pixels, levels concatenated in ``num_per_level`` order.
            num_per_level: anchors of each level (sums to N).
            gt_boxes: (B, G, 4) xyxy pixels, padded.
            gt_labels: (B, G) long, padded.
            gt_mask: (B, G) bool, False for padding.
            pred_boxes: optional (B, N, 4) predicted boxes, xyxy pixels: their IoU with the matched
                GT becomes the quality.
        Returns:
            :class:`AssignResult`: ``gt_index`` (B, N) (-1 negative), ``labels`` (-1 negative),
            ``quality`` (B, N) (IoU with the prediction, or 1; 0 for negatives).
            No GT (G = 0) or no anchors (N = 0): all background, as upstream's negative batch.
        """
        b, g = gt_boxes.shape[:2]
        n = anchors.shape[0]
        device = anchors.device
        if g == 0 or n == 0:
            return AssignResult.background(b, n, device)
        anchors = anchors.float()
        gt_boxes = gt_boxes.float()
        mask = gt_mask.bool()

        # 1. IoU and centre distance, (B, G, N).
        ious = pairwise_iou_eps_added(gt_boxes.reshape(-1, 4), anchors, eps=1e-10).reshape(b, g, n)
        gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        delta = gt_centers[:, :, None, :] - anchor_centers[None, None, :, :]
        distances = (delta * delta).sum(-1).sqrt()

        # 2. The topk nearest anchors of every level (global anchor indices), (B, G, L·topk).
        candidate_idx = []
        start = 0
        for count in num_per_level:
            k = min(self.topk, count)
            idx = distances[..., start : start + count].topk(k, dim=-1, largest=False).indices
            candidate_idx.append(idx + start)
            start += count
        cand = torch.cat(candidate_idx, dim=-1)
        is_candidate = torch.zeros((b, g, n), dtype=torch.bool, device=device)
        is_candidate.scatter_(-1, cand, True)

        # 3. Adaptive threshold: mean + unbiased std of the candidates' IoUs.
        cand_ious = ious.gather(-1, cand)
        threshold = cand_ious.mean(-1, keepdim=True) + cand_ious.std(-1, keepdim=True)
        inside = points_inside_boxes_eps(anchor_centers, gt_boxes, self.eps)
        positive = is_candidate & (ious > threshold) & inside & mask[:, :, None]

        # 4. Anchors claimed by several GTs: the GT of largest anchor IoU.
        gt_index = resolve_multiple(positive, ious)
        is_pos = positive.any(dim=1)
        gt_index = torch.where(is_pos, gt_index, torch.full_like(gt_index, BACKGROUND))

        safe = gt_index.clamp(min=0)
        labels = torch.where(is_pos, gt_labels.long().gather(1, safe), torch.full_like(safe, BACKGROUND))
        if pred_boxes is None:
            quality = is_pos.float()
        else:
            matched = gt_boxes.gather(1, safe[..., None].expand(-1, -1, 4))
            iou = aligned_iou_eps_added(matched, pred_boxes.float(), eps=1e-9)
            quality = torch.where(is_pos, iou, torch.zeros_like(iou))
        return AssignResult(gt_index=gt_index, labels=labels, quality=quality)
