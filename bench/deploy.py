"""One model through every runtime odet has: forward and end-to-end latency, side by side in one run.

Contenders, all on the same COCO128 images (resized and padded by the model's test pipeline, batch 1):
torch eager; torch as ``odet infer`` runs it (BN folded, channels-last); ONNX Runtime on the
``odet export`` ``.onnx`` files and OpenVINO on the ``odet export --format openvino`` ``.xml`` files
(each when installed), through odet's own backends. Per contender: *forward* (the network; for exported
files the ``--no-nms`` graph, which also normalises and decodes the boxes), *predict* (forward + the
upstream post-processing at the model's test config: for torch ``model.predict``, for exported files the
``--nms`` graph) and *predict@thr* (what ``odet infer`` asks for: only detections scoring at least its
display threshold, fed to the graphs' ``min_score``). With ``--calib N`` (default 64) the same runtimes
also run ``odet export --int8`` files, calibrated on the last N images of the folder (none of them
timed). Rounds are interleaved — every contender times every image once per round, in a
rotating order — so machine load hits all alike; figures are medians. The last lines read
``openvino_speedup=Z`` (when OpenVINO runs), ``onnxruntime_int8_speedup=… openvino_int8_speedup=…``
and ``ort_speedup=X e2e_ratio=Y``: X (Z) = torch-infer-path
forward / ONNX Runtime (OpenVINO) float32 forward, Y = torch-infer-path predict / its forward (upstream test
config). Usage::

    python bench/deploy.py [--weights W --arch A] [--images DIR] [--count 8] [--rounds 5]
        [--threads N] [--display-thr 0.3] [--calib 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
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

        # The functions are bound as defaults: a closure would look them up when called, after the
        # loop — every contender would then run the last model.
        contenders[name] = {
            "forward": [lambda x=x, f=forward: f(x) for x, _ in inputs],
            "predict": [lambda x=x, m=m, f=predict: f(x, m) for x, m in inputs],
            "predict@thr": [lambda x=x, m=m, f=shown: f(x, m) for x, m in inputs],
        }
    return contenders, samples or []


#: The exported contenders: the runtime, the ``odet export`` format it runs, its suffix, int8 or not.
RUNTIMES = {
    "onnxruntime": ("onnxruntime", "onnx", ".onnx", False),
    "openvino": ("openvino", "openvino", ".xml", False),
    "onnxruntime int8": ("onnxruntime", "onnx", ".onnx", True),
    "openvino int8": ("openvino", "onnx", ".onnx", True),  # OpenVINO reads the QDQ .onnx
}


def _odet_exports(
    weights: Path, arch: str, folder: Path, fmt: str, suffix: str, calib: Path | None
) -> tuple[Path, Path]:
    """``odet export --format FMT`` without and with NMS in the graph (what the CLI writes);
    ``--int8 --calib CALIB`` where ``calib`` is given. Made once per (format, int8)."""
    from odcli.export.run import export_model

    tag = f"{fmt}{'_int8' if calib else ''}"
    raw, nms = folder / f"{tag}_raw{suffix}", folder / f"{tag}_nms{suffix}"
    if not nms.exists():
        quant = {"int8": True, "calib": calib} if calib else {}
        export_model(weights, raw, fmt=fmt, arch=arch, nms=False, **quant)
        export_model(weights, nms, fmt=fmt, arch=arch, nms=True, **quant)
    return raw, nms


def _runner(name: str, threads: int) -> Callable[[Path], Any]:
    """The odet backend of ``name`` on ``threads`` threads, as ``odet infer`` makes it (ONNX Runtime's
    idle threads sleep: spinning ones would take the CPU from the next contender of the round)."""
    if name == "onnxruntime":
        from odcli.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

        return lambda p: OnnxRuntimeBackend(p, threads=threads, spinning=False)
    from odcli.inference.backends.openvino_backend import OpenVINOBackend

    return lambda p: OpenVINOBackend(p, threads=threads)


def exported_cases(
    weights: Path,
    arch: str,
    samples: list[Any],
    threads: int,
    folder: Path,
    display_thr: float,
    calib: Path | None,
) -> tuple[dict[str, dict[str, list[Callable[[], object]]]], list[str]]:
    """Forward / predict / predict@thr callables per image for ONNX Runtime (``.onnx``) and OpenVINO
    (``.xml``) on ``odet export`` files: forward = the ``--no-nms`` file, predict = the ``--nms`` one;
    the int8 files too where ``calib`` (calibration images) is given."""
    from odcli.inference.backends.inputs import canvas_batch

    notes: list[str] = []
    contenders: dict[str, dict[str, list[Callable[[], object]]]] = {}
    for name, (runtime, fmt, suffix, int8) in RUNTIMES.items():
        if int8 and calib is None:
            continue
        if not importlib.util.find_spec(runtime):
            extra = "export" if runtime == "onnxruntime" else "openvino"
            notes.append(f"{name} not installed: pip install -e '.[{extra}]'")
            continue
        try:
            raw, nms = _odet_exports(weights, arch, folder, fmt, suffix, calib if int8 else None)
            make = _runner(runtime, threads)
            forward_backend, nms_backend = make(raw), make(nms)
        except Exception as exc:  # say why, time the others
            notes.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}")
            continue
        feeds = []
        for sample in samples:
            canvas, metas = canvas_batch([sample], forward_backend.meta)
            feeds.append((forward_backend.feeds(canvas, metas), canvas, metas))
        contenders[name] = {
            "forward": [lambda f=f, b=forward_backend: b.infer(f) for f, _, _ in feeds],
            "predict": [lambda c=c, m=m, b=nms_backend: b.predict(c, m) for _, c, m in feeds],
            "predict@thr": [
                lambda c=c, m=m, b=nms_backend: b.predict(c, m, min_score=display_thr) for _, c, m in feeds
            ],
        }
    if "onnxruntime" in contenders:
        notes.append("onnxruntime threads do not spin between runs, as in odet infer")
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
    parser.add_argument(
        "--calib", type=int, default=64,
        help="int8 contenders calibrated on this many images of the folder not among those timed (0: none)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    versions = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(module):
            versions.append(f"{module} {__import__(module).__version__}")
    folder = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    paths = folder[: args.count]
    print(f"{' · '.join(versions)} · {threads} threads · {args.arch} · {len(paths)} images · batch 1")
    load_before = os.getloadavg()[0]

    contenders, samples = torch_cases(args.weights, args.arch, paths, args.display_thr)
    with tempfile.TemporaryDirectory() as tmp:
        calib = None
        if args.calib > 0:
            calib = Path(tmp) / "calib.txt"
            calib.write_text("\n".join(str(p) for p in folder[args.count :][-args.calib :]))
        exported, notes = exported_cases(
            args.weights, args.arch, samples, threads, Path(tmp), args.display_thr, calib
        )
        contenders.update(exported)
        cases = {f"{who}|{what}": fns for who, parts in contenders.items() for what, fns in parts.items()}
        ms = interleaved(cases, args.rounds)
    for note in notes:
        print(f"note: {note}")
    canvas = tuple(samples[0]["img"].shape[:2])
    print(
        f"canvas {canvas} · medians over {args.rounds} rounds × {len(paths)} images (ms) · "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
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
    shown_ratio = ms["torch infer path|predict@thr"] / infer_forward
    print(f"torch infer path: predict@{args.display_thr:g} / forward = {shown_ratio:.2f}")
    speedups = {who: infer_forward / ms[f"{who}|forward"] for who in exported}
    if speedups:
        best = max(speedups, key=speedups.__getitem__)
        nms_ratio = ms[f"{best}|predict"] / ms[f"{best}|forward"]
        print(f"fastest exported forward: {best} (NMS in the graph: predict / forward = {nms_ratio:.2f})")
    if "openvino" in speedups:
        print(f"openvino_speedup={speedups['openvino']:.2f}")
    int8 = {who.split()[0]: value for who, value in speedups.items() if who.endswith(" int8")}
    if int8:
        print(" ".join(f"{who}_int8_speedup={value:.2f}" for who, value in int8.items()))
    ort_speedup = speedups.get("onnxruntime", math.nan)
    e2e_ratio = ms["torch infer path|predict"] / infer_forward
    print(f"ort_speedup={ort_speedup:.2f} e2e_ratio={e2e_ratio:.2f}")


if __name__ == "__main__":
    main()
