"""The model zoo: a flat table from model names to (config class, builder).

``build_model("rtmdet_s")`` is ``build_rtmdet(RTMDetConfig(size="s"))``; a recipe's ``model:``
section is the same config class filled from YAML/TOML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from odcli.errors import OdetError
from odcli.models.config import DetectorConfig
from odcli.models.detector import Detector, InputSpec
from odcli.models.ppyoloe import PPYOLOEConfig, build_ppyoloe
from odcli.models.retinanet import RetinaNetConfig, build_retinanet
from odcli.models.rtmdet import RTMDetConfig, build_rtmdet


@dataclass(frozen=True)
class Family:
    """A detector family: its typed config and the function that builds it."""

    config_cls: type[DetectorConfig]
    build: Callable[[Any], Detector]

    @property
    def sizes(self) -> tuple[str, ...]:
        return self.config_cls.SIZES


FAMILIES: dict[str, Family] = {
    "rtmdet": Family(RTMDetConfig, build_rtmdet),
    # ppyoloe_plus_s → arch "ppyoloe", size "plus_s": PP-YOLOE+ is a variant of the same family.
    "ppyoloe": Family(PPYOLOEConfig, build_ppyoloe),
    "retinanet": Family(RetinaNetConfig, build_retinanet),
}


def list_models() -> list[str]:
    """Every zoo name, e.g. ``rtmdet_tiny``."""
    return [f"{arch}_{size}" for arch, fam in FAMILIES.items() for size in fam.sizes]


def model_config(name: str, **overrides: Any) -> Any:
    """The default config of zoo model ``name`` with ``overrides`` applied."""
    arch, _, size = name.partition("_")
    family = FAMILIES.get(arch)
    if family is None or size not in family.sizes:
        import difflib

        near = difflib.get_close_matches(name, list_models(), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; available: {', '.join(list_models())}"
        raise OdetError(f"unknown model {name!r}{hint}")
    return replace(family.config_cls(size=size), **overrides)


def build_from_config(cfg: Any) -> Detector:
    """Build a detector from a filled family config (e.g. a recipe's ``model`` section)."""
    return FAMILIES[cfg.arch].build(cfg)


def input_spec_of(cfg: DetectorConfig) -> InputSpec:
    """How inputs are prepared for a model of this config, without building the model."""
    return cfg.input_spec()


def build_model(name: str, **overrides: Any) -> Detector:
    """Build zoo model ``name`` (``rtmdet_tiny`` …) with ``overrides`` of its config fields
    (recipe files: :func:`odcli.recipe.build_detector`)."""
    return build_from_config(model_config(name, **overrides))
