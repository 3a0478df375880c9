"""The one way to build a dataset: a recipe's split, optionally with its files given explicitly.

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
from odcli.data.yolo import YoloDetection
from odcli.data.yolo_layout import yaml_class_names, yolo_split
from odcli.errors import OdetError

__all__ = ["DATA_FORMATS", "build_dataset"]

DATA_FORMATS = ("coco", "yolo")


def _given(path: Path, flag: str, folder: bool) -> Path:
    """A path a command gave with ``flag``, checked to be a folder (``folder``) or a file."""
    if not (path.is_dir() if folder else path.is_file()):
        raise OdetError(
            f"{'image directory' if folder else 'annotation file'} not found: {path} (check {flag})"
        )
    return path


def _existing(
    given: Path | None, recipe_path: Path, *, what: str, key: str, flag: str, other_given: bool, folder: bool
) -> Path:
    """The path a command gave (``flag``), else the recipe's (``key``), checked to be a folder
    (``folder``) or a file: a missing one is a one-line error naming where it came from. When the
    other path of the pair was given, the recipe path's error also suggests ``flag``."""
    if given is not None:
        return _given(given, flag, folder)
    if not recipe_path.exists():
        alternative = f", or pass {flag}" if other_given else ""
        raise OdetError(
            f"{what} not found: {recipe_path} (set {key} in the recipe or --set {key}=…{alternative})"
        )
    return recipe_path


def build_dataset(
    data: Any,
    root: Path,
    split: Literal["train", "val", "test"],
    transforms: Any = None,
    *,
    ann: Path | None = None,
    images: Path | None = None,
) -> CocoDetection:
    """The ``split`` dataset a recipe describes, or the files a command names instead.

    Every command builds its datasets here (training, ``odet eval``, ``odet profile --data``,
    ``odet visualize-data``), so ``data.format`` and the split's filters mean the same everywhere.

    Args:
        data: a :class:`~odcli.recipe.DataConfig` (``format``, ``train_ann``/``train_images``, ...).
        root: the resolved dataset root (``recipe.data_root``): a folder, or a YOLO ``data.yaml``.
        split: ``"train"`` (applies ``data.filter_empty`` / ``data.min_size``), ``"val"`` (no filter),
            or ``"test"`` (no filter; only a YOLO ``data.yaml`` names one).
        transforms: ``(sample, rng) -> sample`` for ``__getitem__``; None returns raw samples.
        ann: a COCO instances JSON to use instead of the split's (``odet eval --ann``). The dataset is
            then COCO whatever ``data.format`` says; its images are ``images`` or the split's folder.
        images: an image folder to use instead of the split's (``odet eval --images``). Without
            ``ann``: a COCO dataset with the split's annotation file, or, for ``data.format: yolo``, the
            YOLO images of that folder (labels in the matching ``labels`` folder, class names found
            from ``root`` as for the recipe's own splits).

    Returns:
        A :class:`~odcli.data.coco.CocoDetection` (a :class:`~odcli.data.yolo.YoloDetection` for YOLO
        data): labels 0..K-1 in ascending category id, ``(index, seed)`` keys, ``coco`` for scoring.

    Raises:
        OdetError: unknown format; a missing file or folder (naming the recipe key, or ``--ann`` /
            ``--images`` for a path given explicitly); malformed annotations or labels.
    """
    if data.format not in DATA_FORMATS:
        raise OdetError(f"data.format must be one of {', '.join(DATA_FORMATS)}, got {data.format!r}")
    what = "training" if split == "train" else "validation"
    filters = {"filter_empty": data.filter_empty, "min_size": data.min_size} if split == "train" else {}
    folder = root.parent if root.is_file() else root
    if data.format == "yolo" and ann is None:
        if images is not None:
            image_dir = _given(images, "--images", folder=True)
            names = yaml_class_names(root)  # None: classes.txt, found by YoloDetection
            return YoloDetection(
                image_dir=image_dir, root=folder, names=names, transforms=transforms, **filters
            )
        chosen = yolo_split(data, root, split)
        return YoloDetection(
            image_dir=chosen.base,
            files=chosen.files,
            names=chosen.names,
            root=folder,
            transforms=transforms,
            origin=chosen.origin,
            from_yaml=chosen.from_yaml,
            **filters,
        )
    if split not in ("train", "val") and not (ann is not None and images is not None):
        raise OdetError(f"a COCO recipe names only train and val splits, not {split!r}")
    image_dir = _existing(
        images,
        root / getattr(data, f"{split}_images"),
        what=f"{what} images",
        key=f"data.{split}_images",
        flag="--images",
        other_given=ann is not None,
        folder=True,
    )
    ann_file = _existing(
        ann,
        root / getattr(data, f"{split}_ann"),
        what=f"{what} annotations",
        key=f"data.{split}_ann",
        flag="--ann",
        other_given=images is not None,
        folder=False,
    )
    return CocoDetection(ann_file=ann_file, image_dir=image_dir, transforms=transforms, **filters)
