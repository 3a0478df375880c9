"""Task-Aligned assigner (TOOD), PaddleDetection's ``TaskAlignedAssigner`` as PP-YOLOE uses it.

For every GT and every prior (tensors (B, G, N), the whole batch at once):

* alignment metric ``t = s^α · u^β``: ``s`` the predicted score of the GT's class, ``u`` the IoU of
  the predicted box with the GT (pixels);
* candidates are the ``topk`` priors of largest ``t`` among those whose point lies inside the GT
  (points outside have ``t`` zeroed before ranking, then are excluded);
* a prior positive for several GTs keeps the GT its prediction overlaps most (over all GTs);
* the quality (soft target) of a positive is its ``t`` normalised per GT so that the GT's best
  prior gets the GT's best IoU: ``t / (max_t + ε) · max_u`` (maxima over the GT's positives).

``torch.topk`` on CPU breaks ties like Paddle's CPU ``topk`` when priors come in upstream order
(coarsest level first); PP-YOLOE's head assigns in that order.
"""

from __future__ import annotations

import torch

from odcli.assigners.result import BACKGROUND, AssignResult, resolve_multiple
from odcli.boxes.overlaps import pairwise_iou_eps_added, points_inside_boxes_eps


class TaskAlignedAssigner:
    """Args:
    topk: candidates per GT (upstream 13); at least 1 (Paddle's ``topk`` refuses k < 1).
    alpha / beta: exponents of the score and the IoU in the metric (upstream 1 and 6).
    eps: ε of the normalisation and of the "inside the GT" test (upstream 1e-9).
    """

    def __init__(self, *, topk: int = 13, alpha: float = 1.0, beta: float = 6.0, eps: float = 1e-9) -> None:
        if topk < 1:
            raise ValueError(f"Task-Aligned topk must be >= 1 (candidates per GT), got {topk}")
        self.topk = topk
        self.alpha = alpha
        self.beta = beta
        self.eps = eps

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        points: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> AssignResult:
        """Assign priors to GTs.

        Args:
            pred_scores: (B, N, C) class probabilities (after sigmoid).
            pred_boxes: (B, N, 4) predicted boxes, xyxy pixels.
            points: (N, 2) prior points, pixels.
            gt_boxes: (B, G, 4) xyxy pixels, padded.
            gt_labels: (B, G) long, padded.
            gt_mask: (B, G) bool, False for padding.
        Returns:
            :class:`AssignResult` with ``quality`` the normalised alignment metric (0 for negatives).
            No GT (G = 0) or no priors (N = 0): all background, as upstream's negative batch.
        """
        b, n, _ = pred_scores.shape
        g = gt_boxes.shape[1]
        if g == 0 or n == 0:
            return AssignResult.background(b, n, pred_scores.device)
        scores = pred_scores.float()
        gt_boxes = gt_boxes.float()
        mask = gt_mask.bool()
        labels_gt = gt_labels.long()

        ious = pairwise_iou_eps_added(gt_boxes, pred_boxes.float(), eps=1e-9)  # (B, G, N)
        cls_scores = scores.gather(2, labels_gt[:, None, :].expand(-1, n, -1)).transpose(1, 2)  # (B, G, N)
        metrics = cls_scores.pow(self.alpha) * ious.pow(self.beta)
        inside = points_inside_boxes_eps(points.float(), gt_boxes, self.eps)

        k = min(self.topk, n)
        top = (metrics * inside).topk(k, dim=-1).indices  # (B, G, k)
        in_topk = torch.zeros((b, g, n), dtype=torch.bool, device=scores.device)
        in_topk.scatter_(-1, top, True)
        positive = in_topk & inside & mask[:, :, None]

        gt_index = resolve_multiple(positive, ious)
        is_pos = positive.any(dim=1)
        gt_index = torch.where(is_pos, gt_index, torch.full_like(gt_index, BACKGROUND))
        safe = gt_index.clamp(min=0)
        labels = torch.where(is_pos, labels_gt.gather(1, safe), torch.full_like(safe, BACKGROUND))

        # The final one-GT-per-prior mask, (B, G, N): normalise each GT's metrics over its positives.
        final = torch.zeros_like(positive)
        final.scatter_(1, safe[:, None, :], is_pos[:, None, :])
        final_f = final.to(metrics.dtype)
        metrics = metrics * final_f
        max_metric = metrics.amax(dim=-1, keepdim=True)
        max_iou = (ious * final_f).amax(dim=-1, keepdim=True)
        quality = (metrics / (max_metric + self.eps) * max_iou).amax(dim=1)
        return AssignResult(gt_index=gt_index, labels=labels, quality=quality)
