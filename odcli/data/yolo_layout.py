"""Where a YOLO dataset's files are: splits, label files and class names (Ultralytics layout).

Layout::

    <root>/classes.txt            one class name per line   (or data.yaml / data.yml / dataset.yaml
                                                              with ``names:`` as a list or {index: name})
    <root>/images/<split>/*.jpg   images (any of .jpg .jpeg .png .bmp .webp .tif .tiff, nested allowed)
    <root>/labels/<split>/*.txt   one label file per image (read by :mod:`odcli.data.yolo`)

The label file of an image is its path with the last ``images`` component replaced by ``labels`` and
the suffix by ``.txt`` (``images/train/a.jpg`` → ``labels/train/a.txt``, Ultralytics' rule).

An Ultralytics ``data.yaml`` names the splits itself (:func:`yolo_split`)::

    path: ../datasets/coco8   # dataset base; relative to the yaml's folder; default: that folder
    train: images/train       # relative to path: a folder, a .txt list of images, or a list of either
    val: images/val
    test: images/test         # optional
    names: {0: person, 1: bicycle, …}

``data.root`` may be the dataset folder holding it or the yaml file itself. A split the data.yaml
names is taken from it; ``data.train_images``/``data.val_images`` (folders below ``data.root``) apply
where there is no data.yaml or it does not name that split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from odcli.errors import OdetError

__all__ = [
    "IMAGE_SUFFIXES",
    "NAME_FILES",
    "YoloSplit",
    "find_dataset_yaml",
    "images_in",
    "label_file_for",
    "labels_dir_for",
    "read_class_names",
    "yaml_class_names",
    "yolo_split",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Class-name files looked for, in this order, in the dataset root (then above the image folder).
NAME_FILES = ("classes.txt", "data.yaml", "data.yml", "dataset.yaml")


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


def names_from_yaml(path: Path) -> list[str]:
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
                names = names_from_yaml(path)
            if not names:
                raise OdetError(f"{path} lists no class names")
            return names, path
    raise OdetError(
        f"no class names for the YOLO dataset in {root}: add classes.txt (one name per line) or "
        "data.yaml with 'names:'"
    )


YAML_FILES = tuple(n for n in NAME_FILES if n.endswith((".yaml", ".yml")))


@dataclass(frozen=True)
class YoloSplit:
    """The images of one split and where that choice came from.

    Attributes:
        base: folder the image file names are relative to (the split's folder, or the dataset base
            when the split lists several folders or a text file).
        files: the image files, sorted within each source, in the order the sources are listed.
        names: class names (from the data.yaml), or None to look for a names file.
        origin: for messages: ``data.yaml 'val'`` or ``data.val_images``.
        from_yaml: the split was named by a data.yaml (not by the recipe).
    """

    base: Path
    files: list[Path]
    names: list[str] | None
    origin: str
    from_yaml: bool


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OdetError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise OdetError(f"{path} is not a YOLO dataset description (a mapping with names, train, val)")
    return data


def images_in(source: Path, where: str) -> list[Path]:
    """Image files of one split source: a folder (recursively) or a text file listing images."""
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif source.is_file() and source.suffix == ".txt":
        try:
            lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise OdetError(f"cannot read the image list {source} ({where}): {exc}") from None
        # Ultralytics: relative entries ("./images/train/x.jpg") are relative to the list's folder.
        found = [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]
        missing = [p for p in found if not p.is_file()]
        if missing:
            raise OdetError(
                f"{len(missing)} of {len(found)} images listed in {source} ({where}) do not exist, "
                f"e.g. {missing[0]}"
            )
    else:
        raise OdetError(f"{where}: {source} is neither an image folder nor a .txt list of images")
    if not found:
        raise OdetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {source} ({where})")
    return found


def _common_base(files: Sequence[Path], fallback: Path) -> Path:
    try:
        return Path(os.path.commonpath([str(p.parent) for p in files]))
    except ValueError:  # mixed absolute/relative or different drives
        return fallback


def find_dataset_yaml(root: Path) -> Path | None:
    """The Ultralytics data.yaml ``root`` is or holds (one naming train/val), else None."""
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    for name in YAML_FILES:
        candidate = root / name
        if candidate.is_file():
            data = _read_yaml(candidate)
            if "train" in data or "val" in data:
                return candidate
    return None


def yaml_class_names(root: Path) -> list[str] | None:
    """The class names of the data.yaml ``root`` is or holds (:func:`find_dataset_yaml`); None when
    there is no such file or it lists no ``names``."""
    described = find_dataset_yaml(root)
    if described is None or "names" not in _read_yaml(described):
        return None
    return names_from_yaml(described)


def yolo_split(data: Any, root: Path, split: str) -> YoloSplit:
    """Which images form ``split`` ("train", "val" or "test") of a YOLO dataset.

    Args:
        data: a :class:`~odcli.recipe.DataConfig`; its ``<split>_images`` is used when no data.yaml
            names the split.
        root: the resolved ``data.root``: the dataset folder, or a data.yaml file.
    Raises:
        OdetError: a missing folder, list or split, or an unreadable data.yaml.
    """
    key = f"{split}_images"
    recipe_value = getattr(data, key, None)
    described = find_dataset_yaml(root)
    info = _read_yaml(described) if described is not None else {}
    if described is not None and info.get(split):
        base = Path(str(info.get("path") or "."))
        base = base if base.is_absolute() else (described.parent / base).resolve()
        entries = info[split] if isinstance(info[split], list) else [info[split]]
        where = f"{described.name} '{split}'"
        files: list[Path] = []
        for entry in entries:
            source = Path(str(entry))
            files += images_in(source if source.is_absolute() else base / source, where)
        names = names_from_yaml(described) if "names" in info else None
        single = Path(str(entries[0])) if len(entries) == 1 else None
        folder = (base / single) if single is not None and (base / single).is_dir() else None
        return YoloSplit(folder or _common_base(files, base), files, names, where, True)
    if root.is_file() or recipe_value is None:
        raise OdetError(
            f"{root} names no '{split}' split; add '{split}: images/{split}' to it or set data.{key}"
        )
    folder = (root.parent if root.is_file() else root) / str(recipe_value)
    if not folder.exists():
        what = {"train": "training", "val": "validation"}.get(split, split)
        raise OdetError(
            f"{what} images not found: {folder} (set data.{key} in the recipe or --set data.{key}=…)"
        )
    names = names_from_yaml(described) if described is not None and "names" in info else None
    return YoloSplit(folder, images_in(folder, f"data.{key}"), names, f"data.{key}", False)


def label_file_for(image: Path) -> Path:
    """An image's YOLO label file: the last ``images`` component → ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")  # no images/ folder: the label beside the image
