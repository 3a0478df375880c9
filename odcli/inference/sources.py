"""Where inputs come from: image files, folders and globs (:func:`collect_images`), and the sources
that produce a *sequence* of frames: video files, cameras and network streams (:class:`FrameReader`).

Cameras and streams are read by a background thread that keeps only the newest frame, so a slow
model never builds up latency; ``buffered=True`` processes every frame instead (what a video file
always does).
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odcli.errors import OdetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_GLOB_CHARS = "*?["
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_CAMERA = re.compile(r"^cam(\d+)$")
_STREAM = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", re.IGNORECASE)


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


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` (H, W, 3) uint8 BGR, its index in the source, and its time (s).

    ``timestamp`` is the position in the video (``index / fps``) for a file and the wall clock
    (``time.time()`` at capture) for cameras and streams; :attr:`SourceSpec.time_base` says which.
    """

    index: int
    image: np.ndarray
    timestamp: float


@dataclass(frozen=True)
class SourceSpec:
    """A parsed frame source: ``kind`` is "video", "camera" or "stream"; ``target`` what OpenCV opens."""

    kind: str
    target: str | int
    name: str

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "stream")

    @property
    def time_base(self) -> str:
        """What :attr:`Frame.timestamp` counts: ``"video"`` (seconds into the file) or ``"wall_clock"``."""
        return "wall_clock" if self.live else "video"


def is_video_source(text: str) -> bool:
    """Whether ``text`` names a video file, a camera (``cam0``) or a stream URL (not images)."""
    return bool(_CAMERA.match(text) or _STREAM.match(text) or Path(text).suffix.lower() in VIDEO_EXTENSIONS)


def parse_source(text: str) -> SourceSpec:
    """``cam0`` → camera 0; ``rtsp://…``/``http://…`` → stream; anything else → a video file (checked)."""
    cam = _CAMERA.match(text)
    if cam:
        return SourceSpec("camera", int(cam.group(1)), f"cam{cam.group(1)}")
    if _STREAM.match(text):
        return SourceSpec("stream", text, "stream")
    path = Path(text).expanduser()
    if not path.is_file():
        raise OdetError(f"video file not found: {text} (give a video file, cam0/cam1…, or an rtsp/http URL)")
    return SourceSpec("video", str(path), path.stem)


class FrameReader:
    """Iterate frames of a :class:`SourceSpec`.

    Args:
        spec: what to open.
        stride: yield every ``stride``-th frame (1 = all).
        buffered: for cameras/streams, process every frame in order instead of only the newest.
        max_frames: stop after this many yielded frames (None = until the source ends / Ctrl-C).

    A frame of a video file that fails to decode before the end the file announces (its frame
    count) is skipped, not taken for the end: its index is appended to :attr:`skipped` (only frames
    that ``stride`` would have yielded) and reading goes on.
    """

    def __init__(
        self, spec: SourceSpec, *, stride: int = 1, buffered: bool = False, max_frames: int | None = None
    ) -> None:
        import cv2

        if stride < 1:
            raise OdetError(f"--stride must be >= 1, got {stride}")
        self.spec = spec
        self.stride = stride
        self.max_frames = max_frames
        # FFmpeg prints its own lines for every damaged packet; odet reports skipped frames itself.
        # Read when a capture opens; a level the user set stays.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        # OpenCV logs its own warnings for a source it cannot open (one per backend it tries); the
        # error below says it in one line, so they are silenced while opening.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self.capture = cv2.VideoCapture(spec.target)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self.capture.isOpened():
            problem = {
                "camera": f"camera {spec.name} is not available",
                "stream": f"cannot open stream {spec.target}",
            }.get(spec.kind, f"cannot decode video {spec.target}")
            raise OdetError(
                problem + " (check the device index / URL, or that OpenCV was built with the needed codec)"
            )
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if spec.kind == "video" and count > 0 else None
        self.latest_only = spec.live and not buffered
        self.skipped: list[int] = []
        self._latest: tuple[int, np.ndarray, float] | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # A live source is drained continuously by this thread; consumers take the newest frame.
    def _grab_loop(self) -> None:
        index = 0
        while not self._stopped:
            ok, image = self.capture.read()
            with self._cond:
                if not ok:
                    self._stopped = True
                else:
                    self._latest = (index, image, time.time())
                index += 1
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        yielded = 0
        if self.latest_only:
            self._thread = threading.Thread(target=self._grab_loop, daemon=True)
            self._thread.start()
            needed = 0  # the next frame index we may yield (stride counts frames of the source)
            while self.max_frames is None or yielded < self.max_frames:
                with self._cond:
                    while not self._stopped and (self._latest is None or self._latest[0] < needed):
                        self._cond.wait(timeout=1.0)
                    if self._latest is None or self._latest[0] < needed:
                        return
                    index, image, stamp = self._latest
                needed = index + self.stride
                yielded += 1
                yield Frame(index, image, stamp)
            return
        index = 0
        while self.max_frames is None or yielded < self.max_frames:
            # Each read() consumes one frame of the file, decoded or not, so ``index`` stays the
            # frame's position after a failure and the frame count bounds the retries.
            ok, image = self.capture.read()
            if not ok:
                if self.frame_count is None or index >= self.frame_count:
                    return
                if index % self.stride == 0:
                    self.skipped.append(index)
            elif index % self.stride == 0:
                yielded += 1
                stamp = index / self.fps if self.spec.kind == "video" else time.time()
                yield Frame(index, image, stamp)
            index += 1

    def close(self) -> None:
        self._stopped = True
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.capture.release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
