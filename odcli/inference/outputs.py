"""What ``odet infer`` writes besides annotated images: the JSON header, YOLO-format label files
and detection crops, and the readers of its JSON outputs.

``detections.json`` (images) is ``{"odet": HEADER, "detections": [record, …]}`` and ``<name>.jsonl``
(video, cameras, streams) starts with the line ``{"odet": HEADER}`` before one line per frame; the
records are :mod:`odcli.inference.records`'. ``HEADER`` says what made them::

    {"version": "0.1.0", "weights": "w.safetensors", "arch": "rtmdet_tiny",
     "settings": {"score_thr": 0.3, "iou": 0.65, "classes": null, "imgsz": [640, 640], "max_det": 300,
                  "half": false, "raw_boxes": false, …}}

Files written before the header existed (a bare list of records; lines of frames only) are read
the same way by :func:`read_detections` and :func:`read_frame_lines`, with header None.

Label files (``--save-txt``): ``OUT/labels/<stem>.txt``, one line per kept detection,
``label cx cy w h`` normalised by the original image's width and height (YOLO's format; boxes as
the records have them, so clipped to the image unless ``--raw-boxes``), ``--save-conf`` adds the
score as a sixth column. An image without detections gets an empty file: it was looked at.
Crops (``--save-crop``): ``OUT/crops/<class name>/<stem>.jpg`` per kept detection, cut from the
original image at the box rounded to whole pixels and clipped to the image; a second crop of the
same name gets ``_2``, then ``_3`` ….
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odcli import __version__
from odcli.errors import OdetError

__all__ = [
    "HEADER_KEY",
    "CropWriter",
    "DetectionFiles",
    "SaveOptions",
    "as_coco_results",
    "output_header",
    "read_detections",
    "read_frame_lines",
    "with_settings",
    "write_label_file",
    "yolo_lines",
]

#: The key of the header object in ``detections.json`` and in the first line of a ``.jsonl``.
HEADER_KEY = "odet"


def output_header(weights: Path | str | None, arch: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The ``{"odet": …}`` header: odet's version, the weights file, the model, the settings used."""
    return {
        HEADER_KEY: {
            "version": __version__,
            "weights": None if weights is None else str(weights),
            "arch": arch,
            "settings": dict(settings),
        }
    }


def with_settings(header: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A copy of an :func:`output_header` with more settings recorded (the video's ``stride``)."""
    inner = header.get(HEADER_KEY, {})
    return {HEADER_KEY: {**inner, "settings": {**inner.get("settings", {}), **settings}}}


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OdetError(f"detections file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OdetError(f"cannot read detections file {path}: {exc}") from None


def read_detections(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The header (None for a file without one) and the records of a ``detections.json``.

    Raises:
        OdetError: an unreadable file, or JSON of neither form.
    """
    data = _load_json(path)
    if isinstance(data, list):
        return None, data
    if (
        isinstance(data, dict)
        and isinstance(data.get(HEADER_KEY), dict)
        and isinstance(data.get("detections"), list)
    ):
        return data[HEADER_KEY], data["detections"]
    raise OdetError(
        f"{path} is not a detections file (expected a JSON list of detections, or odet infer's "
        '{"odet": …, "detections": […]})'
    )


def as_coco_results(records: list[dict[str, Any]], images: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``odet infer`` records (``image`` path, ``bbox`` xyxy) → COCO results (``image_id``, ``bbox``
    [x, y, w, h]), the images matched by file name to the annotation file's ``images``; records
    that already are COCO results (they have ``image_id``) pass unchanged.

    Raises:
        OdetError: an image the annotation file does not have.
    """
    ids = {Path(str(im.get("file_name", ""))).name: im.get("id") for im in images}
    results = []
    for r in records:
        if not isinstance(r, dict) or "image_id" in r or "image" not in r:
            results.append(r)
            continue
        name = Path(str(r["image"])).name
        if name not in ids:
            raise OdetError(f"{r['image']} is not an image of the annotation file (matched by file name)")
        x1, y1, x2, y2 = r["bbox"]
        box = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
        results.append(
            {"image_id": ids[name], "category_id": r["category_id"], "bbox": box, "score": r["score"]}
        )
    return results


def read_frame_lines(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The header (None for a file without one) and the frame records of a video ``.jsonl``.

    Raises:
        OdetError: an unreadable file or a line that is not JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OdetError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise OdetError(f"{path} is not JSON lines: {exc}") from None
    if lines and isinstance(lines[0], dict) and set(lines[0]) == {HEADER_KEY}:
        return lines[0][HEADER_KEY], lines[1:]
    return None, lines


def yolo_lines(
    det: dict[str, torch.Tensor], height: int, width: int, *, with_score: bool = False
) -> list[str]:
    """One ``label cx cy w h [score]`` line per detection, coordinates normalised to the image.

    Args:
        det: ``boxes`` (K, 4) xyxy original pixels, ``scores`` (K,), ``labels`` (K,).
        height, width: the original image size in pixels.
        with_score: add the score as a sixth column.
    """
    boxes = det["boxes"].double()
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    centre_size = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], dim=1)
    rows = (centre_size / scale).tolist()
    labels, scores = det["labels"].tolist(), det["scores"].tolist()
    lines = []
    for label, row, score in zip(labels, rows, scores, strict=True):
        line = f"{int(label)} " + " ".join(f"{v:.6f}" for v in row)
        lines.append(line + (f" {score:.4f}" if with_score else ""))
    return lines


def write_label_file(path: Path, lines: Sequence[str]) -> None:
    """Write one label file (its folder created), one line each; empty when there is nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in lines))
    except OSError as exc:
        raise OdetError(f"cannot write {path}: {exc.strerror or exc}") from None


def crop_window(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """The (x1, y1, x2, y2) whole-pixel window of an xyxy box: rounded, clipped to the
    (height, width) image, at least one pixel each way."""
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = min(max(x1, 0), width - 1), min(max(x2, 1), width)
    y1, y2 = min(max(y1, 0), height - 1), min(max(y2, 1), height)
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


class CropWriter:
    """Writes each kept detection cut from its image to ``root/<class name>/<stem>[_k].jpg``.

    Names are unique within a run: a name already written (another box of the same class in the
    image, or an image whose stem ends the same way) gets the next free ``_k``, k = 2, 3, ….
    """

    def __init__(self, root: Path, classes: Sequence[str]) -> None:
        self.root = root
        self.classes = list(classes)
        self._used: set[Path] = set()

    def _free(self, folder: Path, stem: str) -> Path:
        path, k = folder / f"{stem}.jpg", 1
        while path in self._used:
            k += 1
            path = folder / f"{stem}_{k}.jpg"
        self._used.add(path)
        return path

    def write(self, image: np.ndarray, det: dict[str, torch.Tensor], stem: str) -> list[Path]:
        """Write the crops of ``det`` (boxes xyxy pixels of ``image``, (H, W, 3) BGR); returns the paths."""
        import cv2

        height, width = image.shape[:2]
        written = []
        for box, label in zip(det["boxes"].tolist(), det["labels"].tolist(), strict=True):
            x1, y1, x2, y2 = crop_window(box, height, width)
            name = self.classes[int(label)].replace("/", "_") or str(int(label))
            path = self._free(self.root / name, stem)
            ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[y1:y2, x1:x2]))
            if not ok:
                raise OdetError(f"cannot encode the crop {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encoded.tobytes())
            except OSError as exc:
                raise OdetError(f"cannot write {path}: {exc.strerror or exc}") from None
            written.append(path)
        return written


@dataclass(frozen=True)
class SaveOptions:
    """``--save-txt``, ``--save-conf`` (implies ``--save-txt``), ``--save-crop``."""

    txt: bool = False
    conf: bool = False
    crop: bool = False


class DetectionFiles:
    """The per-image files ``save`` asks for, under ``out`` (``labels/``, ``crops/``; see the module
    docstring); nothing when it asks for none."""

    def __init__(self, out: Path, classes: Sequence[str], save: SaveOptions | None) -> None:
        save = save or SaveOptions()
        self.labels = out / "labels" if save.txt or save.conf else None
        self.with_score = save.conf
        self.crops = CropWriter(out / "crops", classes) if save.crop else None

    @property
    def folders(self) -> list[str]:
        """The folders written to, as ``labels/``, ``crops/``."""
        return [f"{p.name}/" for p in (self.labels, self.crops and self.crops.root) if p is not None]

    def write(self, image: np.ndarray, det: dict[str, torch.Tensor], stem: str) -> None:
        """The files of one image or frame: (H, W, 3) BGR ``image`` and its kept detections ``det``."""
        height, width = image.shape[:2]
        if self.labels is not None:
            lines = yolo_lines(det, height, width, with_score=self.with_score)
            write_label_file(self.labels / f"{stem}.txt", lines)
        if self.crops is not None:
            self.crops.write(image, det, stem)
