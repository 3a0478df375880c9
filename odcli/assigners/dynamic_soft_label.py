"""Dynamic Soft Label Assigner (RTMDet).

For every GT the cost of each candidate prior is

    soft classification cost  BCE(logit, IoU-soft-label) · |IoU − σ(logit)|²   (summed over classes)
  + iou_weight · (−log IoU)
  + soft centre prior         10 ** (centre distance in strides − soft_center_radius)

Candidates are the priors whose point lies strictly inside at least one GT of the image. Each GT
takes its ``k`` cheapest candidates, ``k = max(1, int(sum of its top-``topk`` IoUs))``; a prior
chosen by several GTs keeps the cheapest one.

The whole batch is processed at once on (B, N, G) tensors with padded GTs: no Python loop over
images or boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odcli.assigners.result import BACKGROUND, AssignResult
from odcli.boxes.overlaps import pairwise_iou, points_inside_boxes

_LOG_EPS = 1e-7


class DynamicSoftLabelAssigner:
    """See the module docstring.

    Args:
        topk: number of best IoUs summed to get each GT's dynamic k; 0 is allowed (as upstream: every
            GT then takes k = 1), a negative count is not.
        iou_weight: weight of the −log IoU cost.
        soft_center_radius: the centre prior is 1 at this distance (in strides).
    """

    def __init__(self, *, topk: int = 13, iou_weight: float = 3.0, soft_center_radius: float = 3.0) -> None:
        if topk < 0:
            raise ValueError(f"Dynamic Soft Label topk must be >= 0 (IoUs summed per GT), got {topk}")
        self.topk = topk
        self.iou_weight = iou_weight
        self.soft_center_radius = soft_center_radius

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        priors: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> AssignResult:
        """Assign priors to GTs.

        Args:
            pred_logits: (B, N, C) class logits (before sigmoid).
            pred_boxes: (B, N, 4) decoded predicted boxes, xyxy pixels.
            priors: (N, 4) ``[x, y, stride, stride]`` pixels.
            gt_boxes: (B, G, 4) xyxy pixels, padded.
            gt_labels: (B, G) long, padded.
            gt_mask: (B, G) bool, False for padding.
        Returns:
            :class:`AssignResult` (B, N): ``quality`` the IoU of a positive's prediction with its GT.
            No GT (G = 0) or no priors (N = 0): all background, as upstream's empty assignment.
        """
        b, n, num_classes = pred_logits.shape
        g = gt_boxes.shape[1]
        device = pred_logits.device
        if g == 0 or n == 0:
            return AssignResult.background(b, n, device)
        pred_logits = pred_logits.float()
        pred_boxes = pred_boxes.float()
        gt_boxes = gt_boxes.float()

        inside = points_inside_boxes(priors[:, :2], gt_boxes) & gt_mask[:, None, :]  # (B, N, G)
        candidate = inside.any(dim=2)  # (B, N)
        pair_ok = candidate[:, :, None] & gt_mask[:, None, :]  # (B, N, G)

        gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0
        distance = (priors[None, :, None, :2] - gt_centers[:, None, :, :]).pow(2).sum(-1).sqrt()
        distance = distance / priors[None, :, None, 2]
        center_cost = torch.pow(10, distance - self.soft_center_radius)

        ious = pairwise_iou(pred_boxes, gt_boxes)  # (B, N, G)
        iou_cost = -torch.log(ious + _LOG_EPS) * self.iou_weight

        cls_cost = self._soft_cls_cost(pred_logits, ious, gt_labels.clamp(0, num_classes - 1))
        cost = cls_cost + iou_cost + center_cost
        cost = cost.masked_fill(~pair_ok, float("inf"))

        # Dynamic k per GT from its best IoUs among candidates (non-candidates contribute 0).
        cand_ious = ious.masked_fill(~pair_ok, 0.0)
        k_top = min(self.topk, n)
        dynamic_k = cand_ious.topk(k_top, dim=1).values.sum(dim=1).int().clamp(min=1)  # (B, G)
        dynamic_k = dynamic_k.masked_fill(~gt_mask | ~candidate.any(dim=1, keepdim=True), 0)

        # Each GT takes its k cheapest candidates: rank the max_k cheapest once, keep rank < k.
        max_k = max(int(dynamic_k.max()), 1)
        cheapest = cost.topk(max_k, dim=1, largest=False).indices  # (B, max_k, G)
        take = torch.arange(max_k, device=device)[None, :, None] < dynamic_k[:, None, :]
        matched = torch.zeros((b, n, g), dtype=torch.bool, device=device)
        matched.scatter_(1, cheapest, take)
        matched &= pair_ok

        # A prior matched to several GTs keeps the GT of lowest cost (over all GTs).
        num_matches = matched.sum(dim=2)
        gt_index = torch.where(num_matches > 1, cost.argmin(dim=2), matched.to(torch.uint8).argmax(dim=2))
        positive = num_matches > 0
        gt_index = torch.where(positive, gt_index, torch.full_like(gt_index, BACKGROUND))

        safe = gt_index.clamp(min=0)
        labels = torch.where(positive, gt_labels.gather(1, safe), torch.full_like(gt_index, BACKGROUND))
        quality = torch.where(
            positive, ious.gather(2, safe[..., None])[..., 0], torch.zeros_like(ious[..., 0])
        )
        return AssignResult(gt_index=gt_index, labels=labels, quality=quality)

    @staticmethod
    def _soft_cls_cost(logits: torch.Tensor, ious: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        """Σ_c BCE(x_c, y_c)·|y_c − σ(x_c)|² with y = IoU at the GT's class, 0 elsewhere → (B, N, G).

        Computed as (the all-negative sum over classes) − (the negative term at the GT class)
        + (the positive term at the GT class): O(B·N·(C+G)) memory instead of O(B·N·G·C).
        """
        prob = logits.sigmoid()
        neg = F.binary_cross_entropy_with_logits(
            logits, torch.zeros_like(logits), reduction="none"
        ) * prob.pow(2)
        neg_sum = neg.sum(dim=2, keepdim=True)  # (B, N, 1)
        idx = gt_labels[:, None, :].expand(-1, logits.shape[1], -1)  # (B, N, G)
        x_gt = logits.gather(2, idx)
        p_gt = prob.gather(2, idx)
        neg_gt = neg.gather(2, idx)
        pos_gt = F.binary_cross_entropy_with_logits(x_gt, ious, reduction="none") * (ious - p_gt).abs().pow(2)
        return neg_sum - neg_gt + pos_gt
