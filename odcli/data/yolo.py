"""YOLO-format detection datasets (Ultralytics layout), served with the :class:`CocoDetection` interface.

Where the files are (splits, data.yaml, label paths, class names) is :mod:`odcli.data.yolo_layout`;
this module reads them. A label file holds one object a line: ``class cx cy w h`` — class index from
0, the rest normalised to 0..1 by the image width/height. A line with more than 5 numbers is a polygon
``class x1 y1 x2 y2 ...``; its bounding box is used. An image without a label file (or with an empty
one) has no objects.

The annotations are converted once, at construction, into an in-memory COCO dict (category ids 1..K
in names order, image ids 1..N in sorted path order, pixel xywh boxes) handed to
:class:`~odcli.data.coco.CocoDetection`. Everything downstream is therefore shared with COCO data:
labels 0..K-1, the degenerate-box rules and counters, ``(index, seed)`` keys, and ``coco`` — a
pycocotools index that COCO evaluation runs on. Image sizes come from the file headers (Pillow, EXIF
orientation applied as OpenCV's decoder does), so no image is decoded here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from odcli.data.coco import CocoDetection
from odcli.data.sample import Sample
from odcli.data.yolo_layout import images_in, label_file_for, labels_dir_for, read_class_names
from odcli.errors import OdetError

__all__ = ["YoloDetection"]


# EXIF orientations 5..8 rotate by 90°: the decoded image has width and height swapped.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image *as decoded* (EXIF rotation applied), from the file header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, UnidentifiedImageError) as exc:
        raise OdetError(f"cannot read image header of {path}: {exc} (corrupt or unsupported image)") from None
    return (h, w) if orientation in _TRANSPOSED else (w, h)


def _parse_label_file(path: Path, num_classes: int, width: int, height: int) -> list[tuple[int, list[float]]]:
    """(class index, pixel [x, y, w, h]) of each object line of a YOLO label file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise OdetError(f"cannot read label file {path}: {exc}") from None
    objects = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise OdetError(
                f"{path}:{lineno}: not numbers: {line.strip()!r} (expected 'class cx cy w h')"
            ) from None
        cls = values[0]
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
            raise OdetError(
                f"{path}:{lineno}: expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 ...', "
                f"got {len(values)} numbers"
            )
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise OdetError(f"{path}:{lineno}: class {fields[0]} is not an index 0..{num_classes - 1}")
        if len(values) == 5:
            cx, cy, bw, bh = values[1:]
            x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        else:
            xs, ys = values[1::2], values[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        box = [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]
        objects.append((int(cls), box))
    return objects


class YoloDetection(CocoDetection):
    """Detection samples from a YOLO-format folder pair; the interface of :class:`CocoDetection`.

    Attributes (beyond CocoDetection's): ``labels_dir``, ``names_file``, ``origin`` (what chose the
    images, for messages), ``split_from_yaml`` (a data.yaml named the split, not the recipe).
    ``ann_file`` is the labels folder (it names the source in messages); ``cat_ids`` are 1..K.
    """

    def __init__(
        self,
        *,
        image_dir: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        labels_dir: str | os.PathLike[str] | None = None,
        names: Sequence[str] | None = None,
        files: Sequence[Path] | None = None,
        transforms: Callable[[Sample, np.random.Generator], Sample] | None = None,
        filter_empty: bool = False,
        min_size: float = 0.0,
        origin: str | None = None,
        from_yaml: bool = False,
    ) -> None:
        """Index the label files.

        Args:
            image_dir: folder of the images (searched recursively).
            root: dataset root holding the names file (default: the parent of ``image_dir``'s
                ``images`` component).
            labels_dir: folder of the label files (default: :func:`labels_dir_for`).
            names: class names (default: read from the names file, :func:`read_class_names`).
            files: the images (default: every image below ``image_dir``); file names are kept
                relative to ``image_dir`` where possible.
            transforms: ``(sample, rng) -> sample`` applied by ``__getitem__``.
            filter_empty: drop images without objects.
            min_size: drop images whose width or height is below this, pixels.
            origin: what chose these images, for messages (e.g. ``data.yaml 'val'``).
            from_yaml: a data.yaml named this split, not the recipe (see ``split_from_yaml``).

        Raises:
            OdetError: missing folders or names, malformed label lines, unreadable images, no images.
        """
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise OdetError(f"image directory not found: {image_dir} (check data.root / image folder)")
        self.origin = origin or str(image_dir)
        self.split_from_yaml = from_yaml
        custom_labels = labels_dir is not None
        try:
            self.labels_dir = Path(labels_dir) if custom_labels else labels_dir_for(image_dir)
        except OdetError:
            if files is None:
                raise
            self.labels_dir = image_dir  # listed images outside an images/ folder: labels beside them
        if root is None:  # the folder holding the 'images' component (root/images/train → root)
            parts = image_dir.parts
            cut = max((i for i, part in enumerate(parts) if part == "images"), default=len(parts) - 1)
            root = Path(*parts[:cut]) if cut else image_dir.parent
        root = Path(root)
        if names is None:
            names, self.names_file = read_class_names(root, image_dir)
        else:
            self.names_file = None
        names = list(names)
        if files is None:
            files = images_in(image_dir, self.origin)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, path in enumerate(files, start=1):
            # an image listed from elsewhere keeps its absolute path
            try:
                rel = path.relative_to(image_dir)
            except ValueError:
                rel = path
            width, height = _image_size(path)
            images.append({"id": image_id, "file_name": rel.as_posix(), "width": width, "height": height})
            label_file = (
                label_file_for(path) if not custom_labels else (self.labels_dir / rel).with_suffix(".txt")
            )
            if not label_file.is_file():
                continue
            for cls, box in _parse_label_file(label_file, len(names), width, height):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": cls + 1,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
        data = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
        }
        super().__init__(
            ann_file=self.labels_dir,
            image_dir=image_dir,
            transforms=transforms,
            filter_empty=filter_empty,
            min_size=min_size,
            dataset=data,
        )

    def __repr__(self) -> str:
        return (
            f"YoloDetection(image_dir='{self.image_dir}', labels_dir='{self.labels_dir}', "
            f"images={len(self)}, classes={len(self.classes)}, dropped_boxes={self.dropped_boxes})"
        )
