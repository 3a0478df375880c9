"""RTMDet tiny/s/m/l/x: CSPNeXt → CSPNeXtPAFPN → SepBN head, from a typed config."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from odcli.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from odcli.config_checks import at_least, require
from odcli.models.backbones.cspnext import CSPNeXt
from odcli.models.config import DetectorConfig
from odcli.models.detector import Detector, InputSpec
from odcli.models.heads.rtmdet_sepbn import RTMDetSepBNHead
from odcli.models.necks.cspnext_pafpn import CSPNeXtPAFPN


@dataclass(frozen=True)
class RTMDetSize:
    """What differs between RTMDet sizes (upstream configs)."""

    deepen_factor: float
    widen_factor: float
    neck_csp_blocks: int
    exp_on_reg: bool

    @property
    def channels(self) -> int:
        """Neck/head width = 256 × widen."""
        return int(256 * self.widen_factor)


RTMDET_SIZES: dict[str, RTMDetSize] = {
    "tiny": RTMDetSize(0.167, 0.375, 1, False),
    "s": RTMDetSize(0.33, 0.5, 1, False),
    "m": RTMDetSize(0.67, 0.75, 2, True),
    "l": RTMDetSize(1.0, 1.0, 3, True),
    "x": RTMDetSize(1.33, 1.25, 4, True),
}


@dataclass
class RTMDetConfig(DetectorConfig):
    """Every hyper-parameter of an RTMDet model (the ``model:`` section of a recipe).

    ``size`` picks depth/width from :data:`RTMDET_SIZES`; the rest are upstream defaults. The fields
    every family has are described on :class:`~odcli.models.config.DetectorConfig`.
    """

    SIZES: ClassVar[tuple[str, ...]] = tuple(RTMDET_SIZES)

    arch: str = "rtmdet"
    size: str = "tiny"
    expand_ratio: float = 0.5
    channel_attention: bool = True
    stacked_convs: int = 2
    # Initial bias of the box-regression convs. Upstream: 0. Training from scratch on few images,
    # 1.0 keeps every image learning (see RTMDetSepBNHead and recipes/demo.yaml).
    reg_bias_init: float = 0.0
    # input: BGR, keep-ratio resize, padded to exactly test_scale
    mean: list[float] = field(default_factory=lambda: [103.53, 116.28, 123.675])
    std: list[float] = field(default_factory=lambda: [57.375, 57.12, 58.395])
    to_rgb: bool = False
    pad_value: float = 114.0
    # training
    assigner_topk: int = 13
    assigner_iou_weight: float = 3.0
    assigner_center_radius: float = 3.0
    qfl_beta: float = 2.0
    cls_weight: float = 1.0
    bbox_weight: float = 2.0
    # test
    score_thr: float = 0.001
    nms_pre: int = 30000
    nms_iou_thr: float = 0.65
    max_per_img: int = 300
    min_bbox_size: float = 0.0

    def check_values(self) -> None:
        """Values the network or the assigner cannot use fail here, as one line, not in a run."""
        super().check_values()
        require(self.expand_ratio > 0, "model.expand_ratio", self.expand_ratio, "> 0 (upstream 0.5)")
        at_least("model.stacked_convs", self.stacked_convs, 0)
        # Upstream sums the top-k IoUs of each GT; k = 0 still gives every GT one prior, k < 0 fails.
        at_least("model.assigner_topk", self.assigner_topk, 0)

    def input_spec(self) -> InputSpec:
        """BGR, keep-ratio resize to ``test_scale`` and pad to exactly that size with ``pad_value``."""
        w, h = self.test_scale
        return replace(super().input_spec(), keep_ratio=True, pad_value=self.pad_value, pad_to=(h, w))


def build_rtmdet(cfg: RTMDetConfig) -> Detector:
    """Construct an RTMDet detector (randomly initialised) from its config."""
    size = RTMDET_SIZES[cfg.size]
    norm = cfg.norm()
    backbone = CSPNeXt(
        deepen_factor=size.deepen_factor,
        widen_factor=size.widen_factor,
        expand_ratio=cfg.expand_ratio,
        channel_attention=cfg.channel_attention,
        norm=norm,
    )
    neck = CSPNeXtPAFPN(
        in_channels=backbone.out_channels,
        out_channels=size.channels,
        num_csp_blocks=size.neck_csp_blocks,
        expand_ratio=cfg.expand_ratio,
        norm=norm,
    )
    head = RTMDetSepBNHead(
        num_classes=cfg.num_classes,
        in_channels=size.channels,
        feat_channels=size.channels,
        stacked_convs=cfg.stacked_convs,
        strides=(8, 16, 32),
        exp_on_reg=size.exp_on_reg,
        reg_bias_init=cfg.reg_bias_init,
        norm=norm,
        assigner=DynamicSoftLabelAssigner(
            topk=cfg.assigner_topk,
            iou_weight=cfg.assigner_iou_weight,
            soft_center_radius=cfg.assigner_center_radius,
        ),
        cls_weight=cfg.cls_weight,
        bbox_weight=cfg.bbox_weight,
        qfl_beta=cfg.qfl_beta,
        nms=cfg.nms_config(),
    )
    return Detector(
        arch=f"rtmdet_{cfg.size}", backbone=backbone, neck=neck, head=head, input_spec=cfg.input_spec()
    )
