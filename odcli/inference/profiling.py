"""Model cost: parameters, multiply-accumulates (MACs) and timed inference split into stages
(``odet profile``: :func:`profile_models`), and the throughput of a recipe's training data pipeline.

MACs follow MMDetection's published convention (mmengine's fvcore-style counter): a convolution
or matrix product counts one per multiply-accumulate (bias excluded), an inference BatchNorm two
per element, nearest upsampling one per output element, adaptive average pooling one per input
element; activations, additions and max-pooling count nothing. RTMDet-tiny at 640×640 is 8.089 G.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from odcli.errors import OdetError
from odcli.inference.load import LoadedModel, load_model, model_config_of
from odcli.inference.predictor import Predictor
from odcli.recipe import RECIPE_SUFFIXES

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
    """Milliseconds per batch: the median of each stage, and the median of the whole pipeline timed
    end to end in runs of its own (so ``total`` is a measurement, not the sum of the stages).

    Attributes:
        preprocess: resize, pad, batch, normalise, copy to the device.
        model: the forward pass.
        postprocess: decode, score filter, NMS, rescale; results back on the CPU.
        total: one :class:`~odcli.inference.predictor.Predictor` call on the raw images.
        batch_size: images per batch.
    """

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
def time_pipeline(
    predictor: Predictor, images: list[np.ndarray], *, iters: int = 10, warmup: int = 2
) -> Timing:
    """Time a :class:`~odcli.inference.predictor.Predictor` on raw (H, W, 3) uint8 BGR images.

    Each iteration makes two runs back to back, so both see the same machine load: a staged run
    with a clock reading (after a device sync) between pre-processing, forward and post-processing,
    and an end-to-end run of ``predictor(images)`` — the call ``odet infer`` makes — timed from
    outside. Medians over ``iters`` iterations after ``warmup`` untimed ones.
    """
    from odcli.data.collate import collate
    from odcli.data.normalize import prepare_batch

    model = predictor.model
    spec = model.input_spec
    device = predictor.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def staged() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        samples = [predictor.prepare(img) for img in images]
        batch, _, metas = collate(samples, pad_value=int(spec.pad_value), size_divisor=spec.size_divisor)
        x = prepare_batch(batch, metas, spec, device).to(predictor.dtype)
        x = x.contiguous(memory_format=torch.channels_last)  # as Predictor feeds it
        sync()
        t1 = time.perf_counter()
        outputs = model(x)
        sync()
        t2 = time.perf_counter()
        for det in model.head.predict(*outputs, metas):
            det["boxes"].cpu()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def end_to_end() -> float:
        t0 = time.perf_counter()
        predictor(images)  # returns CPU tensors: the copy back waits for the device
        sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        staged()
        end_to_end()
    runs = [(*staged(), end_to_end()) for _ in range(iters)]
    pre, fwd, post, total = (statistics.median(r[i] for r in runs) * 1e3 for i in range(4))
    return Timing(preprocess=pre, model=fwd, postprocess=post, total=total, batch_size=len(images))


@dataclass
class ModelProfile:
    """One row of ``odet profile``: parameter counts, MACs at ``size``², latency per batch size."""

    model: str
    params: int
    trainable: int
    macs: int
    timing: dict[int, Timing] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``--json`` writes): each timing with its ``throughput``."""
        return {
            "model": self.model,
            "params": self.params,
            "trainable": self.trainable,
            "macs": self.macs,
            "timing": {bs: vars(t) | {"throughput": t.throughput} for bs, t in self.timing.items()},
        }


#: Real COCO-like images to time with (bundled with the repository); random ones where it is absent.
SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "recipes" / "data" / "coco8" / "images"


def sample_images(n: int, size: int) -> list[np.ndarray]:
    """``n`` (H, W, 3) uint8 BGR images: the bundled coco8 ones in file order (repeated as needed),
    else random ``size``-wide 4:3 images."""
    from odcli.data.image_io import read_image

    files = sorted(SAMPLE_IMAGES.glob("*.jpg")) if SAMPLE_IMAGES.is_dir() else []
    if files:
        return [read_image(files[i % len(files)]) for i in range(n)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8) for _ in range(n)]


def _load_target(target: str) -> tuple[LoadedModel, str]:
    """(random or checkpoint weights, row label) of a zoo name, a recipe file or an odet checkpoint."""
    if target.endswith(".safetensors"):
        return load_model(target, device="cpu", optimize=False), Path(target).name
    label = Path(target).stem if target.endswith(RECIPE_SUFFIXES) else target
    return load_model(config=model_config_of(target), device="cpu", optimize=False), label


def check_dtype(dtype: str, device: torch.device) -> None:
    """Fail with one line unless ``dtype`` is ``fp32``, or ``fp16`` on a CUDA ``device``."""
    if dtype not in ("fp32", "fp16"):
        raise OdetError(f"--dtype must be fp32 or fp16, got {dtype!r}")
    if dtype == "fp16" and device.type != "cuda":
        raise OdetError(
            "--dtype fp16 needs a CUDA device (CPU kernels for fp16 convolutions are slow or missing)"
        )


def profile_models(
    targets: Sequence[str],
    *,
    size: int,
    batch_sizes: Sequence[int],
    device: torch.device,
    dtype: str = "fp32",
    iters: int = 10,
    optimize: bool = True,
    compile_model: bool = False,
) -> list[ModelProfile]:
    """Measure each of ``targets`` (zoo names, recipe files, odet checkpoints).

    Parameters and MACs are counted on the model as built (BN unfused) for one ``size``×``size``
    image; latency is timed on ``device`` with the input resized and padded to ``size``×``size``.

    Args:
        dtype: ``fp32``, or ``fp16`` (CUDA only).
        optimize: fold BN and use channels-last before timing.
        compile_model: also ``torch.compile`` the forward before timing.

    Raises:
        OdetError: an unknown dtype, fp16 off CUDA (:func:`check_dtype`), an unknown model.
    """
    from odcli.models.fuse import compile_for_inference, optimize_for_inference

    check_dtype(dtype, device)
    rows = []
    for target in targets:
        loaded, label = _load_target(target)
        model = loaded.model
        total, trainable = count_parameters(model)
        row = ModelProfile(label, total, trainable, count_macs(model, torch.zeros(1, 3, size, size)))
        model = model.to(device).eval()
        if optimize:
            optimize_for_inference(model)
        if compile_model:
            compile_for_inference(model)
        if dtype == "fp16":
            model = model.half()
        model.input_spec = replace(model.input_spec, test_scale=(size, size), pad_to=(size, size))
        predictor = Predictor(model)
        for bs in batch_sizes:
            row.timing[bs] = time_pipeline(predictor, sample_images(bs, size), iters=iters)
        rows.append(row)
    return rows


def data_pipeline_throughput(recipe_path: Path, n: int = 16) -> dict[str, Any]:
    """Images per second through a recipe's training data (its format, COCO or YOLO, and its
    pipeline: decode + augment) in this process, over ``n`` samples.

    Returns:
        ``images`` (n), ``images_per_s``, and what was read: ``format`` and ``dataset_images``.
    """
    from odcli.data.datasets import build_dataset
    from odcli.data.pipelines import build_train_pipeline
    from odcli.models.zoo import input_spec_of
    from odcli.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    transforms = build_train_pipeline(recipe.data, input_spec_of(recipe.model))
    dataset = build_dataset(recipe.data, recipe.data_root, "train", transforms)
    start = time.perf_counter()
    for i in range(n):
        dataset[(i % len(dataset), i)]
    seconds = time.perf_counter() - start
    return {
        "images": n,
        "images_per_s": n / seconds,
        "format": recipe.data.format,
        "dataset_images": len(dataset),
    }
