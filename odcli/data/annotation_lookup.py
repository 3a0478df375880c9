"""The ground truth of one image file, found in whichever COCO annotation file lists it
(``odet visualize-assign IMAGE`` without ``--boxes``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from odcli.data.coco import CocoDetection

__all__ = ["annotation_candidates", "boxes_from_annotations"]


def annotation_candidates(image: Path, preferred: list[Path]) -> list[Path]:
    """COCO files that may list ``image``: ``preferred`` (those that exist), then every ``*.json``
    beside the image, in its parent folder and in the parent's ``annotations`` folder."""
    found = [p for p in preferred if p.is_file()]
    for folder in (image.parent, image.parent.parent, image.parent.parent / "annotations"):
        if folder.is_dir():
            found += sorted(folder.glob("*.json"))
    return list(dict.fromkeys(found))


def boxes_from_annotations(image: Path, ann_files: list[Path]) -> tuple[np.ndarray, np.ndarray, Path] | None:
    """GT of ``image`` (matched by file name) from the first of ``ann_files`` that lists it.

    Returns:
        (boxes (G, 4) xyxy original pixels, labels (G,) contiguous class indices, the file), or
        None when no file lists the image. Files that are not COCO JSON are passed over.
    """
    for ann in ann_files:
        try:
            data = json.loads(ann.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            continue
        if not any(Path(str(im.get("file_name", ""))).name == image.name for im in data["images"]):
            continue
        dataset = CocoDetection(ann_file=ann, image_dir=image.parent)
        for i, image_id in enumerate(dataset.image_ids):
            if Path(dataset.coco.imgs[image_id]["file_name"]).name == image.name:
                boxes, labels = dataset.annotations(i)
                return boxes, labels, ann
    return None
