"""The options several commands share, defined once so their names, help texts and checks agree,
and the parsers of option values that have a syntax of their own (``--boxes``, ``--batch-sizes``).

Each ``*_option`` function returns a fresh Typer option to use as a parameter default::

    def infer(weights: Path | None = weights_option("Default: the latest run's best."), ...) -> None:
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from odcli.errors import OdetError

if TYPE_CHECKING:
    import numpy as np

    from odcli.inference.detect import DetectionSettings
    from odcli.inference.load import LoadedModel
    from odcli.inference.outputs import SaveOptions
    from odcli.inference.predict_options import PredictOptions
    from odcli.inference.predictor import Predictor
    from odcli.inference.runner import ExportedPredictor, LoadedExport

WEIGHTS_HELP = (
    "Weights file: an odet .safetensors checkpoint, an MMDetection .pth or a PaddleDetection .pdparams."
)
EXPORTED_HELP = "Or a file odet export wrote: .onnx, .xml (OpenVINO), .torchscript, .engine (TensorRT)."
BACKEND_HELP = (
    "What runs an exported file: onnxruntime (.onnx default), openvino (.xml; also reads .onnx), "
    "tensorrt (.engine; for .onnx ONNX Runtime's TensorRT provider) or torch (checkpoints, TorchScript). "
    "Default: by the file's suffix."
)
ARCH_HELP = "Zoo model name, e.g. rtmdet_tiny, retinanet_r18, ppyoloe_s."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."
SET_HELP = "Override a recipe value: section.key=value, e.g. --set data.root=/data/coco (repeatable)."


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def weights_option(note: str = "") -> Any:
    """``--weights`` / ``-w``: a weights file (``note`` says what the command does without one)."""
    return typer.Option(None, "--weights", "-w", help=_join(WEIGHTS_HELP, note))


def arch_option(note: str = "", *, required: bool = False) -> Any:
    """``--arch``: a zoo model name (``note``: what it is for in this command)."""
    return typer.Option(... if required else None, "--arch", help=_join(ARCH_HELP, note))


def backend_option() -> Any:
    """``--backend``: the runtime of an exported file (see :func:`odcli.inference.runner.check_backend`)."""
    return typer.Option(None, "--backend", help=BACKEND_HELP)


def device_option() -> Any:
    """``--device``: where the model runs (checked by :func:`odcli.runtime.device.resolve_device`)."""
    return typer.Option("auto", "--device", help=DEVICE_HELP)


def out_option(default: Path | None, what: str) -> Any:
    """``--out`` / ``-o``: where the command writes (``what``: the files and the default)."""
    return typer.Option(default, "--out", "-o", help=what)


def set_option() -> Any:
    """``--set section.key=value`` (repeatable): recipe overrides, validated when the recipe is built."""
    return typer.Option([], "--set", metavar="SECTION.KEY=VALUE", help=SET_HELP)


def batch_size_option(default: int) -> Any:
    """``--batch-size`` / ``-b``: images per forward pass (check with :func:`check_at_least`)."""
    return typer.Option(default, "--batch-size", "-b", help="Images per forward pass.")


def workers_option(default: int = 2) -> Any:
    """``--workers``: data-loading worker processes."""
    return typer.Option(default, "--workers", help="Data loading worker processes (0 = in this process).")


def compile_option(note: str) -> Any:
    """``--compile``: ``torch.compile`` the model first (``note``: the trade-off in this command)."""
    return typer.Option(False, "--compile", help=_join("torch.compile the model", note))


@dataclass(frozen=True)
class InferOptions:
    """The ``odet infer`` options its image and video halves share."""

    weights: Path
    arch: str | None
    out: Path
    score_thr: float
    device: str
    compile_model: bool
    raw_boxes: bool
    backend: str | None = None
    predict: PredictOptions | None = None  # --iou, --classes, --imgsz, --max-det, --half
    save: SaveOptions | None = None  # --save-txt, --save-conf, --save-crop

    def load(self) -> tuple[LoadedModel | LoadedExport, Predictor | ExportedPredictor, DetectionSettings]:
        """The model (a checkpoint's, or an exported file opened by ``backend``) these options name,
        a predictor that keeps all it returns, and the settings that select, threshold, clip and name
        its detections (the predict options applied: :mod:`odcli.inference.predict_options`)."""
        from odcli.cli.common import console
        from odcli.inference.detect import DetectionSettings
        from odcli.inference.outputs import output_header
        from odcli.inference.predict_options import PredictOptions, configure_predictor
        from odcli.inference.runner import load_predictor

        predict = self.predict or PredictOptions()
        predict.check(self.device)
        loaded, predictor = load_predictor(
            self.weights,
            arch=self.arch,
            backend=self.backend,
            device=self.device,
            compile_model=self.compile_model,
        )
        predictor, applied = configure_predictor(predict, loaded, predictor)
        for note in applied.notes:
            console.print(f"note: {note}")
        used = {"score_thr": self.score_thr, **applied.settings, "raw_boxes": self.raw_boxes}
        settings = DetectionSettings(
            loaded.classes, loaded.cat_ids, score_thr=self.score_thr, raw_boxes=self.raw_boxes,
            max_dets=applied.max_dets, labels=applied.labels,
            header=output_header(self.weights, loaded.arch, used),
        )  # fmt: skip
        return loaded, predictor, settings


def check_at_least(value: int | None, flag: str, minimum: int = 1) -> None:
    """Fail with one line when an integer option is below ``minimum`` (None = not given: fine)."""
    if value is not None and value < minimum:
        raise OdetError(f"{flag} must be >= {minimum}, got {value}")


def check_fraction(value: float, flag: str) -> None:
    """Fail with one line when a score-like option is outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise OdetError(f"{flag} must be in [0, 1], got {value}")


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8"`` → ``[1, 8]`` (``--batch-sizes``): positive integers, comma-separated."""
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise OdetError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise OdetError(f"--batch-sizes must be positive integers, got {text!r}")
    return sizes


def parse_boxes(text: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``--boxes "x1,y1,x2,y2,label;…"`` → boxes (G, 4) xyxy original pixels, labels (G,) int64.

    A label is a class index or one of ``classes``; without one it is 0.
    """
    import numpy as np

    boxes, labels = [], []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields = [f.strip() for f in part.split(",")]
        if len(fields) not in (4, 5):
            raise OdetError(f"--boxes entry {part!r}: expected x1,y1,x2,y2[,label]")
        try:
            box = [float(v) for v in fields[:4]]
        except ValueError:
            raise OdetError(f"--boxes entry {part!r}: coordinates must be numbers") from None
        if box[2] <= box[0] or box[3] <= box[1]:
            raise OdetError(f"--boxes entry {part!r}: need x2 > x1 and y2 > y1")
        label = fields[4] if len(fields) == 5 else "0"
        if label.isdigit():
            index = int(label)
        elif label in classes:
            index = classes.index(label)
        else:
            raise OdetError(f"--boxes label {label!r} is neither a class index nor a class name")
        boxes.append(box)
        labels.append(index)
    if not boxes:
        raise OdetError("--boxes is empty; give x1,y1,x2,y2,label;…")
    return np.array(boxes, np.float32), np.array(labels, np.int64)
