"""The network input from a collated batch: MMDetection's ``DetDataPreprocessor`` on the model side.

Upstream converts to float, optionally swaps BGR→RGB, subtracts the mean and divides by the std — in
that order and in float32 — and pads the *normalised* batch. :func:`normalize` does the same
operations so the result is bit-identical to upstream's ``inputs``; :func:`prepare_batch` applies it
as a model's ``InputSpec`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["normalize", "prepare_batch"]


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    to_rgb: bool = False,
    *,
    valid_hw: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """(x - mean) / std per channel, in float32, on the images' device.

    Args:
        images: (B, 3, H, W) uint8 (or float32) BGR batch (any device).
        mean: 3 values in the order of the **output** channels (RGB order when ``to_rgb``).
        std: 3 values, same order as ``mean``.
        to_rgb: reverse the channel order (BGR → RGB) before normalising.
        valid_hw: optional per-image (h, w) of real content; everything outside is set to 0 after
            normalising, which is how upstream pads a batch (RetinaNet: pad value 0 after normalise).

    Returns:
        (B, 3, H, W) float32.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"normalize expects (B, 3, H, W) images, got {tuple(images.shape)}")
    x = images.float()
    if to_rgb:
        x = x.flip(1)
    # float32 mean/std, subtract then divide: the same ops as upstream, hence bit-identical output.
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    x = (x - m) / s
    if valid_hw is not None:
        for i, (h, w) in enumerate(valid_hw):
            x[i, :, h:, :] = 0
            x[i, :, :h, w:] = 0
    return x


def prepare_batch(
    images: torch.Tensor, metas: Sequence[dict[str, Any]], spec: Any, device: torch.device | str
) -> torch.Tensor:
    """Collated uint8 batch → the network input on ``device``, as the model's ``InputSpec`` says.

    Without a fixed pad size (``spec.pad_to is None``, e.g. RetinaNet) upstream pads the batch
    canvas *after* normalising, with 0: everything outside each image's ``img_shape`` is zeroed.
    With ``pad_to`` (RTMDet) the pipeline already padded each image with ``pad_value``.
    """
    valid_hw = [tuple(m["img_shape"]) for m in metas] if spec.pad_to is None else None
    return normalize(
        images.to(device, non_blocking=True), spec.mean, spec.std, spec.to_rgb, valid_hw=valid_hw
    )
