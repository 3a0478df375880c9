"""The module ``odet export`` traces: a detector plus its normalisation and test-time post-processing.

:class:`ExportGraph` takes what odet's test pipeline produces *before* normalising and returns either
final detections (the upstream post-processing in the graph) or every prior's boxes and scores. Its
inputs and outputs are described in :mod:`odcli.inference.backends.meta`.

The post-processing is the PyTorch one (:mod:`odcli.models.heads.dense`) restated without
data-dependent shapes, so that ``torch.onnx.export`` can trace it: candidate selection becomes a
score tensor (B, C, N) in which every (prior, class) pair that upstream would not pass to NMS holds
−1, and ONNX's ``NonMaxSuppression`` (:mod:`odcli.export.nms`) skips those by its score threshold.
"""

from __future__ import annotations

import torch
from torch import nn

from odcli.boxes.postprocess import NMSConfig
from odcli.export.nms import class_aware_nms, padded_detections
from odcli.models.detector import Detector

__all__ = [
    "POSTPROCESS_STYLE",
    "ExportGraph",
    "best_k_above",
    "first_k",
    "per_class_candidates",
    "per_level_candidates",
]

#: The post-processing each family's upstream applies
#: (see :class:`~odcli.inference.backends.meta.ExportMeta`).
POSTPROCESS_STYLE = {"rtmdet": "per_level", "retinanet": "per_level", "ppyoloe": "per_class"}

#: The score of a (prior, class) pair that takes no part in NMS; below every threshold in [0, 1].
DROPPED = -1.0


def _kth_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """(..., n) → (..., 1): the k-th largest value along the last axis, 1 <= k < n.

    A value does not depend on how a runtime breaks ties (OpenVINO's ``TopK`` does not keep ONNX's
    lower-index rule), and it comes from whichever top-k is shorter: the k largest or the n - k + 1
    smallest (RTMDet's 32,000 pairs at stride 32 with ``nms_pre`` 30,000: 2,001 instead of 30,000).
    """
    n = x.shape[-1]
    if k <= n - k + 1:
        return x.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    return x.topk(n - k + 1, dim=-1, largest=False, sorted=False).values.amax(dim=-1, keepdim=True)


def first_k(x: torch.Tensor, k: int) -> torch.Tensor:
    """(..., n) bool: the ``k`` best entries along the last axis, ties at the cut going to the lower
    index — upstream's stable sort, whatever the runtime's ``TopK`` does with ties."""
    if k >= x.shape[-1]:
        return torch.ones_like(x, dtype=torch.bool)
    cut = _kth_largest(x, k)
    over = x > cut
    ties = x == cut
    room = k - over.sum(dim=-1, keepdim=True, dtype=torch.int32)
    return over | (ties & (ties.cumsum(dim=-1, dtype=torch.int32) <= room))


def best_k_above(x: torch.Tensor, k: int, above: torch.Tensor) -> torch.Tensor:
    """``first_k(x, k) & above``, where ``above`` marks the entries over a threshold of ``x``, with the
    top-k only computed when some row has more than ``k`` entries above.

    Exact either way: when a row has at most k entries above a threshold, each of them is among its
    best k (everything ranked ahead of one is at least as large, hence above too), so ``above`` is
    the answer. That is the common case — always with a display threshold — and the top-k over every
    (prior, class) pair (RTMDet at 640: 512,000 of them, k 30,000) is the dearest step of the
    exported post-processing. Exported by ``torch.onnx.export``, the test is one ONNX ``If``. Anywhere
    else the top-k simply runs: TorchScript tracing cannot record ``torch.cond``, and an eager
    ``torch.cond`` would go through ``torch.compile`` on every call.
    """
    if k >= x.shape[-1]:
        return above
    if not torch.compiler.is_exporting():
        return first_k(x, k) & above
    return torch.cond(
        (above.sum(dim=-1) > k).any(), lambda v, a: first_k(v, k) & a, lambda v, a: a.clone(), (x, above)
    )


def _above(x: torch.Tensor, cfg: NMSConfig, min_score: torch.Tensor | None) -> torch.Tensor:
    """Upstream's ``score > score_thr``, and ``score >= min_score`` where the caller gives one."""
    above = x > cfg.score_thr
    return above if min_score is None else above & (x >= min_score)


def per_level_candidates(
    scores: torch.Tensor,
    level_counts: tuple[int, ...],
    cfg: NMSConfig,
    min_score: torch.Tensor | None = None,
) -> torch.Tensor:
    """MMDetection's candidates: on each level the best ``nms_pre`` (prior, class) pairs, kept if above
    ``score_thr`` (:func:`~odcli.boxes.postprocess.select_topk`; ties at the cut: the lower key) and,
    where given, scoring at least ``min_score`` ((1,) tensor).

    Args:
        scores: (B, N, C) probabilities, levels concatenated (``level_counts`` priors each).
    Returns:
        (B, N, C): the score of each candidate pair, :data:`DROPPED` elsewhere.
    """
    batch, _, num_classes = scores.shape
    out = []
    for level in scores.split(list(level_counts), dim=1):  # a handful of levels, fixed at export
        flat = level.reshape(batch, -1)  # prior-major, class-minor: upstream's flattening
        keep = best_k_above(flat, cfg.nms_pre, _above(flat, cfg, min_score))
        out.append(torch.where(keep, flat, DROPPED).reshape(batch, -1, num_classes))
    return torch.cat(out, dim=1)


def per_class_candidates(
    scores: torch.Tensor, cfg: NMSConfig, min_score: torch.Tensor | None = None
) -> torch.Tensor:
    """PaddleDetection's candidates: per class the best ``nms_pre`` priors (≤ 0: all), kept if above
    ``score_thr`` (:func:`~odcli.boxes.postprocess.multiclass_nms`; ties at the cut: the lower prior)
    and, where given, scoring at least ``min_score``.

    Args:
        scores: (B, N, C) probabilities.
    Returns:
        (B, C, N): the score of each candidate, :data:`DROPPED` elsewhere.
    """
    per_class = scores.transpose(1, 2)
    keep = _above(per_class, cfg, min_score)
    if cfg.nms_pre > 0:
        keep = best_k_above(per_class, cfg.nms_pre, keep)
    return torch.where(keep, per_class, DROPPED)


class ExportGraph(nn.Module):
    """Canvas → detections (``nms``) or → every prior's boxes and scores.

    Args:
        model: the detector (BN folded); its ``input_spec`` is the export's (canvas as ``pad_to``
            for RTMDet). With ``half`` it must already be in float16.
        nms: put the post-processing in the graph.
        style: ``per_level`` or ``per_class`` (:data:`POSTPROCESS_STYLE`).
        zero_padding: zero everything outside ``img_shape`` after normalising (upstream's batch
            padding for RetinaNet, :func:`~odcli.data.normalize.prepare_batch`).
        half: run the network in float16 (normalisation, decoding and NMS stay float32).

    ``forward(images (B, 3, H, W) float32 BGR 0–255, img_shape (B, 2) (h, w), scale_factor (B, 2)
    (sx, sy)[, min_score (1,) float32])`` → with ``nms`` boxes (B, K, 4) xyxy original pixels, scores
    (B, K), labels (B, K) int64, num_dets (B,) int64; else boxes (B, N, 4) xyxy canvas pixels, scores
    (B, N, C).

    ``min_score`` (NMS graphs; 0 = the upstream test config) drops every candidate scoring below it
    *before* NMS, which is what makes a display threshold cheap: the detections then returned are
    exactly the full run's that score at least ``min_score`` — greedy NMS visits boxes best first, so
    a box above the threshold is only ever suppressed by boxes above it, and the best ``max_per_img``
    survivors above it are the same either way. The ``nms_pre`` cut still ranks all pairs, as upstream
    (:func:`best_k_above`: computed only where more pairs than ``nms_pre`` pass the thresholds).
    """

    def __init__(
        self, model: Detector, *, nms: bool, style: str, zero_padding: bool, half: bool = False
    ) -> None:
        super().__init__()
        spec = model.input_spec
        self.model = model
        self.nms = nms
        self.style = style
        self.zero_padding = zero_padding
        self.half = half
        self.to_rgb = spec.to_rgb
        self.cfg: NMSConfig = model.head.nms
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1), False)

    def normalize(self, images: torch.Tensor, img_shape: torch.Tensor) -> torch.Tensor:
        """:func:`~odcli.data.normalize.prepare_batch` in the graph: the same float32 operations."""
        x = images.flip(1) if self.to_rgb else images
        x = (x - self.mean) / self.std
        if self.zero_padding:
            h, w = x.shape[-2:]
            rows = torch.arange(h, dtype=torch.float32, device=x.device)[None, :, None]
            cols = torch.arange(w, dtype=torch.float32, device=x.device)[None, None, :]
            inside = (rows < img_shape[:, 0, None, None]) & (cols < img_shape[:, 1, None, None])
            x = torch.where(inside[:, None], x, 0.0)
        return x

    def forward(
        self,
        images: torch.Tensor,
        img_shape: torch.Tensor,
        scale_factor: torch.Tensor,
        min_score: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        x = self.normalize(images, img_shape)
        if self.half:
            x = x.half()
        decoded = self.model.head.decode(*self.model(x))
        if not self.nms:
            return decoded.boxes, decoded.scores
        cfg = self.cfg
        sf = scale_factor.repeat(1, 2)[:, None, :]  # (B, 1, 4) as (sx, sy, sx, sy)
        if self.style == "per_level":
            hw = img_shape.flip(1).repeat(1, 2)[:, None, :]  # (B, 1, 4) as (w, h, w, h)
            boxes = torch.minimum(decoded.boxes.clamp(min=0), hw) * (1.0 / sf)  # MMDetection: × 1/s
            size = boxes[..., 2:] - boxes[..., :2]
            big = (size > cfg.min_bbox_size).all(dim=-1, keepdim=True)  # (B, N, 1)
            pairs = per_level_candidates(decoded.scores, decoded.level_counts, cfg, min_score)
            candidates = torch.where(big, pairs, DROPPED).transpose(1, 2)
        else:
            boxes = decoded.boxes / sf  # PaddleDetection divides and does not clip
            candidates = per_class_candidates(decoded.scores, cfg, min_score)
        selected = class_aware_nms(boxes, candidates, cfg.max_per_img, cfg.iou_thr, cfg.score_thr)
        return padded_detections(selected, candidates, boxes, cfg.max_per_img)
