"""The common output of every assigner, its codes, and the step the Paddle assigners share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: ``gt_index`` / ``labels`` of a background prior (trained as a negative).
BACKGROUND = -1
#: ``gt_index`` of an ignored prior: neither positive nor negative, no loss at all (Max-IoU's band
#: between the thresholds, anchors outside an image's padded extent).
IGNORED = -2


@dataclass
class AssignResult:
    """Assignment of B images × N priors to padded ground truths.

    Attributes:
        gt_index: (B, N) long — index of the matched GT in the image's padded GT list,
            :data:`BACKGROUND` (-1) for background, :data:`IGNORED` (-2) for ignored priors.
        labels: (B, N) long — class of the matched GT, :data:`BACKGROUND` where not positive.
        quality: (B, N) float — assigner-specific quality of the match (IoU for DSL), 0 where not
            positive.
    """

    gt_index: torch.Tensor
    labels: torch.Tensor
    quality: torch.Tensor

    @classmethod
    def background(cls, batch: int, num_priors: int, device: torch.device | str = "cpu") -> AssignResult:
        """Every prior negative: ``gt_index``/``labels`` -1, ``quality`` 0, each (batch, num_priors).

        What every assigner returns when an image has no GT or there are no priors (upstream's
        empty assignment: MMDetection's gt_inds 0 / labels -1, PaddleDetection's ``bg_index``).
        """
        return cls(
            gt_index=torch.full((batch, num_priors), BACKGROUND, dtype=torch.long, device=device),
            labels=torch.full((batch, num_priors), BACKGROUND, dtype=torch.long, device=device),
            quality=torch.zeros((batch, num_priors), device=device),
        )

    @property
    def positive(self) -> torch.Tensor:
        """(B, N) bool mask of positive priors."""
        return self.gt_index >= 0

    def upstream_gt_inds(self) -> torch.Tensor:
        """MMDetection's encoding: 0 negative, -1 ignored, k > 0 → GT k-1. (B, N) long."""
        out = self.gt_index + 1
        out[self.gt_index == IGNORED] = -1
        return out


def resolve_multiple(positive: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """(B, N) index of the GT each prior keeps, from its positive GTs ``positive`` (B, G, N) bool:
    its only one, or — when several claim it — the GT of highest ``ious`` (B, G, N) over *all* GTs
    (first on ties, as Paddle's ``argmax``). Priors no GT claims get 0: mask them with ``positive``.

    PaddleDetection's ATSS and Task-Aligned assigners share this step.
    """
    first_positive = positive.to(torch.uint8).argmax(dim=1)
    several = positive.sum(dim=1) > 1
    return torch.where(several, ious.argmax(dim=1), first_positive)
