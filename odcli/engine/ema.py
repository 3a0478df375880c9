"""Exponential moving average (EMA) of a detector's weights, as RTMDet and PP-YOLOE train with.

The averaged copy follows MMDetection's ``ExpMomentumEMA`` (the YOLOX schedule) run through
mmengine's averaged-model loop with ``update_buffers=True``. Counting calls to :meth:`ModelEMA.update`
from 1 (call ``k``):

* call 1 copies every tensor of the live model into the average (the average starts from the
  weights after the first optimiser step, not from the initialisation);
* call ``k >= 2`` blends every floating-point tensor with

      m_k = (1 - momentum) * exp(-k / gamma) + momentum
      ema = (1 - m_k) * ema + m_k * live           (done as ``ema.lerp_(live, m_k)``)

  Upstream writes the exponent as ``-(1 + n) / gamma`` where ``n = k - 1`` is the number of updates
  already applied; it is the same number. Early on ``m_k`` is close to 1 (the average tracks the
  live weights), and it decays towards ``momentum`` with a time constant of ``gamma`` updates.

Buffers (BatchNorm running mean/var) are averaged like parameters when ``update_buffers`` is true;
otherwise they are copied from the live model at every update. Integer buffers
(``num_batches_tracked``) cannot be interpolated and are copied. (Upstream leaves them at their
value from the first update instead; they only matter for BatchNorm with ``momentum=None``, which
none of odet's models use.)

A tensor reachable under several state-dict keys (RTMDet's head convolutions, shared across pyramid
levels) is blended once per key when ``update_buffers`` is true, because upstream walks
``state_dict()`` and does exactly that; with ``update_buffers=False`` upstream walks the
de-duplicated parameters and so does this class.

The step count is part of :meth:`ModelEMA.state_dict`, so a resumed run continues the momentum
schedule where it stopped. The state-dict layout (``steps`` plus ``module.<name>``) is the one
mmengine writes under ``ema_state_dict``, which keeps converted upstream checkpoints loadable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from odcli.errors import OdetError

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the user's module inside DDP/DataParallel/``torch.compile`` wrappers.

    The wrappers prefix every state-dict key (``module.``/``_orig_mod.``); the average must be
    keyed like the bare model so that it can be swapped in for evaluation and saved as such.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod  # torch.compile's OptimizedModule
        else:
            return model


class ModelEMA:
    """A running exponential average of a model's parameters and buffers.

    Args:
        model: the model being trained (may be wrapped in DistributedDataParallel). The average
            starts as a deep copy of it, on the same device.
        momentum: the floor of the blending weight (upstream ``momentum``, default 0.0002): late in
            training each update moves the average 0.02 % of the way towards the live weights.
        gamma: time constant, in updates, of the exponential decay of the blending weight from
            1 towards ``momentum`` (upstream ``gamma``, default 2000).
        update_buffers: average floating-point buffers too (upstream RTMDet: True). When False,
            buffers are copied from the live model at every update.

    Call :meth:`update` once after every optimiser step. Evaluate or save :attr:`module`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        momentum: float = 0.0002,
        gamma: float = 2000,
        update_buffers: bool = True,
    ) -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"EMA momentum must be in (0, 1), got {momentum}")
        if gamma <= 0:
            raise ValueError(f"EMA gamma must be > 0, got {gamma}")
        self.momentum = float(momentum)
        self.gamma = float(gamma)
        self.update_buffers = bool(update_buffers)
        #: number of :meth:`update` calls applied so far (upstream ``steps``)
        self.steps = 0
        self.module: nn.Module = copy.deepcopy(unwrap_model(model))
        # The average is only read (evaluation, saving); it must never collect gradients or be
        # picked up by an optimiser, and its BatchNorm layers must not update running stats.
        self.module.eval()
        self.module.requires_grad_(False)

    def momentum_at(self, steps: int) -> float:
        """Blending weight used by the update that follows ``steps`` earlier updates (``steps >= 1``).

        Args:
            steps: number of updates already applied (upstream ``steps``).

        Returns:
            ``(1 - momentum) * exp(-(1 + steps) / gamma) + momentum``, a float in (momentum, 1).
        """
        return (1.0 - self.momentum) * math.exp(-float(1 + steps) / self.gamma) + self.momentum

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the live weights of ``model`` into the average (see the module docstring).

        Args:
            model: the trained model, possibly wrapped in DDP; same architecture as at construction.
        """
        # keep_vars: the real Parameter/buffer objects, so that a tensor reachable under several
        # keys (RTMDet's head convs shared across levels) can be recognised by identity.
        src = unwrap_model(model).state_dict(keep_vars=True)
        avg = self.module.state_dict(keep_vars=True)
        if src.keys() != avg.keys():
            missing = sorted(set(avg) - set(src))[:3]
            extra = sorted(set(src) - set(avg))[:3]
            raise RuntimeError(f"EMA model and trained model differ: missing {missing}, extra {extra}")

        if self.steps == 0:
            for name, a in avg.items():
                a.copy_(src[name].detach())
            self.steps = 1
            return

        if self.update_buffers:
            # Upstream walks ``state_dict()``, which lists a shared tensor once per key, so a
            # shared tensor is blended once per key; walking the same keys keeps that behaviour.
            blended = [name for name, a in avg.items() if a.dtype.is_floating_point]
        else:
            blended = [name for name, _ in self.module.named_parameters()]  # de-duplicated
        blended_ids = {id(avg[name]) for name in blended}
        for name, a in avg.items():
            # Integer buffers (and all buffers when update_buffers is off) follow the live model;
            # identity, not name, decides, so a blended tensor is never overwritten via an alias.
            if id(a) not in blended_ids:
                a.copy_(src[name].detach())

        weight = self.momentum_at(self.steps)
        passes: dict[int, int] = {}
        firsts: list[str] = []
        for name in blended:
            key = id(avg[name])
            if key not in passes:
                firsts.append(name)
            passes[key] = passes.get(key, 0) + 1
        targets = [avg[n].detach() for n in firsts]
        sources = [
            src[n].detach().to(device=t.device, dtype=t.dtype) for n, t in zip(firsts, targets, strict=True)
        ]
        if targets:
            # One fused launch per dtype/device group instead of one kernel per tensor; the
            # arithmetic is lerp's, the same as upstream's per-tensor ``lerp_``.
            torch._foreach_lerp_(targets, sources, weight)
        for t, s, n in zip(targets, sources, firsts, strict=True):
            for _ in range(passes[id(avg[n])] - 1):
                t.lerp_(s, weight)
        self.steps += 1

    def state_dict(self) -> dict[str, Tensor]:
        """Return the average as tensors: ``steps`` (int64 scalar) and ``module.<state-dict key>``."""
        out: dict[str, Tensor] = {"steps": torch.tensor(self.steps, dtype=torch.int64)}
        for name, t in self.module.state_dict().items():
            out[f"module.{name}"] = t
        return out

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the average and its step count from :meth:`state_dict` output.

        Raises:
            OdetError: the state belongs to a different architecture (lists a few differing keys).
        """
        if "steps" not in state:
            raise OdetError("EMA state has no 'steps' entry: it was not written by odet's ModelEMA")
        weights = {k[len("module.") :]: v for k, v in state.items() if k.startswith("module.")}
        own = self.module.state_dict()
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        bad_shape = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
        if missing or unexpected or bad_shape:
            raise OdetError(
                "EMA weights do not fit this model "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}): "
                "the checkpoint is of another architecture"
            )
        self.module.load_state_dict(weights, strict=True)
        self.steps = int(state["steps"].item())
