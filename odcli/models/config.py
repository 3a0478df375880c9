"""What every detector family's config shares: the common fields of a recipe's ``model:`` section.

:class:`DetectorConfig` holds the settings every family has under the same name — input
normalisation and test resize, BatchNorm, the test-time filtering — and turns them into the objects
the model is built from (:meth:`~DetectorConfig.norm`, :meth:`~DetectorConfig.nms_config`,
:meth:`~DetectorConfig.input_spec`). Each family (:mod:`odcli.models.rtmdet`,
:mod:`~odcli.models.retinanet`, :mod:`~odcli.models.ppyoloe`) extends it with its own fields and
upstream defaults, overriding the defaults below where upstream differs.

Creating a config checks it: ``size`` first, then the family fills what it derives from the size
(:meth:`~DetectorConfig.resolve_defaults`), then every value is range-checked
(:meth:`~DetectorConfig.check_values`), so a bad recipe value is one :class:`~odcli.errors.OdetError`
line when the recipe is read, not a traceback in a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from odcli.boxes.postprocess import NMSConfig
from odcli.config_checks import at_least, check_bn, check_input, check_test
from odcli.errors import OdetError
from odcli.models.detector import InputSpec
from odcli.models.layers import BatchNormConfig


@dataclass
class DetectorConfig:
    """The fields and conversions shared by every family config.

    Attributes:
        arch: the family (``rtmdet``, ``retinanet``, ``ppyoloe``): the zoo name's prefix.
        size: one of the family's :attr:`SIZES`.
        num_classes: foreground classes (sigmoid heads: no background logit).
        mean / std: per-channel normalisation in the network's channel order, on 0–255 pixel values.
        to_rgb: the network eats RGB (images are read BGR); False = BGR.
        test_scale: (w, h) pixels, the target of the test-time resize.
        bn_eps / bn_momentum: every BatchNorm of the model (PyTorch momentum convention: the weight
            of the new batch statistic; Paddle's 0.9 is 0.1 here).
        score_thr: keep (prior, class) pairs scoring strictly above this.
        nms_pre: candidates kept before NMS, best first: per *level* for RTMDet and RetinaNet
            (MMDetection's ``nms_pre``), per *class* for PP-YOLOE (PaddleDetection's ``nms_top_k``,
            -1 = all).
        nms_iou_thr: class-aware NMS suppresses a box overlapping a better one by IoU > this.
        max_per_img: detections kept per image after NMS (PaddleDetection's ``keep_top_k``).
    """

    #: The family's sizes, as the zoo names them (``rtmdet_tiny`` → ``tiny``).
    SIZES: ClassVar[tuple[str, ...]] = ()
    #: The ``nms_pre`` meaning "no limit", for a family whose upstream has one (PP-YOLOE: -1).
    NMS_PRE_ALL: ClassVar[int | None] = None

    arch: str = ""
    size: str = ""
    num_classes: int = 80
    mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    to_rgb: bool = True
    test_scale: list[int] = field(default_factory=lambda: [640, 640])
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou_thr: float = 0.5
    max_per_img: int = 100

    def __post_init__(self) -> None:
        if self.size not in self.SIZES:
            raise OdetError(
                f"model.size {self.size!r} is not a {self.arch} size; choose one of {', '.join(self.SIZES)}"
            )
        self.resolve_defaults()
        self.check_values()

    def resolve_defaults(self) -> None:
        """Fill the fields a family derives from ``size`` (PP-YOLOE's per-variant values); by default none."""

    def check_values(self) -> None:
        """Refuse values the network, the assigner or the post-processing cannot use (one line each).

        Families extend this with their own fields.
        """
        at_least("model.num_classes", self.num_classes, 1)
        check_input(self)
        check_bn(self)
        check_test(self, keep_all=self.NMS_PRE_ALL)

    def norm(self) -> BatchNormConfig:
        """The BatchNorm settings every normalised layer is built with."""
        return BatchNormConfig(eps=self.bn_eps, momentum=self.bn_momentum)

    def nms_config(self) -> NMSConfig:
        """The test-time post-processing settings (``min_bbox_size`` where the family has the field:
        MMDetection's post-processing filters small boxes, PaddleDetection's does not)."""
        return NMSConfig(
            score_thr=self.score_thr,
            nms_pre=self.nms_pre,
            iou_thr=self.nms_iou_thr,
            max_per_img=self.max_per_img,
            min_bbox_size=getattr(self, "min_bbox_size", 0.0),
        )

    def input_spec(self) -> InputSpec:
        """How images become the network's input: the normalisation and the test resize target;
        families replace the resize and pad rules that differ (keep-ratio, fixed pad, divisor)."""
        w, h = self.test_scale
        return InputSpec(
            mean=(float(self.mean[0]), float(self.mean[1]), float(self.mean[2])),
            std=(float(self.std[0]), float(self.std[1]), float(self.std[2])),
            to_rgb=self.to_rgb,
            test_scale=(w, h),
        )
