"""The one way a command gets a model: from a weights file, a model config or a zoo name.

:func:`load_model` covers every case ``odet infer``, ``eval``, ``profile`` and ``visualize-assign``
meet:

* an odet ``.safetensors`` checkpoint: its meta says the recipe (or the zoo name), the class names
  and whether RepVGG blocks were re-parameterised (``convert-weights --deploy``);
* an upstream ``.pth`` (MMDetection) or ``.pdparams`` (PaddleDetection) file with ``arch``;
* a model config (a recipe's ``model`` section) and a weights file (``odet eval RECIPE --weights W``);
* a model config or a zoo name without weights: random weights (``profile``, ``visualize-assign``).
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from odcli.data.coco_classes import default_class_names
from odcli.errors import OdetError
from odcli.models.detector import Detector
from odcli.models.fuse import compile_for_inference, optimize_for_inference, reparameterize
from odcli.models.zoo import build_from_config, model_config
from odcli.recipe import RECIPE_SUFFIXES, load_recipe, recipe_from_dict
from odcli.runtime.device import resolve_device
from odcli.weights.checkpoint import read_meta
from odcli.weights.load import load_weights

__all__ = [
    "EXPORTED_SUFFIXES",
    "LoadedModel",
    "check_weights_path",
    "checkpoint_sections",
    "exported_format",
    "load_model",
    "model_config_of",
]

#: Suffix of a file ``odet export`` writes → its format (``.pt`` only when it holds odet's metadata).
EXPORTED_SUFFIXES = {
    ".onnx": "onnx",
    ".xml": "openvino",
    ".torchscript": "torchscript",
    ".ts": "torchscript",
    ".pt": "torchscript",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}


@dataclass
class LoadedModel:
    """A model ready for use plus what its weights file said about it.

    Attributes:
        model: the detector, in eval mode on its device.
        classes: K class names in label order (the checkpoint's, else :func:`default_class_names`).
        cat_ids: K COCO category ids in label order (likewise).
        meta: the checkpoint's meta (empty for upstream files and random weights).
        source: the weights file, or None for random weights.
    """

    model: Detector
    classes: list[str]
    cat_ids: list[int]
    meta: dict[str, Any]
    source: Path | None

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.model.parameters()).device

    @property
    def arch(self) -> str:
        """The model's zoo name (``rtmdet_tiny``)."""
        return self.model.arch


def exported_format(path: Path) -> str | None:
    """The format of a file ``odet export`` wrote (``onnx``, ``openvino``, ``torchscript``, ``tensorrt``),
    told by its suffix; None for a checkpoint. A ``.pt`` is TorchScript only when it carries odet's
    metadata (``torch.save`` checkpoints use the suffix too)."""
    fmt = EXPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt == "torchscript" and path.suffix.lower() == ".pt":
        try:
            with zipfile.ZipFile(path) as archive:
                return fmt if any(n.endswith("/extra/odet.json") for n in archive.namelist()) else None
        except (OSError, zipfile.BadZipFile):
            return None
    return fmt


def check_weights_path(path: Path) -> None:
    """Fail with one line when ``path`` is not a weights file (missing, or the run directory itself)."""
    if path.is_dir():
        found = [path / n for n in ("best.safetensors", "last.safetensors") if (path / n).is_file()]
        hint = f"; did you mean {found[0]}?" if found else "; give the weights file inside it"
        raise OdetError(f"weights path is a directory, not a file: {path}{hint}")
    if not path.is_file():
        raise OdetError(f"weights file not found: {path}")


def checkpoint_sections(
    meta: dict[str, Any], path: Path, *, arch: str | None = None, fix: str = "pass --arch"
) -> dict[str, dict[str, Any]]:
    """The recipe sections an odet checkpoint stores, as plain dicts (``--set`` may still change them).

    A checkpoint without a stored ``model`` section gets the zoo config of the ``arch`` its meta
    names (else the ``arch`` given) with as many classes as its class list holds. A checkpoint whose
    RepVGG blocks were re-parameterised says so in ``model.deploy``.

    Raises:
        OdetError: the checkpoint names no model and no ``arch`` is given (the message ends with ``fix``).
    """
    stored = meta.get("recipe")
    sections = (
        {k: dict(v) for k, v in stored.items() if isinstance(v, dict)} if isinstance(stored, dict) else {}
    )
    if "model" not in sections:
        name = meta.get("arch") or arch
        if not name:
            raise OdetError(f"{path.name} does not say which architecture it holds; {fix}")
        overrides = {"num_classes": len(meta["classes"])} if meta.get("classes") else {}
        sections["model"] = dataclasses.asdict(model_config(name, **overrides))
    if meta.get("deploy") and "deploy" in sections["model"]:  # RepVGG re-parameterised (PP-YOLOE)
        sections["model"]["deploy"] = True
    return sections


def model_config_of(name_or_recipe: str | Path) -> Any:
    """The model config a zoo name (``rtmdet_tiny``) or a recipe file (its ``model`` section) names."""
    text = str(name_or_recipe)
    if text.endswith(RECIPE_SUFFIXES):
        return load_recipe(text).model
    return model_config(text)


def _stored_names(meta: dict[str, Any], num_classes: int) -> tuple[list[str], list[int]]:
    """The checkpoint's class names and category ids where it has K of them, else the defaults."""
    names, cat_ids = default_class_names(num_classes)
    stored_names, stored_ids = meta.get("classes"), meta.get("cat_ids")
    if isinstance(stored_names, list) and len(stored_names) == num_classes:
        names = [str(n) for n in stored_names]
    if isinstance(stored_ids, list) and len(stored_ids) == num_classes:
        cat_ids = [int(c) for c in stored_ids]
    return names, cat_ids


def load_model(
    weights: str | Path | None = None,
    *,
    arch: str | None = None,
    config: Any = None,
    device: str | torch.device = "auto",
    optimize: bool = True,
    compile_model: bool = False,
) -> LoadedModel:
    """Build the model a weights file (or a config, or a zoo name) describes and load its weights.

    Args:
        weights: an odet ``.safetensors`` checkpoint, an MMDetection ``.pth`` or a PaddleDetection
            ``.pdparams``; None: random weights.
        arch: zoo name (``rtmdet_tiny``): the model of an upstream file or of random weights; with
            an odet checkpoint only checked against what the checkpoint holds.
        config: a model config (a recipe's ``model`` section) to build instead of what the
            checkpoint stores (``odet eval RECIPE --weights W``, ``--set model.…`` overrides).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        optimize: prepare the model for inference only (BN folded, channels-last).
        compile_model: also ``torch.compile`` its forward (inference only; ~30 s on the first call).

    Raises:
        OdetError: missing file, no way to tell the architecture, ``arch`` other than the
            checkpoint's, weights that do not fit the model.
    """
    path = Path(weights).expanduser() if weights is not None else None
    meta: dict[str, Any] = {}
    if path is not None:
        check_weights_path(path)
        if exported_format(path):
            raise OdetError(
                f"{path.name} is an exported file, not PyTorch weights: give the checkpoint it was "
                "exported from (odet infer, eval and profile run exported files as they are)"
            )
        if path.suffix == ".safetensors":
            meta = read_meta(path)
    if config is None and path is not None and path.suffix == ".safetensors":
        config = recipe_from_dict(checkpoint_sections(meta, path, arch=arch), name=path.stem).model
    elif config is None:
        if not arch:
            what = f"{path.name} is an upstream checkpoint" if path is not None else "no weights given"
            raise OdetError(f"{what}: pass --arch (e.g. --arch rtmdet_tiny)")
        config = model_config(arch)
    model = build_from_config(config)
    if arch and path is not None and path.suffix == ".safetensors" and model.arch != arch:
        # odet checkpoints say what they hold; a different --arch would otherwise be ignored silently.
        raise OdetError(
            f"{path.name} holds {model.arch}, not {arch}: drop --arch (it is only needed for upstream .pth)"
        )
    if path is not None:
        if meta.get("deploy"):  # RepVGG re-parameterised weights (convert-weights --deploy): same form
            reparameterize(model)
        load_weights(model, path)
    classes, cat_ids = _stored_names(meta, model.num_classes)
    model = model.to(resolve_device(device) if isinstance(device, str) else device).eval()
    if optimize:
        optimize_for_inference(model)
    if compile_model:
        compile_for_inference(model)
    return LoadedModel(model=model, classes=classes, cat_ids=cat_ids, meta=meta, source=path)
