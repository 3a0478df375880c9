"""``odet visualize-assign IMAGE``: which priors each label assigner makes positive, per FPN level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from odcli.cli.common import console, ensure_output_dir, user_errors
from odcli.errors import OdetError

if TYPE_CHECKING:
    import numpy as np


def parse_boxes(text: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``"x1,y1,x2,y2,label;…"`` (original pixels; label a class name or index) → (G, 4), (G,)."""
    import numpy as np

    boxes, labels = [], []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields = [f.strip() for f in part.split(",")]
        if len(fields) not in (4, 5):
            raise OdetError(f"--boxes entry {part!r}: expected x1,y1,x2,y2[,label]")
        try:
            box = [float(v) for v in fields[:4]]
        except ValueError:
            raise OdetError(f"--boxes entry {part!r}: coordinates must be numbers") from None
        if box[2] <= box[0] or box[3] <= box[1]:
            raise OdetError(f"--boxes entry {part!r}: need x2 > x1 and y2 > y1")
        label = fields[4] if len(fields) == 5 else "0"
        if label.isdigit():
            index = int(label)
        elif label in classes:
            index = classes.index(label)
        else:
            raise OdetError(f"--boxes label {label!r} is neither a class index nor a class name")
        boxes.append(box)
        labels.append(index)
    if not boxes:
        raise OdetError("--boxes is empty; give x1,y1,x2,y2,label;…")
    return np.array(boxes, np.float32), np.array(labels, np.int64)


def _annotation_candidates(image: Path, recipe_anns: list[Path]) -> list[Path]:
    """COCO files that may list ``image``: the recipe's, then any beside the image or its folder."""
    found = [p for p in recipe_anns if p.is_file()]
    for folder in (image.parent, image.parent.parent, image.parent.parent / "annotations"):
        if folder.is_dir():
            found += sorted(folder.glob("*.json"))
    return list(dict.fromkeys(found))


def boxes_from_annotations(image: Path, ann_files: list[Path]) -> tuple[np.ndarray, np.ndarray, Path] | None:
    """GT of ``image`` (matched by file name) from the first COCO file that lists it."""
    from odcli.data.coco import CocoDetection

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


def _load_detector(arch: str | None, recipe: Path | None, weights: Path | None) -> tuple[Any, list[str], str]:
    """(model, class names, description) from --weights / --recipe / --arch, else the latest run."""
    import odcli
    from odcli.data.coco_classes import COCO_CLASSES
    from odcli.engine.run_dir import latest_run
    from odcli.inference.predictor import load_model

    if weights is not None:
        loaded = load_model(weights, arch=arch, device="cpu", optimize=False)
        return loaded.model, loaded.classes, f"{loaded.model.arch} with weights {weights}"
    if recipe is not None or arch is not None:
        model = odcli.build_detector(str(recipe or arch))
        names = list(COCO_CLASSES) if model.num_classes == 80 else [str(i) for i in range(model.num_classes)]
        return model, names, f"{model.arch} (untrained: dynamic assigners follow the priors only)"
    run = latest_run()
    best = run / "best.safetensors" if run else None
    if best is not None and best.exists():
        loaded = load_model(best, device="cpu", optimize=False)
        return loaded.model, loaded.classes, f"{loaded.model.arch} from the latest run {best}"
    model = odcli.build_detector("rtmdet_tiny")
    return model, list(COCO_CLASSES), "rtmdet_tiny (untrained: dynamic assigners follow the priors only)"


@user_errors
def visualize_assign(
    image: Path = typer.Argument(..., help="Image file."),
    arch: str | None = typer.Option(None, "--arch", help="Detector, e.g. rtmdet_tiny, retinanet_r18."),
    recipe: Path | None = typer.Option(None, "--recipe", help="Recipe whose model (and dataset) to use."),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="Trained weights (dynamic assigners)."),
    boxes: str | None = typer.Option(
        None, "--boxes", help='GT boxes in image pixels: "x1,y1,x2,y2,label;…".'
    ),
    ann: Path | None = typer.Option(None, "--ann", help="COCO annotation file that lists the image."),
    assigner: list[str] = typer.Option([], "--assigner", "-a", help="maxiou, atss, tal, dsl (default: all)."),
    out: Path = typer.Option(Path("runs/assign"), "--out", "-o", help="Output directory."),
) -> None:
    """Draw, per FPN level, the priors each assigner makes positive for each ground-truth box."""
    import cv2
    import torch

    from odcli.data.image_io import read_image
    from odcli.data.loader import collate, prepare_batch
    from odcli.inference.predictor import Predictor
    from odcli.viz.assignment import (
        ASSIGNERS,
        DYNAMIC,
        draw_assignment,
        run_assigner,
        stack_rows,
        summarize,
    )

    names = assigner or list(ASSIGNERS)
    for name in names:
        if name not in ASSIGNERS:
            raise OdetError(f"unknown assigner {name!r}; choose from {', '.join(ASSIGNERS)}")
    img = read_image(image)
    model, classes, described = _load_detector(arch, recipe, weights)
    model.eval()
    if not hasattr(model.head, "prior_view"):
        raise OdetError(f"{model.arch}'s head cannot show its priors yet")

    if boxes is not None:
        gt, labels = parse_boxes(boxes, classes)
        source = "--boxes"
    else:
        recipe_anns: list[Path] = []
        if recipe is not None:
            from odcli.recipe import load_recipe

            r = load_recipe(recipe)
            recipe_anns = [r.data_root / r.data.val_ann, r.data_root / r.data.train_ann]
        found = boxes_from_annotations(image, [ann] if ann else _annotation_candidates(image, recipe_anns))
        if found is None:
            raise OdetError(
                f'no ground-truth boxes for {image.name}: pass --boxes "x1,y1,x2,y2,label;…" or '
                "--ann a COCO file that lists it"
            )
        gt, labels, ann_used = found
        source = str(ann_used)
        if len(gt) == 0:
            raise OdetError(f"{image.name} has no boxes in {ann_used}; pass --boxes to draw some")

    import numpy as np

    predictor = Predictor(model)
    sample = predictor.prepare(img, file_name=image.name)
    sx, sy = sample["scale_factor"]
    gt_input = gt * np.array([sx, sy, sx, sy], np.float32)
    batch, _, metas = collate([sample], pad_value=int(model.input_spec.pad_value))
    with torch.no_grad():
        view = model.head.prior_view(*model(prepare_batch(batch, metas, model.input_spec, "cpu")))

    ensure_output_dir(out)
    rows, summaries = [], []
    gt_t, labels_t = torch.from_numpy(gt_input), torch.from_numpy(labels)
    for name in names:
        result = run_assigner(name, view, gt_t, labels_t)
        summaries.append(summarize(name, result, view, len(gt)))
        strip = draw_assignment(sample["img"], view, result, gt_input, name.upper())
        cv2.imwrite(str(out / f"assign_{image.stem}_{name}.png"), strip)
        rows.append(strip)
    picture = out / f"assign_{image.stem}.png"
    cv2.imwrite(str(picture), stack_rows(rows))
    report = {
        "image": str(image),
        "model": described,
        "gt_source": source,
        "gt_boxes_input_pixels": gt_input.tolist(),
        "gt_labels": labels.tolist(),
        "levels": [list(s) for s in view.level_sizes],
        "assigners": [s.to_dict() for s in summaries],
    }
    (out / f"assign_{image.stem}.json").write_text(json.dumps(report))

    table = Table(title=f"positives per GT per level — {described}", title_justify="left")
    table.add_column("GT")
    for s in summaries:
        table.add_column(f"{s.assigner} (P3…)", justify="right")
    for g in range(len(gt)):
        name = classes[labels[g]] if 0 <= labels[g] < len(classes) else str(labels[g])
        table.add_row(f"{g} {name}", *("/".join(map(str, s.counts[g])) for s in summaries))
    console.print(table)
    if weights is None and any(n in DYNAMIC for n in names) and "untrained" in described:
        console.print("note: without --weights the dynamic assigners (tal, dsl) see untrained predictions")
    console.print(f"boxes from {source} · picture {picture}")
