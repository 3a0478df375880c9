"""A dense one-stage detector: Backbone → Neck → Head, plus how its inputs are prepared."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from odcli.models.dense_head import Decoded


@dataclass(frozen=True)
class InputSpec:
    """How raw images become the network's input tensor (the upstream data preprocessor + test resize).

    Attributes:
        mean / std: per channel, in the network's channel order, on 0–255 pixel values.
        to_rgb: the network eats RGB (images are loaded BGR); False = BGR (RTMDet).
        test_scale: (w, h) target of the keep-ratio resize at test time.
        keep_ratio: keep the aspect ratio when resizing.
        pad_value: value of the padded pixels (before normalisation).
        pad_to: (h, w) fixed padded size, or None to pad to a multiple of ``size_divisor``.
        size_divisor: pad each image up to a multiple of this (when ``pad_to`` is None).
        interpolation: cv2 interpolation of the test resize, ``"bilinear"`` or ``"cubic"`` (PP-YOLOE).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    to_rgb: bool
    test_scale: tuple[int, int]
    keep_ratio: bool = True
    pad_value: float = 114.0
    pad_to: tuple[int, int] | None = None
    size_divisor: int = 32
    interpolation: str = "bilinear"


class Detector(nn.Module):
    """Backbone → Neck → Head (a :class:`~odcli.models.dense_head.DenseHead`).

    ``forward(images)`` returns the head's raw outputs per level (strides ascending);
    ``decode(images)`` every prior's scores and boxes (the export stage); ``predict(images, metas)``
    the final detections per image; ``loss(images, targets)`` a dict of named scalar losses.
    ``images`` is the normalised batch (B, 3, H, W).
    """

    def __init__(
        self, *, arch: str, backbone: nn.Module, neck: nn.Module, head: nn.Module, input_spec: InputSpec
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.input_spec = input_spec

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Neck outputs per level (strides ascending)."""
        return self.neck(self.backbone(images))

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        return self.head(self.features(images))

    @torch.no_grad()
    def decode(self, images: torch.Tensor) -> Decoded:
        """Scores (B, N, C) and boxes (B, N, 4) xyxy input pixels of every prior, before any
        thresholding or NMS (:meth:`~odcli.models.dense_head.DenseHead.decode`)."""
        return self.head.decode(*self(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, metas: list[dict], *, rescale: bool = True) -> list[dict]:
        """Per image ``{"boxes": (K, 4) xyxy, "scores": (K,), "labels": (K,)}``.

        Boxes are in original-image pixels when ``rescale`` (using each meta's ``scale_factor``),
        else in input pixels. ``metas`` need ``img_shape (h, w)`` and ``scale_factor (sx, sy)``.
        """
        outputs = self(images)
        return self.head.predict(*outputs, metas, rescale=rescale)

    def loss(self, images: torch.Tensor, targets: list[dict], *, epoch: int = 0) -> dict[str, torch.Tensor]:
        """Named scalar training losses.

        ``targets`` hold per image ``boxes`` (G, 4) xyxy input pixels and ``labels`` (G,), and
        optionally ``pad_shape`` (h, w). ``epoch`` (0-based) lets heads that change their
        assigner during training (PP-YOLOE) know where they are.
        """
        outputs = self(images)
        return self.head.loss(*outputs, targets, epoch=epoch)
