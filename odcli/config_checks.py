"""Range checks of config values, run as each config section is built (recipe load, ``--set``).

A value the code cannot use would otherwise fail deep inside a run — a ``ValueError`` from an
optimiser or the EMA, an ``IndexError`` in a neck, a division by zero in an initialiser — with a
traceback, often minutes in. Each check here raises one :class:`OdetError` line instead, naming the
key (``section.name``), the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from odcli.errors import OdetError


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``OdetError("<key> must be <allowed>, got <value>")`` unless ``ok``."""
    if not ok:
        raise OdetError(f"{key} must be {allowed}, got {value!r}")


def at_least(key: str, value: float, low: float) -> None:
    """``value >= low``."""
    require(value >= low, key, value, f">= {low}")


def in_range(
    key: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """``value`` in the interval from ``low`` to ``high``, each end closed unless said open."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    require(above and below, key, value, f"in {interval}")


def int_list(
    key: str, value: Sequence[int], *, length: int | None = None, low: int = 1, what: str = ""
) -> None:
    """A list of integers ``>= low``: exactly ``length`` of them, or at least one when ``length`` is None."""
    count = f"{length}" if length is not None else "a non-empty list of"
    ok = len(value) == length if length is not None else len(value) > 0
    require(ok and all(v >= low for v in value), key, list(value), f"{count} integers >= {low}{what}")


def number_list(
    key: str, value: Sequence[float], *, length: int, positive: bool = False, what: str = ""
) -> None:
    """Exactly ``length`` numbers, each ``> 0`` when ``positive``."""
    ok = len(value) == length and (not positive or all(v > 0 for v in value))
    require(ok, key, list(value), f"{length} {'positive ' if positive else ''}numbers{what}")


def check_input(cfg: Any) -> None:
    """``model.mean`` / ``std`` (per channel, 0–255 scale) and ``test_scale`` (w, h) pixels."""
    number_list("model.mean", cfg.mean, length=3, what=" (one per colour channel)")
    number_list("model.std", cfg.std, length=3, positive=True, what=" (one per colour channel)")
    int_list("model.test_scale", cfg.test_scale, length=2, what=" (width, height in pixels)")


def check_test(cfg: Any, *, keep_all: int | None = None) -> None:
    """Test-time filtering: thresholds in [0, 1], at least one candidate and one detection kept.

    ``keep_all`` is the value of ``nms_pre`` that means "no limit" (PaddleDetection's -1), if any.
    """
    in_range("model.score_thr", cfg.score_thr, 0.0, 1.0)
    in_range("model.nms_iou_thr", cfg.nms_iou_thr, 0.0, 1.0)
    at_least("model.max_per_img", cfg.max_per_img, 1)
    if keep_all is None:
        at_least("model.nms_pre", cfg.nms_pre, 1)
    else:
        require(
            cfg.nms_pre >= 1 or cfg.nms_pre == keep_all,
            "model.nms_pre",
            cfg.nms_pre,
            f">= 1, or {keep_all} for all",
        )
    if hasattr(cfg, "min_bbox_size"):
        at_least("model.min_bbox_size", cfg.min_bbox_size, 0.0)


def check_bn(cfg: Any) -> None:
    """BatchNorm ε > 0 (training divides by it) and momentum, a blending fraction, in [0, 1]."""
    require(cfg.bn_eps > 0, "model.bn_eps", cfg.bn_eps, "> 0")
    in_range("model.bn_momentum", cfg.bn_momentum, 0.0, 1.0)


def check_train(cfg: Any) -> None:
    """The :class:`odcli.recipe.TrainConfig` values the optimiser, schedule and EMA cannot use."""
    in_range("train.momentum", cfg.momentum, 0.0, 1.0, high_open=True)
    for name in ("weight_decay", "norm_decay", "bias_decay", "cosine_start_epoch"):
        at_least(f"train.{name}", getattr(cfg, name), 0)
    in_range("train.warmup_start_factor", cfg.warmup_start_factor, 0.0, 1.0)
    in_range("train.min_lr_ratio", cfg.min_lr_ratio, 0.0, 1.0)
    require(all(m >= 0 for m in cfg.milestones), "train.milestones", cfg.milestones, "epochs >= 0")
    in_range("train.ema_momentum", cfg.ema_momentum, 0.0, 1.0, low_open=True, high_open=True)
    require(cfg.ema_gamma > 0, "train.ema_gamma", cfg.ema_gamma, "> 0")
    # NumPy's per-epoch generators take no negative seed; torch's none beyond 64 bits.
    require(0 <= cfg.seed < 2**64, "train.seed", cfg.seed, "an integer in 0 .. 2**64 - 1")
    if cfg.switch_epoch is not None:
        at_least("train.switch_epoch", cfg.switch_epoch, 0)
    if cfg.device != "auto":
        import torch

        try:
            torch.device(cfg.device)
        except RuntimeError:
            require(False, "train.device", cfg.device, "auto, cpu, cuda or cuda:N")


def check_data(cfg: Any) -> None:
    """The :class:`odcli.recipe.DataConfig` values the loader and the pipelines cannot use."""
    at_least("data.batch_size", cfg.batch_size, 1)
    at_least("data.val_batch_size", cfg.val_batch_size, 1)
    at_least("data.num_workers", cfg.num_workers, 0)
    at_least("data.min_size", cfg.min_size, 0.0)
    for name in ("flip_prob", "mosaic_prob", "mixup_prob", "ppyoloe_expand_prob"):
        value = getattr(cfg, name)
        require(0.0 <= value <= 1.0, f"data.{name}", value, "a probability in [0, 1]")
    # RandomExpand checks these only when it is built (expand_prob > 0); a recipe is checked whole.
    require(cfg.ppyoloe_expand_ratio > 1.01, "data.ppyoloe_expand_ratio", cfg.ppyoloe_expand_ratio, "> 1.01")
    number_list("data.ppyoloe_expand_fill", cfg.ppyoloe_expand_fill, length=3, what=" (R, G, B)")
