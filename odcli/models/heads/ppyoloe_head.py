"""PP-YOLOE's Efficient Task-aligned head (ET-head), PaddleDetection ``PPYOLOEHead``.

Per level (no weights shared between levels):

* ``avg = global average of feat``; two ESE stems (``stem_cls``, ``stem_reg``):
  ``ConvBNAct1×1(feat · sigmoid(fc(avg)))``;
* classification: ``pred_cls(stem_cls(feat, avg) + feat)`` → C logits (sigmoid, no background);
* regression: ``pred_reg(stem_reg(feat, avg))`` → 4 × (reg_max + 1) logits: for each box side
  (l, t, r, b; channel = side · 17 + bin) a distribution over the distances 0 … reg_max in grid
  cells; the distance is its expectation (softmax, then the fixed projection ``proj_conv``
  = [0, 1, …, reg_max]).

Priors are the cell centres: ``(col + 0.5, row + 0.5)`` cells, i.e. ``× stride`` pixels. Boxes are
decoded in grid units and multiplied by the stride; they are not clipped to the image.

Module lists are indexed like upstream — index 0 is the *coarsest* level (stride 32) — so that
checkpoints convert key for key; :meth:`PPYOLOEHead.forward` nevertheless takes and returns levels
with strides ascending, like every odet head.

Training (:meth:`PPYOLOEHead.loss`): ATSS assignment while ``epoch < static_assigner_epoch``, then
Task-Aligned; Varifocal loss on the sigmoid scores against the assigner's soft targets; GIoU and DFL
on the positives (grid units), weighted by their soft target; all three divided by the sum of the
soft targets over the (distributed) batch, at least 1. The total is
``cls_weight · cls + iou_weight · iou + dfl_weight · dfl``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from odcli.assigners.atss import ATSSAssigner
from odcli.assigners.result import AssignResult
from odcli.assigners.task_aligned import TaskAlignedAssigner
from odcli.assigners.view import PriorView
from odcli.boxes.coders import box_to_distance, distance_to_box
from odcli.boxes.postprocess import NMSConfig
from odcli.boxes.priors import grid_points
from odcli.boxes.targets import pad_targets
from odcli.losses.distribution_focal import distribution_focal_loss
from odcli.losses.iou import giou_loss_eps_added
from odcli.losses.varifocal import varifocal_loss
from odcli.models.dense_head import Decoded, Targets
from odcli.models.heads.dense import (
    PredictSteps,
    build_prior_view,
    flatten_levels,
    level_sizes,
    postprocess_per_class,
    prior_prob_bias,
)
from odcli.models.layers import DEFAULT_NORM, BatchNormConfig, ConvBNAct, paddle_default_init
from odcli.runtime.distributed import all_reduce_mean


class _TrainView(NamedTuple):
    """A batch's head outputs flattened for training, priors coarsest level first.

    scores (B, N, C) sigmoid; dist_logits (B, N, 4, reg_max+1); pred_boxes (B, N, 4) xyxy in cells;
    points (N, 2) cells; strides (N, 1); counts: priors per level.
    """

    scores: torch.Tensor
    dist_logits: torch.Tensor
    pred_boxes: torch.Tensor
    points: torch.Tensor
    strides: torch.Tensor
    counts: list[int]


class ESEAttn(nn.Module):
    """Effective-SE stem of the head: ``conv(feat · sigmoid(fc(avg_feat)))`` with ``conv`` a 1×1 ConvBNAct."""

    def __init__(self, channels: int, *, norm: BatchNormConfig = DEFAULT_NORM) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.conv = ConvBNAct(channels, channels, 1, norm=norm)

    def forward(self, feat: torch.Tensor, avg_feat: torch.Tensor) -> torch.Tensor:
        return self.conv(feat * torch.sigmoid(self.fc(avg_feat)))


class PPYOLOEHead(PredictSteps, nn.Module):
    """ET-head of PP-YOLOE.

    Args:
        num_classes: foreground classes.
        in_channels: input widths, strides ascending.
        strides: input strides, ascending (8, 16, 32).
        grid_cell_scale: ATSS anchor boxes are squares of this many strides (upstream 5).
        grid_cell_offset: prior position inside its cell (upstream 0.5: the centre).
        reg_max: largest regressed distance in cells; 17 bins 0..16 per side for 16.
        static_assigner_epoch: epochs (0-based, exclusive) trained with ATSS before switching to TAL.
        static_assigner / assigner: the ATSS and Task-Aligned assigners.
        cls_weight / iou_weight / dfl_weight: loss weights (upstream 1 / 2.5 / 0.5).
        vfl_alpha / vfl_gamma: Varifocal loss settings (upstream 0.75 / 2).
        nms: post-processing (``nms_pre`` is upstream's per-class ``nms_top_k``, ``max_per_img``
            its ``keep_top_k``; see :func:`odcli.boxes.postprocess.multiclass_nms`).
        norm: settings of the stems' BatchNorms.
    """

    postprocess_style = staticmethod(postprocess_per_class)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: list[int],
        strides: tuple[int, ...] = (8, 16, 32),
        grid_cell_scale: float = 5.0,
        grid_cell_offset: float = 0.5,
        reg_max: int = 16,
        static_assigner_epoch: int = 100,
        static_assigner: ATSSAssigner,
        assigner: TaskAlignedAssigner,
        cls_weight: float = 1.0,
        iou_weight: float = 2.5,
        dfl_weight: float = 0.5,
        vfl_alpha: float = 0.75,
        vfl_gamma: float = 2.0,
        nms: NMSConfig,
        norm: BatchNormConfig = DEFAULT_NORM,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"{len(in_channels)} input widths for {len(strides)} strides")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.grid_cell_scale = grid_cell_scale
        self.grid_cell_offset = grid_cell_offset
        self.reg_max = reg_max
        self.static_assigner_epoch = static_assigner_epoch
        self.static_assigner = static_assigner
        self.assigner = assigner
        self.cls_weight = cls_weight
        self.iou_weight = iou_weight
        self.dfl_weight = dfl_weight
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma
        self.nms = nms

        coarse_first = list(in_channels)[::-1]
        bins = reg_max + 1
        self.stem_cls = nn.ModuleList(ESEAttn(c, norm=norm) for c in coarse_first)
        self.stem_reg = nn.ModuleList(ESEAttn(c, norm=norm) for c in coarse_first)
        self.pred_cls = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in coarse_first)
        self.pred_reg = nn.ModuleList(nn.Conv2d(c, 4 * bins, 3, padding=1) for c in coarse_first)
        # The projection turning a distribution into its expectation: fixed weights 0..reg_max.
        # A frozen parameter (not a buffer) so the state dict and parameter count match upstream.
        self.proj_conv = nn.Conv2d(bins, 1, 1, bias=False)
        self.proj_conv.weight.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream init: Paddle defaults, ESE ``fc`` N(0, 0.001), prediction convs zero with biases
        ``-log((1 - 0.01) / 0.01)`` (classes: prior probability 0.01) and 1 (distributions)."""
        paddle_default_init(self)
        for stem in (*self.stem_cls, *self.stem_reg):
            nn.init.normal_(stem.fc.weight, std=0.001)
            nn.init.zeros_(stem.fc.bias)
        for cls_conv, reg_conv in zip(self.pred_cls, self.pred_reg, strict=True):
            nn.init.zeros_(cls_conv.weight)
            nn.init.constant_(cls_conv.bias, prior_prob_bias(0.01))
            nn.init.zeros_(reg_conv.weight)
            nn.init.constant_(reg_conv.bias, 1.0)
        with torch.no_grad():
            self.proj_conv.weight.copy_(torch.arange(self.reg_max + 1, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Neck features (strides ascending) → per level class logits (B, C, H, W) and distribution
        logits (B, 4·(reg_max+1), H, W) (pre-softmax; channel = side · (reg_max+1) + bin)."""
        num_levels = len(self.strides)
        cls_logits, reg_dists = [], []
        for level, feat in enumerate(feats):
            j = num_levels - 1 - level  # upstream module index (coarsest first)
            avg = F.adaptive_avg_pool2d(feat, 1)
            cls_logits.append(self.pred_cls[j](self.stem_cls[j](feat, avg) + feat))
            reg_dists.append(self.pred_reg[j](self.stem_reg[j](feat, avg)))
        return cls_logits, reg_dists

    # ----------------------------------------------------------------------------------- helpers
    def _expected_distance(self, dist_logits: torch.Tensor) -> torch.Tensor:
        """(..., 4, reg_max+1) logits → (..., 4) expected distances in grid cells."""
        proj = self.proj_conv.weight.reshape(-1).to(dist_logits.dtype)
        return (dist_logits.softmax(dim=-1) * proj).sum(dim=-1)

    def _flatten(
        self, cls_logits: list[torch.Tensor], reg_dists: list[torch.Tensor], levels: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Concatenate ``levels`` (in that order) → float32 logits (B, N, C), distribution logits
        (B, N, 4, reg_max+1), points (N, 2) in cells, strides (N, 1), priors per level."""
        device = cls_logits[0].device
        sizes = level_sizes(cls_logits)
        logits = flatten_levels([cls_logits[level].float() for level in levels], self.num_classes)
        dists = flatten_levels([reg_dists[level].float() for level in levels], 4 * (self.reg_max + 1))
        points, strides, counts = [], [], []
        for level in levels:
            h, w = sizes[level]
            points.append(grid_points((h, w), 1, offset=self.grid_cell_offset, device=device)[:, :2])
            strides.append(torch.full((h * w, 1), float(self.strides[level]), device=device))
            counts.append(h * w)
        dist_logits = torch.cat(dists, 1).reshape(dists[0].shape[0], -1, 4, self.reg_max + 1)
        return torch.cat(logits, 1), dist_logits, torch.cat(points), torch.cat(strides), counts

    def anchor_boxes(self, points_px: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """ATSS's anchor boxes: squares of ``grid_cell_scale`` strides centred on the points.

        Args: points_px (N, 2) pixels; strides (N, 1). Returns (N, 4) xyxy pixels.
        """
        half = self.grid_cell_scale * strides * 0.5
        return torch.cat([points_px - half, points_px + half], dim=-1)

    def distance_targets(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The DFL targets: (l, t, r, b) distances (N, 4) from points (N, 2) to boxes (N, 4), all in
        cells, clamped to [0, reg_max − 0.01] (upstream's ``bbox2distance``)."""
        return box_to_distance(points, boxes, max_dis=self.reg_max, eps=0.01)

    # -------------------------------------------------------------------------------------- loss
    def _training_view(self, cls_logits: list[torch.Tensor], reg_dists: list[torch.Tensor]) -> _TrainView:
        """Flatten in upstream order (coarsest level first), so that assignment ties break exactly
        as upstream's, and decode the predicted boxes (cells). Float32."""
        levels = list(reversed(range(len(self.strides))))
        logits, dist_logits, points, strides, counts = self._flatten(cls_logits, reg_dists, levels)
        pred_boxes = distance_to_box(points, self._expected_distance(dist_logits))
        return _TrainView(logits.sigmoid(), dist_logits, pred_boxes, points, strides, counts)

    def _assign(self, view: _TrainView, targets: Targets, epoch: int) -> tuple[AssignResult, torch.Tensor]:
        """ATSS (on anchor boxes) before ``static_assigner_epoch``, Task-Aligned after; both see the
        detached predictions in pixels, as upstream's assigners do → (result, padded GT boxes)."""
        gt_boxes, gt_labels, gt_mask = pad_targets(targets, device=view.scores.device)
        points_px = view.points * view.strides
        pred_px = view.pred_boxes.detach() * view.strides
        if epoch < self.static_assigner_epoch:
            anchors = self.anchor_boxes(points_px, view.strides)
            result = self.static_assigner(anchors, view.counts, gt_boxes, gt_labels, gt_mask, pred_px)
        else:
            result = self.assigner(view.scores.detach(), pred_px, points_px, gt_boxes, gt_labels, gt_mask)
        return result, gt_boxes

    @torch.no_grad()
    def assign(
        self,
        cls_logits: list[torch.Tensor],
        reg_dists: list[torch.Tensor],
        targets: Targets,
        *,
        epoch: int = 0,
    ) -> AssignResult:
        """The label assignment :meth:`loss` uses at ``epoch`` (ATSS or TAL).

        Priors are ordered like upstream's: coarsest level first (stride 32, 16, 8), row-major
        within a level. ``gt_index`` refers to each image's targets in order.
        """
        with torch.autocast(device_type=cls_logits[0].device.type, enabled=False):
            return self._assign(self._training_view(cls_logits, reg_dists), targets, epoch)[0]

    def loss(
        self,
        cls_logits: list[torch.Tensor],
        reg_dists: list[torch.Tensor],
        targets: Targets,
        *,
        epoch: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Training losses for a batch.

        Args:
            cls_logits / reg_dists: outputs of :meth:`forward`.
            targets: per image ``boxes`` (G, 4) xyxy input pixels and ``labels`` (G,).
            epoch: current epoch, 0-based: ATSS while ``epoch < static_assigner_epoch``, then TAL.
        Returns:
            ``{"loss", "loss_cls", "loss_iou", "loss_dfl", "loss_l1"}`` as upstream names them:
            ``loss`` is the weighted total (what to back-propagate); the components are unweighted;
            ``loss_l1`` (L1 of the positive boxes, grid units) is only monitored (detached).
        """
        # Losses in float32 even under autocast: softmax/log terms and the normaliser need it.
        with torch.autocast(device_type=cls_logits[0].device.type, enabled=False):
            view = self._training_view(cls_logits, reg_dists)
            return self._losses(view, *self._assign(view, targets, epoch))

    def _losses(
        self, view: _TrainView, assign: AssignResult, gt_boxes: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The losses given an assignment (see :meth:`loss`); boxes in cells, ``gt_boxes`` in pixels."""
        scores, dist_logits, pred_boxes = view.scores, view.dist_logits, view.pred_boxes
        pos = assign.positive
        quality = assign.quality
        pos_b, pos_n = pos.nonzero(as_tuple=True)
        one_hot = torch.zeros_like(scores)
        one_hot[pos_b, pos_n, assign.labels[pos_b, pos_n]] = 1.0
        target_scores = one_hot * quality[..., None]

        norm = all_reduce_mean(target_scores.sum().detach()).clamp(min=1.0)
        loss_cls = varifocal_loss(scores, target_scores, one_hot, self.vfl_alpha, self.vfl_gamma).sum() / norm
        if pos_b.numel() > 0:
            matched = gt_boxes[pos_b, assign.gt_index[pos_b, pos_n]] / view.strides[pos_n]  # cells
            boxes = pred_boxes[pos_b, pos_n]
            weight = quality[pos_b, pos_n]
            loss_l1 = F.l1_loss(boxes.detach(), matched)
            loss_iou = (giou_loss_eps_added(boxes, matched, eps=1e-10) * weight).sum() / norm
            ltrb = self.distance_targets(view.points[pos_n], matched)
            dfl = distribution_focal_loss(dist_logits[pos_b, pos_n], ltrb).mean(dim=-1)
            loss_dfl = (dfl * weight).sum() / norm
        else:
            loss_l1 = scores.new_zeros(())
            loss_iou = pred_boxes.sum() * 0.0
            loss_dfl = dist_logits.sum() * 0.0
        total = self.cls_weight * loss_cls + self.iou_weight * loss_iou + self.dfl_weight * loss_dfl
        return {
            "loss": total,
            "loss_cls": loss_cls,
            "loss_iou": loss_iou,
            "loss_dfl": loss_dfl,
            "loss_l1": loss_l1,
        }

    @torch.no_grad()
    def prior_view(self, cls_logits: list[torch.Tensor], reg_dists: list[torch.Tensor]) -> PriorView:
        """Cell-centre points and predictions of the first image (pixels), for any assigner."""
        cls_first, reg_first = [c[:1] for c in cls_logits], [d[:1] for d in reg_dists]
        logits, _, points, strides, _ = self._flatten(cls_first, reg_first, list(range(len(self.strides))))
        return build_prior_view(
            strides=self.strides,
            level_sizes=level_sizes(cls_first),
            per_location=1,
            centers=points * strides,
            logits=logits,
            boxes=self.decode(cls_first, reg_first).boxes,
        )

    # ----------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def decode(self, cls_logits: list[torch.Tensor], reg_dists: list[torch.Tensor]) -> Decoded:
        """Every cell of the batch, strides ascending: sigmoid scores (B, N, C) and boxes (B, N, 4)
        xyxy input pixels — decoded in cells from the expected distances, then multiplied by the
        stride, in upstream's order (not clipped, not rescaled)."""
        logits, dist_logits, points, strides, counts = self._flatten(
            cls_logits, reg_dists, list(range(len(self.strides)))
        )
        boxes = distance_to_box(points, self._expected_distance(dist_logits)) * strides
        return Decoded(logits.sigmoid(), boxes, tuple(counts))
