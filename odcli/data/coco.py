"""COCO-format detection dataset with MMDetection 3.3 ``CocoDataset`` semantics.

What matches upstream, and why it matters:

* Labels are contiguous 0..K-1 in **ascending category id** order (COCO: 1→0, …, 82→72, 90→79); the
  converted classifier weights index classes this way.
* Images keep the annotation file's order; each image's boxes keep the file's annotation order.
* A box is dropped (and counted in :attr:`CocoDetection.dropped_boxes`) when upstream drops it: no
  overlap with the declared image area, ``area <= 0``, or width/height < 1 px (so in particular every
  box with width <= 0 or height <= 0 after xywh → xyxy). Annotations marked ``"ignore": true`` are
  skipped. ``iscrowd`` boxes are not training targets (upstream only carries them as "ignored"
  instances, which none of our losses use): they are left out and counted in
  :attr:`CocoDetection.crowd_boxes`.
* ``filter_empty`` / ``min_size`` reproduce upstream ``filter_cfg``: an image is "empty" when no
  annotation of a selected category refers to it (so an image with only crowd boxes is kept, as
  upstream), and images with min(width, height) < ``min_size`` are dropped (declared sizes).
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from odcli.data.image_io import read_image
from odcli.data.sample import Sample, process_rng
from odcli.errors import OdetError

__all__ = ["CocoDetection", "load_coco_json"]

SampleTransform = Callable[[Sample, np.random.Generator], Sample]


def load_coco_json(ann_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and minimally validate a COCO instances JSON.

    Args:
        ann_file: path of the annotation file.

    Returns:
        The parsed dict, with ``images``, ``annotations`` (possibly empty) and ``categories`` lists.

    Raises:
        OdetError: missing/unreadable file, invalid JSON, or not a COCO detection file.
    """
    p = Path(ann_file)
    try:
        with open(p, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise OdetError(f"annotation file not found: {p} (check data.root / the annotation path)") from None
    except IsADirectoryError:
        raise OdetError(f"annotation path is a directory, not a JSON file: {p}") from None
    except OSError as exc:
        raise OdetError(f"cannot read annotation file {p}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OdetError(f"annotation file is not valid JSON: {p} ({exc}); re-export it") from None
    if not isinstance(data, dict):
        raise OdetError(f"annotation file is not a COCO object (expected a JSON object at top level): {p}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise OdetError(f"annotation file has no '{key}' list: {p} (is it a COCO instances file?)")
    if not isinstance(data.get("annotations", []), list):
        raise OdetError(f"annotation file's 'annotations' is not a list: {p}")
    data.setdefault("annotations", [])
    return data


def _bad_entry(p: Path, what: str, entry: Any, need: str) -> OdetError:
    """The error for an annotation entry missing a required field (shows a short repr of it)."""
    text = repr(entry)
    text = text if len(text) <= 80 else text[:77] + "..."
    return OdetError(f"invalid {what} in {p}: {text} (needs {need})")


class CocoDetection(Dataset):
    """Detection samples from a COCO instances file and an image directory.

    ``dataset[i]`` is ``transforms(load_raw(i))``; ``dataset[(i, seed)]`` does the same with a
    generator seeded by ``seed`` (what :func:`odcli.data.loader.build_loader` asks for, so that
    augmentation is reproducible). Boxes are pre-parsed at construction into flat arrays (cheap to
    share with forked DataLoader workers); images are decoded lazily.

    Attributes:
        classes: K class names, label order.
        cat_ids: K COCO category ids, label order (ascending).
        cat_id_to_label: COCO category id → label.
        image_ids: COCO image ids of the kept images, dataset order.
        dropped_boxes: boxes of the kept images dropped as degenerate (see module docstring).
        crowd_boxes: ``iscrowd`` boxes of the kept images left out of the targets.
        coco: the pycocotools ``COCO`` index of the whole file (for COCO evaluation).
        image_dir: directory that ``file_name`` entries are relative to.
    """

    #: ``__getitem__`` accepts ``(index, seed)`` keys (checked by ``build_loader``).
    supports_seeded_index = True

    def __init__(
        self,
        *,
        ann_file: str | os.PathLike[str],
        image_dir: str | os.PathLike[str],
        transforms: SampleTransform | None = None,
        filter_empty: bool = False,
        min_size: float = 0.0,
        classes: Sequence[str] | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        """Index the annotation file.

        Args:
            ann_file: COCO instances JSON.
            image_dir: directory holding the images (``file_name`` is relative to it).
            transforms: ``(sample, rng) -> sample`` applied by ``__getitem__`` (e.g. a ``Compose``).
            filter_empty: drop images that no annotation of a selected category refers to.
            min_size: drop images whose declared width or height is below this, pixels.
            classes: restrict to these category names (labels still follow ascending category id);
                None keeps every category of the file.
            dataset: the parsed COCO dict to use instead of reading ``ann_file`` (which then only names
                the source in messages), e.g. one built from another format by ``YoloDetection``.

        Raises:
            OdetError: bad annotation file, missing image directory, no categories, unknown class
                names, or no images (left).
        """
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.transforms = transforms
        data = load_coco_json(self.ann_file) if dataset is None else dataset
        if not self.image_dir.is_dir():
            raise OdetError(f"image directory not found: {self.image_dir} (check data.root / image folder)")
        self._validate(data)

        self.coco = COCO()
        self.coco.dataset = data
        # pycocotools prints progress lines on stdout; keep the CLI's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        cats = sorted(self.coco.cats.values(), key=lambda c: int(c["id"]))
        if not cats:
            raise OdetError(f"annotation file has no categories: {self.ann_file} (need at least one class)")
        if classes is not None:
            wanted = list(classes)
            known = {str(c["name"]) for c in cats}
            unknown = [n for n in wanted if n not in known]
            if unknown:
                raise OdetError(
                    f"unknown class name(s) {unknown} for {self.ann_file} (known: {sorted(known)[:10]}...)"
                )
            cats = [c for c in cats if c["name"] in set(wanted)]
        self.cat_ids: list[int] = [int(c["id"]) for c in cats]
        self.classes: list[str] = [str(c["name"]) for c in cats]
        self.cat_id_to_label: dict[int, int] = {cid: i for i, cid in enumerate(self.cat_ids)}

        all_ids = [int(i) for i in self.coco.getImgIds()]
        if not all_ids:
            raise OdetError(f"annotation file lists no images: {self.ann_file}")
        keep_ids = all_ids
        if filter_empty:
            with_ann: set[int] = set()
            for cid in self.cat_ids:
                with_ann.update(int(i) for i in self.coco.catToImgs.get(cid, []))
            keep_ids = [i for i in keep_ids if i in with_ann]
        if min_size > 0:
            imgs = self.coco.imgs
            keep_ids = [i for i in keep_ids if min(imgs[i]["width"], imgs[i]["height"]) >= min_size]
        if not keep_ids:
            anns = data["annotations"]
            if filter_empty and not anns:
                raise OdetError(
                    f"annotation file has no annotations: {self.ann_file} (training needs boxes; "
                    "export the instances file with its annotations, or set data.filter_empty=false)"
                )
            if filter_empty and not any(int(a["category_id"]) in self.cat_id_to_label for a in anns):
                raise OdetError(
                    f"no annotation in {self.ann_file} uses a category listed in its 'categories' "
                    f"(ids {sorted(self.cat_id_to_label)[:8]}); fix the category_id values or the categories"
                )
            raise OdetError(
                f"no images left in {self.ann_file} after filtering "
                f"(filter_empty={filter_empty}, min_size={min_size}); relax the data filters"
            )
        self._parse(keep_ids)

    def _validate(self, data: dict[str, Any]) -> None:
        """Check the fields this class reads, so a malformed file fails with a one-line message."""
        p = self.ann_file
        for img in data["images"]:
            if not (isinstance(img, dict) and {"id", "file_name", "width", "height"} <= img.keys()):
                raise _bad_entry(p, "image entry", img, "id, file_name, width, height")
        for cat in data["categories"]:
            if not (isinstance(cat, dict) and {"id", "name"} <= cat.keys()):
                raise _bad_entry(p, "category entry", cat, "id, name")
        for ann in data["annotations"]:
            ok = isinstance(ann, dict) and {"image_id", "bbox", "category_id"} <= ann.keys()
            if not (ok and isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4):
                raise _bad_entry(p, "annotation", ann, "image_id, category_id and a 4-number bbox")

    def _parse(self, image_ids: list[int]) -> None:
        """Turn the annotations of ``image_ids`` into flat box/label arrays with per-image offsets."""
        boxes: list[list[float]] = []
        labels: list[int] = []
        offsets = [0]
        self.dropped_boxes = 0
        self.crowd_boxes = 0
        self._file_names: list[str] = []
        for img_id in image_ids:
            info = self.coco.imgs[img_id]
            img_w, img_h = float(info["width"]), float(info["height"])
            self._file_names.append(str(info["file_name"]))
            for ann in self.coco.imgToAnns.get(img_id, []):
                label = self.cat_id_to_label.get(int(ann["category_id"]))
                if label is None or ann.get("ignore", False):
                    continue
                x, y, w, h = (float(v) for v in ann["bbox"])
                # Upstream's rule: no overlap with the image, empty area or a side under 1 px -> drop.
                inter_w = max(0.0, min(x + w, img_w) - max(x, 0.0))
                inter_h = max(0.0, min(y + h, img_h) - max(y, 0.0))
                area = float(ann.get("area", w * h))
                if inter_w * inter_h == 0 or area <= 0 or w < 1 or h < 1:
                    self.dropped_boxes += 1
                    continue
                if ann.get("iscrowd", 0):
                    self.crowd_boxes += 1
                    continue
                # x + w in float64 then one rounding to float32, as upstream builds its arrays.
                boxes.append([x, y, x + w, y + h])
                labels.append(label)
            offsets.append(len(boxes))
        self.image_ids: list[int] = list(image_ids)
        self._boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_boxes(self) -> int:
        """Boxes kept as training targets over all images (degenerate and crowd boxes excluded)."""
        return int(self._offsets[-1])

    def _index(self, i: int) -> int:
        """Normalise a possibly negative index; IndexError when out of range."""
        i = operator.index(i)
        n = len(self.image_ids)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return i % n

    def image_path(self, i: int) -> Path:
        """Path of image ``i``."""
        return self.image_dir / self._file_names[self._index(i)]

    def annotations(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) float32 xyxy original pixels and labels (N,) int64 of image ``i`` (copies),
        without decoding the image."""
        i = self._index(i)
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._boxes[a:b].copy(), self._labels[a:b].copy()

    def load_raw(self, i: int) -> Sample:
        """Image ``i`` and its targets, untransformed.

        Returns:
            A :class:`Sample`: ``img`` (H, W, 3) uint8 BGR, ``boxes`` (N, 4) float32 xyxy pixels,
            ``labels`` (N,) int64, shapes (h, w) of the decoded image, ``scale_factor`` (1.0, 1.0).

        Raises:
            OdetError: the image file is missing, unreadable or corrupt.
        """
        i = self._index(i)
        img = read_image(self.image_dir / self._file_names[i])
        boxes, labels = self.annotations(i)
        shape = (int(img.shape[0]), int(img.shape[1]))
        return {
            "img": img,
            "boxes": boxes,
            "labels": labels,
            "image_id": self.image_ids[i],
            "file_name": self._file_names[i],
            "ori_shape": shape,
            "img_shape": shape,
            "pad_shape": shape,
            "scale_factor": (1.0, 1.0),
        }

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """``transforms(load_raw(i))``; ``key`` is ``i`` or ``(i, seed)`` (seed → the transforms' rng)."""
        if isinstance(key, tuple):
            index, seed = key
            rng = np.random.default_rng(seed)
        else:
            index, rng = key, None
        sample = self.load_raw(index)
        if self.transforms is None:
            return sample
        return self.transforms(sample, rng if rng is not None else process_rng())

    def __repr__(self) -> str:
        return (
            f"CocoDetection(ann_file='{self.ann_file}', images={len(self)}, classes={len(self.classes)}, "
            f"dropped_boxes={self.dropped_boxes}, crowd_boxes={self.crowd_boxes})"
        )
