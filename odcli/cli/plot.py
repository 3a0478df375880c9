"""``odet plot RUN_DIR [RUN_DIR …]``: a run's training curves from its logs, or several runs overlaid.

One run: ``RUN_DIR/curves.png`` is drawn again from ``metrics.jsonl`` / ``epochs.jsonl`` (what
training draws after each evaluation; this works on a run still training, or on one trained before
odet drew pictures). Several runs: one figure comparing them, one colour per run, each named by its
directory. ``--metric`` chooses the panels: evaluation metrics (``mAP``, ``mAP_50``, ``AR@100``, …),
losses (``loss``, ``loss_cls``, …) or ``lr``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from odcli.cli.common import console, ensure_output_dir, user_errors
from odcli.cli.options import out_option
from odcli.errors import OdetError

_FORMATS = (".png", ".pdf", ".svg")


def _labels(run_dirs: list[Path]) -> list[str]:
    """Each run's directory name; ``parent/name`` where two runs share a name (runs/a/demo, runs/b/demo)."""
    names = [d.resolve().name for d in run_dirs]
    return [
        f"{d.resolve().parent.name}/{name}" if names.count(name) > 1 else name
        for d, name in zip(run_dirs, names, strict=True)
    ]


@user_errors
def plot(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR", help="run directories written by odet train"
    ),
    metric: list[str] = typer.Option(
        [],
        "--metric",
        "-m",
        help="a panel to draw, repeatable: mAP, mAP_50, mAP_75, AR@100 …, a loss (loss, loss_cls …) or lr "
        "(default: every loss, lr and the COCO metrics; with several runs: losses, lr, mAP, mAP_50)",
    ),
    out: Path | None = out_option(
        None,
        "picture to write, .png, .pdf or .svg (default: RUN_DIR/curves.png for one run, "
        "curves_compare.png in the current directory for several)",
    ),
) -> None:
    """Draw training curves (losses, lr, mAP) from run logs; several runs are overlaid to compare."""
    from odcli.viz.curves import draw_curves
    from odcli.viz.plotting import PLOTS_INSTALL, plots_available
    from odcli.viz.run_logs import curves_of, read_run_history

    seen: set[Path] = set()
    for d in run_dirs:
        if d.resolve() in seen:
            raise OdetError(f"{d} is given twice; name each run directory once")
        seen.add(d.resolve())
    histories = [read_run_history(d) for d in run_dirs]  # bad directories first: the clearer error
    if not plots_available():
        raise OdetError(f"odet plot needs matplotlib, which is not installed: {PLOTS_INSTALL}")
    runs = [curves_of(h, label) for h, label in zip(histories, _labels(run_dirs), strict=True)]
    path = out or (run_dirs[0] / "curves.png" if len(run_dirs) == 1 else Path("curves_compare.png"))
    if path.suffix.lower() not in _FORMATS:
        raise OdetError(f"--out {path}: choose a .png, .pdf or .svg file")
    ensure_output_dir(path.parent)
    picture = draw_curves(runs, path, keys=metric or None)
    shown = "1 run" if len(runs) == 1 else f"{len(runs)} runs"
    panels = f"{len(picture.panels)} panel{'s' if len(picture.panels) > 1 else ''}"
    console.print(f"curves of {shown} ({panels}) → {picture.path}", soft_wrap=True)
