"""Model cost: parameters, multiply-accumulates (MACs) and timed inference split into stages
(``odet profile``: :func:`profile_models`; PyTorch models and exported files side by side, timed
by :mod:`odcli.inference.timing`), and the throughput of a recipe's training data pipeline.

MACs follow MMDetection's published convention (mmengine's fvcore-style counter): a convolution
or matrix product counts one per multiply-accumulate (bias excluded), an inference BatchNorm two
per element, nearest upsampling one per output element, adaptive average pooling one per input
element; activations, additions and max-pooling count nothing. RTMDet-tiny at 640×640 is 8.089 G.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from odcli.errors import OdetError
from odcli.inference.load import LoadedModel, exported_format, load_model, model_config_of
from odcli.inference.predictor import Predictor
from odcli.inference.runner import ExportedPredictor, LoadedExport, load_exported
from odcli.inference.timing import ExportedStages, Timing, TorchStages, time_interleaved
from odcli.models.detector import Detector
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
class ModelProfile:
    """One row of ``odet profile``: parameter counts, MACs at ``size``², latency per batch size, and
    what ran it (``backend``: ``torch`` or an exported file's runtime)."""

    model: str
    params: int
    trainable: int
    macs: int
    timing: dict[int, Timing] = field(default_factory=dict)
    backend: str = "torch"
    speedup: dict[int, float] = field(default_factory=dict)
    size: int = 0  # the square input side it was measured at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``--json`` writes): each timing with its ``throughput`` and its
        ``speedup`` (the first row's total over this row's, same rounds)."""
        return {
            "model": self.model,
            "backend": self.backend,
            "params": self.params,
            "trainable": self.trainable,
            "macs": self.macs,
            "timing": {
                bs: vars(t) | {"throughput": t.throughput, "speedup": self.speedup.get(bs)}
                for bs, t in self.timing.items()
            },
        }


#: The input side ``odet profile`` times at when neither ``--size`` nor an exported file says.
DEFAULT_SIZE = 640
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


def check_dtype(dtype: str, device: torch.device) -> None:
    """Fail with one line unless ``dtype`` is ``fp32``, or ``fp16`` on a CUDA ``device``."""
    if dtype not in ("fp32", "fp16"):
        raise OdetError(f"--dtype must be fp32 or fp16, got {dtype!r}")
    if dtype == "fp16" and device.type != "cuda":
        raise OdetError(
            "--dtype fp16 needs a CUDA device (CPU kernels for fp16 convolutions are slow or missing)"
        )


def profile_size(size: int | None, exported: Sequence[LoadedExport]) -> int:
    """The square input side every row is timed at: ``size``, else the canvas of the exported files
    (all rows must share it), else 640.

    Raises:
        OdetError: an exported file whose canvas is not ``size``×``size`` (or not square).
    """
    side = size if size is not None else (exported[0].meta.canvas[0] if exported else DEFAULT_SIZE)
    for item in exported:
        h, w = item.meta.canvas
        if (h, w) != (side, side):
            why = f"pass --size {h}" if h == w else "profile times square inputs"
            raise OdetError(
                f"{item.source.name} was exported for {w}x{h} inputs and this profile times {side}x{side}: "
                f"{why} (or re-export it with --imgsz {side} {side})"
            )
    return side


def _open_target(target: str, device: torch.device) -> tuple[LoadedModel | LoadedExport, str]:
    """(model or exported file, row label) of a zoo name, a recipe, an odet checkpoint or an export."""
    path = Path(target).expanduser()
    if exported_format(path) is not None:
        # As many runtime threads as torch uses: the rows compete on equal terms.
        exported = load_exported(path, device=str(device), threads=torch.get_num_threads())
        return exported, f"{path.name} ({exported.backend.name})"
    if target.endswith(".safetensors"):
        return load_model(target, device="cpu", optimize=False), path.name
    label = Path(target).stem if target.endswith(RECIPE_SUFFIXES) else target
    return load_model(config=model_config_of(target), device="cpu", optimize=False), label


def _counted(
    model: Detector, label: str, size: int, backend: str, cache: dict[tuple, tuple[int, int, int]]
) -> ModelProfile:
    """A row with ``model``'s counts. An exported file's (``backend`` other than torch) are those of
    its architecture: of an earlier row with the same arch and classes where there is one (``cache``:
    (arch, classes) → params, trainable, MACs), else of the zoo model; a PyTorch model is always
    counted (its recipe may differ from the zoo's)."""
    key = (model.arch, model.num_classes)
    if backend == "torch" or key not in cache:
        cache[key] = (*count_parameters(model), count_macs(model, torch.zeros(1, 3, size, size)))
    total, trainable, macs = cache[key]
    return ModelProfile(label, total, trainable, macs, backend=backend, size=size)


def profile_models(
    targets: Sequence[str],
    *,
    size: int | None = None,
    batch_sizes: Sequence[int],
    device: torch.device,
    dtype: str = "fp32",
    iters: int = 10,
    optimize: bool = True,
    compile_model: bool = False,
    min_score: float | None = None,
    warmup: int = 2,
) -> list[ModelProfile]:
    """Measure each of ``targets`` (zoo names, recipe files, odet checkpoints, exported files).

    Parameters and MACs are counted on the model as built (BN unfused; an exported file: its
    architecture's) for one ``size``×``size`` image; latency is timed on ``device`` with the input
    resized and padded to ``size``×``size`` (:func:`profile_size`), every target in each round
    (:func:`~odcli.inference.timing.time_interleaved`). ``speedup``: the first row's total over
    each row's, from the same rounds.

    Args:
        dtype: ``fp32``, or ``fp16`` (CUDA only), for the PyTorch models.
        optimize: fold BN and use channels-last before timing (PyTorch models; as ``infer``).
        compile_model: also ``torch.compile`` the PyTorch models' forward before timing.
        warmup: untimed rounds before the ``iters`` timed ones.
        min_score: time the detections scoring at least this (``odet infer``'s display threshold:
            post-processing stops there); None: all of the upstream test config (as ``eval``).

    Raises:
        OdetError: an unknown dtype, fp16 off CUDA (:func:`check_dtype`), an unknown model, an
            exported file of another size, ``compile_model`` with no PyTorch model to compile.
    """
    from odcli.models.fuse import compile_for_inference, optimize_for_inference, to_half
    from odcli.models.zoo import build_from_config, model_config

    check_dtype(dtype, device)
    opened = [_open_target(target, device) for target in targets]
    exported = [item for item, _ in opened if isinstance(item, LoadedExport)]
    size = profile_size(size, exported)
    if compile_model and len(exported) == len(opened):
        raise OdetError("--compile compiles PyTorch models, and every model here is an exported file")
    rows: list[ModelProfile] = []
    timers: list[TorchStages | ExportedStages] = []
    counts: dict[tuple, tuple[int, int, int]] = {}
    for item, label in opened:
        if isinstance(item, LoadedExport):
            arch = build_from_config(model_config(item.arch, num_classes=item.meta.num_classes))
            rows.append(_counted(arch, label, size, item.backend.name, counts))
            timers.append(ExportedStages(ExportedPredictor(item.backend), min_score))
            continue
        model = item.model
        rows.append(_counted(model, label, size, "torch", counts))
        model = model.to(device).eval()
        if optimize:
            optimize_for_inference(model)
        if compile_model:
            compile_for_inference(model)
        if dtype == "fp16":
            model = to_half(model)  # RTMDet's channel attention stays float32, as under autocast
        model.input_spec = replace(model.input_spec, test_scale=(size, size), pad_to=(size, size))
        timers.append(TorchStages(Predictor(model), min_score))
    for bs in batch_sizes:
        timings = time_interleaved(timers, sample_images(bs, size), iters=iters, warmup=warmup)
        for row, timing in zip(rows, timings, strict=True):
            row.timing[bs] = timing
            row.speedup[bs] = timings[0].total / timing.total
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
