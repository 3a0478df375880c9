"""RetinaNet's head: two conv towers shared across pyramid levels, anchors, focal + L1 losses.

Per level: a classification tower and a regression tower of ``stacked_convs`` × (3×3 conv + ReLU),
then a 3×3 conv to A·C class logits (sigmoid, no background class) and one to A·4 DeltaXYWH
deltas, A = anchors per location. Channel layout (upstream's): anchor-major, i.e. channel
a·C + c and a·4 + k.

Training (MMDetection ``AnchorHead``/``RetinaHead``): Max-IoU assignment of anchors to GTs
(restricted to each image's valid anchors), sigmoid focal loss over all non-ignored anchors and
L1 loss on the encoded deltas of positive anchors, each summed per level and divided by
avg_factor = Σ_images max(num_pos, 1) (+ float32 ε, as upstream).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from odcli.assigners.max_iou import MaxIoUAssigner
from odcli.assigners.result import IGNORED, AssignResult
from odcli.assigners.view import PriorView
from odcli.boxes.coders import box_to_delta, delta_to_box
from odcli.boxes.postprocess import NMSConfig
from odcli.boxes.priors import AnchorConfig, anchor_valid_flags, multilevel_anchors
from odcli.boxes.targets import pad_targets
from odcli.losses import l1_loss, sigmoid_focal_loss
from odcli.models.dense_head import Decoded, Targets
from odcli.models.heads.dense import (
    PredictSteps,
    build_prior_view,
    concat_levels,
    flatten_levels,
    level_sizes,
    postprocess_per_level,
    prior_prob_bias,
    sigmoid_concat,
)

_EPS = torch.finfo(torch.float32).eps


class RetinaHead(PredictSteps, nn.Module):
    """Anchor-based dense head of RetinaNet.

    Args:
        num_classes: foreground classes (sigmoid, no background logit).
        in_channels / feat_channels: input and tower widths.
        stacked_convs: 3×3 conv + ReLU layers per tower.
        prior_prob: initial foreground probability of every class logit (bias −log((1−p)/p)).
        anchors: anchor generator settings (strides = the input levels' strides).
        coder_means / coder_stds / wh_ratio_clip: DeltaXYWH coder settings.
        assigner: the Max-IoU assigner.
        focal_gamma / focal_alpha: focal loss settings; cls_weight / bbox_weight: loss weights.
        pad_size_divisor: an image's valid region is its ``pad_shape`` rounded up to this, as
            upstream's data preprocessor records it (idempotent on an already rounded shape).
        nms: test-time post-processing.
    """

    postprocess_style = staticmethod(postprocess_per_level)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        prior_prob: float = 0.01,
        anchors: AnchorConfig,
        coder_means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
        coder_stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
        wh_ratio_clip: float = 16 / 1000,
        assigner: MaxIoUAssigner,
        focal_gamma: float = 2.0,
        focal_alpha: float = 0.25,
        cls_weight: float = 1.0,
        bbox_weight: float = 1.0,
        pad_size_divisor: int = 32,
        nms: NMSConfig,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.anchors = anchors
        self.num_anchors = anchors.num_base_anchors
        self.strides = tuple(anchors.strides)
        self.coder_means = tuple(coder_means)
        self.coder_stds = tuple(coder_stds)
        self.wh_ratio_clip = wh_ratio_clip
        self.assigner = assigner
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.cls_weight = cls_weight
        self.bbox_weight = bbox_weight
        self.pad_size_divisor = pad_size_divisor
        self.nms = nms
        self.prior_prob = prior_prob

        def tower() -> nn.ModuleList:
            chans = [in_channels] + [feat_channels] * stacked_convs
            return nn.ModuleList(
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(stacked_convs)
            )

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.relu = nn.ReLU(inplace=True)
        self.cls_pred = nn.Conv2d(feat_channels, self.num_anchors * num_classes, 3, padding=1)
        self.reg_pred = nn.Conv2d(feat_channels, self.num_anchors * 4, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream init: every conv N(0, 0.01) with zero bias; class bias for ``prior_prob``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_pred.bias, prior_prob_bias(self.prior_prob))

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pyramid maps → per level (logits (B, A·C, H, W), deltas (B, A·4, H, W))."""
        cls_scores, bbox_preds = [], []
        for x in feats:
            c = r = x
            for conv in self.cls_convs:
                c = self.relu(conv(c))
            for conv in self.reg_convs:
                r = self.relu(conv(r))
            cls_scores.append(self.cls_pred(c))
            bbox_preds.append(self.reg_pred(r))
        return cls_scores, bbox_preds

    # ------------------------------------------------------------------------------------ priors
    def _anchors(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(N, 4) xyxy pixels: every level's anchors, level-major, (y, x, anchor) within a level."""
        return torch.cat(multilevel_anchors(self.anchors, level_sizes(maps), device=maps[0].device))

    def _valid_flags(self, targets: Targets, maps: list[torch.Tensor]) -> torch.Tensor:
        """(B, N) bool: anchors on each image's own padded extent (all anchors without pad_shape)."""
        d = self.pad_size_divisor
        everything = (2**30, 2**30)  # clamped to the feature maps: every cell valid
        shapes = []
        for t in targets:
            h, w = t.get("pad_shape", everything)
            shapes.append((math.ceil(int(h) / d) * d, math.ceil(int(w) / d) * d))
        pad_shapes = torch.tensor(shapes, dtype=torch.long, device=maps[0].device)
        return torch.cat(anchor_valid_flags(self.anchors, level_sizes(maps), pad_shapes), dim=1)

    def _assign(
        self, anchors: torch.Tensor, cls_scores: list[torch.Tensor], targets: Targets
    ) -> tuple[AssignResult, torch.Tensor]:
        """Max-IoU assignment of the anchors (N, 4) to each image's GTs → (result, padded GT boxes)."""
        gt_boxes, gt_labels, gt_mask = pad_targets(targets, device=anchors.device)
        valid = self._valid_flags(targets, cls_scores)
        return self.assigner(anchors, gt_boxes, gt_labels, gt_mask, valid), gt_boxes

    @torch.no_grad()
    def assign(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        targets: Targets,
        *,
        epoch: int = 0,
    ) -> AssignResult:
        """The assignment :meth:`loss` trains with (B, N), anchors level-major, strides ascending:
        ``gt_index`` :data:`~odcli.assigners.result.IGNORED` also for anchors outside an image's
        ``pad_shape``. Depends on the anchors only (``bbox_preds`` and ``epoch`` unused)."""
        return self._assign(self._anchors(cls_scores), cls_scores, targets)[0]

    @torch.no_grad()
    def prior_view(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor]) -> PriorView:
        """Anchors and predictions of the first image, for running any assigner on them."""
        cls_first, reg_first = [c[:1] for c in cls_scores], [d[:1] for d in bbox_preds]
        anchors = self._anchors(cls_first)
        return build_prior_view(
            strides=self.strides,
            level_sizes=level_sizes(cls_first),
            per_location=self.num_anchors,
            centers=(anchors[:, :2] + anchors[:, 2:]) / 2,
            logits=concat_levels(cls_first, self.num_classes).float(),
            boxes=self.decode(cls_first, reg_first).boxes,
            anchors=anchors,
        )

    # -------------------------------------------------------------------------------------- loss
    def loss(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        targets: Targets,
        *,
        epoch: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Training losses for a batch.

        Args:
            cls_scores / bbox_preds: outputs of :meth:`forward`.
            targets: per image ``boxes`` (G, 4) xyxy input pixels, ``labels`` (G,) and optionally
                ``pad_shape`` (h, w): only anchors inside it (rounded up to ``pad_size_divisor``)
                are trained; without it the whole input counts.
            epoch: unused (RetinaNet's assignment does not change during training).
        Returns:
            ``{"loss", "loss_cls", "loss_bbox"}`` scalars: the components already weighted, ``loss``
            their sum (what to back-propagate).
        """
        anchors = self._anchors(cls_scores)  # (N, 4)
        assign, gt_boxes = self._assign(anchors, cls_scores, targets)

        positive = assign.positive  # (B, N)
        label_weight = (assign.gt_index != IGNORED).float()  # positives and negatives count
        # Upstream's avg_factor: every image counts at least one positive.
        avg_factor = positive.sum(dim=1).clamp(min=1).sum().float()
        pos_b, pos_n = positive.nonzero(as_tuple=True)
        pos_targets = box_to_delta(
            anchors[pos_n], gt_boxes[pos_b, assign.gt_index[pos_b, pos_n]], self.coder_means, self.coder_stds
        )

        # Per level, as upstream sums: loss_l = Σ / (avg_factor + ε), then Σ over levels. The
        # batch is one tensor per level; only the 5 levels are looped.
        logits = flatten_levels(cls_scores, self.num_classes)
        deltas = flatten_levels(bbox_preds, 4)
        loss_cls = cls_scores[0].new_zeros((), dtype=torch.float32)
        loss_bbox = cls_scores[0].new_zeros((), dtype=torch.float32)
        start = 0
        for level_logits, level_deltas in zip(logits, deltas, strict=True):
            end = start + level_logits.shape[1]
            focal = sigmoid_focal_loss(
                level_logits.float(), assign.labels[:, start:end], self.focal_gamma, self.focal_alpha
            )
            loss_cls = loss_cls + (focal * label_weight[:, start:end, None]).sum() / (avg_factor + _EPS)
            in_level = (pos_n >= start) & (pos_n < end)
            if in_level.any():
                pred = level_deltas[pos_b[in_level], pos_n[in_level] - start].float()
                loss_bbox = loss_bbox + l1_loss(pred, pos_targets[in_level]).sum() / (avg_factor + _EPS)
            else:
                # Upstream returns 0 without dividing; keep the graph connected for DDP.
                loss_bbox = loss_bbox + level_deltas.sum() * 0.0
            start = end
        loss_cls, loss_bbox = self.cls_weight * loss_cls, self.bbox_weight * loss_bbox
        return {"loss": loss_cls + loss_bbox, "loss_cls": loss_cls, "loss_bbox": loss_bbox}

    # ----------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def decode(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor]) -> Decoded:
        """Every anchor of the batch: sigmoid scores (B, N, C) and DeltaXYWH-decoded boxes (B, N, 4)
        xyxy input pixels (not clipped, not rescaled), levels strides ascending."""
        scores = sigmoid_concat(cls_scores, self.num_classes)
        boxes = delta_to_box(
            self._anchors(cls_scores),
            concat_levels(bbox_preds, 4).float(),
            self.coder_means,
            self.coder_stds,
            wh_ratio_clip=self.wh_ratio_clip,
        )
        return Decoded(scores, boxes, tuple(h * w * self.num_anchors for h, w in level_sizes(cls_scores)))
