"""Timed inference split into stages, for one predictor or several side by side (``odet profile``).

A PyTorch :class:`~odcli.inference.predictor.Predictor` and an exported file's
:class:`~odcli.inference.runner.ExportedPredictor` are timed the same way: each round makes a
staged run (clock readings between pre-processing, the model and post-processing) and an
end-to-end run of the call ``odet infer`` makes. :func:`time_interleaved` gives every contender
its round before the next round starts, so all of them see the same machine load and their
ratios hold on a busy machine where absolute numbers do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from odcli.inference.predictor import Predictor
from odcli.inference.runner import ExportedPredictor

__all__ = ["ExportedStages", "Timing", "TorchStages", "stages_of", "time_interleaved", "time_pipeline"]


@dataclass
class Timing:
    """Milliseconds per batch: the median of each stage, and the median of the whole pipeline timed
    end to end in runs of its own (so ``total`` is a measurement, not the sum of the stages).

    Attributes:
        preprocess: resize, pad, batch, normalise, copy to the device (exported files: onto the
            file's canvas; the graph normalises).
        model: the forward pass (exported files with NMS in the graph: the whole graph, its
            post-processing included).
        postprocess: decode, score filter, NMS, rescale; results back on the CPU (exported files:
            reading the outputs, and for ``--no-nms`` files odet's post-processing).
        total: one predictor call on the raw images.
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


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


class TorchStages:
    """The stages of a PyTorch :class:`Predictor` (its model as the predictor holds it);
    ``min_score``: the detections asked for, as ``odet infer``'s display threshold asks (None: all
    of the upstream test config)."""

    def __init__(self, predictor: Predictor, min_score: float | None = None) -> None:
        self.predictor = predictor
        self.min_score = min_score
        self.sync = _sync_for(predictor.device)

    @torch.no_grad()
    def staged(self, images: list[np.ndarray]) -> tuple[float, float, float]:
        """Seconds of (pre-processing, forward, post-processing) of one call on ``images``."""
        from odcli.data.collate import collate
        from odcli.data.normalize import prepare_batch

        predictor, model = self.predictor, self.predictor.model
        spec = model.input_spec
        t0 = time.perf_counter()
        samples = [predictor.prepare(img) for img in images]
        batch, _, metas = collate(samples, pad_value=int(spec.pad_value), size_divisor=spec.size_divisor)
        x = prepare_batch(batch, metas, spec, predictor.device).to(predictor.dtype)
        x = x.contiguous(memory_format=torch.channels_last)  # as Predictor feeds it
        self.sync()
        t1 = time.perf_counter()
        outputs = model(x)
        self.sync()
        t2 = time.perf_counter()
        for det in model.head.postprocess(model.head.decode(*outputs), metas, min_score=self.min_score):
            det["boxes"].cpu()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def end_to_end(self, images: list[np.ndarray]) -> float:
        """Seconds of ``predictor(images)`` (CPU tensors back: the copy waits for the device)."""
        t0 = time.perf_counter()
        self.predictor(images, min_score=self.min_score)
        self.sync()
        return time.perf_counter() - t0


class ExportedStages:
    """The stages of an :class:`ExportedPredictor`: canvases, the runtime, reading its outputs
    (``min_score``: as :class:`TorchStages`')."""

    def __init__(self, predictor: ExportedPredictor, min_score: float | None = None) -> None:
        self.predictor = predictor
        self.min_score = min_score

    def staged(self, images: list[np.ndarray]) -> tuple[float, float, float]:
        """Seconds of (pre-processing, the runtime, turning its outputs into detections)."""
        predictor = self.predictor
        t0 = time.perf_counter()
        batch, metas = predictor.canvases([predictor.prepare(img) for img in images])
        t1 = time.perf_counter()
        outputs = predictor.backend.run(batch, metas, min_score=self.min_score)  # numpy: the runtime is done
        t2 = time.perf_counter()
        predictor.backend.detections(outputs, metas, min_score=self.min_score)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def end_to_end(self, images: list[np.ndarray]) -> float:
        t0 = time.perf_counter()
        self.predictor(images, min_score=self.min_score)
        return time.perf_counter() - t0


def stages_of(predictor: Predictor | ExportedPredictor) -> TorchStages | ExportedStages:
    """The stage timer of either kind of predictor."""
    return ExportedStages(predictor) if isinstance(predictor, ExportedPredictor) else TorchStages(predictor)


def time_interleaved(
    contenders: Sequence[TorchStages | ExportedStages],
    images: list[np.ndarray],
    *,
    iters: int = 10,
    warmup: int = 2,
) -> list[Timing]:
    """Time several predictors on the same raw (H, W, 3) uint8 BGR images, round by round.

    Each round runs every contender once staged and once end to end, so all of them see the same
    machine load; medians over ``iters`` rounds after ``warmup`` untimed ones.
    """
    runs: list[list[tuple[float, ...]]] = [[] for _ in contenders]
    for round_index in range(warmup + iters):
        for timed, contender in zip(runs, contenders, strict=True):
            result = (*contender.staged(images), contender.end_to_end(images))
            if round_index >= warmup:
                timed.append(result)
    timings = []
    for timed in runs:
        pre, fwd, post, total = (statistics.median(r[i] for r in timed) * 1e3 for i in range(4))
        timings.append(Timing(pre, fwd, post, total, batch_size=len(images)))
    return timings


def time_pipeline(
    predictor: Predictor | ExportedPredictor, images: list[np.ndarray], *, iters: int = 10, warmup: int = 2
) -> Timing:
    """Time one predictor on raw images (:func:`time_interleaved` with one contender)."""
    return time_interleaved([stages_of(predictor)], images, iters=iters, warmup=warmup)[0]
