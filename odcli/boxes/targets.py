"""Batching of per-image ground truth into padded tensors for vectorised assigners."""

from __future__ import annotations

import torch


def pad_targets(
    targets: list[dict[str, torch.Tensor]], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack per-image GT into padded tensors.

    Args:
        targets: per image ``boxes`` (G_i, 4) xyxy pixels and ``labels`` (G_i,).
    Returns:
        boxes (B, G, 4) float32, labels (B, G) long, mask (B, G) bool, with G = max G_i
        (padding: zero boxes, label 0, mask False).
    """
    b = len(targets)
    g = max((len(t["labels"]) for t in targets), default=0)
    boxes = torch.zeros((b, g, 4), dtype=torch.float32, device=device)
    labels = torch.zeros((b, g), dtype=torch.long, device=device)
    mask = torch.zeros((b, g), dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n:
            boxes[i, :n] = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(n, 4)
            labels[i, :n] = torch.as_tensor(t["labels"], device=device).long()
            mask[i, :n] = True
    return boxes, labels, mask
