"""Where runs are written, and how later commands find the most recent one."""

from __future__ import annotations

import json
from pathlib import Path

from odcli.engine.console import TrainConsole
from odcli.errors import OdetError
from odcli.recipe import RUN_RECIPE, Recipe, dump_recipe, load_recipe, parse_override, recipe_changes
from odcli.weights.checkpoint import write_json_atomic, write_text_atomic

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


def prepare_run_dir(run_dir: Path, recipe: Recipe, out: TrainConsole) -> bool:
    """Create ``run_dir``, write the run's resolved ``recipe.yaml`` (what ``--resume`` continues
    from) and start ``train.log`` there; returns whether the directory is new.

    Raises:
        OdetError: the directory cannot be written (names the options that choose another).
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / RUN_RECIPE, dump_recipe(recipe.with_absolute_paths()))
        out.open_log(run_dir)
    except OSError as exc:
        raise OdetError(
            f"cannot write the run directory {run_dir}: {exc.strerror or exc}; "
            "choose another --run-dir or train.output_dir"
        ) from None
    return created


def record_latest(recipe: Recipe, run_dir: Path) -> None:
    """Remember ``run_dir`` as the most recent run (read by infer/eval defaults).

    ``latest.json`` goes beside the run (its parent directory: ``train.output_dir`` unless
    ``--run-dir`` chose another place), never into whatever directory the command was started from.
    """
    write_json_atomic(
        run_dir.resolve().parent / LATEST_FILE, {"run_dir": str(run_dir.resolve()), "recipe": recipe.name}
    )


def recipe_for_resume(recipe: Recipe, run_dir: Path, overrides: list[str]) -> tuple[Recipe, list[str]]:
    """The recipe a resumed run continues with, and what to tell the user about it.

    A run directory keeps the run's resolved recipe (``recipe.yaml``, written at its start with every
    ``--set`` applied): resuming continues *that* run, whatever the recipe file says now. ``overrides``
    given on resume change only the keys they name. Runs from before ``recipe.yaml`` existed (none in
    the directory) resume with ``recipe`` itself, as before.

    Args:
        recipe: the recipe file given on the command line, with ``overrides`` applied.
        run_dir: the run being resumed.
        overrides: the ``--set section.key=value`` texts of this command.
    Returns:
        (the recipe to train with — named and located like ``recipe``, so new runs and messages
        refer to the user's file —, lines describing each changed or ignored value).
    """
    stored = run_dir / RUN_RECIPE
    if not stored.is_file():
        return recipe, []
    run = load_recipe(stored, written_by_odet=True)
    resumed = load_recipe(stored, overrides, written_by_odet=True)
    resumed.name, resumed.path = recipe.name, recipe.path
    notes = [
        f"--set {key}={new!r} on resume: was {old!r} in this run (from {stored})"
        for key, old, new in recipe_changes(run, resumed)
    ]
    named = {f"{s}.{k}" for s, k, _ in (parse_override(text) for text in overrides)}
    ignored = [k for k, _, _ in recipe_changes(resumed, recipe.with_absolute_paths()) if k not in named]
    if ignored:
        shown = ", ".join(ignored[:6]) + (f" (+{len(ignored) - 6} more)" if len(ignored) > 6 else "")
        source = recipe.path.name if recipe.path else "the recipe"
        notes.append(
            f"note: continuing with the run's own settings from {stored}; {source} now differs in "
            f"{shown} (pass --set to change a value on resume)"
        )
    return resumed, notes


def default_weights(root: Path = Path("runs")) -> Path:
    """The best checkpoint of the most recent ``odet train`` run (for commands given no weights).

    Raises:
        OdetError: no run has been recorded under ``root`` (names the demo training command).
    """
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
