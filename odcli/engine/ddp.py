"""How a run spreads over processes: joining torchrun's process group, seeding, and the module
a step calls (``model.loss`` as a forward, wrapped by DDP under torchrun).

Under ``torchrun`` (or ``odet train --gpus N``) every process joins the group from the environment
and trains a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper of the model on its shard
of each global batch; only rank 0 writes files or prints. Without torchrun all of it is a single
process's no-op.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from odcli.engine.console import TrainConsole
from odcli.errors import OdetError
from odcli.models.detector import Detector
from odcli.recipe import TrainConfig
from odcli.runtime import distributed as dist
from odcli.runtime.device import resolve_device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its device, its rank and the number of processes (1 without torchrun)."""

    device: torch.device
    rank: int
    world: int

    @property
    def main(self) -> bool:
        """Only the main process (rank 0) prints and writes files."""
        return self.rank == 0


def join_processes(train: TrainConfig) -> Placement:
    """Join the process group torchrun prepared (if any) and pick this process's device."""
    device = resolve_device(train.device)
    dist.setup(train.dist_backend, device.type)
    world = dist.world_size()
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank())
    return Placement(device=device, rank=dist.rank(), world=world)


class LossForward(nn.Module):
    """``forward`` = ``model.loss``: DDP synchronises gradients only for work done in ``forward``."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, targets: list[dict], epoch: int) -> dict[str, torch.Tensor]:
        return self.model.loss(images, targets, epoch=epoch)


def wrap_for_training(model: Detector, placement: Placement, sync_bn: bool, out: TrainConsole) -> nn.Module:
    """``model.loss`` as a module's forward; under DDP wrapped (after SyncBN conversion) for it.

    Call it after a resumed state is loaded: DDP broadcasts rank 0's weights when it wraps.
    """
    forward = LossForward(model)
    device = placement.device
    if placement.world == 1:
        if sync_bn:
            out.print("note: train.sync_bn has no effect in a single process")
        return forward
    if sync_bn:
        if device.type != "cuda":
            raise OdetError(
                "train.sync_bn needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on CPU); "
                "set train.sync_bn=false, or train.freeze_bn=true for small per-process batches"
            )
        # In place below the top module: the optimiser and EMA keep the same Parameter objects.
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(forward, device_ids=device_ids)


def set_train_mode(loss_module: nn.Module, model: nn.Module, freeze_bn: bool) -> None:
    """Training mode, except BatchNorm layers with ``train.freeze_bn`` (running statistics kept)."""
    loss_module.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
