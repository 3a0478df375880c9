"""``odet visualize-assign IMAGE``: which priors each label assigner makes positive, per FPN level."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from odcli.cli.common import console, ensure_output_dir, user_errors
from odcli.cli.options import arch_option, out_option, parse_boxes, weights_option
from odcli.errors import OdetError

if TYPE_CHECKING:
    import numpy as np

    from odcli.inference.load import LoadedModel
    from odcli.recipe import Recipe

UNTRAINED = "untrained: dynamic assigners follow the priors only"


def _load_detector(arch: str | None, recipe: Recipe | None, weights: Path | None) -> tuple[LoadedModel, str]:
    """(model, description) from --weights / --recipe / --arch, else the latest run's best weights,
    else an untrained RTMDet-tiny."""
    from odcli.engine.run_dir import latest_run
    from odcli.inference.load import load_model

    if weights is not None:
        loaded = load_model(weights, arch=arch, device="cpu", optimize=False)
        return loaded, f"{loaded.model.arch} with weights {weights}"
    if recipe is not None or arch is not None:
        loaded = load_model(arch=arch, config=recipe.model if recipe else None, device="cpu", optimize=False)
        return loaded, f"{loaded.model.arch} ({UNTRAINED})"
    run = latest_run()
    best = run / "best.safetensors" if run else None
    if best is not None and best.exists():
        loaded = load_model(best, device="cpu", optimize=False)
        return loaded, f"{loaded.model.arch} from the latest run {best}"
    loaded = load_model(arch="rtmdet_tiny", device="cpu", optimize=False)
    return loaded, f"rtmdet_tiny ({UNTRAINED})"


def _ground_truth(
    image: Path, boxes: str | None, ann: Path | None, recipe: Recipe | None, classes: list[str]
) -> tuple[np.ndarray, np.ndarray, str]:
    """(GT boxes (G, 4) xyxy image pixels, labels (G,), where they came from) for ``image``."""
    from odcli.data.annotation_lookup import annotation_candidates, boxes_from_annotations

    if boxes is not None:
        gt, labels = parse_boxes(boxes, classes)
        return gt, labels, "--boxes"
    preferred = (
        [recipe.data_root / recipe.data.val_ann, recipe.data_root / recipe.data.train_ann] if recipe else []
    )
    found = boxes_from_annotations(image, [ann] if ann else annotation_candidates(image, preferred))
    if found is None:
        raise OdetError(
            f'no ground-truth boxes for {image.name}: pass --boxes "x1,y1,x2,y2,label;…" or '
            "--ann a COCO file that lists it"
        )
    gt, labels, ann_used = found
    if len(gt) == 0:
        raise OdetError(f"{image.name} has no boxes in {ann_used}; pass --boxes to draw some")
    return gt, labels, str(ann_used)


@user_errors
def visualize_assign(
    image: Path = typer.Argument(..., help="Image file."),
    arch: str | None = arch_option("The model to build (untrained unless --weights)."),
    recipe: Path | None = typer.Option(None, "--recipe", help="Recipe whose model (and dataset) to use."),
    weights: Path | None = weights_option(
        "Upstream files need --arch. Trained weights make the dynamic assigners (tal, dsl) meaningful."
    ),
    boxes: str | None = typer.Option(
        None, "--boxes", help='GT boxes in image pixels: "x1,y1,x2,y2,label;…".'
    ),
    ann: Path | None = typer.Option(None, "--ann", help="COCO annotation file that lists the image."),
    assigner: list[str] = typer.Option([], "--assigner", "-a", help="maxiou, atss, tal, dsl (default: all)."),
    out: Path = out_option(Path("runs/assign"), "Output directory."),
) -> None:
    """Draw, per FPN level, the priors each assigner makes positive for each ground-truth box."""
    import cv2

    from odcli.data.image_io import read_image
    from odcli.viz.assignment import (
        ASSIGNERS,
        DYNAMIC,
        assign_image,
        check_assigners,
        draw_assignment,
        stack_rows,
    )

    names = assigner or list(ASSIGNERS)
    check_assigners(names)
    img = read_image(image)
    parsed_recipe = None
    if recipe is not None:
        from odcli.recipe import load_recipe

        parsed_recipe = load_recipe(recipe)
    loaded, described = _load_detector(arch, parsed_recipe, weights)
    gt, labels, source = _ground_truth(image, boxes, ann, parsed_recipe, loaded.classes)
    result = assign_image(loaded.model, img, gt, labels, names)

    ensure_output_dir(out)
    rows = []
    for name, assigned in result.results.items():
        strip = draw_assignment(result.image, result.view, assigned, result.gt_boxes, name.upper())
        cv2.imwrite(str(out / f"assign_{image.stem}_{name}.png"), strip)
        rows.append(strip)
    picture = out / f"assign_{image.stem}.png"
    cv2.imwrite(str(picture), stack_rows(rows))
    report = {
        "image": str(image),
        "model": described,
        "gt_source": source,
        "gt_boxes_input_pixels": result.gt_boxes.tolist(),
        "gt_labels": labels.tolist(),
        "levels": [list(s) for s in result.view.level_sizes],
        "assigners": [s.to_dict() for s in result.summaries],
    }
    (out / f"assign_{image.stem}.json").write_text(json.dumps(report))

    classes = loaded.classes
    table = Table(title=f"positives per GT per level — {described}", title_justify="left")
    table.add_column("GT")
    for s in result.summaries:
        table.add_column(f"{s.assigner} (P3…)", justify="right")
    for g in range(len(gt)):
        name = classes[labels[g]] if 0 <= labels[g] < len(classes) else str(labels[g])
        table.add_row(f"{g} {name}", *("/".join(map(str, s.counts[g])) for s in result.summaries))
    console.print(table)
    if weights is None and any(n in DYNAMIC for n in names) and UNTRAINED in described:
        console.print("note: without --weights the dynamic assigners (tal, dsl) see untrained predictions")
    console.print(f"boxes from {source} · picture {picture}")
