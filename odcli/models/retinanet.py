"""RetinaNet R18/R50-FPN (MMDetection 3.3 ``retinanet_r{18,50}_fpn_1x_coco``), from a typed config."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from odcli.assigners.max_iou import MaxIoUAssigner
from odcli.boxes.priors import AnchorConfig
from odcli.config_checks import at_least, in_range, int_list, number_list, require
from odcli.errors import OdetError
from odcli.models.backbones.resnet import ResNet
from odcli.models.config import DetectorConfig
from odcli.models.detector import Detector, InputSpec
from odcli.models.heads.retina import RetinaHead
from odcli.models.necks.fpn import FPN

#: zoo size → ResNet depth
RETINANET_SIZES: dict[str, int] = {"r18": 18, "r50": 50}


@dataclass
class RetinaNetConfig(DetectorConfig):
    """Every hyper-parameter of a RetinaNet model (the ``model:`` section of a recipe).

    ``size`` picks the ResNet depth from :data:`RETINANET_SIZES`; the defaults are upstream's (the
    fields every family has are described on :class:`~odcli.models.config.DetectorConfig`).
    ``backbone_weights`` names a local ImageNet checkpoint (torchvision ``resnet18-f37072fd.pth``
    layout, or an odet ``.safetensors`` made by ``odet convert-weights --from torchvision``) that
    the trainer loads into the backbone before training; nothing is ever downloaded.
    """

    SIZES: ClassVar[tuple[str, ...]] = tuple(RETINANET_SIZES)

    arch: str = "retinanet"
    size: str = "r18"
    # backbone
    frozen_stages: int = 1
    norm_eval: bool = True
    zero_init_residual: bool = True
    backbone_weights: str | None = None
    # neck
    fpn_channels: int = 256
    fpn_start_level: int = 1
    fpn_num_outs: int = 5
    add_extra_convs: str = "on_input"
    relu_before_extra_convs: bool = False
    # head
    stacked_convs: int = 4
    feat_channels: int = 256
    prior_prob: float = 0.01
    anchor_strides: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    anchor_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor_center_offset: float = 0.0
    coder_means: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    coder_stds: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    wh_ratio_clip: float = 0.016
    # input: RGB, ImageNet mean/std (the base defaults), keep-ratio resize, padded to size_divisor
    test_scale: list[int] = field(default_factory=lambda: [1333, 800])
    pad_value: float = 0.0
    size_divisor: int = 32
    # training
    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.4
    min_pos_iou: float = 0.0
    match_low_quality: bool = True
    gt_max_assign_all: bool = True
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    cls_weight: float = 1.0
    bbox_weight: float = 1.0
    # test: score_thr 0.05, nms_pre 1000, nms_iou_thr 0.5, max_per_img 100 (the base defaults)
    min_bbox_size: float = 0.0

    def check_values(self) -> None:
        """Values the network, the anchors or the assigner cannot use fail here, as one line, not in a run."""
        super().check_values()
        for name in ("fpn_channels", "feat_channels", "fpn_num_outs", "scales_per_octave", "size_divisor"):
            at_least(f"model.{name}", getattr(self, name), 1)
        at_least("model.stacked_convs", self.stacked_convs, 0)
        # ResNet gives 4 stages (C2..C5); the FPN starts at one of them.
        in_range("model.fpn_start_level", self.fpn_start_level, 0, 3)
        in_range("model.prior_prob", self.prior_prob, 0.0, 1.0, low_open=True, high_open=True)
        int_list("model.anchor_strides", self.anchor_strides, what=" (pixels, one per FPN level)")
        require(self.octave_base_scale > 0, "model.octave_base_scale", self.octave_base_scale, "> 0")
        require(
            len(self.anchor_ratios) > 0 and all(r > 0 for r in self.anchor_ratios),
            "model.anchor_ratios", self.anchor_ratios, "a non-empty list of positive h/w ratios",
        )  # fmt: skip
        number_list("model.coder_means", self.coder_means, length=4, what=" (dx, dy, dw, dh)")
        number_list("model.coder_stds", self.coder_stds, length=4, positive=True, what=" (dx, dy, dw, dh)")
        in_range("model.wh_ratio_clip", self.wh_ratio_clip, 0.0, 1.0, low_open=True, high_open=True)
        for name in ("pos_iou_thr", "neg_iou_thr", "min_pos_iou"):
            in_range(f"model.{name}", getattr(self, name), 0.0, 1.0)

    def input_spec(self) -> InputSpec:
        """RGB, keep-ratio resize to fit ``test_scale`` (1333×800), no fixed pad: the batch is padded to a
        multiple of ``size_divisor`` and the padding zeroed after normalisation (upstream's preprocessor)."""
        return replace(
            super().input_spec(),
            keep_ratio=True,
            pad_value=self.pad_value,
            pad_to=None,
            size_divisor=self.size_divisor,
        )


def build_retinanet(cfg: RetinaNetConfig) -> Detector:
    """Construct a RetinaNet detector (randomly initialised; see ``backbone_weights``) from its config."""
    backbone = ResNet(
        RETINANET_SIZES[cfg.size],
        frozen_stages=cfg.frozen_stages,
        norm_eval=cfg.norm_eval,
        zero_init_residual=cfg.zero_init_residual,
        norm=cfg.norm(),
    )
    neck = FPN(
        backbone.out_channels,
        cfg.fpn_channels,
        start_level=cfg.fpn_start_level,
        num_outs=cfg.fpn_num_outs,
        add_extra_convs=cfg.add_extra_convs,
        relu_before_extra_convs=cfg.relu_before_extra_convs,
    )
    if len(cfg.anchor_strides) != cfg.fpn_num_outs:
        raise OdetError(
            f"model.anchor_strides has {len(cfg.anchor_strides)} levels but the FPN makes {cfg.fpn_num_outs}"
        )
    head = RetinaHead(
        num_classes=cfg.num_classes,
        in_channels=cfg.fpn_channels,
        feat_channels=cfg.feat_channels,
        stacked_convs=cfg.stacked_convs,
        prior_prob=cfg.prior_prob,
        anchors=AnchorConfig(
            strides=tuple(cfg.anchor_strides),
            octave_base_scale=cfg.octave_base_scale,
            scales_per_octave=cfg.scales_per_octave,
            ratios=tuple(cfg.anchor_ratios),
            center_offset=cfg.anchor_center_offset,
        ),
        coder_means=tuple(cfg.coder_means),
        coder_stds=tuple(cfg.coder_stds),
        wh_ratio_clip=cfg.wh_ratio_clip,
        assigner=MaxIoUAssigner(
            pos_iou_thr=cfg.pos_iou_thr,
            neg_iou_thr=cfg.neg_iou_thr,
            min_pos_iou=cfg.min_pos_iou,
            match_low_quality=cfg.match_low_quality,
            gt_max_assign_all=cfg.gt_max_assign_all,
        ),
        focal_gamma=cfg.focal_gamma,
        focal_alpha=cfg.focal_alpha,
        cls_weight=cfg.cls_weight,
        bbox_weight=cfg.bbox_weight,
        pad_size_divisor=cfg.size_divisor,
        nms=cfg.nms_config(),
    )
    return Detector(
        arch=f"retinanet_{cfg.size}", backbone=backbone, neck=neck, head=head, input_spec=cfg.input_spec()
    )
