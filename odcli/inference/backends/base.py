"""What every runner of an exported file shares: the :class:`Backend` protocol and its common half.

A runner only has to say how its engine maps named input arrays to named output arrays
(:meth:`ExportedBackend.infer`); :class:`ExportedBackend` does the rest the same way for every
format — checks the batch against the file's canvas, splits it for a fixed-batch file, and turns
the outputs into what :meth:`odcli.models.detector.Detector.predict` returns.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from odcli.errors import OdetError
from odcli.inference.backends.meta import ExportMeta
from odcli.models.dense_head import Decoded, Detections
from odcli.models.heads.dense import postprocess_per_class, postprocess_per_level

__all__ = ["Backend", "ExportedBackend", "graph_feeds", "import_optional"]

#: The pip extra that installs each optional runtime.
EXTRAS = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "openvino": "openvino"}


def import_optional(name: str, what: str = "") -> ModuleType:
    """Import an optional dependency or fail with one line saying how to install it.

    Args:
        name: the module (``onnxruntime``, ``openvino``, ``tensorrt``).
        what: what needs it, for the message (e.g. ``"running .onnx files"``).
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        extra = EXTRAS.get(name)
        fix = f'pip install "odet[{extra}]"' if extra else f"pip install {name}"
        need = f" (needed for {what})" if what else ""
        raise OdetError(f"{name} is not installed{need}: {fix}") from None


def graph_feeds(
    meta: ExportMeta,
    images: torch.Tensor | np.ndarray,
    metas: Sequence[dict[str, Any]],
    *,
    min_score: float | None = None,
) -> dict[str, np.ndarray]:
    """The named inputs of an exported graph for a batch, checked against its canvas.

    Args:
        meta: the file's metadata. images: (B, 3, H, W) float32 BGR 0–255 canvases.
        metas: per image ``img_shape`` (h, w) and ``scale_factor`` (sx, sy).
        min_score: for files that take it (None: 0, the test config).

    Raises:
        OdetError: images of another shape than the canvas, or not one meta per image.
    """
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    h, w = meta.canvas
    if array.ndim != 4 or array.shape[1:] != (3, h, w):
        raise OdetError(
            f"this {meta.arch} export takes (B, 3, {h}, {w}) images, got {tuple(array.shape)}; "
            f"re-export with --imgsz for another size"
        )
    if len(metas) != len(array):
        raise OdetError(f"{len(array)} images but {len(metas)} metas")
    feeds = {
        "images": np.ascontiguousarray(array, dtype=np.float32),
        "img_shape": np.array([list(m["img_shape"])[:2] for m in metas], dtype=np.float32),
        "scale_factor": np.array([list(m["scale_factor"])[:2] for m in metas], dtype=np.float32),
    }
    if meta.min_score_input:
        feeds["min_score"] = np.array([min_score or 0.0], dtype=np.float32)
    return feeds


@runtime_checkable
class Backend(Protocol):
    """A runner of an exported detector.

    Attributes:
        name: ``onnxruntime``, ``openvino``, ``torchscript`` or ``tensorrt``.
        meta: what the file says about itself (:class:`~odcli.inference.backends.meta.ExportMeta`).

    ``images`` are (B, 3, H, W) float32 BGR 0–255 canvases of the file's (H, W), as
    :func:`~odcli.inference.backends.inputs.canvas_batch` builds them; ``metas`` per image
    ``img_shape`` (h, w) and ``scale_factor`` (sx, sy), as odet's test pipeline sets them.
    """

    name: str
    meta: ExportMeta

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The file's outputs by name for one batch of its inputs by name (no checks)."""
        ...

    def run(
        self,
        images: torch.Tensor | np.ndarray,
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
    ) -> dict[str, np.ndarray]:
        """The outputs for any number of images (split into the file's batch size if it has one);
        ``min_score`` feeds the graph's threshold where it has one (NMS exports)."""
        ...

    def predict(
        self,
        images: torch.Tensor | np.ndarray,
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
        max_dets: int | None = None,
    ) -> Detections:
        """Per image ``{"boxes": (K, 4) xyxy original pixels, "scores": (K,), "labels": (K,) int64}``
        (CPU tensors, best first), as ``model.predict(..., rescale=True)``; ``min_score`` /
        ``max_dets`` keep those scoring at least that, at most that many (as the heads' postprocess)."""
        ...

    def decode(self, images: torch.Tensor | np.ndarray, metas: Sequence[dict[str, Any]]) -> Decoded:
        """Every prior's scores (B, N, C) and boxes (B, N, 4) xyxy canvas pixels (``--no-nms`` files)."""
        ...


class ExportedBackend:
    """The format-independent part of a :class:`Backend`; subclasses set ``name`` and ``meta`` and
    implement :meth:`infer`."""

    name = "exported"
    meta: ExportMeta

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def feeds(
        self,
        images: torch.Tensor | np.ndarray,
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
    ) -> dict[str, np.ndarray]:
        """The named inputs for a batch (:func:`graph_feeds`)."""
        return graph_feeds(self.meta, images, metas, min_score=min_score)

    def run(
        self,
        images: torch.Tensor | np.ndarray,
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
    ) -> dict[str, np.ndarray]:
        feeds = self.feeds(images, metas, min_score=min_score)
        size, total = self.meta.batch, len(metas)
        if size is None or size == total:
            return self.infer(feeds)
        # A fixed-batch file: whole chunks, the last one filled up by repeating its last image.
        shared = {k: v for k, v in feeds.items() if k == "min_score"}
        batched = {k: v for k, v in feeds.items() if k not in shared}
        chunks: list[dict[str, np.ndarray]] = []
        for start in range(0, total, size):
            part = {k: v[start : start + size] for k, v in batched.items()}
            short = size - len(part["images"])
            if short:
                part = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in part.items()}
            chunks.append(self.infer({**part, **shared}))
        return {k: np.concatenate([c[k] for c in chunks])[:total] for k in chunks[0]}

    def predict(
        self,
        images: torch.Tensor | np.ndarray,
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
        max_dets: int | None = None,
    ) -> Detections:
        outputs = self.run(images, metas, min_score=min_score)
        return self.detections(outputs, metas, min_score=min_score, max_dets=max_dets)

    def detections(
        self,
        outputs: dict[str, np.ndarray],
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
        max_dets: int | None = None,
    ) -> Detections:
        """What :meth:`predict` returns, from the outputs :meth:`run` gave for these ``metas``.

        With NMS in the graph the rows are best first, so the detections scoring at least
        ``min_score`` (then the first ``max_dets``) are a prefix of each image's ``num_dets``;
        raw outputs go through odet's PyTorch post-processing, exactly upstream's, with the limits.
        """
        if not self.meta.nms:
            decoded = self.decoded(outputs)
            post = postprocess_per_level if self.meta.postprocess == "per_level" else postprocess_per_class
            cfg = self.meta.nms_config()
            return post(decoded, list(metas), cfg, min_score=min_score, max_dets=max_dets)
        scores = np.asarray(outputs["scores"], dtype=np.float32)
        counts = outputs["num_dets"].astype(np.int64)
        if min_score is not None:
            counts = np.minimum(counts, (scores >= min_score).sum(axis=1))
        if max_dets is not None:
            counts = np.minimum(counts, max_dets)
        dets = []
        for i, n in enumerate(counts.tolist()):
            dets.append(
                {
                    "boxes": torch.from_numpy(
                        np.ascontiguousarray(outputs["boxes"][i, :n], dtype=np.float32)
                    ),
                    "scores": torch.from_numpy(np.ascontiguousarray(scores[i, :n])),
                    "labels": torch.from_numpy(outputs["labels"][i, :n].astype(np.int64)),
                }
            )
        return dets

    def decode(self, images: torch.Tensor | np.ndarray, metas: Sequence[dict[str, Any]]) -> Decoded:
        if self.meta.nms:
            raise OdetError(
                "this file was exported with NMS in the graph: it has no raw outputs (--no-nms has)"
            )
        return self.decoded(self.run(images, metas))

    def decoded(self, outputs: dict[str, np.ndarray]) -> Decoded:
        """The raw outputs of a ``--no-nms`` file as odet's ``Decoded`` stage."""
        return Decoded(
            scores=torch.from_numpy(np.asarray(outputs["scores"], dtype=np.float32)),
            boxes=torch.from_numpy(np.asarray(outputs["boxes"], dtype=np.float32)),
            level_counts=self.meta.level_counts,
        )
