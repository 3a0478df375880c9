"""Regenerate the bundled demo data set ``recipes/data/coco8`` from COCO128.

Picks 8 images: 000000000009.jpg and 000000000025.jpg (the reference "batch A") plus 6 small files with
a few non-crowd boxes each, chosen greedily to add the most classes not yet covered. Copies them and
writes a COCO instances file with all 80 categories, only those images and their annotations, and no
``segmentation`` fields (boxes only, to stay small).

Usage::

    python tools/make_coco8.py [--src /work/shared/data/coco128] [--dst recipes/data/coco8]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

REQUIRED = ("000000000009.jpg", "000000000025.jpg")
NUM_IMAGES = 8
MAX_FILE_BYTES = 120_000  # candidates beyond the required two: keep the bundle small
BOX_RANGE = (2, 8)  # "a few boxes" per candidate image


def select_images(data: dict, image_dir: Path) -> list[dict]:
    """The image entries to keep, in the source file's order (deterministic for a given source)."""
    anns_by_img: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        anns_by_img[ann["image_id"]].append(ann)

    def classes_of(img: dict) -> set[int]:
        return {a["category_id"] for a in anns_by_img[img["id"]]}

    by_name = {img["file_name"]: img for img in data["images"]}
    chosen = [by_name[n] for n in REQUIRED]
    covered = set().union(*(classes_of(i) for i in chosen))
    candidates = []
    for img in data["images"]:
        anns = anns_by_img[img["id"]]
        size = (image_dir / img["file_name"]).stat().st_size
        no_crowd = not any(a.get("iscrowd", 0) for a in anns)
        if img in chosen or not no_crowd or size > MAX_FILE_BYTES:
            continue
        if BOX_RANGE[0] <= len(anns) <= BOX_RANGE[1]:
            candidates.append((img, size))
    while len(chosen) < NUM_IMAGES and candidates:
        # Most new classes first, then the smaller file, then the lower id (stable tie-break).
        best = max(candidates, key=lambda c: (len(classes_of(c[0]) - covered), -c[1], -c[0]["id"]))
        candidates.remove(best)
        chosen.append(best[0])
        covered |= classes_of(best[0])
    order = {img["id"]: k for k, img in enumerate(data["images"])}
    return sorted(chosen, key=lambda img: order[img["id"]])


def main() -> None:
    """Write ``<dst>/images/*.jpg`` and ``<dst>/annotations/instances.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/work/shared/data/coco128"))
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--dst", type=Path, default=repo / "recipes/data/coco8")
    args = parser.parse_args()

    data = json.loads((args.src / "annotations/instances.json").read_text())
    images = select_images(data, args.src / "images")
    keep_ids = {img["id"] for img in images}
    annotations = [
        {k: v for k, v in ann.items() if k != "segmentation"}
        for ann in data["annotations"]
        if ann["image_id"] in keep_ids
    ]
    out = {
        "info": data.get("info", {}),
        "licenses": data.get("licenses", []),
        "categories": data["categories"],
        "images": images,
        "annotations": annotations,
    }

    img_dst = args.dst / "images"
    if img_dst.exists():
        shutil.rmtree(img_dst)  # drop images of an earlier selection
    img_dst.mkdir(parents=True)
    for img in images:
        shutil.copyfile(args.src / "images" / img["file_name"], img_dst / img["file_name"])
    ann_dst = args.dst / "annotations/instances.json"
    ann_dst.parent.mkdir(parents=True, exist_ok=True)
    ann_dst.write_text(json.dumps(out, separators=(",", ":")) + "\n")

    total = sum(p.stat().st_size for p in args.dst.rglob("*") if p.is_file())
    print(f"wrote {len(images)} images, {len(annotations)} boxes, {total / 1e6:.2f} MB to {args.dst}")
    for img in images:
        cats = sorted({a["category_id"] for a in annotations if a["image_id"] == img["id"]})
        print(f"  {img['file_name']}  {img['width']}x{img['height']}  category ids {cats}")


if __name__ == "__main__":
    main()
