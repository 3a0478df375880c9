"""Checks of transform settings, run in the constructors: a value from a recipe that a transform cannot
use fails when the pipeline is built, with one :class:`~odcli.errors.OdetError` line naming it, instead
of deep inside a DataLoader worker."""

from __future__ import annotations

from collections.abc import Sequence

from odcli.errors import OdetError

__all__ = ["check_pad_value", "check_prob", "check_range", "check_size"]


def check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    """A (w, h) pair of positive integers, pixels."""
    if len(size) != 2 or any(int(v) != v or v <= 0 for v in size):
        raise OdetError(f"{name} must be two positive integers (w, h), got {tuple(size)}")
    return int(size[0]), int(size[1])


def check_range(name: str, values: Sequence[float], low: float = 0.0) -> tuple[float, float]:
    """A (lo, hi) pair with ``low < lo <= hi``."""
    if len(values) != 2 or not low < float(values[0]) <= float(values[1]):
        raise OdetError(f"{name} must be two numbers with {low:g} < low <= high, got {tuple(values)}")
    return float(values[0]), float(values[1])


def check_prob(name: str, prob: float) -> float:
    """A probability in [0, 1]."""
    if not 0.0 <= prob <= 1.0:
        raise OdetError(f"{name} must be in [0, 1], got {prob}")
    return float(prob)


def check_pad_value(pad_val: float) -> int:
    """A fill value for uint8 images, 0..255."""
    if not 0 <= pad_val <= 255:
        raise OdetError(f"pad value must be in 0..255 for uint8 images, got {pad_val}")
    return int(pad_val)
