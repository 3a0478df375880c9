"""``odet infer``: detections on image files → annotated copies plus a ``detections.json``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from odcli.cli.common import console, ensure_output_dir, user_errors, warn
from odcli.cli.options import (
    EXPORTED_HELP,
    InferOptions,
    arch_option,
    backend_option,
    batch_size_option,
    check_at_least,
    check_fraction,
    compile_option,
    device_option,
    out_option,
    weights_option,
)
from odcli.errors import OdetError

#: Exit status of a run that finished but skipped inputs it could not decode (2 = nothing done).
EXIT_SKIPPED = 1


def _listing(paths: Sequence[Path], limit: int = 5) -> str:
    """``a.jpg, b.jpg … and 3 more``: the first ``limit`` file names of ``paths``."""
    names = ", ".join(p.name for p in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _output_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Output file name of each image: its own name; a repeated name (a glob over several
    directories) gets ``_2``, ``_3`` … so no annotated image overwrites another."""
    from odcli.inference.sources import IMAGE_EXTENSIONS

    seen: dict[str, int] = {}
    names = {}
    for p in paths:
        ext = p.suffix if p.suffix.lower() in IMAGE_EXTENSIONS else ".jpg"  # cv2 must know how to encode it
        name = p.stem + ext
        count = seen.get(name.lower(), 0) + 1
        seen[name.lower()] = count
        names[p] = name if count == 1 else f"{p.stem}_{count}{ext}"
    return names


def _prepare_out_dir(out: Path, images: Sequence[Path]) -> None:
    """Create ``out`` and make sure writing there neither fails later nor overwrites an input image."""
    ensure_output_dir(out)
    resolved = out.resolve()
    if any(p.resolve().parent == resolved for p in images):
        raise OdetError(f"--out {out} holds input images that would be overwritten; choose another directory")


def _write_image(path: Path, canvas: object) -> None:
    import cv2

    ok, encoded = cv2.imencode(path.suffix, canvas)
    if not ok:
        raise OdetError(f"cannot encode the annotated image {path.name}")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise OdetError(f"cannot write {path}: {exc.strerror or exc}") from None


@user_errors
def infer(
    source: str | None = typer.Argument(
        None, help="Image file, directory, glob ('imgs/*.jpg'), video file, cam0…, or rtsp/http URL."
    ),
    weights: Path | None = weights_option(
        f"Upstream files need --arch. {EXPORTED_HELP} Default: the latest run's best."
    ),
    backend: str | None = backend_option(),
    arch: str | None = arch_option("Needed for upstream .pth / .pdparams weights."),
    out: Path = out_option(Path("runs/infer"), "Directory for annotated images + JSON."),
    score_thr: float = typer.Option(
        0.3, "--score-thr", "--conf", help="Keep detections with score >= this (--conf: the same)."
    ),
    iou: float | None = typer.Option(
        None,
        "--iou",
        help="NMS IoU threshold: no two kept boxes of a class overlap more. Default: the model's.",
    ),
    classes: list[str] = typer.Option(
        [],
        "--classes",
        metavar="NAME|ID",
        help="Keep only these classes (names or ids; comma-separated or repeated).",
    ),
    imgsz: str | None = typer.Option(
        None,
        "--imgsz",
        metavar="N|H,W",
        help="Test size: N = the longer side (RTMDet: an NxN canvas; PP-YOLOE: NxN) or H,W. Fixed-size "
        "inputs (RTMDet, PP-YOLOE) round up to a multiple of 32. Default: the model's (640; RetinaNet "
        "1333x800).",
    ),
    max_det: int | None = typer.Option(
        None,
        "--max-det",
        help="Detections per image, the best first. Default: the model's (RTMDet 300, RetinaNet 100).",
    ),
    half: bool = typer.Option(False, "--half", help="fp16 weights and compute (CUDA only)."),
    save_txt: bool = typer.Option(
        False,
        "--save-txt",
        help="Also write YOLO labels: OUT/labels/<stem>.txt, 'class cx cy w h' normalised.",
    ),
    save_conf: bool = typer.Option(False, "--save-conf", help="With --save-txt: the score as a 6th column."),
    save_crop: bool = typer.Option(
        False,
        "--save-crop",
        help="Also write each detection cut from the image: OUT/crops/<class>/<stem>.jpg.",
    ),
    device: str = device_option(),
    batch_size: int = batch_size_option(4),
    video: str | None = typer.Option(None, "--video", help="Video file, camera (cam0, cam1…) or stream URL."),
    stride: int = typer.Option(1, "--stride", help="Video: process every N-th frame."),
    buffer: bool = typer.Option(False, "--buffer", help="Camera/stream: every frame, not the newest."),
    show: bool = typer.Option(False, "--show", help="Video: also show the annotated frames in a window."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Video: stop after this many frames."),
    compile_: bool = compile_option("(~30 s start, faster)."),
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
    the Python API's predict() reproduce exactly. Both JSON outputs start with an "odet" header:
    version, weights, arch and the settings used (score_thr, iou, classes, imgsz, max_det, …).

    --classes keeps those classes among the model's own detections, then --max-det the best of
    them. --save-txt / --save-crop write one file per image (video: per frame, <name>_<frame>).

    An image or video frame that cannot be decoded is skipped with a warning; the others are
    written. Exit status: 0 = every input processed; 1 = finished, but some images or frames were
    skipped (listed on stderr); 2 = nothing done (bad arguments or input, or no image could be read).
    """
    from odcli.engine.run_dir import default_weights
    from odcli.inference.outputs import SaveOptions
    from odcli.inference.predict_options import PredictOptions, parse_imgsz, split_values
    from odcli.inference.sources import is_video_source

    if weights is None:
        weights = default_weights()
        console.print(f"using the latest run's weights: {weights}")
    check_fraction(score_thr, "--score-thr")
    predict = PredictOptions(iou, split_values(classes), parse_imgsz(imgsz), max_det, half)
    save = SaveOptions(txt=save_txt, conf=save_conf, crop=save_crop)
    options = InferOptions(
        weights,
        arch,
        out,
        score_thr,
        device,
        compile_,
        raw_boxes,
        backend=backend,
        predict=predict,
        save=save,
    )

    if video is None and source is not None and is_video_source(source):
        video = source
    if video is not None:
        from odcli.cli.infer_video import infer_video

        skipped = infer_video(
            video, options, stride=stride, buffered=buffer, show=show, max_frames=max_frames
        )
        if skipped:
            raise typer.Exit(EXIT_SKIPPED)
        return
    if source is None:
        raise OdetError("give an image source (file, directory, glob) or --video cam0 / a video file")
    check_at_least(batch_size, "--batch-size")
    _infer_images(source, options, batch_size)


def _infer_images(source: str, options: InferOptions, batch_size: int) -> None:
    """The image half of :func:`infer`: detect (one core call per batch), draw, write, summarise."""
    from odcli.inference.detect import detect_images
    from odcli.inference.outputs import DetectionFiles
    from odcli.inference.sources import collect_images
    from odcli.viz.draw import draw_detections
    from odcli.weights.checkpoint import write_json_atomic

    out, score_thr = options.out, options.score_thr
    paths = collect_images(source)
    _prepare_out_dir(out, paths)
    loaded, predictor, settings = options.load()
    names = _output_names(paths)
    files = DetectionFiles(out, loaded.classes, options.save)

    records: list[dict] = []
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
        for batch in detect_images(predictor, paths, settings, batch_size=batch_size):
            for line in batch.warnings:
                warn(line)
            skipped += batch.skipped
            infer_s += batch.model_seconds
            for done in batch.done:
                det = done.det
                canvas = draw_detections(
                    done.image, det["boxes"], det["scores"], det["labels"], loaded.classes,
                    score_thr=score_thr, max_dets=len(det["scores"]),
                )  # fmt: skip
                _write_image(out / names[done.path], canvas)
                files.write(done.image, det, Path(names[done.path]).stem)
                records += done.records
            progress.advance(task, len(batch.done) + len(batch.skipped))
    done_count = len(paths) - len(skipped)
    if done_count == 0:
        raise OdetError(
            f"none of the {len(paths)} images could be decoded (see the warnings); nothing written"
        )
    write_json_atomic(out / "detections.json", {**settings.header, "detections": records})
    total_s = time.perf_counter() - start

    table = Table(title=f"odet infer — {loaded.arch}", title_justify="left", show_header=False)
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    table.add_row("images", f"{done_count}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    table.add_row("detections", f"{len(records)} (score >= {score_thr:g})")
    table.add_row(
        "ms/image", f"{1000 * infer_s / done_count:.1f} model · {1000 * total_s / done_count:.1f} total"
    )
    table.add_row("device", getattr(loaded, "runtime", str(predictor.device)))
    boxes = "as the model gives them (--raw-boxes)" if options.raw_boxes else "clipped to each image"
    table.add_row("boxes", boxes)
    table.add_row(
        "output", f"{out}/ (" + ", ".join(["annotated images", "detections.json", *files.folders]) + ")"
    )
    console.print(table)
    if skipped:
        warn(f"skipped {len(skipped)} of {len(paths)} images that could not be decoded: {_listing(skipped)}")
        raise typer.Exit(EXIT_SKIPPED)
