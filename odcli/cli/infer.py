"""``odet infer``: detections on image files → annotated copies plus a ``detections.json``."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from odcli.cli.common import console, ensure_output_dir, user_errors, warn
from odcli.errors import OdetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_GLOB_CHARS = "*?["
#: Exit status of a run that finished but skipped inputs it could not decode (2 = nothing done).
EXIT_SKIPPED = 1


def _reason(exc: OdetError, path: Path) -> str:
    """The message of a decoding error without the file name, which the warning puts first."""
    return str(exc).replace(f": {path}", "").replace(f" {path}", "")


def _listing(paths: Sequence[Path], limit: int = 5) -> str:
    """``a.jpg, b.jpg … and 3 more``: the first ``limit`` file names of ``paths``."""
    names = ", ".join(p.name for p in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def collect_images(source: str) -> list[Path]:
    """The images SOURCE names: one file, every image directly inside a directory (sorted), or the
    image files a glob pattern matches (sorted; ``**`` recurses).

    Raises:
        OdetError: nothing exists at ``source`` or no image was found.
    """
    exts = "/".join(IMAGE_EXTENSIONS)
    path = Path(source).expanduser()
    # An existing path wins over glob syntax: file names may contain '[' legitimately.
    if not path.exists() and any(c in source for c in _GLOB_CHARS):
        matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        found = [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_EXTENSIONS and Path(m).is_file()]
        if not found:
            raise OdetError(f"no images match {source!r} ({exts}); check the pattern (quote it in the shell)")
        return found
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not found:
            raise OdetError(f"no images ({exts}) in directory {path}")
        return found
    if path.is_file():
        return [path]
    raise OdetError(
        f"image source not found: {source} (give an image file, a directory or a glob like 'imgs/*.jpg')"
    )


def _output_names(paths: Sequence[Path]) -> list[str]:
    """Output file name of each image: its own name; a repeated name (a glob over several
    directories) gets ``_2``, ``_3`` … so no annotated image overwrites another."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        ext = p.suffix if p.suffix.lower() in IMAGE_EXTENSIONS else ".jpg"  # cv2 must know how to encode it
        name = p.stem + ext
        count = seen.get(name.lower(), 0) + 1
        seen[name.lower()] = count
        names.append(name if count == 1 else f"{p.stem}_{count}{ext}")
    return names


def _prepare_out_dir(out: Path, images: Sequence[Path]) -> None:
    """Create ``out`` and make sure writing there neither fails later nor overwrites an input image."""
    ensure_output_dir(out)
    resolved = out.resolve()
    if any(p.resolve().parent == resolved for p in images):
        raise OdetError(f"--out {out} holds input images that would be overwritten; choose another directory")


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@user_errors
def infer(
    source: str | None = typer.Argument(
        None, help="Image file, directory, glob ('imgs/*.jpg'), video file, cam0…, or rtsp/http URL."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", "-w", help="odet .safetensors or upstream .pth (default: latest run's best)."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Model name for upstream .pth weights, e.g. rtmdet_tiny."
    ),
    out: Path = typer.Option(
        Path("runs/infer"), "--out", "-o", help="Directory for annotated images + JSON."
    ),
    score_thr: float = typer.Option(0.3, "--score-thr", help="Keep detections with score >= this."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Images per forward pass."),
    video: str | None = typer.Option(None, "--video", help="Video file, camera (cam0, cam1…) or stream URL."),
    stride: int = typer.Option(1, "--stride", help="Video: process every N-th frame."),
    buffer: bool = typer.Option(False, "--buffer", help="Camera/stream: every frame, not the newest."),
    show: bool = typer.Option(False, "--show", help="Video: also show the annotated frames in a window."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Video: stop after this many frames."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model (~30 s start, faster)."),
    raw_boxes: bool = typer.Option(
        False,
        "--raw-boxes",
        help="Keep the boxes as the model gives them (upstream clips to the padded input, so they can "
        "reach past the image) instead of clipping them to the image.",
    ),
) -> None:
    """Detect objects in images or video; write annotated copies and machine-readable detections.

    Images → OUT/<name> + OUT/detections.json. Video, cameras, streams → OUT/<name>.mp4 +
    OUT/<name>.jsonl (one line per processed frame; "time" is seconds into a video file, or the
    wall clock for cameras and streams, as "time_base" says).

    Boxes are xyxy pixels of the original image, clipped to it (0..width, 0..height); a box
    entirely outside the image is dropped. --raw-boxes keeps upstream's boxes, which eval and
    the Python API's predict() reproduce exactly.

    An image or video frame that cannot be decoded is skipped with a warning; the others are
    written. Exit status: 0 = every input processed; 1 = finished, but some images or frames were
    skipped (listed on stderr); 2 = nothing done (bad arguments or input, or no image could be read).
    """
    from odcli.engine.run_dir import default_weights
    from odcli.inference.sources import is_video_source

    if weights is None:
        weights = default_weights()
        console.print(f"using the latest run's weights: {weights}")

    if video is None and source is not None and is_video_source(source):
        video = source
    if video is not None:
        from odcli.cli.infer_video import infer_video

        skipped = infer_video(
            video, weights=weights, arch=arch, out=out, score_thr=score_thr, device=device,
            stride=stride, buffered=buffer, show=show, max_frames=max_frames, compile_model=compile_,
            raw_boxes=raw_boxes,
        )  # fmt: skip
        if skipped:
            raise typer.Exit(EXIT_SKIPPED)
        return
    if source is None:
        raise OdetError("give an image source (file, directory, glob) or --video cam0 / a video file")
    import cv2

    from odcli.data.image_io import read_image
    from odcli.inference.predictor import (
        Predictor,
        clip_to_image,
        finest_stride,
        load_model,
        tiny_image_warning,
    )
    from odcli.viz.draw import draw_detections
    from odcli.weights.checkpoint import write_json_atomic

    if batch_size < 1:
        raise OdetError(f"--batch-size must be >= 1, got {batch_size}")
    if not 0.0 <= score_thr <= 1.0:
        raise OdetError(f"--score-thr must be in [0, 1], got {score_thr}")
    paths = collect_images(source)
    _prepare_out_dir(out, paths)
    loaded = load_model(weights, arch=arch, device=device)
    if compile_:
        from odcli.models.fuse import compile_for_inference

        compile_for_inference(loaded.model)
    # The predictor keeps everything the model returns; the >= threshold is applied here.
    predictor = Predictor(loaded.model, score_thr=0.0)
    classes, cat_ids = loaded.classes, loaded.cat_ids
    stride_px = finest_stride(loaded.model)
    names = _output_names(paths)

    records: list[dict[str, Any]] = []
    skipped: list[Path] = []
    infer_s = 0.0
    start = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]infer"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("infer", total=len(paths))
        for batch in _batches(list(zip(paths, names, strict=True)), batch_size):
            good, imgs = [], []
            for path, name in batch:
                try:
                    img = read_image(path)
                except OdetError as exc:
                    if len(paths) == 1:
                        raise  # the one input: its error is the one line
                    warn(f"skipped {path}: {_reason(exc, path)}")
                    skipped.append(path)
                    continue
                if note := tiny_image_warning(img.shape[0], img.shape[1], stride_px, str(path)):
                    warn(note)
                good.append((path, name))
                imgs.append(img)
            progress.advance(task, len(batch) - len(good))
            if not good:
                continue
            t0 = time.perf_counter()
            dets = predictor(imgs)  # CPU tensors: the copy back also waits for the GPU
            infer_s += time.perf_counter() - t0
            for (path, name), img, det in zip(good, imgs, dets, strict=True):
                if not raw_boxes:
                    det = clip_to_image(det, img.shape[0], img.shape[1])
                keep = det["scores"] >= score_thr
                boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
                canvas = draw_detections(
                    img, boxes, scores, labels, classes, score_thr=score_thr, max_dets=len(scores)
                )
                ok, encoded = cv2.imencode(Path(name).suffix, canvas)
                if not ok:
                    raise OdetError(f"cannot encode the annotated image {name}")
                try:
                    (out / name).write_bytes(encoded.tobytes())
                except OSError as exc:
                    raise OdetError(f"cannot write {out / name}: {exc.strerror or exc}") from None
                for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
                    records.append(
                        {
                            "image": str(path),
                            "bbox": [round(v, 2) for v in box],
                            "score": round(score, 4),
                            "label": int(label),
                            "category_id": int(cat_ids[label]),
                            "category": classes[label],
                        }
                    )
            progress.advance(task, len(good))
    done = len(paths) - len(skipped)
    if done == 0:
        raise OdetError(
            f"none of the {len(paths)} images could be decoded (see the warnings); nothing written"
        )
    json_path = out / "detections.json"
    write_json_atomic(json_path, records)
    total_s = time.perf_counter() - start

    table = Table(title=f"odet infer — {loaded.model.arch}", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    table.add_row("images", f"{done}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    table.add_row("detections", f"{len(records)} (score >= {score_thr:g})")
    table.add_row("ms/image", f"{1000 * infer_s / done:.1f} model · {1000 * total_s / done:.1f} total")
    table.add_row("device", str(predictor.device))
    table.add_row("boxes", "as the model gives them (--raw-boxes)" if raw_boxes else "clipped to each image")
    table.add_row("output", f"{out}/ (annotated images, detections.json)")
    console.print(table)
    if skipped:
        warn(f"skipped {len(skipped)} of {len(paths)} images that could not be decoded: {_listing(skipped)}")
        raise typer.Exit(EXIT_SKIPPED)
