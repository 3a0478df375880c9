"""Random-number-generator states as checkpoint content (tensors + JSON), for exact resumption.

A resumed run continues bit for bit only if every generator that training draws from is where it
was: torch's CPU generator, every CUDA device's generator, NumPy's and Python's global ones. Data
order and augmentation do not depend on these (they are a function of (seed, epoch, position), see
:class:`odcli.data.loader.ShardedBatchSampler`), but anything else that draws (a model, a loss, a
user's transform without a seeded generator) does.

Layout: tensors ``rng.<rank>.torch`` (uint8), ``rng.<rank>.cuda.<device>`` (uint8),
``rng.<rank>.numpy`` (int64, the 624 MT19937 words), ``rng.<rank>.python`` (int64, 625 words), and a
JSON list (one entry per rank) with the scalar parts of the NumPy and Python states.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["capture_rng_state", "restore_rng_state", "split_by_rank"]


def capture_rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This process's generator states: (tensors keyed ``torch``/``cuda.<i>``/``numpy``/``python``, JSON)."""
    tensors: dict[str, Tensor] = {"torch": torch.get_rng_state()}
    # Only query CUDA when it is already in use: get_rng_state_all() would otherwise initialise it.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    kind, words, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(words, dtype=np.int64))
    version, py_words, gauss_next = random.getstate()
    tensors["python"] = torch.tensor(py_words, dtype=torch.int64)
    meta = {
        "numpy": [str(kind), int(pos), int(has_gauss), float(cached)],
        "python": [int(version), gauss_next],
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned (CUDA states only for devices that exist)."""
    torch.set_rng_state(tensors["torch"].cpu().to(torch.uint8))
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        for key in cuda:
            device = int(key.split(".")[1])
            if device < torch.cuda.device_count():
                torch.cuda.set_rng_state(tensors[key].cpu().to(torch.uint8), device)
    kind, pos, has_gauss, cached = meta["numpy"]
    words = tensors["numpy"].cpu().numpy().astype(np.uint32)
    np.random.set_state((kind, words, int(pos), int(has_gauss), float(cached)))
    version, gauss_next = meta["python"]
    random.setstate((int(version), tuple(int(w) for w in tensors["python"].tolist()), gauss_next))


def split_by_rank(tensors: dict[str, Tensor]) -> dict[int, dict[str, Tensor]]:
    """``{"<rank>.<name>": t}`` (checkpoint ``extra.rng.`` entries, prefix removed) → per-rank dicts."""
    out: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        rank, _, name = key.partition(".")
        out.setdefault(int(rank), {})[name] = value
    return out
