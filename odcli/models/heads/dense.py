"""The steps every dense head shares: flattening per level, the prior-probability bias, the prior
view, and the two upstream post-processing stages that turn a :class:`~odcli.models.dense_head.Decoded`
batch into detections.

Layouts: a head's map of level l is (B, A·K, H_l, W_l), channel ``a·K + k`` for prior a of a
location (A = 1 for point heads); flattened it is (B, H_l·W_l·A, K), priors in (y, x, anchor)
order — the order the prior generators of :mod:`odcli.boxes.priors` list them in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from odcli.assigners.view import PriorView
from odcli.boxes.coders import clip_boxes
from odcli.boxes.postprocess import NMSConfig, multiclass_nms, per_level_nms, rescale_boxes
from odcli.models.dense_head import Decoded, Detections


def prior_prob_bias(prob: float) -> float:
    """Class-logit bias that starts every sigmoid at probability ``prob`` (RetinaNet's prior, 0.01):
    ``-log((1 - prob) / prob)``, ≈ -4.595 for 0.01, so the many background priors do not swamp the
    first losses."""
    return -math.log((1 - prob) / prob)


def level_sizes(maps: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(H, W) of each level's (B, ·, H, W) map."""
    return [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]


def flatten_levels(maps: list[torch.Tensor], width: int) -> list[torch.Tensor]:
    """Per level (B, A·K, H, W) → (B, H·W·A, K) with K = ``width``, priors in (y, x, anchor) order."""
    return [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in maps]


def concat_levels(maps: list[torch.Tensor], width: int) -> torch.Tensor:
    """:func:`flatten_levels`, levels concatenated in the given order → (B, N, K)."""
    return torch.cat(flatten_levels(maps, width), dim=1)


def sigmoid_concat(maps: list[torch.Tensor], width: int) -> torch.Tensor:
    """Per-level logits (B, A·K, H, W) → float32 probabilities (B, N, K), K = ``width``, levels
    concatenated in (y, x, anchor) order.

    Bit for bit ``torch.cat([x.float().sigmoid() for x in flatten_levels(maps, width)], 1)``. For one
    image each level's slice of the result is contiguous, so the sigmoid is written straight into it
    — the same kernel with the same vector/scalar split as on a flattened tensor of its own — and the
    probabilities are not materialised twice (RetinaNet at 1333×800 holds 14.5 M of them). A batch's
    slices are strided, which would move that split and change the last bit of a few values: a batch
    is flattened, then concatenated.
    """
    if maps[0].shape[0] != 1:
        return torch.cat([x.float().sigmoid() for x in flatten_levels(maps, width)], dim=1)
    counts = [m.shape[1] // width * m.shape[2] * m.shape[3] for m in maps]
    out = maps[0].new_empty((1, sum(counts), width), dtype=torch.float32)
    for m, level in zip(maps, out.split(counts, dim=1), strict=True):
        flat = m.permute(0, 2, 3, 1)
        if flat.is_contiguous():  # channels-last maps (the fused inference model): read them once
            torch.sigmoid(flat.reshape(1, -1, width).float(), out=level)
        else:  # flatten into the slice, then sigmoid in place: no temporary of the level's size
            level.view(flat.shape).copy_(flat)
            level.sigmoid_()
    return out


def build_prior_view(
    *,
    strides: tuple[int, ...],
    level_sizes: list[tuple[int, int]],
    per_location: int,
    centers: torch.Tensor,
    logits: torch.Tensor,
    boxes: torch.Tensor,
    anchors: torch.Tensor | None = None,
) -> PriorView:
    """The :class:`PriorView` of one image whose priors are listed level-major, strides ascending.

    Args:
        strides: the levels' strides; level_sizes: their (h, w); per_location: priors per location.
        centers: (N, 2) prior centres, input pixels.
        logits: (1, N, C) class logits; boxes: (1, N, 4) decoded boxes, xyxy input pixels.
        anchors: (N, 4) xyxy anchors of an anchor head, else None.
    """
    counts = [h * w * per_location for h, w in level_sizes]
    device = centers.device
    return PriorView(
        centers=centers,
        strides=torch.cat(
            [torch.full((n,), float(s), device=device) for n, s in zip(counts, strides, strict=True)]
        ),
        levels=torch.cat(
            [torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(counts)]
        ),
        level_sizes=level_sizes,
        per_location=per_location,
        anchors=anchors,
        logits=logits,
        boxes=boxes,
    )


def postprocess_per_level(
    decoded: Decoded,
    metas: list[dict],
    cfg: NMSConfig,
    *,
    rescale: bool = True,
    min_score: float | None = None,
    max_dets: int | None = None,
) -> Detections:
    """MMDetection's test-time post-processing (RTMDet, RetinaNet), image by image.

    On each level, the (prior, class) pairs scoring above ``cfg.score_thr``, the best
    ``cfg.nms_pre``; the levels concatenated; boxes clamped to the meta's ``img_shape``, with
    ``rescale`` multiplied by 1 / ``scale_factor`` (original pixels); boxes not larger than
    ``min_bbox_size`` dropped; class-aware NMS; the best ``max_per_img``
    (:func:`~odcli.boxes.postprocess.per_level_nms`). Clamping and rescaling are elementwise, so
    doing them for every prior gives the numbers of doing them for the kept ones only.

    ``min_score`` / ``max_dets``: only the detections a caller shows — those scoring at least
    ``min_score``, at most ``max_dets`` — exactly the ones the full result holds (see
    :func:`~odcli.boxes.postprocess.per_level_nms`), for less work.
    """
    results = []
    for i, meta in enumerate(metas):  # NMS is per image by nature
        img_h, img_w = meta["img_shape"]
        boxes = clip_boxes(decoded.boxes[i].clone(), (int(img_h), int(img_w)))
        if rescale:
            boxes = rescale_boxes(boxes, meta["scale_factor"])
        results.append(
            per_level_nms(
                decoded.scores[i], boxes, decoded.level_counts, cfg, min_score=min_score, max_dets=max_dets
            )
        )
    return results


def postprocess_per_class(
    decoded: Decoded,
    metas: list[dict],
    cfg: NMSConfig,
    *,
    rescale: bool = True,
    min_score: float | None = None,
    max_dets: int | None = None,
) -> Detections:
    """PaddleDetection's post-processing (PP-YOLOE), image by image: with ``rescale`` the boxes
    divided by the meta's ``scale_factor`` (not clipped: upstream does not clip), then
    :func:`~odcli.boxes.postprocess.multiclass_nms` (per class: ``score_thr``, the best ``nms_pre``,
    NMS; then the best ``max_per_img``); ``min_score`` / ``max_dets`` as in
    :func:`postprocess_per_level`."""
    results = []
    for i, meta in enumerate(metas):
        boxes = decoded.boxes[i]
        if rescale:
            boxes = rescale_boxes(boxes, meta["scale_factor"], divide=True)
        results.append(multiclass_nms(boxes, decoded.scores[i], cfg, min_score=min_score, max_dets=max_dets))
    return results


class PredictSteps:
    """The test-time half every dense head shares: ``predict`` = ``postprocess`` ∘ ``decode``.

    A head sets ``postprocess_style`` to :func:`postprocess_per_level` (MMDetection's, RTMDet and
    RetinaNet) or :func:`postprocess_per_class` (PaddleDetection's, PP-YOLOE), holds its test config
    in ``nms`` and implements ``decode``.
    """

    nms: NMSConfig
    postprocess_style: Callable[..., Detections]

    def decode(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor]) -> Decoded:
        raise NotImplementedError

    def postprocess(
        self,
        decoded: Decoded,
        metas: list[dict],
        *,
        rescale: bool = True,
        min_score: float | None = None,
        max_dets: int | None = None,
    ) -> Detections:
        """Detections per image from every prior's boxes and scores, by the head's upstream style
        (boxes in original-image pixels when ``rescale``). ``min_score`` / ``max_dets``: only the
        detections a caller shows (scoring at least ``min_score``, at most ``max_dets``) — exactly
        those the full result holds, for less work."""
        style = type(self).postprocess_style
        return style(decoded, metas, self.nms, rescale=rescale, min_score=min_score, max_dets=max_dets)

    @torch.no_grad()
    def predict(
        self,
        cls_scores: list[torch.Tensor],
        bbox_preds: list[torch.Tensor],
        metas: list[dict],
        *,
        rescale: bool = True,
    ) -> Detections:
        """Detections per image: ``boxes`` (K, 4) xyxy, ``scores`` (K,), ``labels`` (K,); boxes in
        original-image pixels if ``rescale``, else input pixels."""
        return self.postprocess(self.decode(cls_scores, bbox_preds), metas, rescale=rescale)
