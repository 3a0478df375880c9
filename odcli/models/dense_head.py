"""The contract every dense head follows (:class:`DenseHead`) and what its decoding stage returns.

A dense head predicts, for every prior (a point or an anchor) of every pyramid level, class logits
and a box. odet's heads — :class:`~odcli.models.heads.rtmdet_sepbn.RTMDetSepBNHead`,
:class:`~odcli.models.heads.retina.RetinaHead`, :class:`~odcli.models.heads.ppyoloe_head.PPYOLOEHead`
— all expose the same methods, so the detector, the trainer, ``odet visualize-assign`` and export
treat them alike:

* ``forward(feats)`` → raw outputs per level (strides ascending): class logits (B, A·C, H, W) and
  the regression maps (B, A·R, H, W), A priors per location (RetinaNet 9, point heads 1), R the
  head's own regression width (4 distances or deltas; PP-YOLOE 4 distributions of reg_max+1 bins);
* ``loss(cls, reg, targets, *, epoch)`` → ``{"loss": total, <components>}``, scalars; ``loss``
  is what to back-propagate;
* ``assign(cls, reg, targets, *, epoch)`` → the :class:`~odcli.assigners.result.AssignResult`
  that ``loss`` trains with at that epoch;
* ``prior_view(cls, reg)`` → the priors and predictions of the first image
  (:class:`~odcli.assigners.view.PriorView`), for running any assigner on them;
* inference in two stages — ``decode(cls, reg)`` → :class:`Decoded` (every prior of the batch, no
  data-dependent shape: traceable by ``torch.onnx.export``), then ``postprocess(decoded, metas)``
  → detections per image (thresholds, top-k, clipping, rescaling, NMS: upstream's rules of the
  family); ``predict(cls, reg, metas) == postprocess(decode(cls, reg), metas)``.

``targets`` are per image ``boxes`` (G, 4) xyxy input pixels and ``labels`` (G,) long (RetinaNet
also reads ``pad_shape`` (h, w)); ``metas`` per image ``img_shape`` (h, w) input pixels and
``scale_factor`` (sx, sy) = input / original size.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

from odcli.assigners.result import AssignResult
from odcli.assigners.view import PriorView
from odcli.boxes.postprocess import NMSConfig

Targets = list[dict[str, torch.Tensor]]
Detections = list[dict[str, torch.Tensor]]


class Decoded(NamedTuple):
    """A batch decoded for every prior: the input of post-processing and of exported models.

    Attributes:
        scores: (B, N, C) float32 class probabilities (sigmoid of the logits).
        boxes: (B, N, 4) float32 xyxy boxes in input pixels — not clipped to the image, not rescaled
            to the original image.
        level_counts: priors per level (strides ascending), summing to N; level l's priors are
            ``[sum(level_counts[:l]), sum(level_counts[:l + 1]))``, row-major (y, x, anchor).
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    level_counts: tuple[int, ...]


@runtime_checkable
class DenseHead(Protocol):
    """What every odet head provides (see the module docstring for the units of each argument).

    Attributes:
        num_classes: foreground classes C (sigmoid, no background logit).
        strides: pixel stride of each input level, ascending.
        nms: the post-processing settings ``postprocess`` applies.
    """

    num_classes: int
    strides: tuple[int, ...]
    nms: NMSConfig

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Neck maps per level (strides ascending) → (class logits per level, regression maps per level)."""
        ...

    def loss(
        self, cls_out: list[torch.Tensor], reg_out: list[torch.Tensor], targets: Targets, *, epoch: int = 0
    ) -> dict[str, torch.Tensor]:
        """``{"loss": weighted total, <named components>}`` scalars for a batch; ``epoch`` is 0-based."""
        ...

    def assign(
        self, cls_out: list[torch.Tensor], reg_out: list[torch.Tensor], targets: Targets, *, epoch: int = 0
    ) -> AssignResult:
        """The (B, N) label assignment :meth:`loss` uses at ``epoch``, priors in the order the head
        assigns them (level-major, strides ascending; PP-YOLOE: coarsest level first, as upstream)."""
        ...

    def prior_view(self, cls_out: list[torch.Tensor], reg_out: list[torch.Tensor]) -> PriorView:
        """The first image's priors (input pixels) with its logits and decoded boxes."""
        ...

    def decode(self, cls_out: list[torch.Tensor], reg_out: list[torch.Tensor]) -> Decoded:
        """Every prior of the batch: probabilities (B, N, C) and boxes (B, N, 4) xyxy input pixels."""
        ...

    def postprocess(self, decoded: Decoded, metas: list[dict], *, rescale: bool = True) -> Detections:
        """Per image ``{"boxes": (K, 4) xyxy, "scores": (K,), "labels": (K,)}``, best first; boxes in
        original-image pixels when ``rescale``, else input pixels."""
        ...

    def predict(
        self,
        cls_out: list[torch.Tensor],
        reg_out: list[torch.Tensor],
        metas: list[dict],
        *,
        rescale: bool = True,
    ) -> Detections:
        """``postprocess(decode(cls_out, reg_out), metas, rescale=rescale)``."""
        ...
