"""Where runs are written, and how later commands find the most recent one."""

from __future__ import annotations

import json
from pathlib import Path

from odcli.recipe import Recipe

LATEST_FILE = "latest.json"


def runs_root(recipe: Recipe) -> Path:
    """``train.output_dir`` (relative to the current directory)."""
    return Path(recipe.train.output_dir)


def choose_run_dir(recipe: Recipe, *, resume: bool) -> Path:
    """``<output_dir>/<recipe name>``; a new run never overwrites an earlier one (suffix -2, -3 …).

    With ``resume`` the most recent directory of that recipe is reused.
    """
    root = runs_root(recipe)
    base = root / recipe.name
    candidates = [base] + [root / f"{recipe.name}-{i}" for i in range(2, 1000)]
    existing = [p for p in candidates if p.exists()]
    if resume:
        return existing[-1] if existing else base
    return next(p for p in candidates if not p.exists())


def record_latest(recipe: Recipe, run_dir: Path) -> None:
    """Remember ``run_dir`` as the most recent run (read by infer/eval defaults)."""
    from odcli.engine.checkpoint import write_json_atomic

    write_json_atomic(
        runs_root(recipe) / LATEST_FILE, {"run_dir": str(run_dir.resolve()), "recipe": recipe.name}
    )


def default_weights(root: Path = Path("runs")) -> Path:
    """The best checkpoint of the most recent ``odet train`` run (for commands given no weights).

    Raises:
        OdetError: no run has been recorded under ``root`` (names the demo training command).
    """
    from odcli.errors import OdetError

    run = latest_run(root)
    for name in ("best.safetensors", "last.safetensors"):
        if run is not None and (run / name).is_file():
            return run / name
    raise OdetError(
        f"no --weights given and no training run found under {root}/; "
        "train one first with: odet train recipes/demo.yaml"
    )


def latest_run(root: Path = Path("runs")) -> Path | None:
    """The run directory recorded by the last ``odet train`` under ``root``, if it still exists."""
    try:
        run = Path(json.loads((root / LATEST_FILE).read_text())["run_dir"])
    except (OSError, ValueError, KeyError):
        return None
    return run if run.exists() else None
