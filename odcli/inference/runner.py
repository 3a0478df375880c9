"""Exported files as models: open what ``odet export`` wrote with the runtime that runs it, and
predict on raw images exactly as :class:`~odcli.inference.predictor.Predictor` does.

:func:`load_predictor` is what ``odet infer`` calls: a checkpoint gives the PyTorch model and a
:class:`Predictor`, an exported file (told by its suffix, :func:`~odcli.inference.load.exported_format`)
a :class:`LoadedExport` and an :class:`ExportedPredictor` — the same methods, the same detections
(``boxes`` (K, 4) xyxy original pixels, ``scores`` (K,), ``labels`` (K,) int64, CPU tensors, best
first), so :func:`~odcli.inference.detect.detect_images` and the JSON records do not know which ran.

Which runtime runs a file (``--backend``, :data:`RUNNERS`): ``.onnx`` ONNX Runtime by default, or
OpenVINO (its Core reads ONNX), or ONNX Runtime's TensorRT execution provider (``tensorrt``);
``.xml`` OpenVINO; ``.torchscript``/``.ts``/``.pt`` TorchScript (``torch``); ``.engine``/``.plan``
TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odcli.data.sample import Sample
from odcli.errors import OdetError
from odcli.inference.backends.base import Backend
from odcli.inference.backends.inputs import canvas_batch, prepare_image, test_transforms
from odcli.inference.backends.meta import ExportMeta
from odcli.inference.load import LoadedModel, check_weights_path, exported_format, load_model
from odcli.inference.predictor import Predictor
from odcli.runtime.device import resolve_device

__all__ = [
    "BACKENDS",
    "RUNNERS",
    "ExportedPredictor",
    "LoadedExport",
    "check_backend",
    "load_exported",
    "load_predictor",
    "open_backend",
]

#: What ``--backend`` accepts: PyTorch (checkpoints, TorchScript files) or an exported file's runtime.
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
#: Export format → the backends that run it, the default first.
RUNNERS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "openvino", "tensorrt"),
    "openvino": ("openvino",),
    "torchscript": ("torch",),
    "tensorrt": ("tensorrt",),
}


def check_backend(backend: str | None, path: Path, fmt: str | None) -> str:
    """The backend that runs ``path`` (of export format ``fmt``, None for a checkpoint).

    Raises:
        OdetError: an unknown backend, or one that cannot run this kind of file.
    """
    if backend is not None and backend not in BACKENDS:
        raise OdetError(f"unknown --backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if fmt is None:
        if backend not in (None, "torch"):
            raise OdetError(
                f"--backend {backend} runs exported files and {path.name} is a PyTorch checkpoint: "
                f"export it first (odet export {path.name} -o model.onnx) or drop --backend"
            )
        return "torch"
    runners = RUNNERS[fmt]
    if backend is not None and backend not in runners:
        raise OdetError(
            f"{path.name} is a {fmt} file: --backend {backend} cannot run it (use {' or '.join(runners)})"
        )
    return backend or runners[0]


def _onnxruntime_device(device: str) -> str:
    """``--device`` → OnnxRuntimeBackend's device: CUDA where asked (``auto``: where torch and this
    onnxruntime both have it), else the CPU."""
    if device == "auto":
        import importlib.util

        if torch.cuda.is_available() and importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                return "cuda"
        return "cpu"
    return resolve_device(device).type


def open_backend(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> Backend:
    """The runner of an exported file, chosen by its suffix and ``backend`` (:func:`check_backend`).

    Args:
        path: the file ``odet export`` wrote.
        backend: ``onnxruntime``, ``openvino``, ``tensorrt`` or ``torch`` (TorchScript); None: the default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. OpenVINO runs on the CPU; TensorRT on CUDA.
        threads: intra-op threads for ONNX Runtime and OpenVINO (None: their default, one per core).

    Raises:
        OdetError: a missing file, not an exported file, a backend that cannot run it, its runtime
            not installed, a device it cannot use, or a file it cannot load.
    """
    path = Path(path).expanduser()
    check_weights_path(path)
    fmt = exported_format(path)
    if fmt is None:
        raise OdetError(f"{path.name} is not a file odet export writes (.onnx, .xml, .torchscript, .engine)")
    name = check_backend(backend, path, fmt)
    if name == "openvino":
        if device not in ("auto", "cpu"):
            raise OdetError(f"OpenVINO runs {path.name} on the CPU here: use --device cpu (or auto)")
        from odcli.inference.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(path, threads=threads)
    if name == "onnxruntime" or (name == "tensorrt" and fmt == "onnx"):
        from odcli.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

        ort_device = "tensorrt" if name == "tensorrt" else _onnxruntime_device(device)
        # Idle threads sleep: spinning ones slow down what runs between two calls — drawing and
        # encoding in infer, the other rows of a profile (~40 % on a PyTorch forward on 2 cores).
        return OnnxRuntimeBackend(path, device=ort_device, threads=threads, spinning=False)
    if name == "tensorrt":
        from odcli.inference.backends.tensorrt_backend import TensorRTBackend

        if device == "cpu":
            raise OdetError(f"{path.name} is a TensorRT engine: it runs on a CUDA GPU, not --device cpu")
        return TensorRTBackend(path, device="cuda" if device == "auto" else device)
    from odcli.inference.backends.torchscript_backend import TorchScriptBackend

    return TorchScriptBackend(path, device=str(resolve_device(device)))


def _backend_device(backend: Backend) -> torch.device:
    """Where a backend computes, as a torch device (ONNX Runtime: its first execution provider)."""
    own = getattr(backend, "device", None)
    if isinstance(own, torch.device):
        return own
    session = getattr(backend, "session", None)
    if session is not None and session.get_providers()[0] != "CPUExecutionProvider":
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class LoadedExport:
    """An exported file opened by its runtime, plus what its metadata says (cf. :class:`LoadedModel`).

    Attributes:
        backend: the runner (:class:`~odcli.inference.backends.base.Backend`).
        classes / cat_ids: K class names and COCO category ids in label order, from the file.
        meta: the file's :class:`~odcli.inference.backends.meta.ExportMeta`.
        source: the file.
    """

    backend: Backend
    classes: list[str]
    cat_ids: list[int]
    meta: ExportMeta
    source: Path

    @property
    def arch(self) -> str:
        return self.meta.arch

    @property
    def device(self) -> torch.device:
        return _backend_device(self.backend)

    @property
    def runtime(self) -> str:
        """``onnxruntime on cpu`` (``, int8`` for a quantised file): what runs the file, for the
        commands' summaries."""
        return f"{self.backend.name} on {self.device}" + (", int8" if self.meta.precision == "int8" else "")


def load_exported(
    path: str | Path,
    *,
    arch: str | None = None,
    backend: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    compile_model: bool = False,
) -> LoadedExport:
    """Open an exported file (:func:`open_backend`) and check the options given with it.

    Raises:
        OdetError: as :func:`open_backend`; ``compile_model`` (only PyTorch models compile); an
            ``arch`` other than the file's.
    """
    path = Path(path).expanduser()
    if compile_model:
        raise OdetError(
            f"--compile compiles PyTorch models; {path.name} is an exported file its runtime already "
            "optimised: drop --compile"
        )
    runner = open_backend(path, backend=backend, device=device, threads=threads)
    meta = runner.meta
    if arch is not None and arch != meta.arch:
        raise OdetError(f"{path.name} holds {meta.arch}, not {arch}: drop --arch (an exported file says)")
    return LoadedExport(runner, list(meta.classes), [int(c) for c in meta.cat_ids], meta, path)


class ExportedPredictor:
    """Raw BGR images → detections in original-image pixels, through an exported file.

    The interface of :class:`~odcli.inference.predictor.Predictor`: the file's own test pipeline
    (:func:`~odcli.inference.backends.inputs.test_transforms`), each batch on the file's canvas,
    the backend, and ``min_score`` / ``max_dets`` applied to its result (with NMS in the graph) or
    inside odet's post-processing (``--no-nms`` files).

    Args:
        backend: the runner of the file (:func:`open_backend`).
        score_thr: as :class:`Predictor`'s: detections must score above it (0 keeps all).
    """

    def __init__(self, backend: Backend, *, score_thr: float = 0.0) -> None:
        self.backend = backend
        self.meta = backend.meta
        self.score_thr = score_thr
        self.transforms = test_transforms(self.meta)
        self.device = _backend_device(backend)
        self.dtype = torch.float32  # the graph's inputs and outputs, whatever it computes in

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    @property
    def finest_stride(self) -> int:
        """Pixels per cell of the file's finest feature level (``odet infer``'s small-image warning)."""
        return int(min(self.meta.strides))

    def prepare(self, img: np.ndarray, *, file_name: str = "", image_id: int = 0) -> Sample:
        """Apply the file's test pipeline to one (H, W, 3) uint8 BGR image."""
        return prepare_image(self.transforms, img, file_name=file_name, image_id=image_id)

    def canvases(self, samples: Sequence[Sample]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Prepared samples → the file's (B, 3, H, W) float32 input and the metas."""
        return canvas_batch(samples, self.meta)

    def collated_canvases(self, images: torch.Tensor, metas: Sequence[dict[str, Any]]) -> np.ndarray:
        """A collated (B, 3, h, w) batch (padded with ``pad_value``, as the evaluation loader gives
        it) → the file's (B, 3, H, W) float32 canvases, the same pixels :meth:`canvases` makes.

        Raises:
            OdetError: a batch larger than the canvas.
        """
        h, w = self.meta.canvas
        if images.shape[2] > h or images.shape[3] > w:
            name = metas[0].get("file_name") or "an image"
            raise OdetError(
                f"{name}: resized to {images.shape[3]}x{images.shape[2]}, it does not fit this export's "
                f"{w}x{h} canvas"
            )
        batch = np.full((len(images), 3, h, w), self.meta.pad_value, dtype=np.float32)
        batch[:, :, : images.shape[2], : images.shape[3]] = images.numpy()
        return batch

    def predict_canvases(
        self,
        batch: np.ndarray,
        metas: Sequence[dict[str, Any]],
        *,
        min_score: float | None = None,
        max_dets: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections for a batch of canvases (``min_score`` / ``max_dets``: see :meth:`predict_samples`)."""
        dets = self.backend.predict(batch, metas, min_score=min_score, max_dets=max_dets)
        if self.score_thr <= 0:
            return dets
        # Best first, so those above the strict threshold are a prefix: cutting after max_dets is the same.
        return [{k: v[d["scores"] > self.score_thr] for k, v in d.items()} for d in dets]

    def predict_samples(
        self, samples: list[Sample], *, min_score: float | None = None, max_dets: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections (CPU tensors) for already-prepared samples: those scoring at least
        ``min_score``, at most ``max_dets`` per image, exactly those of the full result."""
        batch, metas = self.canvases(samples)
        return self.predict_canvases(batch, metas, min_score=min_score, max_dets=max_dets)

    def __call__(
        self, images: list[np.ndarray], *, min_score: float | None = None, max_dets: int | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections for raw BGR images (as :meth:`Predictor.__call__`)."""
        return self.predict_samples(
            [self.prepare(img) for img in images], min_score=min_score, max_dets=max_dets
        )


def load_predictor(
    weights: str | Path,
    *,
    arch: str | None = None,
    backend: str | None = None,
    device: str = "auto",
    compile_model: bool = False,
    score_thr: float = 0.0,
) -> tuple[LoadedModel | LoadedExport, Predictor | ExportedPredictor]:
    """The model a weights file or an exported file names, and the predictor that runs it.

    Checkpoints (``.safetensors``, upstream ``.pth`` / ``.pdparams`` with ``arch``) load as
    :func:`~odcli.inference.load.load_model` does (BN folded, channels-last); exported files as
    :func:`load_exported`.

    Raises:
        OdetError: see :func:`load_model`, :func:`load_exported`; ``backend`` other than ``torch``
            for a checkpoint.
    """
    path = Path(weights).expanduser()
    check_weights_path(path)
    fmt = exported_format(path)
    check_backend(backend, path, fmt)
    if fmt is not None:
        loaded = load_exported(path, arch=arch, backend=backend, device=device, compile_model=compile_model)
        return loaded, ExportedPredictor(loaded.backend, score_thr=score_thr)
    model = load_model(path, arch=arch, device=device, compile_model=compile_model)
    return model, Predictor(model.model, score_thr=score_thr)
