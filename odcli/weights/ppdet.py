"""PaddleDetection ``.pdparams`` checkpoints → odet state dicts, without PaddlePaddle.

A ``.pdparams`` file is ``paddle.save(state_dict)``: a pickle of ``{name: numpy.ndarray}`` (plus
Paddle's bookkeeping key ``StructuredToParameterName@@``, a dict of strings). Unpickling it naively
would run whatever callable the file names, so :func:`read_pdparams` uses an unpickler that can
only build numpy arrays: it resolves exactly the globals numpy's own array pickling uses
(``numpy.core.multiarray._reconstruct`` — ``numpy._core`` in NumPy 2 —, ``numpy.ndarray``,
``numpy.dtype``) and refuses every other global with a one-line :class:`OdetError` before anything
is called. Object arrays are refused too (their elements would be arbitrary pickled objects).

Layout differences handled by :func:`ppdet_to_odet`:

* BatchNorm statistics ``_mean`` / ``_variance`` → ``running_mean`` / ``running_var``; PyTorch's
  ``num_batches_tracked`` does not exist in Paddle and is created (0). (Paddle's BN momentum 0.9 is
  PyTorch's 0.1: a config matter, not a weight.)
* ``nn.Linear`` weights are stored [in, out] by Paddle and [out, in] by PyTorch: the keys a family
  declares as Linear weights are transposed. Convolution kernels share the [out, in, kh, kw] layout.
* Head prefix ``yolo_head.`` → ``head.`` (backbone/neck names are kept identical on purpose).
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odcli.errors import OdetError

#: Paddle's bookkeeping entry in saved state dicts (structured name → parameter name): not a tensor.
PADDLE_NAME_TABLE_KEY = "StructuredToParameterName@@"


def _numpy_reconstruct() -> Callable[..., Any]:
    """numpy's array-unpickling entry point, wherever this NumPy version keeps it."""
    return np.ndarray.__reduce__(np.zeros(1))[0]  # type: ignore[no-any-return]


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals numpy array pickles need; anything else is refused unexecuted."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise OdetError(
                f"refusing to load {self.source}: it references {module}.{name}, but a PaddleDetection "
                "checkpoint may only contain numpy arrays (the file is not a plain .pdparams, or unsafe)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise OdetError(f"refusing to load {self.source}: it uses persistent references, not plain arrays")


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file safely → ``{name: ndarray}`` (Paddle's name table dropped).

    Raises :class:`OdetError` (one line) for a missing/corrupt file, a pickle naming anything but
    numpy array reconstruction, object arrays, or content that is not a name → array mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise OdetError(f"checkpoint not found: {path}")
    try:
        with path.open("rb") as f:
            raw = _ArrayOnlyUnpickler(f, path.name).load()  # type: ignore[arg-type]
    except OdetError:
        raise
    except Exception as exc:  # truncated file, not a pickle, bad opcodes
        raise OdetError(f"cannot read {path.name}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise OdetError(f"{path.name} does not hold a state dict (got {type(raw).__name__})")
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if key == PADDLE_NAME_TABLE_KEY:
            continue
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise OdetError(f"{path.name}: entry {key!r} is not a named numpy array")
        if value.dtype.hasobject or value.dtype.kind not in "biuf":
            raise OdetError(f"{path.name}: entry {key!r} has unsupported dtype {value.dtype}")
        out[key] = value
    return out


# (pattern, replacement) applied in order to every PaddleDetection key.
_PPYOLOE_RENAMES: list[tuple[str, str]] = [
    (r"^yolo_head\.", "head."),
    (r"\._mean$", ".running_mean"),
    (r"\._variance$", ".running_var"),
]


def ppdet_to_odet(
    arrays: dict[str, np.ndarray],
    renames: Iterable[tuple[str, str]] = _PPYOLOE_RENAMES,
    linear_weights: Callable[[str], bool] = lambda key: False,
) -> dict[str, torch.Tensor]:
    """Rename Paddle keys to odet's, convert to float32 tensors, add ``num_batches_tracked``.

    Args:
        arrays: ``{paddle name: array}`` from :func:`read_pdparams`.
        renames: (regex, replacement) pairs applied in order to each key.
        linear_weights: tells, for an odet key, whether it is an ``nn.Linear`` weight (transposed
            from Paddle's [in, out]). PP-YOLOE has no Linear layer.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        new = key
        for pattern, repl in renames:
            new = re.sub(pattern, repl, new)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if tensor.is_floating_point():
            tensor = tensor.float()
        if linear_weights(new) and tensor.dim() == 2:
            tensor = tensor.t().contiguous()
        out[new] = tensor
        if new.endswith(".running_mean"):
            out[new.removesuffix("running_mean") + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def ppyoloe_from_ppdet(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A PaddleDetection PP-YOLOE(+) state dict (training or deployed form) → odet keys."""
    return ppdet_to_odet(arrays, _PPYOLOE_RENAMES)
