"""One model through every runtime odet has: forward and end-to-end latency, side by side in one run.

Contenders, all on the same COCO128 images (resized and padded by the model's test pipeline, batch 1):
torch eager; torch as ``odet infer`` runs it (BN folded, channels-last); ONNX Runtime and OpenVINO
(when installed) on the ``odet export`` files. Per contender: *forward* (the network; for exported
files the graph without NMS, which also decodes the boxes), *predict* (forward + the upstream
post-processing at the model's test config: for torch ``model.predict``, for exported files NMS in the
graph) and *predict@thr* (what ``odet infer`` asks for: only detections scoring at least its display
threshold). Rounds are interleaved — every contender times every image once per round, in a rotating
order — so machine load hits all alike; figures are medians. The last line reads
``ort_speedup=X e2e_ratio=Y``: X = torch-infer-path forward / ONNX Runtime forward, Y = torch-infer-path
predict / its forward (upstream test config). Usage::

    python bench/deploy.py [--weights W --arch A] [--images 8] [--rounds 5] [--threads N] [--display-thr 0.3]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from odcli.data.collate import collate
from odcli.data.image_io import read_image
from odcli.data.normalize import prepare_batch
from odcli.inference.load import load_model
from odcli.inference.predictor import Predictor

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "reference" / "mmdet" / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"
IMAGES = SHARED / "data" / "coco128" / "images"


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def interleaved(
    cases: dict[str, list[Callable[[], object]]], rounds: int, warmup: int = 1
) -> dict[str, float]:
    """Median ms of every case; ``cases[name][i]`` runs the case on image i. Each round times every
    (case, image) once, the cases' order rotating from round to round."""
    names = list(cases)
    for name in names:
        for fn in cases[name][:warmup]:
            fn()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for i in range(len(cases[names[0]])):
            for name in order:
                samples[name].append(_ms(cases[name][i]))
    return {name: statistics.median(v) for name, v in samples.items()}


def torch_cases(
    weights: Path, arch: str, paths: list[Path], display_thr: float
) -> tuple[dict[str, dict[str, list[Callable[[], object]]]], list[Any]]:
    """Forward / predict / predict@thr callables per image for torch eager and the infer path."""
    contenders: dict[str, dict[str, list[Callable[[], object]]]] = {}
    samples = None
    for name, optimize in (("torch eager", False), ("torch infer path", True)):
        model = load_model(weights, arch=arch, device="cpu", optimize=optimize).model.eval()
        predictor = Predictor(model)
        samples = samples or [predictor.prepare(read_image(p), file_name=p.name) for p in paths]
        spec = model.input_spec
        inputs = []
        for sample in samples:
            images, _, metas = collate(
                [sample], pad_value=int(spec.pad_value), size_divisor=spec.size_divisor
            )
            batch = prepare_batch(images, metas, spec, "cpu")
            inputs.append((batch.contiguous(memory_format=torch.channels_last) if optimize else batch, metas))

        def forward(x: torch.Tensor, m: torch.nn.Module = model) -> object:
            with torch.inference_mode():
                return m(x)

        def predict(x: torch.Tensor, metas: list[dict], m: torch.nn.Module = model) -> object:
            with torch.inference_mode():
                return m.predict(x, metas)

        def shown(x: torch.Tensor, metas: list[dict], m: torch.nn.Module = model) -> object:
            with torch.inference_mode():
                return m.head.postprocess(m.decode(x), metas, min_score=display_thr)

        contenders[name] = {
            "forward": [lambda x=x: forward(x) for x, _ in inputs],
            "predict": [lambda x=x, m=m: predict(x, m) for x, m in inputs],
            "predict@thr": [lambda x=x, m=m: shown(x, m) for x, m in inputs],
        }
    return contenders, samples or []


def _odet_exports(weights: Path, arch: str, folder: Path) -> tuple[Path, Path]:
    """``odet export`` to ONNX without and with NMS in the graph (the export helper's writer)."""
    from odcli.export.build import plan_export
    from odcli.export.onnx_file import write_onnx

    files = []
    for nms in (False, True):
        loaded = load_model(weights, arch=arch, device="cpu", optimize=True)
        path = folder / f"model_{'nms' if nms else 'raw'}.onnx"
        write_onnx(plan_export(loaded, nms=nms), path)
        files.append(path)
    return files[0], files[1]


class _Decode(torch.nn.Module):
    """The network plus box decoding: normalised images → (scores, boxes) of every prior."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.model.decode(images)
        return decoded.scores, decoded.boxes


def _plain_onnx_cases(
    weights: Path, arch: str, samples: list[Any], threads: int, folder: Path, notes: list[str]
) -> dict[str, dict[str, list[Callable[[], object]]]]:
    """ONNX Runtime forward on a plain ``torch.onnx.export`` of ``model.decode`` (no NMS, no
    normalisation in the graph): the fallback when ``odet export`` is unavailable."""
    if not importlib.util.find_spec("onnxruntime"):
        notes.append("onnxruntime not installed: pip install -e '.[export]'")
        return {}
    import onnxruntime as ort

    model = load_model(weights, arch=arch, device="cpu", optimize=True).model.eval()
    spec = model.input_spec
    inputs = []
    for sample in samples:
        images, _, metas = collate([sample], pad_value=int(spec.pad_value), size_divisor=spec.size_divisor)
        inputs.append(prepare_batch(images, metas, spec, "cpu").numpy())
    path = folder / "decode.onnx"
    with torch.no_grad():
        torch.onnx.export(_Decode(model), (torch.from_numpy(inputs[0]),), str(path), dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    notes.append("onnxruntime row: a plain torch.onnx.export of model.decode (forward only)")
    return {"onnxruntime": {"forward": [lambda x=x: session.run(None, {name: x}) for x in inputs]}}


def _openvino(path: Path, threads: int, notes: list[str]) -> Any:
    """The export helper's OpenVINO runner on ``path``; on an ``.onnx`` it does not take (it reads
    ``.xml`` files written by ``odet export --format openvino``), OpenVINO compiling the ONNX file."""
    from odcli.inference.backends.openvino_backend import OpenVINOBackend

    try:
        return OpenVINOBackend(path, threads=threads)
    except Exception:
        pass
    # TODO(lead): drop this once `odet export --format openvino` writes .xml files: time those instead.
    import numpy as np
    import openvino as ov

    from odcli.inference.backends.base import ExportedBackend
    from odcli.inference.backends.onnxruntime_backend import read_onnx_meta

    class OnnxOnOpenVINO(ExportedBackend):
        name = "openvino"

        def __init__(self) -> None:
            self.meta = read_onnx_meta(path)
            config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
            self.request = self.compiled.create_infer_request()

        def infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
            results = self.request.infer(feeds)
            return {o.get_any_name(): np.asarray(results[o]) for o in self.compiled.outputs}

    if not any("OpenVINO compiles" in n for n in notes):
        notes.append("openvino row: OpenVINO compiles the .onnx export itself (no .xml writer yet)")
    return OnnxOnOpenVINO()


def exported_cases(
    weights: Path, arch: str, samples: list[Any], threads: int, folder: Path
) -> tuple[dict[str, dict[str, list[Callable[[], object]]]], list[str]]:
    """Forward / predict callables per image for ONNX Runtime and OpenVINO on ``odet export`` files."""
    notes: list[str] = []
    contenders: dict[str, dict[str, list[Callable[[], object]]]] = {}
    try:
        raw, nms = _odet_exports(weights, arch, folder)
    except Exception as exc:  # the exporter is optional here: say why, and time a plain export instead
        notes.append(f"odet export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return _plain_onnx_cases(weights, arch, samples, threads, folder, notes), notes
    from odcli.inference.backends.inputs import canvas_batch

    runners: list[tuple[str, Callable[[Path], Any]]] = []
    if importlib.util.find_spec("onnxruntime"):
        from odcli.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

        runners.append(("onnxruntime", lambda p: OnnxRuntimeBackend(p, threads=threads)))
    else:
        notes.append("onnxruntime not installed: pip install -e '.[export]'")
    if importlib.util.find_spec("openvino"):
        runners.append(("openvino", lambda p: _openvino(p, threads, notes)))
    else:
        notes.append("openvino not installed: pip install -e '.[openvino]'")
    for name, make in runners:
        try:
            forward_backend, nms_backend = make(raw), make(nms)
        except Exception as exc:
            notes.append(f"{name} cannot load the export ({str(exc).splitlines()[0][:120]})")
            continue
        feeds = []
        for sample in samples:
            canvas, metas = canvas_batch([sample], forward_backend.meta)
            feeds.append((forward_backend.feeds(canvas, metas), canvas, metas))
        contenders[name] = {
            "forward": [lambda f=f, b=forward_backend: b.infer(f) for f, _, _ in feeds],
            "predict": [lambda c=c, m=m, b=nms_backend: b.predict(c, m) for _, c, m in feeds],
        }
    return contenders, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--arch", default="rtmdet_tiny")
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of images (sorted by name)")
    parser.add_argument("--count", type=int, default=8, help="images taken from the folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--display-thr", type=float, default=0.3, help="odet infer's --score-thr")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    versions = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(module):
            versions.append(f"{module} {__import__(module).__version__}")
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[
        : args.count
    ]
    print(f"{' · '.join(versions)} · {threads} threads · {args.arch} · {len(paths)} images · batch 1")

    contenders, samples = torch_cases(args.weights, args.arch, paths, args.display_thr)
    with tempfile.TemporaryDirectory() as tmp:
        exported, notes = exported_cases(args.weights, args.arch, samples, threads, Path(tmp))
        contenders.update(exported)
        cases = {f"{who}|{what}": fns for who, parts in contenders.items() for what, fns in parts.items()}
        ms = interleaved(cases, args.rounds)
    for note in notes:
        print(f"note: {note}")
    canvas = tuple(samples[0]["img"].shape[:2])
    print(f"canvas {canvas} · medians over {args.rounds} rounds × {len(paths)} images (ms)")
    base = {what: ms.get(f"torch eager|{what}", math.nan) for what in ("forward", "predict", "predict@thr")}
    shown_name = f"predict@{args.display_thr:g}"
    print(
        f"{'':<18}{'forward':>10}{'×eager':>8}{'predict':>10}{'×eager':>8}{shown_name:>14}{'predict/forward':>17}"
    )
    for who in contenders:
        row = f"{who:<18}"
        for what in ("forward", "predict"):
            value = ms.get(f"{who}|{what}", math.nan)
            row += f"{value:>10.1f}{base[what] / value:>8.2f}"
        shown = ms.get(f"{who}|predict@thr", math.nan)
        ratio = ms.get(f"{who}|predict", math.nan) / ms.get(f"{who}|forward", math.nan)
        print(row + f"{shown:>14.1f}{ratio:>17.2f}")
    infer_forward = ms["torch infer path|forward"]
    for who in ("torch infer path",):
        shown_ratio = ms[f"{who}|predict@thr"] / infer_forward
        print(f"{who}: predict@{args.display_thr} / forward = {shown_ratio:.2f}")
    ort_speedup = infer_forward / ms.get("onnxruntime|forward", math.nan)
    e2e_ratio = ms["torch infer path|predict"] / infer_forward
    print(f"ort_speedup={ort_speedup:.2f} e2e_ratio={e2e_ratio:.2f}")


if __name__ == "__main__":
    main()
