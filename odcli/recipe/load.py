"""Reading recipes: files, one ``base:``, ``--set`` overrides, type checks and nearest-key errors.

A recipe has three sections, each a dataclass whose fields map 1:1 onto keyword arguments:

* ``model`` — the family config (e.g. :class:`odcli.models.rtmdet.RTMDetConfig`), picked by ``arch``;
* ``data`` — :class:`DataConfig`;
* ``train`` — :class:`TrainConfig`.

A recipe may name one ``base:`` recipe (path relative to itself) whose sections it updates key
by key. Command-line overrides ``--set section.key=value`` are parsed as YAML scalars and applied
last. Unknown keys and wrong types are one-line errors naming the key, where it came from and the
nearest valid key. Relative paths in ``data`` resolve against the recipe file's directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import tomllib
import yaml

from odcli.errors import OdetError
from odcli.models.zoo import FAMILIES
from odcli.recipe.schema import SECTIONS, DataConfig, Recipe, TrainConfig

RUN_RECIPE = "recipe.yaml"  # the resolved recipe a run directory keeps; --resume continues from it

#: Keys that were renamed ("section.old" → "section.new"). In a recipe file or ``--set`` an old key
#: is a one-line error naming the new one; in a checkpoint's stored recipe (written by an older odet,
#: not edited by hand) it is read under its new name.
RENAMED_KEYS: dict[str, str] = {
    # One name across families: PP-YOLOE's per-class candidate count (upstream nms_top_k).
    "model.nms_top_k": "model.nms_pre",
}


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML text (sections model, data, train), loadable by :func:`load_recipe`."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def recipe_changes(before: Recipe, after: Recipe) -> list[tuple[str, Any, Any]]:
    """``(section.key, old, new)`` for every value that differs between two recipes."""
    old, new = before.to_dict(), after.to_dict()
    return [
        (f"{section}.{key}", value, new[section].get(key))
        for section in SECTIONS
        for key, value in old[section].items()
        if new[section].get(key) != value
    ]


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise OdetError(f"recipe not found: {path}")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise OdetError(f"recipe {path} must be .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise OdetError(f"cannot parse recipe {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise OdetError(f"recipe {path} must be a mapping of sections (model, data, train)")
    return data


def _merge_file(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Read a recipe and its optional base → (sections, origin of every 'section.key')."""
    raw = _read_file(path)
    merged: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    origin: dict[str, str] = {}
    base = raw.pop("base", None)
    if base is not None:
        base_path = (path.parent / str(base)).resolve()
        base_raw = _read_file(base_path)
        if "base" in base_raw:
            raise OdetError(f"{base_path}: a base recipe cannot have its own base (one level only)")
        _absorb(merged, origin, base_raw, str(base_path))
    _absorb(merged, origin, raw, str(path))
    return merged, origin


def _absorb(merged: dict, origin: dict, raw: dict, source: str) -> None:
    for section, values in raw.items():
        if section not in SECTIONS:
            raise OdetError(f"unknown section {section!r} in {source}{_nearest(section, SECTIONS)}")
        if not isinstance(values, dict):
            raise OdetError(f"section {section!r} in {source} must be a mapping")
        for key, value in values.items():
            merged[section][key] = value
            origin[f"{section}.{key}"] = source


def _nearest(word: str, choices: typing.Iterable[str]) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"train.epochs=50"`` → ("train", "epochs", 50); the value is read as a YAML scalar/list."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise OdetError(f"bad override {text!r}: expected section.key=value, e.g. train.epochs=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return section, name, value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a dataclass field annotation; int→float is allowed."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"Path": Path})
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except OdetError as exc:
                errors.append(str(exc))
        raise OdetError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise OdetError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else list(value)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            raise OdetError(f"{where}: expected a number, got {value!r}") from None
    if annotation is bool and not isinstance(value, bool):
        raise OdetError(f"{where}: expected true/false, got {value!r}")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise OdetError(f"{where}: expected an integer, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise OdetError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _build_section(cls: type, values: dict[str, Any], section: str, origin: dict[str, str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        where = f"{section}.{key} ({origin.get(f'{section}.{key}', '--set')})"
        if key not in fields:
            source = origin.get(f"{section}.{key}", "--set")
            if f"{section}.{key}" in RENAMED_KEYS:
                new = RENAMED_KEYS[f"{section}.{key}"]
                raise OdetError(f"'{section}.{key}' in {source} was renamed: write '{new}' instead")
            raise OdetError(f"unknown key '{section}.{key}' in {source}{_nearest(key, fields)}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, written_by_odet: bool = False
) -> Recipe:
    """Load, merge (base), override and validate a recipe file.

    ``written_by_odet``: the file is odet's own copy (a run directory's ``recipe.yaml``), so keys
    renamed since it was written are read under their new names instead of refused.
    """
    path = Path(path).expanduser().resolve()
    sections, origin = _merge_file(path)
    if written_by_odet:
        sections = {section: _renamed(section, values) for section, values in sections.items()}
        origin = {RENAMED_KEYS.get(key, key): source for key, source in origin.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SECTIONS:
            raise OdetError(f"unknown section {section!r} in --set {text}{_nearest(section, SECTIONS)}")
        sections[section][key] = value
        origin[f"{section}.{key}"] = "--set"
    arch = sections["model"].get("arch")
    if arch not in FAMILIES:
        hint = _nearest(str(arch), FAMILIES)
        raise OdetError(f"model.arch {arch!r} in {path} is not one of {', '.join(FAMILIES)}{hint}")
    model = _build_section(FAMILIES[arch].config_cls, sections["model"], "model", origin)  # checks size
    data = _build_section(DataConfig, sections["data"], "data", origin)
    train = _build_section(TrainConfig, sections["train"], "train", origin)
    return Recipe(model=model, data=data, train=train, name=path.stem, path=path)


def recipe_from_dict(sections: dict[str, dict[str, Any]], *, name: str = "recipe") -> Recipe:
    """Rebuild a recipe stored in a checkpoint's metadata (already validated once); keys renamed
    since it was written (:data:`RENAMED_KEYS`) are read under their new names."""
    origin: dict[str, str] = {}
    sections = {section: _renamed(section, sections.get(section, {})) for section in SECTIONS}
    arch = sections["model"]["arch"]
    return Recipe(
        model=_build_section(FAMILIES[arch].config_cls, sections["model"], "model", origin),
        data=_build_section(DataConfig, sections["data"], "data", origin),
        train=_build_section(TrainConfig, sections["train"], "train", origin),
        name=name,
    )


def _renamed(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every renamed key of ``section`` under its new name."""
    out = {}
    for key, value in values.items():
        new = RENAMED_KEYS.get(f"{section}.{key}", f"{section}.{key}")
        out[new.partition(".")[2]] = value
    return out
