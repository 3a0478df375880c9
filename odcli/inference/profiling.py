"""Model cost: parameters, multiply-accumulates (MACs) and timed inference split into stages.

MACs follow MMDetection's published convention (mmengine's fvcore-style counter): a convolution
or matrix product counts one per multiply-accumulate (bias excluded), an inference BatchNorm two
per element, nearest upsampling one per output element, adaptive average pooling one per input
element; activations, additions and max-pooling count nothing. RTMDet-tiny at 640×640 is 8.089 G.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _numel(shape: torch.Size | list[int]) -> int:
    return math.prod(shape)


class _MacCounter(TorchDispatchMode):
    """Adds up MACs of the aten ops a forward pass dispatches (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet is aten.convolution:
            x, w = args[0], args[1]
            groups = args[8]
            # each output element: in_channels/groups × kernel taps multiply-accumulates
            self.macs += _numel(out.shape) * (x.shape[1] // groups) * _numel(w.shape[2:])
        elif packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            self.macs += a.shape[0] * a.shape[1] * b.shape[1]
        elif packet in (aten._native_batch_norm_legit_no_training, aten.native_batch_norm):
            self.macs += 2 * _numel(args[0].shape)
        elif packet in (aten.upsample_nearest2d, aten.upsample_bilinear2d):
            self.macs += _numel(out.shape)
        elif packet is aten._adaptive_avg_pool2d or (packet is aten.mean and len(args) > 1):
            # adaptive pooling to 1×1 reaches the dispatcher as a mean over the spatial dims
            self.macs += _numel(args[0].shape)
        return out


@torch.no_grad()
def count_macs(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Multiply-accumulates of ``model(images)`` under MMDetection's convention (module docstring)."""
    was_training = model.training
    model.eval()
    with _MacCounter() as counter:
        model(images)
    model.train(was_training)
    return counter.macs


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared parameters count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@dataclass
class Timing:
    """Mean milliseconds per batch of each stage and of the whole pipeline (same runs)."""

    preprocess: float
    model: float
    postprocess: float
    total: float
    batch_size: int

    @property
    def throughput(self) -> float:
        """Images per second of the end-to-end pipeline."""
        return 1000.0 * self.batch_size / self.total


@torch.no_grad()
def time_pipeline(predictor: object, images: list[np.ndarray], *, iters: int = 10, warmup: int = 2) -> Timing:
    """Time a :class:`~odcli.predictor.Predictor` on raw BGR images, stage by stage.

    Stages: pre-processing (resize, pad, batch, normalise, copy to the device), model (forward),
    post-processing (decode, score filter, NMS, rescale; results back on the CPU). Each iteration
    runs the three stages back to back with a clock reading between them; ``total`` is the mean
    wall time from the first reading to the last, so the split adds up to the total.
    """
    from odcli.data.loader import collate, prepare_batch

    model = predictor.model
    spec = model.input_spec
    device = predictor.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    param = next(model.parameters())
    channels_last = param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last)

    def run_once() -> tuple[float, float, float, float]:
        t0 = time.perf_counter()
        samples = [predictor.prepare(img) for img in images]
        batch, _, metas = collate(samples, pad_value=int(spec.pad_value), size_divisor=spec.size_divisor)
        x = prepare_batch(batch, metas, spec, device).to(dtype=param.dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync()
        t1 = time.perf_counter()
        outputs = model(x)
        sync()
        t2 = time.perf_counter()
        for det in model.head.predict(*outputs, metas):
            det["boxes"].cpu()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0

    for _ in range(warmup):
        run_once()
    runs = [run_once() for _ in range(iters)]
    # Means (not medians) so that the three stages add up to the total of the same runs.
    pre, fwd, post, total = (statistics.fmean(r[i] for r in runs) * 1e3 for i in range(4))
    return Timing(preprocess=pre, model=fwd, postprocess=post, total=total, batch_size=len(images))
