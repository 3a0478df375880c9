"""Recipes: typed, flat YAML/TOML bundles of every setting a run uses.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import yaml

from odcli.config_checks import check_data, check_train
from odcli.errors import OdetError


@dataclass
class DataConfig:
    """Dataset location and the data pipeline.

    ``root`` is the dataset directory; annotation and image paths are relative to it. ``format`` is
    ``coco`` (JSON annotations) or ``yolo`` (``images/<split>`` + ``labels/<split>`` + ``classes.txt``
    or ``data.yaml``; ``*_ann`` unused), see :mod:`odcli.data.datasets`.
    """

    format: str = "coco"
    root: str = "../data/coco"
    train_ann: str = "annotations/instances_train2017.json"
    train_images: str = "train2017"
    val_ann: str = "annotations/instances_val2017.json"
    val_images: str = "val2017"
    batch_size: int = 32
    val_batch_size: int = 8
    num_workers: int = 2
    persistent_workers: bool = True
    # training augmentation: the pipeline (odcli/data/pipelines.py) and its settings
    train_pipeline: str = "rtmdet"
    img_scale: list[int] = field(default_factory=lambda: [640, 640])
    resize_ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: list[int] = field(default_factory=lambda: [640, 640])
    hsv: bool = True
    flip_prob: float = 0.5
    filter_empty: bool = True
    min_size: float = 32.0
    # RTMDet's strong stage (train_pipeline: rtmdet_strong, until train.switch_epoch): cached Mosaic →
    # RandomResize(strong_scale × resize_ratio_range) → RandomCrop → HSV → flip → Pad → cached MixUp
    strong_scale: list[int] | None = None  # (w, h); None = 2 × img_scale (upstream 1280 for 640)
    mosaic_cache: int = 40  # max_cached_images of CachedMosaic (RTMDet-tiny 20)
    mixup_cache: int = 20  # max_cached_images of CachedMixUp (RTMDet-tiny 10)
    random_pop: bool = True  # evict a random cached image (False: the oldest, RTMDet-tiny)
    mosaic_prob: float = 1.0
    mixup_prob: float = 1.0  # RTMDet-tiny 0.5
    mixup_ratio_range: list[float] = field(default_factory=lambda: [1.0, 1.0])  # partner scale jitter
    # PP-YOLOE (train_pipeline: ppyoloe), PaddleDetection's reader: RandomDistort → RandomExpand →
    # RandomCrop (SSD-style, IoU-constrained) → RandomFlip(flip_prob), then BatchRandomResize: one square
    # side per batch, ratio not kept. Defaults = upstream; see odcli/data/ppdet_transforms.py.
    ppyoloe_target_sizes: list[int] = field(default_factory=lambda: list(range(320, 769, 32)))  # pixels
    ppyoloe_random_interp: bool = True  # cv2 nearest/linear/area/cubic/lanczos4 drawn per batch
    ppyoloe_distort: bool = True  # RandomDistort: hue, saturation, contrast, brightness
    ppyoloe_expand_prob: float = 0.5  # probability of RandomExpand (zoom-out onto a larger canvas)
    ppyoloe_expand_ratio: float = 4.0  # largest canvas side / image side
    ppyoloe_expand_fill: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])  # RGB
    ppyoloe_crop: bool = True  # RandomCrop

    def __post_init__(self) -> None:
        check_data(self)


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and evaluation during training.

    ``lr`` is the learning rate for ``base_batch_size`` images per step; the trainer scales it
    linearly to the actual total batch size and prints the result.
    """

    epochs: int = 300
    optimizer: str = "adamw"
    lr: float = 0.004
    base_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.05
    norm_decay: float = 0.0
    bias_decay: float = 0.0
    warmup_iters: int = 1000
    warmup_start_factor: float = 1e-5
    schedule: str = "flat_cosine"
    cosine_start_epoch: int = 150
    min_lr_ratio: float = 0.05
    milestones: list[int] = field(default_factory=lambda: [8, 11])
    clip_grad_norm: float | None = None
    ema: bool = True
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000.0
    eval_interval: int = 10
    checkpoint_interval: int = 10
    log_interval: int = 10
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "fp16"  # CUDA autocast type: fp16 (with a gradient scaler) or bf16 (none needed)
    seed: int = 0
    deterministic: bool = False
    output_dir: str = "runs"
    init_weights: str | None = None
    # first epoch (0-based count of epochs done) of a staged pipeline's second stage; None = never
    switch_epoch: int | None = None
    # also write last.safetensors every this many iterations (0 = only per checkpoint_interval epochs)
    checkpoint_every_iters: int = 0
    sync_bn: bool = False  # multi-GPU: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA)
    freeze_bn: bool = False  # BatchNorm layers use and keep their running statistics (no batch stats)
    dist_backend: str | None = None  # torchrun process group: nccl / gloo; None = nccl on CUDA, else gloo

    def __post_init__(self) -> None:
        # Values that would otherwise fail deep inside training (division by zero, empty schedule).
        positive = ("epochs", "eval_interval", "checkpoint_interval", "log_interval", "base_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise OdetError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_iters", "checkpoint_every_iters"):
            if getattr(self, name) < 0:
                raise OdetError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise OdetError(f"train.lr must be > 0, got {self.lr}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise OdetError(f"train.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")
        if self.amp_dtype not in ("fp16", "bf16"):
            raise OdetError(f"train.amp_dtype must be fp16 or bf16, got {self.amp_dtype!r}")
        if self.dist_backend not in (None, "nccl", "gloo"):
            raise OdetError(f"train.dist_backend must be nccl, gloo or null, got {self.dist_backend!r}")
        check_train(self)


@dataclass
class Recipe:
    """A loaded, validated recipe."""

    model: Any
    data: DataConfig
    train: TrainConfig
    name: str = "recipe"
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the three sections (what checkpoints store)."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in ("model", "data", "train")}

    def resolve_path(self, value: str | Path) -> Path:
        """A ``data`` path: absolute as is, else relative to the recipe file's directory."""
        p = Path(value).expanduser()
        if p.is_absolute() or self.path is None:
            return p
        return (self.path.parent / p).resolve()

    @property
    def data_root(self) -> Path:
        return self.resolve_path(self.data.root)

    def with_absolute_paths(self) -> Recipe:
        """A copy whose file paths (``data.root``, ``train.init_weights``, ``model.backbone_weights``)
        are absolute, so the recipe means the same read from anywhere (a run directory's copy)."""
        data = dataclasses.replace(self.data, root=str(self.data_root))
        init = self.train.init_weights
        train = dataclasses.replace(self.train, init_weights=str(self.resolve_path(init)) if init else None)
        model = self.model
        backbone = getattr(model, "backbone_weights", None)
        if backbone:
            model = dataclasses.replace(model, backbone_weights=str(self.resolve_path(backbone)))
        return dataclasses.replace(self, model=model, data=data, train=train)


RUN_RECIPE = "recipe.yaml"  # the resolved recipe a run directory keeps; --resume continues from it


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML text (sections model, data, train), loadable by :func:`load_recipe`."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def recipe_changes(before: Recipe, after: Recipe) -> list[tuple[str, Any, Any]]:
    """``(section.key, old, new)`` for every value that differs between two recipes."""
    old, new = before.to_dict(), after.to_dict()
    return [
        (f"{section}.{key}", value, new[section].get(key))
        for section in _SECTIONS
        for key, value in old[section].items()
        if new[section].get(key) != value
    ]


_SECTIONS = ("model", "data", "train")


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
    merged: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
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
        if section not in _SECTIONS:
            raise OdetError(f"unknown section {section!r} in {source}{_nearest(section, _SECTIONS)}")
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
            raise OdetError(f"unknown key '{section}.{key}' in {source}{_nearest(key, fields)}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, merge (base), override and validate a recipe file."""
    from odcli.zoo import FAMILIES

    path = Path(path).expanduser().resolve()
    sections, origin = _merge_file(path)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in _SECTIONS:
            raise OdetError(f"unknown section {section!r} in --set {text}{_nearest(section, _SECTIONS)}")
        sections[section][key] = value
        origin[f"{section}.{key}"] = "--set"
    arch = sections["model"].get("arch")
    if arch not in FAMILIES:
        hint = _nearest(str(arch), FAMILIES)
        raise OdetError(f"model.arch {arch!r} in {path} is not one of {', '.join(FAMILIES)}{hint}")
    model = _build_section(FAMILIES[arch].config_cls, sections["model"], "model", origin)
    if model.size not in FAMILIES[arch].sizes:
        raise OdetError(
            f"model.size {model.size!r} is not a {arch} size; choose one of {', '.join(FAMILIES[arch].sizes)}"
        )
    data = _build_section(DataConfig, sections["data"], "data", origin)
    train = _build_section(TrainConfig, sections["train"], "train", origin)
    return Recipe(model=model, data=data, train=train, name=path.stem, path=path)


def recipe_from_dict(sections: dict[str, dict[str, Any]], *, name: str = "recipe") -> Recipe:
    """Rebuild a recipe stored in a checkpoint's metadata (already validated once)."""
    from odcli.zoo import FAMILIES

    origin: dict[str, str] = {}
    arch = sections["model"]["arch"]
    return Recipe(
        model=_build_section(FAMILIES[arch].config_cls, sections["model"], "model", origin),
        data=_build_section(DataConfig, sections.get("data", {}), "data", origin),
        train=_build_section(TrainConfig, sections.get("train", {}), "train", origin),
        name=name,
    )
