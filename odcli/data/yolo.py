"""YOLO-format detection datasets (Ultralytics layout), served with the :class:`CocoDetection` interface.

Layout::

    <root>/classes.txt            one class name per line   (or data.yaml / data.yml / dataset.yaml
                                                              with ``names:`` as a list or {index: name})
    <root>/images/<split>/*.jpg   images (any of .jpg .jpeg .png .bmp .webp .tif .tiff, nested allowed)
    <root>/labels/<split>/*.txt   one file per image, same relative path and stem; one object a line:
                                  ``class cx cy w h`` — class index from 0, the rest normalised to
                                  0..1 by the image width/height. A line with more than 5 numbers is a
                                  polygon ``class x1 y1 x2 y2 ...``; its bounding box is used.

The labels folder is the image folder with its last ``images`` path component replaced by
``labels`` (``images/train`` → ``labels/train``, ``train/images`` → ``train/labels``). An image without
a label file (or with an empty one) has no objects.

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
import yaml

from odcli.data.coco import CocoDetection
from odcli.data.transforms import Sample
from odcli.errors import OdetError

__all__ = ["IMAGE_SUFFIXES", "NAME_FILES", "YoloDetection", "labels_dir_for", "read_class_names"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Class-name files looked for, in this order, in the dataset root (then above the image folder).
NAME_FILES = ("classes.txt", "data.yaml", "data.yml", "dataset.yaml")

# EXIF orientations 5..8 rotate by 90°: the decoded image has width and height swapped.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}


def labels_dir_for(image_dir: Path) -> Path:
    """The label folder of ``image_dir``: its last ``images`` component replaced by ``labels``.

    Raises:
        OdetError: ``image_dir`` has no ``images`` component.
    """
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise OdetError(
        f"YOLO image folder {image_dir} has no 'images' component, so its labels folder is unknown; "
        "use the layout images/<split> + labels/<split>"
    )


def _names_from_yaml(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OdetError(f"cannot read class names from {path}: {str(exc).splitlines()[0]}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise OdetError(f"{path}: 'names' keys must be class indices 0..K-1") from None
        if keys != list(range(len(keys))):
            raise OdetError(f"{path}: 'names' keys must be 0..{len(keys) - 1} without gaps, got {keys}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise OdetError(f"{path} has no 'names' list (or {{index: name}} mapping) of classes")


def read_class_names(root: Path, image_dir: Path | None = None) -> tuple[list[str], Path]:
    """Class names of a YOLO dataset and the file they came from.

    Looks for :data:`NAME_FILES` in ``root``, then in the two folders above ``image_dir``.

    Raises:
        OdetError: no names file, an unreadable one, or no names in it.
    """
    folders = [root]
    if image_dir is not None:
        folders += [p for p in list(image_dir.parents)[:2] if p != root]
    for folder in folders:
        for name in NAME_FILES:
            path = folder / name
            if not path.is_file():
                continue
            if path.suffix == ".txt":
                try:
                    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
                except (OSError, UnicodeDecodeError) as exc:
                    raise OdetError(f"cannot read class names from {path}: {exc}") from None
            else:
                names = _names_from_yaml(path)
            if not names:
                raise OdetError(f"{path} lists no class names")
            return names, path
    raise OdetError(
        f"no class names for the YOLO dataset in {root}: add classes.txt (one name per line) or "
        "data.yaml with 'names:'"
    )


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

    Attributes (beyond CocoDetection's): ``labels_dir``, ``names_file``. ``ann_file`` is the labels
    folder (it names the source in messages); ``cat_ids`` are 1..K.
    """

    def __init__(
        self,
        *,
        image_dir: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        labels_dir: str | os.PathLike[str] | None = None,
        names: Sequence[str] | None = None,
        transforms: Callable[[Sample, np.random.Generator], Sample] | None = None,
        filter_empty: bool = False,
        min_size: float = 0.0,
    ) -> None:
        """Index the label files.

        Args:
            image_dir: folder of the images (searched recursively).
            root: dataset root holding the names file (default: the parent of ``image_dir``'s
                ``images`` component).
            labels_dir: folder of the label files (default: :func:`labels_dir_for`).
            names: class names (default: read from the names file, :func:`read_class_names`).
            transforms: ``(sample, rng) -> sample`` applied by ``__getitem__``.
            filter_empty: drop images without objects.
            min_size: drop images whose width or height is below this, pixels.

        Raises:
            OdetError: missing folders or names, malformed label lines, unreadable images, no images.
        """
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise OdetError(f"image directory not found: {image_dir} (check data.root / image folder)")
        self.labels_dir = Path(labels_dir) if labels_dir is not None else labels_dir_for(image_dir)
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
        files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise OdetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, path in enumerate(files, start=1):
            rel = path.relative_to(image_dir)
            width, height = _image_size(path)
            images.append({"id": image_id, "file_name": rel.as_posix(), "width": width, "height": height})
            label_file = (self.labels_dir / rel).with_suffix(".txt")
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
