"""The common output of every assigner."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AssignResult:
    """Assignment of B images × N priors to padded ground truths.

    Attributes:
        gt_index: (B, N) long — index of the matched GT in the image's padded GT list, -1 for
            background, -2 for ignored priors (neither positive nor negative).
        labels: (B, N) long — class of the matched GT, -1 where not positive.
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
            gt_index=torch.full((batch, num_priors), -1, dtype=torch.long, device=device),
            labels=torch.full((batch, num_priors), -1, dtype=torch.long, device=device),
            quality=torch.zeros((batch, num_priors), device=device),
        )

    @property
    def positive(self) -> torch.Tensor:
        """(B, N) bool mask of positive priors."""
        return self.gt_index >= 0

    def upstream_gt_inds(self) -> torch.Tensor:
        """MMDetection's encoding: 0 negative, -1 ignored, k > 0 → GT k-1. (B, N) long."""
        out = self.gt_index + 1
        out[self.gt_index == -2] = -1
        return out
