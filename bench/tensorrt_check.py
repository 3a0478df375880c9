"""RTMDet-tiny as a TensorRT FP16 engine: model-only latency at batch 1, and parity with PyTorch.

Needs an NVIDIA GPU, CUDA-enabled torch and the ``tensorrt`` package; on any other machine it prints
what is missing and exits 2. Steps: ``odet export`` the reference weights to ONNX without NMS (the
network plus decoding, the part PP-YOLOE's and RTMDet's papers time) and to an FP16 engine; time the
engine's ``execute`` alone with CUDA events (inputs already on the GPU, as the seed's "< 1 ms on a 3090,
0.98 ms" is measured); time the PyTorch model (BN folded, channels-last, fp16 autocast) in the same
run; compare the engine's scores and boxes with the PyTorch fp32 model's. Usage::

    python bench/tensorrt_check.py [--weights W --arch A] [--imgsz 640] [--iters 200]

The last line reads ``trt_fp16_ms=X torch_fp16_ms=Y speedup=Z max_score_diff=D``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "reference" / "mmdet" / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"


def _cuda_ms(fn, iters: int, warmup: int = 20) -> float:
    """Mean ms of ``fn`` over ``iters`` runs, timed by two CUDA events (the GPU's own clock)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--arch", default="rtmdet_tiny")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()

    from odcli.errors import OdetError
    from odcli.export.run import export_model
    from odcli.inference.backends.tensorrt_backend import TensorRTBackend, require_tensorrt
    from odcli.inference.load import load_model

    try:
        trt = require_tensorrt()
    except OdetError as exc:
        print(f"tensorrt_check: {exc}")
        return 2
    side = args.imgsz
    with tempfile.TemporaryDirectory() as tmp:
        engine_path = Path(tmp) / "model.engine"
        export_model(args.weights, engine_path, arch=args.arch, imgsz=(side, side), nms=False, batch=1)
        engine = TensorRTBackend(engine_path)
        torch.manual_seed(0)
        images = torch.rand(1, 3, side, side, device="cuda") * 255
        inputs = {
            "images": images,
            "img_shape": torch.tensor([[side, side]], dtype=torch.float32, device="cuda"),
            "scale_factor": torch.ones(1, 2, device="cuda"),
        }
        outputs = engine.bind(inputs)
        trt_ms = _cuda_ms(engine.execute, args.iters)

        loaded = load_model(args.weights, arch=args.arch, device="cuda")
        model = loaded.model
        spec = model.input_spec
        mean = torch.tensor(spec.mean, device="cuda").view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device="cuda").view(1, 3, 1, 1)
        x = ((images.flip(1) if spec.to_rgb else images) - mean) / std
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            reference = model.decode(x)

            def torch_fp16() -> None:
                with torch.autocast("cuda", dtype=torch.float16):
                    model(x)

            torch_ms = _cuda_ms(torch_fp16, args.iters)
        engine.execute()
        torch.cuda.synchronize()
        score_diff = (outputs["scores"].float() - reference.scores).abs().max().item()
        box_diff = (outputs["boxes"].float() - reference.boxes).abs().max().item()
    print(f"TensorRT {trt.__version__} · torch {torch.__version__} · {torch.cuda.get_device_name()}")
    print(f"{args.arch} at {side}x{side}, batch 1, FP16, model + decoding, mean over {args.iters} runs")
    print(f"  TensorRT engine  {trt_ms:8.3f} ms")
    print(f"  torch fp16       {torch_ms:8.3f} ms  (BN folded, channels-last, autocast)")
    print(f"  vs torch fp32: scores max |diff| {score_diff:.2e}, boxes {box_diff:.3f} px")
    print(
        f"trt_fp16_ms={trt_ms:.3f} torch_fp16_ms={torch_ms:.3f} speedup={torch_ms / trt_ms:.2f} "
        f"max_score_diff={score_diff:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
