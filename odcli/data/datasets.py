"""Datasets from a recipe's ``data`` section: COCO JSON or YOLO folders (``data.format``).

``data.format: coco`` (default): ``<root>/<train_ann>`` + ``<root>/<train_images>`` (and ``val_*``).
``data.format: yolo``: the splits an Ultralytics ``data.yaml`` names (``data.root`` is the dataset
folder holding it, or the file itself), else ``<root>/<train_images>`` (e.g. ``images/train``); labels
in the matching ``labels`` folder, class names in the data.yaml or ``<root>/classes.txt``
(:mod:`odcli.data.yolo_layout`); ``train_ann`` / ``val_ann`` are not used.
Either way the result has the :class:`~odcli.data.coco.CocoDetection` interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from odcli.data.coco import CocoDetection
from odcli.errors import OdetError

__all__ = ["DATA_FORMATS", "build_dataset"]

DATA_FORMATS = ("coco", "yolo")


def _require(path: Path, what: str, key: str) -> Path:
    if not path.exists():
        raise OdetError(f"{what} not found: {path} (set {key} in the recipe or --set {key}=…)")
    return path


def build_dataset(
    data: Any, root: Path, split: Literal["train", "val"], transforms: Any = None
) -> CocoDetection:
    """The ``split`` dataset a recipe describes.

    Args:
        data: a :class:`~odcli.recipe.DataConfig` (``format``, ``train_ann``/``train_images``, ...).
        root: the resolved dataset root (``recipe.data_root``).
        split: ``"train"`` (applies ``data.filter_empty`` / ``data.min_size``) or ``"val"`` (no filter).
        transforms: ``(sample, rng) -> sample`` for ``__getitem__``.

    Raises:
        OdetError: unknown format, missing files or folders, malformed annotations.
    """
    if data.format not in DATA_FORMATS:
        raise OdetError(f"data.format must be one of {', '.join(DATA_FORMATS)}, got {data.format!r}")
    what = "training" if split == "train" else "validation"
    filters = {"filter_empty": data.filter_empty, "min_size": data.min_size} if split == "train" else {}
    if data.format == "yolo":
        from odcli.data.yolo import YoloDetection
        from odcli.data.yolo_layout import yolo_split

        chosen = yolo_split(data, root, split)
        return YoloDetection(
            image_dir=chosen.base,
            files=chosen.files,
            names=chosen.names,
            root=root.parent if root.is_file() else root,
            transforms=transforms,
            origin=chosen.origin,
            from_yaml=chosen.from_yaml,
            **filters,
        )
    image_key = f"data.{split}_images"
    image_dir = _require(root / getattr(data, f"{split}_images"), f"{what} images", image_key)
    ann_key = f"data.{split}_ann"
    ann_file = _require(root / getattr(data, f"{split}_ann"), f"{what} annotations", ann_key)
    return CocoDetection(ann_file=ann_file, image_dir=image_dir, transforms=transforms, **filters)
