"""Recipes: typed, flat YAML/TOML bundles of every setting a run uses.

``schema.py`` holds the sections (:class:`DataConfig`, :class:`TrainConfig`, :class:`Recipe`);
``load.py`` reads files, ``base:`` recipes and ``--set`` overrides. :func:`build_detector` builds a
detector from a zoo name or a recipe file: the public ``odcli.build_detector``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from odcli.models.detector import Detector
from odcli.models.zoo import build_from_config, build_model
from odcli.recipe.load import (
    RUN_RECIPE,
    dump_recipe,
    load_recipe,
    parse_override,
    recipe_changes,
    recipe_from_dict,
)
from odcli.recipe.schema import SECTIONS, DataConfig, Recipe, TrainConfig

__all__ = [
    "RUN_RECIPE",
    "SECTIONS",
    "DataConfig",
    "Recipe",
    "TrainConfig",
    "build_detector",
    "dump_recipe",
    "load_recipe",
    "parse_override",
    "recipe_changes",
    "recipe_from_dict",
]

RECIPE_SUFFIXES = (".yaml", ".yml", ".toml")


def build_detector(name_or_recipe: str | Path, num_classes: int | None = None, **overrides: Any) -> Detector:
    """Build a detector from a zoo name (``rtmdet_tiny`` …) or a recipe file path.

    ``num_classes`` and other keyword overrides replace fields of the model config.
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    text = str(name_or_recipe)
    if text.endswith(RECIPE_SUFFIXES):
        return build_from_config(replace(load_recipe(text).model, **overrides))
    return build_model(text, **overrides)
