"""RTMDet's SepBN head: conv weights shared across levels, BatchNorm statistics per level.

Per level: two towers (classification, regression) of ``stacked_convs`` 3×3 conv → BN → SiLU,
then a 1×1 conv to ``num_classes`` logits and a 1×1 conv to 4 distances (l, t, r, b) that are
multiplied by the level's stride (after ``exp`` for the m/l/x sizes).

Training: Dynamic Soft Label assignment, Quality Focal Loss and GIoU loss; both losses are
normalised by the sum of the matched IoUs over the batch (at least 1).
"""

from __future__ import annotations

import torch
from torch import nn

from odcli.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from odcli.assigners.result import AssignResult
from odcli.assigners.view import PriorView
from odcli.boxes.coders import distance_to_box
from odcli.boxes.postprocess import NMSConfig
from odcli.boxes.priors import multilevel_points
from odcli.boxes.targets import pad_targets
from odcli.losses import giou_loss, quality_focal_loss
from odcli.models.dense_head import Decoded, Targets
from odcli.models.heads.dense import (
    PredictSteps,
    build_prior_view,
    concat_levels,
    level_sizes,
    postprocess_per_level,
    prior_prob_bias,
)
from odcli.models.layers import DEFAULT_NORM, BatchNormConfig
from odcli.runtime.distributed import all_reduce_mean


class _Folded(nn.Module):
    """A level's conv with its BN folded in, standing where the BN was (the shared conv becomes Identity)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class RTMDetSepBNHead(PredictSteps, nn.Module):
    """Shared-conv, separate-BN dense head.

    Args:
        num_classes: number of foreground classes (sigmoid, no background logit).
        in_channels / feat_channels: input and tower widths.
        stacked_convs: 3×3 convs per tower.
        strides: the input levels' strides, ascending.
        exp_on_reg: apply ``exp`` to the regression output before scaling by the stride.
        reg_bias_init: initial bias of the regression convs (upstream: 0). With linear regression
            (tiny, s) 0 makes the first boxes near-empty: positives overlap their GT by ~0.002 IoU,
            which is also their GIoU loss weight, so boxes barely learn at first; 1.0 starts every
            box one stride from its point on each side (what ``exp`` gives m/l/x at 0).
        norm: settings of the per-level BatchNorms.
        assigner, cls_weight, bbox_weight, qfl_beta: training settings.
        nms: test-time post-processing settings.
    """

    postprocess_style = staticmethod(postprocess_per_level)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        feat_channels: int,
        stacked_convs: int = 2,
        strides: tuple[int, ...] = (8, 16, 32),
        exp_on_reg: bool = False,
        reg_bias_init: float = 0.0,
        norm: BatchNormConfig = DEFAULT_NORM,
        assigner: DynamicSoftLabelAssigner,
        cls_weight: float = 1.0,
        bbox_weight: float = 2.0,
        qfl_beta: float = 2.0,
        nms: NMSConfig,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.exp_on_reg = exp_on_reg
        self.reg_bias_init = reg_bias_init
        self.assigner = assigner
        self.cls_weight = cls_weight
        self.bbox_weight = bbox_weight
        self.qfl_beta = qfl_beta
        self.nms = nms

        def tower_convs() -> nn.ModuleList:
            chans = [in_channels] + [feat_channels] * stacked_convs
            return nn.ModuleList(
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False) for i in range(stacked_convs)
            )

        def tower_norms() -> nn.ModuleList:
            return nn.ModuleList(
                nn.ModuleList(norm.make(feat_channels) for _ in range(stacked_convs)) for _ in self.strides
            )

        self.cls_convs = tower_convs()
        self.reg_convs = tower_convs()
        self.cls_norms = tower_norms()
        self.reg_norms = tower_norms()
        self.act = nn.SiLU(inplace=True)
        self.cls_preds = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, 1) for _ in self.strides)
        self.reg_preds = nn.ModuleList(nn.Conv2d(feat_channels, 4, 1) for _ in self.strides)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream init: convs N(0, 0.01), BN (1, 0), class bias for a 0.01 prior probability;
        regression bias ``reg_bias_init`` (upstream 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for conv in self.cls_preds:
            nn.init.constant_(conv.bias, prior_prob_bias(0.01))
        for conv in self.reg_preds:
            nn.init.constant_(conv.bias, self.reg_bias_init)

    def _tower(self, x: torch.Tensor, convs: nn.ModuleList, norms: nn.ModuleList) -> torch.Tensor:
        for conv, norm in zip(convs, norms, strict=True):
            x = self.act(norm(conv(x)))
        return x

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """Fold each level's BN into its own copy of the shared convs (inference only)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for convs, norms in ((self.cls_convs, self.cls_norms), (self.reg_convs, self.reg_norms)):
            for level_norms in norms:
                for i, conv in enumerate(convs):
                    level_norms[i] = _Folded(fuse_conv_bn_eval(conv, level_norms[i]))
            for i in range(len(convs)):
                convs[i] = nn.Identity()

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Feature maps per level → (class logits (B, C, H, W), distances (B, 4, H, W) pixels) per level."""
        cls_scores, bbox_preds = [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides, strict=True)):
            cls_feat = self._tower(x, self.cls_convs, self.cls_norms[level])
            reg_feat = self._tower(x, self.reg_convs, self.reg_norms[level])
            cls_scores.append(self.cls_preds[level](cls_feat))
            reg = self.reg_preds[level](reg_feat)
            bbox_preds.append((reg.exp() if self.exp_on_reg else reg) * stride)
        return cls_scores, bbox_preds

    # ------------------------------------------------------------------------------------ priors
    def _points(self, maps: list[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, 4) ``[x, y, stride, stride]`` pixels of every level's points, level-major."""
        return torch.cat(
            multilevel_points(level_sizes(maps), self.strides, device=maps[0].device, dtype=dtype)
        )

    def _training_view(
        self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float32 logits (B, N, C), decoded boxes (B, N, 4) xyxy pixels and priors (N, 4) for the loss."""
        priors = self._points(cls_scores, dtype=cls_scores[0].dtype)
        logits = concat_levels(cls_scores, self.num_classes).float()
        boxes = distance_to_box(priors[None], concat_levels(bbox_preds, 4).float())
        return logits, boxes, priors

    def _assign(
        self, logits: torch.Tensor, boxes: torch.Tensor, priors: torch.Tensor, targets: Targets
    ) -> tuple[AssignResult, torch.Tensor]:
        """Dynamic Soft Label assignment on the detached predictions → (result, padded GT boxes)."""
        gt_boxes, gt_labels, gt_mask = pad_targets(targets, device=logits.device)
        return self.assigner(logits.detach(), boxes.detach(), priors, gt_boxes, gt_labels, gt_mask), gt_boxes

    @torch.no_grad()
    def assign(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        targets: Targets,
        *,
        epoch: int = 0,
    ) -> AssignResult:
        """The assignment :meth:`loss` trains with (B, N), priors level-major, strides ascending;
        ``epoch`` unused (RTMDet's assigner does not change during training)."""
        return self._assign(*self._training_view(cls_scores, bbox_preds), targets)[0]

    @torch.no_grad()
    def prior_view(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor]) -> PriorView:
        """Points and predictions of the first image, for running any assigner on them."""
        cls_first, reg_first = [c[:1] for c in cls_scores], [d[:1] for d in bbox_preds]
        return build_prior_view(
            strides=self.strides,
            level_sizes=level_sizes(cls_first),
            per_location=1,
            centers=self._points(cls_first)[:, :2],
            logits=concat_levels(cls_first, self.num_classes).float(),
            boxes=self.decode(cls_first, reg_first).boxes,
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
            targets: per image ``boxes`` (G, 4) xyxy input pixels and ``labels`` (G,).
            epoch: current epoch (unused: RTMDet's assigner does not change during training).
        Returns:
            ``{"loss", "loss_cls", "loss_bbox"}`` scalars: the components already weighted, ``loss``
            their sum (what to back-propagate).
        """
        logits, boxes, priors = self._training_view(cls_scores, bbox_preds)
        assign, gt_boxes = self._assign(logits, boxes, priors, targets)
        pos = assign.positive  # (B, N)

        quality_target = torch.zeros_like(logits)
        pos_b, pos_n = pos.nonzero(as_tuple=True)
        quality_target[pos_b, pos_n, assign.labels[pos_b, pos_n]] = assign.quality[pos_b, pos_n]
        # Normaliser: sum of matched IoUs over the whole (distributed) batch, at least 1.
        norm = all_reduce_mean(assign.quality.sum().detach()).clamp(min=1.0)

        loss_cls = quality_focal_loss(logits, quality_target, self.qfl_beta).sum() / norm
        if pos_b.numel() > 0:
            matched_gt = gt_boxes[pos_b, assign.gt_index[pos_b, pos_n]]
            weight = assign.quality[pos_b, pos_n]
            loss_bbox = (giou_loss(boxes[pos_b, pos_n], matched_gt) * weight).sum() / norm
        else:
            loss_bbox = boxes.sum() * 0.0
        loss_cls, loss_bbox = self.cls_weight * loss_cls, self.bbox_weight * loss_bbox
        return {"loss": loss_cls + loss_bbox, "loss_cls": loss_cls, "loss_bbox": loss_bbox}

    # ----------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def decode(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor]) -> Decoded:
        """Every point of the batch: sigmoid scores (B, N, C) and boxes (B, N, 4) xyxy input pixels
        (point ± distances; not clipped, not rescaled), levels strides ascending."""
        scores = concat_levels([c.float().sigmoid() for c in cls_scores], self.num_classes)
        boxes = distance_to_box(self._points(cls_scores), concat_levels([d.float() for d in bbox_preds], 4))
        return Decoded(scores, boxes, tuple(h * w for h, w in level_sizes(cls_scores)))
