"""Per-iteration learning-rate schedules and optimiser parameter groups.

Both schedules are pure functions of the global iteration index ``it`` (0-based: the iteration
whose optimiser step is about to run). The trainer calls ``schedule.apply(optimizer, it)`` before
``optimizer.step()`` of iteration ``it``; resuming needs nothing but the iteration counter.

They reproduce what mmengine's chained parameter schedulers give at each iteration for the
upstream configs:

* RTMDet (``FlatCosineSchedule``): ``LinearLR(start_factor=1e-5, by_epoch=False, begin=0, end=1000)``
  then ``CosineAnnealingLR(eta_min=base_lr * 0.05, begin=max_epochs // 2, end=max_epochs,
  T_max=max_epochs // 2, by_epoch=True, convert_to_iter_based=True)``: pass
  ``warmup_iters=1000``, ``cosine_start_iter=(max_epochs // 2) * iters_per_epoch``,
  ``total_iters=max_epochs * iters_per_epoch``, ``min_lr=0.05 * base_lr``.
* RetinaNet 1x (``MultiStepSchedule``): ``LinearLR(start_factor=0.001, by_epoch=False, begin=0,
  end=500)`` then ``MultiStepLR(milestones=[8, 11], gamma=0.1, by_epoch=True)``: pass
  ``warmup_iters=500``, ``milestones=(8 * iters_per_epoch, 11 * iters_per_epoch)``.

mmengine's linear warm-up over ``end - begin = W`` iterations reaches its end factor at iteration
``W - 1`` (it divides by ``W - 1``), i.e. the factor at iteration ``t`` is
``start + (1 - start) * min(t, W - 1) / (W - 1)``; the schedules below follow that exactly.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from odcli.engine.ema import unwrap_model

__all__ = [
    "FlatCosineSchedule",
    "MultiStepSchedule",
    "build_param_groups",
    "schedule_from_state_dict",
]


def _warmup_factor(it: int, warmup_iters: int, start_factor: float) -> float:
    """Multiplier of the linear warm-up at iteration ``it`` (1.0 once the warm-up is over).

    Args:
        it: 0-based global iteration.
        warmup_iters: length ``W`` of the warm-up in iterations (0 = no warm-up, else >= 2).
        start_factor: multiplier at iteration 0.
    """
    if warmup_iters == 0 or it >= warmup_iters - 1:
        return 1.0
    return start_factor + (1.0 - start_factor) * max(it, 0) / (warmup_iters - 1)


def _check_warmup(warmup_iters: int, start_factor: float) -> None:
    if warmup_iters < 0 or warmup_iters == 1:
        # W = 1 would divide by W - 1 = 0; upstream then keeps the start factor for the whole run.
        raise ValueError(f"warmup_iters must be 0 (no warm-up) or >= 2, got {warmup_iters}")
    if not 0.0 <= start_factor <= 1.0:
        raise ValueError(f"warmup_start_factor must be in [0, 1], got {start_factor}")


def _apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        # lr_scale lets a recipe give a group (say the backbone) a fixed fraction of the schedule.
        group["lr"] = lr * float(group.get("lr_scale", 1.0))
    return lr


@dataclass(frozen=True, kw_only=True)
class FlatCosineSchedule:
    """Linear warm-up, then flat, then cosine annealing to ``min_lr`` (RTMDet's schedule).

    Attributes:
        base_lr: peak learning rate (RTMDet: 0.004 for a total batch of 256).
        total_iters: length of training in iterations (``max_epochs * iters_per_epoch``).
        warmup_iters: warm-up length ``W`` in iterations (0, or >= 2); the factor rises linearly
            from ``warmup_start_factor`` at iteration 0 to 1 at iteration ``W - 1``.
        warmup_start_factor: lr multiplier at iteration 0.
        cosine_start_iter: first iteration ``C`` of the cosine phase; the lr is ``base_lr`` at
            ``C`` and follows ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (t - C) / (total - C))) / 2``
            after it, reaching ``min_lr`` at ``total_iters``.
        min_lr: the floor of the cosine (RTMDet: ``0.05 * base_lr`` = 0.0002).

    When the warm-up is still running at ``C`` (tiny datasets: fewer than ``W`` iterations in
    half the epochs), upstream's two schedulers act on the same lr one after the other; the
    overlap is replayed step by step at construction so the values stay identical.
    """

    base_lr: float
    total_iters: int
    warmup_iters: int
    warmup_start_factor: float = 1e-5
    cosine_start_iter: int
    min_lr: float
    # (lr at iterations C .. A) where A = max(C, W - 1) is the last iteration the warm-up moves.
    _anchor_lrs: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_iters, self.warmup_start_factor)
        if self.total_iters <= 0:
            raise ValueError(f"total_iters must be > 0, got {self.total_iters}")
        if self.warmup_iters > self.total_iters:
            raise ValueError(f"warmup_iters ({self.warmup_iters}) exceeds total_iters ({self.total_iters})")
        if not 0 <= self.cosine_start_iter < self.total_iters:
            raise ValueError(
                f"cosine_start_iter must be in [0, total_iters={self.total_iters}), "
                f"got {self.cosine_start_iter}"
            )
        if self.base_lr <= 0 or not 0 <= self.min_lr <= self.base_lr:
            raise ValueError(
                f"need base_lr > 0 and 0 <= min_lr <= base_lr, got {self.base_lr} and {self.min_lr}"
            )
        object.__setattr__(self, "_anchor_lrs", tuple(self._replay_overlap()))

    def _cos_term(self, it: int) -> float:
        """``1 + cos(pi * (it - C) / T)`` with ``T = total_iters - C``; 2 at ``C``, 0 at the end."""
        span = self.total_iters - self.cosine_start_iter
        progress = min(max(it - self.cosine_start_iter, 0), span) / span
        return 1.0 + math.cos(math.pi * progress)

    def _replay_overlap(self) -> list[float]:
        """Lrs at iterations ``C .. max(C, W - 1)``, each step as upstream computes it."""
        c = self.cosine_start_iter
        lr = self.base_lr * _warmup_factor(c, self.warmup_iters, self.warmup_start_factor)
        lrs = [lr]
        for it in range(c + 1, max(c, self.warmup_iters - 1) + 1):
            # Warm-up scheduler first (it is listed first upstream), then the cosine one, which
            # scales the distance to min_lr by the ratio of consecutive cosine terms.
            prev_f = _warmup_factor(it - 1, self.warmup_iters, self.warmup_start_factor)
            lr *= _warmup_factor(it, self.warmup_iters, self.warmup_start_factor) / prev_f
            lr = self.min_lr + (lr - self.min_lr) * self._cos_term(it) / self._cos_term(it - 1)
            lrs.append(lr)
        return lrs

    def lr_at(self, it: int) -> float:
        """Learning rate for 0-based iteration ``it`` (clamped to ``min_lr`` past ``total_iters``)."""
        c = self.cosine_start_iter
        if it < c:
            return self.base_lr * _warmup_factor(it, self.warmup_iters, self.warmup_start_factor)
        anchor = c + len(self._anchor_lrs) - 1
        if it <= anchor:
            return self._anchor_lrs[it - c]
        anchor_lr = self._anchor_lrs[-1]
        return self.min_lr + (anchor_lr - self.min_lr) * self._cos_term(it) / self._cos_term(anchor)

    def apply(self, optimizer: torch.optim.Optimizer, it: int) -> float:
        """Set each param group's ``lr`` to ``lr_at(it) * group.get('lr_scale', 1)``; return ``lr_at(it)``."""
        return _apply_lr(optimizer, self.lr_at(it))

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings, JSON-serialisable, with a ``type`` tag."""
        return _public_fields(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> FlatCosineSchedule:
        """Rebuild a schedule from :meth:`state_dict` output."""
        return cls(**{k: v for k, v in state.items() if k != "type"})


@dataclass(frozen=True, kw_only=True)
class MultiStepSchedule:
    """Linear warm-up, then step decay by ``gamma`` at each milestone (RetinaNet's "1x").

    Attributes:
        base_lr: learning rate after warm-up and before the first milestone (RetinaNet: 0.01 for a
            total batch of 16).
        warmup_iters: warm-up length ``W`` in iterations (0, or >= 2), same semantics as
            :class:`FlatCosineSchedule`.
        warmup_start_factor: lr multiplier at iteration 0 (RetinaNet: 0.001).
        milestones: iterations at which the lr is multiplied by ``gamma``; iteration ``m`` itself
            already uses the decayed lr. Epoch milestones ``e`` of upstream map to
            ``e * iters_per_epoch`` (upstream decays at the epoch boundary).
        gamma: decay factor per milestone.
    """

    base_lr: float
    warmup_iters: int
    warmup_start_factor: float = 0.001
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_iters, self.warmup_start_factor)
        if self.base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {self.base_lr}")
        if any(m < 0 for m in self.milestones):
            raise ValueError(f"milestones must be >= 0, got {list(self.milestones)}")
        object.__setattr__(self, "milestones", tuple(sorted(int(m) for m in self.milestones)))

    def lr_at(self, it: int) -> float:
        """Learning rate for 0-based iteration ``it``."""
        # Both upstream schedulers multiply the current lr, so their effects compose as a product.
        decays = bisect.bisect_right(self.milestones, it)
        warm = _warmup_factor(it, self.warmup_iters, self.warmup_start_factor)
        return self.base_lr * warm * self.gamma**decays

    def apply(self, optimizer: torch.optim.Optimizer, it: int) -> float:
        """Set each param group's ``lr`` to ``lr_at(it) * group.get('lr_scale', 1)``; return ``lr_at(it)``."""
        return _apply_lr(optimizer, self.lr_at(it))

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings, JSON-serialisable, with a ``type`` tag."""
        return _public_fields(self)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> MultiStepSchedule:
        """Rebuild a schedule from :meth:`state_dict` output."""
        return cls(**{k: v for k, v in state.items() if k != "type"})


def _public_fields(obj: FlatCosineSchedule | MultiStepSchedule) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(obj).__name__}
    for f in dataclasses.fields(obj):
        if f.init:
            value = getattr(obj, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def schedule_from_state_dict(state: Mapping[str, Any]) -> FlatCosineSchedule | MultiStepSchedule:
    """Rebuild either schedule from its :meth:`state_dict` (dispatching on ``type``)."""
    kinds = {"FlatCosineSchedule": FlatCosineSchedule, "MultiStepSchedule": MultiStepSchedule}
    kind = state.get("type")
    if kind not in kinds:
        raise ValueError(f"unknown schedule type {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_state_dict(state)


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def build_param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    norm_decay: float = 0.0,
    bias_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Split a model's parameters into optimiser groups by weight decay.

    Mirrors mmengine's ``paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0,
    bypass_duplicate=True)`` (RTMDet, PP-YOLOE): every parameter of a normalisation layer gets
    ``norm_decay``; every other parameter named ``bias`` gets ``bias_decay``; the rest get
    ``weight_decay``. Note the values are absolute decays (upstream's ``mult * weight_decay``).
    A parameter shared between modules is listed once, in the group of its first owner in
    module order. Frozen parameters (``requires_grad=False``) are included like upstream does;
    the optimiser skips them as they never receive a gradient. For RetinaNet (no paramwise
    config upstream) pass ``norm_decay=bias_decay=weight_decay``.

    Args:
        model: the model (a DDP wrapper is looked through).
        weight_decay: decay of ordinary weights (conv/linear kernels).
        norm_decay: decay of normalisation-layer weights and biases.
        bias_decay: decay of the biases of non-normalisation layers.

    Returns:
        Non-empty groups ``{"params": [...], "weight_decay": float}``, one per distinct decay value,
        in the order weights, biases, norms (groups with equal decay are merged).
    """
    by_decay: dict[float, list[nn.Parameter]] = {
        float(weight_decay): [],
        float(bias_decay): [],
        float(norm_decay): [],
    }
    seen: set[int] = set()
    for module in unwrap_model(model).modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if is_norm:
                decay = norm_decay
            elif name == "bias":
                decay = bias_decay
            else:
                decay = weight_decay
            by_decay[float(decay)].append(param)
    return [{"params": params, "weight_decay": wd} for wd, params in by_decay.items() if params]
