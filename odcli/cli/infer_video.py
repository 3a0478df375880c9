"""``odet infer`` on video files, cameras and streams: annotated video + one JSON line per frame."""

from __future__ import annotations

import json
import time

from rich.live import Live
from rich.text import Text

from odcli.cli.common import check_output_location, console, ensure_output_dir, warn
from odcli.cli.options import InferOptions
from odcli.errors import OdetError


def infer_video(
    source: str, options: InferOptions, *, stride: int, buffered: bool, show: bool, max_frames: int | None
) -> int:
    """Run a detector over a frame source; see the module docstring for the outputs.

    Boxes are clipped to the frame unless ``options.raw_boxes`` (see
    :func:`odcli.inference.predictor.clip_to_image`). Frames that fail to decode are skipped with a
    warning on stderr.

    Returns:
        The number of frames skipped because they could not be decoded.
    """
    import cv2

    from odcli.inference.detect import detect_frames
    from odcli.inference.outputs import DetectionFiles, with_settings
    from odcli.inference.sources import FrameReader, parse_source
    from odcli.viz.draw import draw_detections

    spec = parse_source(source)
    # Checked now, created once the source is open: a camera that is not there leaves no folder.
    out = options.out
    check_output_location(out, "choose another --out")
    loaded, predictor, settings = options.load()
    files = DetectionFiles(out, loaded.classes, options.save)
    video_path = out / f"{spec.name}.mp4"
    lines_path = out / f"{spec.name}.jsonl"
    writer = None
    frames = 0
    start = time.perf_counter()
    fps_smoothed = 0.0
    with FrameReader(spec, stride=stride, buffered=buffered, max_frames=max_frames) as reader:
        ensure_output_dir(out)
        out_fps = reader.fps / stride if spec.kind == "video" else reader.fps
        # Write to temporary names and rename at the end: an interrupted run leaves no half file
        # under the final name.
        tmp_video = video_path.with_name(f".{video_path.name}.partial.mp4")
        tmp_lines = lines_path.with_name(f".{lines_path.name}.partial")
        try:
            with open(tmp_lines, "w") as lines, Live(console=console, transient=True) as live:
                reported = 0
                lines.write(json.dumps(with_settings(settings.header, stride=stride)) + "\n")
                results = detect_frames(predictor, reader, settings, time_base=spec.time_base, name=spec.name)
                for result in results:
                    reported = _report_skipped(reader.skipped, reported, spec.target)
                    if result.warning:
                        warn(result.warning)
                    dt = result.model_seconds
                    fps_smoothed = 1.0 / dt if frames == 0 else 0.9 * fps_smoothed + 0.1 / dt
                    lines.write(json.dumps(result.record) + "\n")
                    det = result.det
                    files.write(result.frame.image, det, f"{spec.name}_{result.frame.index}")
                    canvas = draw_detections(
                        result.frame.image, det["boxes"], det["scores"], det["labels"], loaded.classes,
                        score_thr=options.score_thr, max_dets=len(det["scores"]),
                    )  # fmt: skip
                    if writer is None:
                        h, w = canvas.shape[:2]
                        writer = cv2.VideoWriter(
                            str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), out_fps, (w, h)
                        )
                        if not writer.isOpened():
                            raise OdetError(f"cannot write video {video_path} (OpenCV has no mp4v encoder?)")
                    writer.write(canvas)
                    frames += 1
                    total = f"/{reader.frame_count // stride}" if reader.frame_count else ""
                    live.update(
                        Text(f"{spec.kind} {spec.name} · frame {frames}{total} · {fps_smoothed:5.1f} FPS "
                             f"model · {len(result.record['detections'])} detections")
                    )  # fmt: skip
                    if show and not _show(canvas):
                        break
                _report_skipped(reader.skipped, reported, spec.target)
        except BaseException:
            if writer is not None:
                writer.release()
            tmp_video.unlink(missing_ok=True)
            tmp_lines.unlink(missing_ok=True)
            raise
    if writer is not None:
        writer.release()
        tmp_video.replace(video_path)
    tmp_lines.replace(lines_path)
    if frames == 0:
        raise OdetError(f"no frame could be read from {source}")
    elapsed = time.perf_counter() - start
    console.print(
        f"{frames} frames in {elapsed:.1f} s ({frames / elapsed:.1f} FPS end to end) → "
        f"{video_path}, {lines_path}"
    )
    skipped = reader.skipped
    if skipped:
        warn(
            f"skipped {len(skipped)} of {len(skipped) + frames} frames of {source} that could not be "
            f"decoded: {_ranges(skipped)}"
        )
    return len(skipped)


def _ranges(indices: list[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5, 9"`` (sorted frame indices as short ranges)."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def _report_skipped(skipped: list[int], reported: int, target: str | int) -> int:
    """Warn once about the frames skipped since the last call (consecutive failures come together,
    before the next good frame); returns how many are reported now."""
    if len(skipped) > reported:
        new = skipped[reported:]
        what = f"frame {new[0]}" if len(new) == 1 else f"frames {_ranges(new)}"
        warn(f"skipped {what} of {target}: could not be decoded")
    return len(skipped)


def _show(canvas: object) -> bool:
    """Show a frame; False when the user pressed q/Esc. Headless OpenCV builds cannot open windows."""
    import cv2

    try:
        cv2.imshow("odet", canvas)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error:
        raise OdetError("--show needs an OpenCV build with GUI support (pip install opencv-python)") from None
    return key not in (ord("q"), 27)
