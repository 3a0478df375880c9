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


def _load_detector(
    arch: str | None, recipe: Recipe | None, weights: Path | None
) -> tuple[LoadedModel, str, bool]:
    """(model, description, whether it has trained weights) from --weights / --recipe / --arch, else
    the latest run's best weights, else an untrained RTMDet-tiny."""
    from odcli.engine.run_dir import latest_run
    from odcli.inference.load import load_model

    if weights is not None:
        loaded = load_model(weights, arch=arch, device="cpu", optimize=False)
        return loaded, f"{loaded.model.arch} with weights {weights.name}", True
    if recipe is not None or arch is not None:
        loaded = load_model(arch=arch, config=recipe.model if recipe else None, device="cpu", optimize=False)
        return loaded, f"{loaded.model.arch} (untrained)", False
    run = latest_run()
    best = run / "best.safetensors" if run else None
    if best is not None and best.exists():
        loaded = load_model(best, device="cpu", optimize=False)
        return loaded, f"{loaded.model.arch} from the latest run {best}", True
    loaded = load_model(arch="rtmdet_tiny", device="cpu", optimize=False)
    return loaded, "rtmdet_tiny (untrained)", False


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
        "Upstream files need --arch. With trained weights, tal and dsl rank the model's predictions; "
        "without, they run in static mode (see above)."
    ),
    boxes: str | None = typer.Option(
        None, "--boxes", help='GT boxes in image pixels: "x1,y1,x2,y2,label;…".'
    ),
    ann: Path | None = typer.Option(None, "--ann", help="COCO annotation file that lists the image."),
    assigner: list[str] = typer.Option([], "--assigner", "-a", help="maxiou, atss, tal, dsl (default: all)."),
    static: bool = typer.Option(
        False,
        "--static",
        help="Static mode for tal and dsl with trained weights too (without weights it is the default).",
    ),
    out: Path = out_option(Path("runs/assign"), "Output directory."),
) -> None:
    """Draw, per FPN level, the priors each assigner makes positive for each ground-truth box.

    Writes assign_IMAGE.png (all assigners), assign_IMAGE_NAME.png (one each)
    and assign_IMAGE.json, and prints positives per GT per level. A panel per
    level shows the GT boxes in one colour per GT (see the legend) and the
    grid cell of every positive prior filled in the colour of its GT.

    maxiou and atss need no predictions. tal and dsl rank the model's boxes
    and scores, which an untrained model does not have: without trained
    weights (or with --static) they run in static mode, in which each prior
    predicts its own box (its anchor, or a square of 5 strides around its
    point) with score 0.5 for every class, so the positives follow the
    geometry alone. The picture and the JSON ("mode": "static" or
    "predictions") say which was used.
    """
    from odcli.data.image_io import read_image
    from odcli.viz.assignment import ASSIGNERS, DYNAMIC, MODES, assign_image, check_assigners
    from odcli.viz.assignment_figure import draw_assignment, figure_colors, stack_rows
    from odcli.viz.palette import hex_color, write_png

    names = assigner or list(ASSIGNERS)
    check_assigners(names)
    img = read_image(image)
    parsed_recipe = None
    if recipe is not None:
        from odcli.recipe import load_recipe

        parsed_recipe = load_recipe(recipe)
    loaded, described, trained = _load_detector(arch, parsed_recipe, weights)
    gt, labels, source = _ground_truth(image, boxes, ann, parsed_recipe, loaded.classes)
    result = assign_image(loaded.model, img, gt, labels, names, static=static or not trained)

    ensure_output_dir(out)
    classes = loaded.classes
    rows = []
    for name in result.results:
        strip = draw_assignment(result, name, classes, model=described)
        write_png(out / f"assign_{image.stem}_{name}.png", strip)
        rows.append(strip)
    picture = out / f"assign_{image.stem}.png"
    h, w = result.content_shape
    heading = f"{image.name}: {len(gt)} GT boxes from {Path(source).name} | {described} | input {w}x{h} px"
    write_png(picture, stack_rows(rows, heading))
    names_of = [classes[c] if 0 <= c < len(classes) else f"class {c}" for c in labels.tolist()]
    report = {
        "image": str(image),
        "model": described,
        "gt_source": source,
        "gt_boxes_input_pixels": result.gt_boxes.tolist(),
        "gt_labels": labels.tolist(),
        "gt_classes": names_of,
        "gt_colors": [hex_color(c) for c in figure_colors(result)],
        "levels": [list(s) for s in result.view.level_sizes],
        "assigners": [s.to_dict() for s in result.summaries],
    }
    (out / f"assign_{image.stem}.json").write_text(json.dumps(report))

    table = Table(title=f"positives per GT per level — {described}", title_justify="left")
    table.add_column("GT")
    for s in result.summaries:
        mode = f" {s.mode}" if s.assigner in DYNAMIC else ""
        table.add_column(f"{s.assigner}{mode} (P3…)", justify="right")
    for g in range(len(gt)):
        table.add_row(f"{g} {names_of[g]}", *("/".join(map(str, s.counts[g])) for s in result.summaries))
    console.print(table)
    if any(s.mode == "static" for s in result.summaries):
        reason = "--static" if static else "no trained weights"
        console.print(f"note: tal and dsl in static mode ({reason}) — {MODES['static']}")
    console.print(f"boxes from {source} · picture {picture}")
