"""``odet export`` without the CLI: check the request, load the model, write the file."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from odcli.errors import OdetError
from odcli.inference.backends.base import import_optional
from odcli.inference.backends.meta import ExportMeta
from odcli.runtime.paths import check_output_location

__all__ = ["FORMATS", "ExportResult", "export_model", "resolve_format"]

#: Format → the file suffixes it is written with (the first is the one suggested).
FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "openvino": (".xml",),
    "torchscript": (".torchscript", ".pt", ".ts"),
    "tensorrt": (".engine", ".plan"),
}


@dataclass(frozen=True)
class ExportResult:
    """What was written: ``files`` (the main file first), its metadata and the seconds it took."""

    path: Path
    files: tuple[Path, ...]
    meta: ExportMeta
    seconds: float


def resolve_format(out: Path, fmt: str | None) -> str:
    """The format ``--format`` names, else the one ``-o``'s suffix says; they must agree.

    Raises:
        OdetError: an unknown format, a suffix that belongs to no format (without ``--format``) or
            to another one.
    """
    by_suffix = {s: f for f, suffixes in FORMATS.items() for s in suffixes}
    from_suffix = by_suffix.get(out.suffix.lower())
    if fmt is None:
        if from_suffix is None:
            known = ", ".join(f"{s} ({f})" for s, f in by_suffix.items())
            raise OdetError(
                f"-o {out}: cannot tell the format from {out.suffix or 'no suffix'}; use one of {known}"
            )
        return from_suffix
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise OdetError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out.suffix.lower() not in FORMATS[fmt]:
        raise OdetError(f"-o {out}: a {fmt} file must end with {' or '.join(FORMATS[fmt])}")
    return fmt


def check_dependencies(fmt: str) -> None:
    """Fail now, with the pip command, when the format's optional packages are missing."""
    if fmt != "torchscript":
        for name in ("onnx", "onnxscript"):  # the dynamo exporter writes through onnxscript
            import_optional(name, f"odet export --format {fmt}")
    if fmt == "openvino":
        import_optional("openvino", "odet export --format openvino")


def check_output(out: Path) -> None:
    """Fail now when ``out`` cannot be written (a directory, or a folder we cannot create or write)."""
    if out.is_dir():
        raise OdetError(f"-o {out} is a directory; give the file to write, e.g. {out / 'model.onnx'}")
    check_output_location(out.parent, "choose another -o")
    out.parent.mkdir(parents=True, exist_ok=True)


#: Calibration images an ``--int8`` export takes by default.
DEFAULT_CALIB_IMAGES = 64


def _check_int8(fmt: str, half: bool, calib: str | Path | None, count: int) -> list[Path]:
    """The calibration images of an ``--int8`` export, after checking it can be made."""
    if fmt != "onnx":
        raise OdetError(
            f"--int8 writes ONNX files (run them with ONNX Runtime, or OpenVINO with --backend openvino); "
            f"not --format {fmt}"
        )
    if half:
        raise OdetError("--int8 and --half exclude each other: give one")
    if calib is None:
        raise OdetError(f"--int8 needs --calib DIR: images like those the model will see ({count} are used)")
    from odcli.export.quantize import calibration_images

    return calibration_images(calib, count)


def export_model(
    weights: str | Path,
    out: str | Path,
    *,
    fmt: str | None = None,
    arch: str | None = None,
    imgsz: tuple[int, int] | None = None,
    batch: int | None = None,
    dynamic_batch: bool = False,
    nms: bool = True,
    half: bool = False,
    opset: int | None = None,
    int8: bool = False,
    calib: str | Path | None = None,
    calib_images: int = DEFAULT_CALIB_IMAGES,
) -> ExportResult:
    """Export a detector to ONNX, OpenVINO, TorchScript or a TensorRT engine.

    Args:
        weights: an odet ``.safetensors`` (its architecture is inside), an MMDetection ``.pth`` or a
            PaddleDetection ``.pdparams`` (with ``arch``).
        out: the file to write; ``fmt`` defaults to what its suffix says (:data:`FORMATS`).
        imgsz: the (H, W) canvas (default: the model's test size; see
            :func:`~odcli.export.build.export_canvas`).
        batch: fixed batch size (default 1); ``dynamic_batch``: any batch size instead.
        nms: the upstream post-processing in the graph (outputs are final detections).
        half: fp16 weights and compute (float32 inputs and outputs).
        opset: ONNX opset (default :data:`~odcli.export.onnx_file.DEFAULT_OPSET`).
        int8: quantise the network to int8 (ONNX only; :mod:`odcli.export.quantize`), its ranges
            calibrated on the first ``calib_images`` images of ``calib`` (a folder or a .txt list).

    Raises:
        OdetError: bad options, missing packages, an output that cannot be written, unusable weights.
    """
    out = Path(out).expanduser()
    fmt = resolve_format(out, fmt)
    if dynamic_batch and batch is not None:
        raise OdetError("--batch and --dynamic-batch exclude each other: give one")
    if batch is not None and batch < 1:
        raise OdetError(f"--batch must be >= 1, got {batch}")
    calib_paths = _check_int8(fmt, half, calib, calib_images) if int8 else None
    check_dependencies(fmt)
    check_output(out)

    from odcli.export.build import plan_export
    from odcli.export.onnx_file import DEFAULT_OPSET, MIN_OPSET, write_onnx
    from odcli.inference.load import load_model

    opset = DEFAULT_OPSET if opset is None else opset
    if opset < MIN_OPSET:
        raise OdetError(f"--opset {opset}: the exporter writes opset {MIN_OPSET} or newer")
    start = time.perf_counter()
    loaded = load_model(weights, arch=arch, device="cpu")  # BN folded; traced on the CPU
    plan = plan_export(
        loaded, imgsz=imgsz, batch=None if dynamic_batch else (batch or 1), nms=nms, half=half, fmt=fmt
    )
    files: tuple[Path, ...] = (out,)
    if fmt == "onnx":
        meta = write_onnx(plan, out, opset=opset)
        if calib_paths:
            from odcli.export.quantize import quantize_onnx

            meta = quantize_onnx(out, meta, calib_paths)
    elif fmt == "openvino":
        from odcli.export.openvino_file import write_openvino

        meta = write_openvino(plan, out, opset=opset)
        files = (out, out.with_suffix(".bin"))
    elif fmt == "torchscript":
        from odcli.export.torchscript_file import write_torchscript

        meta = write_torchscript(plan, out)
    else:
        from odcli.export.tensorrt_engine import build_engine, check_tensorrt_graph
        from odcli.inference.backends.tensorrt_backend import require_tensorrt, sidecar_path

        require_tensorrt()
        check_tensorrt_graph(plan.meta)
        with tempfile.TemporaryDirectory(prefix=".odet-export-", dir=out.parent) as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            meta = build_engine(onnx_path, out, write_onnx(plan, onnx_path, opset=opset), fp16=True)
        files = (out, sidecar_path(out))
    return ExportResult(path=out, files=files, meta=meta, seconds=time.perf_counter() - start)
