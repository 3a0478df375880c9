"""Loading pickled checkpoints (``.pth``) without executing code from them.

``torch.load(weights_only=True)`` is tried first: it only rebuilds tensors and plain containers.
Training checkpoints of MMEngine also pickle objects of its own classes (``HistoryBuffer``,
numpy scalars in ``message_hub``) which that loader refuses. For those we unpickle with an
allow-list: tensor rebuilding and builtin containers resolve normally, every other global becomes
an inert :class:`Placeholder` that records its arguments and never runs anything.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from odcli.errors import OdetError

_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
_STORAGE_TYPES = {
    name for name in dir(torch) if name.endswith("Storage") and isinstance(getattr(torch, name, None), type)
}


class Placeholder:
    """Stands in for any class the checkpoint names but we do not trust; holds its args/state only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _placeholder_type(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"__module__": f"odet_placeholder.{module}"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_TYPES:
            return getattr(torch, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _placeholder_type(module, name)


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` and ``load``."""

    Unpickler = _RestrictedUnpickler
    __name__ = "odet_restricted_pickle"

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def load_torch_checkpoint(path: str | Path) -> Any:
    """Load a ``.pth`` file safely (see module docstring); errors become one-line :class:`OdetError`."""
    path = Path(path)
    if not path.is_file():
        raise OdetError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # objects beyond tensors/containers: fall back to the allow-listed unpickler
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        raise OdetError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except Exception as exc:
        raise OdetError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None
