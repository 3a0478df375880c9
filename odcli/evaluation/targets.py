"""What ``odet eval TARGET`` evaluates: a recipe with ``--weights``, an odet checkpoint with the
recipe it stores, or an exported file (``.onnx``, ``.xml``, …) — alone, or as a recipe's ``--weights``.

An exported file fixes the model (architecture, classes, input size, test config), so ``--set
model.*`` cannot change it and a recipe given with it must describe the same architecture; the
recipe (or ``--set data.*``) then only says which data to evaluate on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odcli.errors import OdetError
from odcli.inference.load import check_weights_path, checkpoint_sections, exported_format
from odcli.inference.runner import LoadedExport, check_backend, load_exported
from odcli.models.zoo import model_config
from odcli.recipe import RECIPE_SUFFIXES, Recipe, load_recipe, parse_override, recipe_from_dict
from odcli.weights.checkpoint import read_meta

__all__ = ["EvalTarget", "resolve_target"]


@dataclass
class EvalTarget:
    """A TARGET resolved: the recipe (model and, if ``has_data``, the dataset), the weights file to
    evaluate, and for an exported file its opened runner (``exported``; None: a PyTorch model)."""

    recipe: Recipe
    weights: Path
    has_data: bool
    exported: LoadedExport | None = None


def _apply_overrides(sections: dict[str, dict[str, Any]], overrides: Sequence[str]) -> None:
    """``--set section.key=value`` on a stored recipe (values are validated when it is rebuilt)."""
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in ("model", "data", "train"):
            raise OdetError(f"unknown section {section!r} in --set {text}: use model., data. or train.")
        sections.setdefault(section, {})[key] = value


def _exported_target(
    path: Path, weights: Path | None, overrides: Sequence[str], *, backend: str | None, device: str
) -> EvalTarget:
    """An exported file as TARGET, or as the ``--weights`` of a recipe TARGET."""
    is_recipe = path.suffix.lower() in RECIPE_SUFFIXES
    if not is_recipe and weights is not None:
        raise OdetError(f"{path.name} is already a model: drop --weights (or pass a recipe as TARGET)")
    file = weights if is_recipe and weights is not None else path
    check_weights_path(file)
    fixed = [text for text in overrides if parse_override(text)[0] == "model"]
    if fixed:
        raise OdetError(
            f"--set {fixed[0]}: {file.name} is an exported file whose model is fixed; "
            "re-export it with what you want changed"
        )
    exported = load_exported(file, backend=backend, device=device)
    if is_recipe:
        recipe = load_recipe(path, list(overrides))
        named = f"{recipe.model.arch}_{recipe.model.size}"
        if named != exported.arch:
            raise OdetError(f"{path.name} describes {named} but {file.name} holds {exported.arch}")
        return EvalTarget(recipe, file, True, exported)
    sections: dict[str, dict[str, Any]] = {
        "model": dataclasses.asdict(model_config(exported.arch, num_classes=exported.meta.num_classes))
    }
    _apply_overrides(sections, overrides)
    return EvalTarget(recipe_from_dict(sections, name=file.stem), file, "data" in sections, exported)


def resolve_target(
    path: Path,
    weights: Path | None,
    overrides: Sequence[str],
    *,
    backend: str | None = None,
    device: str = "auto",
) -> EvalTarget:
    """What a recipe, checkpoint or exported-file TARGET (with ``--weights``, ``--set``) evaluates.

    Raises:
        OdetError: a TARGET of no known kind, a recipe without weights, ``--weights`` with a
            checkpoint, an upstream checkpoint as TARGET, ``--backend`` for a PyTorch model,
            ``--set model.*`` or a contradicting recipe with an exported file.
    """
    if exported_format(path) or (weights is not None and exported_format(weights)):
        return _exported_target(path, weights, overrides, backend=backend, device=device)
    check_backend(backend, weights if weights is not None else path, None)
    suffix = path.suffix.lower()
    if suffix in RECIPE_SUFFIXES:
        recipe = load_recipe(path, list(overrides))
        if weights is None:
            raise OdetError(
                "evaluating a recipe needs weights: pass --weights FILE (or evaluate a checkpoint directly: "
                "odet eval run/best.safetensors)"
            )
        check_weights_path(weights)
        return EvalTarget(recipe, weights, True)
    if suffix == ".safetensors":
        if weights is not None:
            raise OdetError(
                f"{path.name} is already a checkpoint: drop --weights (or pass a recipe as TARGET)"
            )
        meta = read_meta(path)
        sections = checkpoint_sections(meta, path, fix="evaluate it as: odet eval RECIPE --weights FILE")
        _apply_overrides(sections, overrides)
        recipe = recipe_from_dict(sections, name=path.stem)
        if meta.get("recipe_path"):
            # Relative data paths in the stored recipe were written relative to the recipe file.
            recipe.path = Path(meta["recipe_path"]).expanduser().resolve()
        return EvalTarget(recipe, path, "data" in sections)
    if suffix in (".pth", ".pt", ".ckpt"):
        raise OdetError(
            f"{path.name} is an upstream checkpoint: convert it first "
            f"(odet convert-weights {path.name} model.safetensors --arch ...) or pass a recipe with --weights"
        )
    raise OdetError(
        "TARGET must be a recipe (.yaml/.yml/.toml), an odet checkpoint (.safetensors) or an exported "
        f"file (.onnx, .xml, .torchscript, .engine): {path}"
    )
