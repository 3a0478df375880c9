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

    @property
    def positive(self) -> torch.Tensor:
        """(B, N) bool mask of positive priors."""
        return self.gt_index >= 0

    def upstream_gt_inds(self) -> torch.Tensor:
        """MMDetection's encoding: 0 negative, -1 ignored, k > 0 → GT k-1. (B, N) long."""
        out = self.gt_index + 1
        out[self.gt_index == -2] = -1
        return out
