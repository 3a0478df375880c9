"""``odet profile MODEL --compare onnxruntime``: the model exported for a runtime, to time beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from odcli.errors import OdetError
from odcli.export.run import FORMATS, export_model
from odcli.inference.load import exported_format
from odcli.recipe import RECIPE_SUFFIXES

__all__ = ["COMPARE_FORMATS", "expand_compare"]

#: A runtime named by ``--compare`` → the format its file is exported in.
COMPARE_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


def export_for(model: str, backend: str, size: int, directory: Path) -> Path:
    """Export ``model`` (a zoo name: random weights; or a weights file) for ``backend`` on a
    ``size``×``size`` canvas with a dynamic batch and NMS in the graph, into ``directory``.

    Raises:
        OdetError: a recipe (it names no weights to export), or what :func:`export_model` raises.
    """
    if model.endswith(RECIPE_SUFFIXES):
        raise OdetError(
            f"--compare {backend} exports each MODEL, and {Path(model).name} is a recipe without weights: "
            "give a zoo name or a checkpoint (or export it yourself and --compare the file)"
        )
    fmt = COMPARE_FORMATS[backend]
    path = Path(model).expanduser()
    weights, arch = (path, None) if path.suffix else (None, model)  # zoo names have no suffix
    out = directory / f"{path.stem}{FORMATS[fmt][0]}"
    export_model(weights, out, fmt=fmt, arch=arch, imgsz=(size, size), dynamic_batch=True)
    return out


def expand_compare(models: Sequence[str], compare: Sequence[str], size: int, directory: Path) -> list[str]:
    """Every target to profile, in order: ``models``, then ``compare`` with each runtime name
    replaced by the files of every PyTorch MODEL exported for it (:func:`export_for`)."""
    torch_models = [m for m in models if exported_format(Path(m)) is None]
    targets = list(models)
    for entry in compare:
        if entry in COMPARE_FORMATS:
            if not torch_models:
                raise OdetError(f"--compare {entry} exports the MODELs, and every MODEL is an exported file")
            # One folder per model: a zoo name and a checkpoint of the same name must not collide.
            for i, model in enumerate(torch_models):
                targets.append(str(export_for(model, entry, size, directory / f"{i}-{entry}")))
        else:
            targets.append(entry)
    return targets
