"""PP-YOLOE and PP-YOLOE+ s/m/l/x: CSPRepResNet → CustomCSPPAN → ET-head, from a typed config.

Sizes are ``s``, ``m``, ``l``, ``x`` (PP-YOLOE, ``ppyoloe_crn_*_300e_coco``) and ``plus_s`` …
``plus_x`` (PP-YOLOE+, ``ppyoloe_plus_crn_*_80e_coco``). The "+" variant differs by a learnable
``alpha`` on the backbone's RepVGG 1×1 branches, its input normalisation (pixels / 255 only),
``static_assigner_epoch`` 30 and its NMS (keep 300, IoU 0.7). Fields left ``None`` take the
upstream value of the chosen variant when the config is created, so a stored config always holds
the resolved numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from odcli.assigners.atss import ATSSAssigner
from odcli.assigners.task_aligned import TaskAlignedAssigner
from odcli.config_checks import at_least, in_range, int_list, require
from odcli.errors import OdetError
from odcli.models.backbones.cspresnet import CSPResNet
from odcli.models.config import DetectorConfig
from odcli.models.detector import Detector, InputSpec
from odcli.models.heads.ppyoloe_head import PPYOLOEHead
from odcli.models.necks.custom_csp_pan import CustomCSPPAN

#: (width_mult, depth_mult) per base size (upstream configs).
PPYOLOE_MULTIPLIERS: dict[str, tuple[float, float]] = {
    "s": (0.50, 0.33),
    "m": (0.75, 0.67),
    "l": (1.0, 1.0),
    "x": (1.25, 1.33),
}
PPYOLOE_SIZES: tuple[str, ...] = (*PPYOLOE_MULTIPLIERS, *(f"plus_{s}" for s in PPYOLOE_MULTIPLIERS))

# Per-variant upstream values: (PP-YOLOE, PP-YOLOE+).
_VARIANT_DEFAULTS: dict[str, tuple[object, object]] = {
    "static_assigner_epoch": (100, 30),
    "max_per_img": (100, 300),
    "nms_iou_thr": (0.6, 0.7),
    # ppyoloe_reader: ImageNet mean/std on pixels/255; ppyoloe_plus_reader: pixels/255 only. Both
    # expressed on 0–255 values in RGB order.
    "mean": ([123.675, 116.28, 103.53], [0.0, 0.0, 0.0]),
    "std": ([58.395, 57.12, 57.375], [255.0, 255.0, 255.0]),
}


@dataclass
class PPYOLOEConfig(DetectorConfig):
    """Every hyper-parameter of a PP-YOLOE(+) model (the ``model:`` section of a recipe).

    ``size`` picks width/depth (``s``…``x``) and the variant (``plus_`` prefix = PP-YOLOE+).
    ``deploy`` builds the RepVGG blocks re-parameterised (single 3×3 convs), the form
    ``odet convert-weights --deploy`` writes. The fields every family has are described on
    :class:`~odcli.models.config.DetectorConfig`; ``nms_pre`` is upstream's ``nms_top_k``.
    """

    SIZES: ClassVar[tuple[str, ...]] = PPYOLOE_SIZES
    # Paddle's MultiClassNMS: nms_top_k -1 keeps every candidate; 0 would keep none.
    NMS_PRE_ALL: ClassVar[int | None] = -1

    arch: str = "ppyoloe"
    size: str = "s"
    plus: bool | None = None  # derived from size
    deploy: bool = False
    width_mult: float | None = None  # from size
    depth_mult: float | None = None  # from size
    # backbone / neck
    backbone_layers: list[int] | None = None  # [3, 6, 6, 3]
    backbone_channels: list[int] | None = None  # [64, 128, 256, 512, 1024]
    neck_out_channels: list[int] | None = None  # [768, 384, 192], coarsest first
    neck_block_num: int = 3
    neck_stage_num: int = 1
    neck_spp: bool = True
    # head
    reg_max: int = 16
    grid_cell_scale: float = 5.0
    grid_cell_offset: float = 0.5
    # input: RGB, mean / std per variant; test_scale [640, 640] (w, h), resized without keeping the ratio
    mean: list[float] | None = None  # type: ignore[assignment]
    std: list[float] | None = None  # type: ignore[assignment]
    test_scale: list[int] | None = None  # type: ignore[assignment]
    interpolation: str = "cubic"
    # training
    static_assigner_epoch: int | None = None
    atss_topk: int = 9
    tal_topk: int = 13
    tal_alpha: float = 1.0
    tal_beta: float = 6.0
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    cls_weight: float = 1.0
    iou_weight: float = 2.5
    dfl_weight: float = 0.5
    # test (MultiClassNMS): nms_pre is upstream's per-class nms_top_k (1000; -1 = all), max_per_img
    # its keep_top_k; nms_iou_thr and max_per_img per variant
    score_thr: float = 0.01
    nms_iou_thr: float | None = None  # type: ignore[assignment]
    max_per_img: int | None = None  # type: ignore[assignment]

    def resolve_defaults(self) -> None:
        """The variant (``plus``) and every ``None`` field from the size's upstream config."""
        plus = self.size.startswith("plus_")
        if self.plus is None:
            self.plus = plus
        elif self.plus != plus:
            raise OdetError(
                f"model.plus={self.plus} contradicts model.size={self.size!r} "
                "(PP-YOLOE+ sizes are plus_s … plus_x)"
            )
        width, depth = PPYOLOE_MULTIPLIERS[self.size.removeprefix("plus_")]
        fill = {
            "width_mult": width,
            "depth_mult": depth,
            "backbone_layers": [3, 6, 6, 3],
            "backbone_channels": [64, 128, 256, 512, 1024],
            "neck_out_channels": [768, 384, 192],
            "test_scale": [640, 640],
        }
        fill.update({k: v[1] if plus else v[0] for k, v in _VARIANT_DEFAULTS.items()})
        for key, value in fill.items():
            if getattr(self, key) is None:
                setattr(self, key, list(value) if isinstance(value, list) else value)

    def check_values(self) -> None:
        """Values the network or the assigners cannot use fail here, as one line, not in a run."""
        super().check_values()
        if self.interpolation not in ("bilinear", "cubic"):
            raise OdetError(f"model.interpolation must be 'bilinear' or 'cubic', got {self.interpolation!r}")
        require(self.width_mult > 0, "model.width_mult", self.width_mult, "> 0")
        require(self.depth_mult > 0, "model.depth_mult", self.depth_mult, "> 0")
        # The backbone's 4 stages (stem width + one per stage) feed the neck its 3 coarsest outputs.
        int_list("model.backbone_layers", self.backbone_layers, length=4, what=" (blocks per backbone stage)")
        int_list("model.backbone_channels", self.backbone_channels, length=5, what=" (stem, then each stage)")
        int_list(
            "model.neck_out_channels",
            self.neck_out_channels,
            length=3,
            what=" (one per level, coarsest first)",
        )
        for name in ("neck_block_num", "neck_stage_num", "reg_max"):
            at_least(f"model.{name}", getattr(self, name), 1)
        require(self.grid_cell_scale > 0, "model.grid_cell_scale", self.grid_cell_scale, "> 0")
        in_range("model.grid_cell_offset", self.grid_cell_offset, 0.0, 1.0)
        at_least("model.static_assigner_epoch", self.static_assigner_epoch, 0)
        # Paddle's topk refuses k < 1 in both of upstream's assigners.
        at_least("model.atss_topk", self.atss_topk, 1)
        at_least("model.tal_topk", self.tal_topk, 1)

    def input_spec(self) -> InputSpec:
        """RGB; resize to exactly ``test_scale`` (no ratio kept, cv2 cubic); no padding needed."""
        return replace(
            super().input_spec(),
            keep_ratio=False,
            pad_value=0.0,
            pad_to=None,
            interpolation=self.interpolation,
        )


def build_ppyoloe(cfg: PPYOLOEConfig) -> Detector:
    """Construct a PP-YOLOE(+) detector (randomly initialised, Paddle's init) from its config."""
    assert cfg.width_mult is not None and cfg.depth_mult is not None  # resolved in __post_init__
    assert cfg.backbone_layers and cfg.backbone_channels and cfg.neck_out_channels
    assert cfg.static_assigner_epoch is not None and cfg.nms_iou_thr is not None and cfg.max_per_img
    norm = cfg.norm()
    backbone = CSPResNet(
        width_mult=cfg.width_mult,
        depth_mult=cfg.depth_mult,
        layers=tuple(cfg.backbone_layers),
        channels=tuple(cfg.backbone_channels),
        alpha=bool(cfg.plus),
        deploy=cfg.deploy,
        norm=norm,
    )
    neck = CustomCSPPAN(
        backbone.out_channels,
        out_channels=tuple(cfg.neck_out_channels),
        width_mult=cfg.width_mult,
        depth_mult=cfg.depth_mult,
        stage_num=cfg.neck_stage_num,
        block_num=cfg.neck_block_num,
        spp=cfg.neck_spp,
        deploy=cfg.deploy,
        norm=norm,
    )
    head = PPYOLOEHead(
        num_classes=cfg.num_classes,
        in_channels=neck.out_channels,
        strides=tuple(backbone.out_strides),
        grid_cell_scale=cfg.grid_cell_scale,
        grid_cell_offset=cfg.grid_cell_offset,
        reg_max=cfg.reg_max,
        static_assigner_epoch=cfg.static_assigner_epoch,
        static_assigner=ATSSAssigner(topk=cfg.atss_topk),
        assigner=TaskAlignedAssigner(topk=cfg.tal_topk, alpha=cfg.tal_alpha, beta=cfg.tal_beta),
        cls_weight=cfg.cls_weight,
        iou_weight=cfg.iou_weight,
        dfl_weight=cfg.dfl_weight,
        vfl_alpha=cfg.vfl_alpha,
        vfl_gamma=cfg.vfl_gamma,
        nms=cfg.nms_config(),
        norm=norm,
    )
    return Detector(
        arch=f"ppyoloe_{cfg.size}", backbone=backbone, neck=neck, head=head, input_spec=cfg.input_spec()
    )
