"""RTMDet latency on this machine: inference (model only / with post-processing) and a training step.

Every variant is timed in this same run against the eager fp32 baseline, so the printed ratios are
comparable across machines. Usage::

    python bench/rtmdet_speed.py [--arch rtmdet_tiny] [--size 640] [--iters 20] [--train-batch 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import odcli
from odcli.models.fuse import compile_for_inference, fuse_conv_bn


def timed(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="rtmdet_tiny")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd model (~30 s)")
    args = parser.parse_args()
    torch.manual_seed(0)

    print(f"torch {torch.__version__} · threads {torch.get_num_threads()} · {args.arch} · input {args.size}")
    image = torch.randn(1, 3, args.size, args.size)
    metas = [{"img_shape": (args.size, args.size), "scale_factor": (1.0, 1.0)}]

    eager = odcli.build_detector(args.arch).eval()
    fused = fuse_conv_bn(odcli.build_detector(args.arch).eval())
    fused_cl = fuse_conv_bn(odcli.build_detector(args.arch).eval()).to(memory_format=torch.channels_last)
    image_cl = image.contiguous(memory_format=torch.channels_last)

    rows: list[tuple[str, float]] = []
    with torch.inference_mode():
        rows.append(("model, eager fp32 (baseline)", timed(lambda: eager(image), args.iters)))
        rows.append(("model, conv+BN fused", timed(lambda: fused(image), args.iters)))
        rows.append(("model, fused + channels_last", timed(lambda: fused_cl(image_cl), args.iters)))
        rows.append(
            ("predict (model + post-process), eager", timed(lambda: eager.predict(image, metas), args.iters))
        )
        rows.append(
            ("predict, fused + channels_last", timed(lambda: fused_cl.predict(image_cl, metas), args.iters))
        )
        if args.compile:
            compiled = compile_for_inference(
                fuse_conv_bn(odcli.build_detector(args.arch).eval()).to(memory_format=torch.channels_last)
            )
            start = time.perf_counter()
            compiled(image_cl)
            print(f"(torch.compile took {time.perf_counter() - start:.0f} s)")
            ms = timed(lambda: compiled(image_cl), args.iters)
            rows.append(("model, fused + channels_last + compile", ms))
    baseline = rows[0][1]
    for name, ms in rows:
        print(f"{name:<44} {ms:8.1f} ms   ×{baseline / ms:4.2f} vs baseline")

    model = odcli.build_detector(args.arch).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randn(args.train_batch, 3, args.size, args.size)
    targets = [
        {
            "boxes": torch.tensor([[50.0, 60.0, 300.0, 400.0], [320.0, 100.0, 600.0, 380.0]]),
            "labels": torch.tensor([0, 1]),
        }
        for _ in range(args.train_batch)
    ]

    def step() -> None:
        losses = model.loss(batch, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    step_ms = timed(step, max(3, args.iters // 4), warmup=1)
    print(
        f"training step, batch {args.train_batch} at {args.size}: {step_ms:.0f} ms "
        f"({step_ms / args.train_batch:.0f} ms/image)"
    )


if __name__ == "__main__":
    main()
