"""odet's checkpoint format: one ``.safetensors`` file, nothing pickled.

Layout of a checkpoint file::

    safetensors tensors
      model.<state-dict key>          the trained model's weights and buffers
      ema.steps, ema.module.<key>     ModelEMA.state_dict() (optional)
      optim.state.<i>.<name>          tensor entries of optimizer.state_dict()["state"][i]
                                      (AdamW: step, exp_avg, exp_avg_sq; SGD: momentum_buffer)
      optim.param_groups.<g>.<key>    tensor-valued hyper-parameters of group g (rare)
      extra.<name>                    anything else the caller stores (optional)
    safetensors header "__metadata__"
      "odet": JSON text of the meta dict below

The meta dict (JSON, written by the trainer) conventionally holds::

    "format":      "odet-checkpoint/1"   (added by save_checkpoint when absent)
    "arch":        zoo name, e.g. "rtmdet_tiny"
    "recipe":      the full recipe as a dict (what built the model, data, schedule)
    "epoch":       completed epochs            "iter": completed iterations
    "classes":     class names, index = contiguous label
    "cat_ids":     COCO category id of each label (for writing COCO results)
    "best_metric": {"name": "mAP", "value": float, "epoch": int} or null
    "schedule":    schedule.state_dict(), "seed", "torch_version", ... as the trainer likes
    (``last.safetensors`` also: "iters_per_epoch", "world_size", "total_batch", "scaler" (GradScaler
    state or null), "epoch_sums"/"epoch_count" (the running epoch's loss sums) and "rng" (per rank,
    the scalar parts of the NumPy/Python RNG states; the rest are ``extra.rng.<rank>.*`` tensors,
    see :mod:`odcli.engine.rng_state`))

Non-tensor parts of the optimiser state (param_groups with lr, betas, weight decay, ...; python
numbers inside per-parameter state) are kept in the same JSON under the reserved key
``"_optimizer"``, which :func:`load_checkpoint` and :func:`read_meta` strip from the meta they return.

Writes are atomic: the file is written under a temporary name in the destination directory,
flushed to disk, then renamed over the destination, so a crash or Ctrl-C leaves either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from odcli.errors import OdetError

__all__ = [
    "FORMAT",
    "Checkpoint",
    "load_checkpoint",
    "read_meta",
    "save_checkpoint",
    "write_json_atomic",
    "write_text_atomic",
]

FORMAT = "odet-checkpoint/1"
_META_KEY = "odet"
_OPTIM_KEY = "_optimizer"
# A safetensors header is JSON describing every tensor; a few MB covers huge models. Anything
# larger means the 8 length bytes are not a safetensors length (a .pth zip, random bytes).
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_FILE_MODE = 0o644


@dataclass
class Checkpoint:
    """A loaded odet checkpoint.

    Attributes:
        model_state: model state dict (keys without the ``model.`` prefix), CPU tensors by default.
        meta: the JSON meta dict (see the module docstring), without the reserved optimiser part.
        ema_state: :meth:`ModelEMA.state_dict` layout (``steps``, ``module.<key>``) or None.
        optimizer_state: ``{"state": {int: {...}}, "param_groups": [...]}`` ready for
            ``optimizer.load_state_dict``, or None when the file holds no optimiser.
        extra_tensors: tensors saved with ``extra_tensors=`` (prefix removed).
    """

    model_state: dict[str, Tensor]
    meta: dict[str, Any]
    ema_state: dict[str, Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None
    extra_tensors: dict[str, Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success make it ``path`` atomically.

    The temporary file is removed when the body raises (including KeyboardInterrupt), so a failed
    write neither replaces the old file nor leaves debris.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # fsync before the rename: otherwise a power cut can leave the new name pointing to an
        # empty file on filesystems that reorder metadata and data writes.
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; checkpoints are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    # Persist the rename itself (best effort: not every platform can open a directory).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically (temp file, fsync, rename).

    Raises:
        OdetError: the file cannot be written (permissions, disk full, ...).
    """
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (temp file, fsync, rename).

    Raises:
        OdetError: the file cannot be written (permissions, disk full, ...).
    """
    target = Path(path)
    try:
        with _atomic_target(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OdetError(f"cannot write {target}: {e.strerror or e}") from e


def _split_optimizer(
    optimizer: torch.optim.Optimizer | Mapping[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser state dict into flat tensors and a JSON-serialisable remainder."""
    sd = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.state.{int(idx)}.{name}"] = value
            else:
                scalars.setdefault(str(int(idx)), {})[name] = value
    groups: list[dict[str, Any]] = []
    for g, group in enumerate(sd["param_groups"]):
        plain: dict[str, Any] = {}
        for key, value in group.items():
            if isinstance(value, Tensor):
                tensors[f"optim.param_groups.{g}.{key}"] = value
            else:
                plain[key] = value
        groups.append(plain)
    return tensors, {"param_groups": groups, "state_scalars": scalars}


def _prepare_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detach, move to CPU, make contiguous, and give every tensor its own exact storage.

    safetensors refuses tensors that share memory (tied weights, RTMDet's shared head convs, a
    view into a larger buffer), so any tensor whose storage is shared or larger than itself is
    cloned. Returns a new dict; the inputs are not modified.
    """
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        t = value.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if t.numel() and (ptr in seen or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        if t.numel():
            seen.add(ptr)
        out[key] = t
    return out


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_state: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    ema_state: Mapping[str, Tensor] | None = None,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Tensor] | None = None,
) -> None:
    """Write an odet checkpoint atomically (see the module docstring for the layout).

    Args:
        path: destination ``.safetensors`` file; parent directories are created.
        model_state: ``model.state_dict()`` (any device; copied to CPU).
        meta: JSON-serialisable dict (``format`` is filled in when absent).
        ema_state: ``ModelEMA.state_dict()`` or None.
        optimizer: an optimiser or its ``state_dict()``, or None.
        extra_tensors: further tensors to keep, stored under ``extra.``.

    Raises:
        OdetError: the file cannot be written (permissions, disk full, ...).
        TypeError: ``meta`` or the optimiser's hyper-parameters are not JSON-serialisable.
        ValueError: ``meta`` uses the reserved key ``"_optimizer"``.
    """
    if _OPTIM_KEY in meta:
        raise ValueError(f"meta key {_OPTIM_KEY!r} is reserved for the optimiser state")
    header: dict[str, Any] = {"format": FORMAT, **dict(meta)}
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model_state.items()}
    if ema_state is not None:
        tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
    if optimizer is not None:
        optim_tensors, optim_json = _split_optimizer(optimizer)
        tensors.update(optim_tensors)
        header[_OPTIM_KEY] = optim_json
    if extra_tensors is not None:
        tensors.update({f"extra.{k}": v for k, v in extra_tensors.items()})
    try:
        meta_text = json.dumps(header)
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint meta must be JSON-serialisable: {e}") from e
    prepared = _prepare_tensors(tensors)

    target = Path(path)
    try:
        with _atomic_target(target) as tmp:
            save_file(prepared, str(tmp), metadata={_META_KEY: meta_text})
    except OSError as e:
        raise OdetError(f"cannot write checkpoint {target}: {e.strerror or e}") from e


# ----------------------------------------------------------------------------------------------
# reading


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and validate the safetensors header of ``path`` without reading tensor data.

    Returns:
        The header JSON (tensor entries plus ``__metadata__``).

    Raises:
        OdetError: missing/unreadable file, not safetensors, truncated file.
    """
    if not path.exists():
        raise OdetError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise OdetError(f"checkpoint path is a directory, expected a .safetensors file: {path}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise OdetError(f"{path} is not an odet checkpoint (file of {size} bytes is too short)")
            if head[:2] == b"PK":
                raise OdetError(
                    f"{path} is a PyTorch .pth (zip) file, not an odet checkpoint: "
                    "convert it with `odet convert-weights`"
                )
            n = int.from_bytes(head, "little")
            if n > _MAX_HEADER_BYTES:
                raise OdetError(f"{path} is not a safetensors file (no valid header): not an odet checkpoint")
            if n > size - 8:
                raise OdetError(f"{path} is truncated (header cut short); re-copy or re-save the checkpoint")
            raw = f.read(n)
    except OSError as e:
        raise OdetError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OdetError(
            f"{path} is not a safetensors file (header is not JSON): not an odet checkpoint"
        ) from None
    if not isinstance(header, dict):
        raise OdetError(f"{path} is not a safetensors file (malformed header)")
    data_end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            data_end = max(data_end, int(entry["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise OdetError(f"{path} is not a valid safetensors file (bad entry for {key!r})") from None
    if 8 + n + data_end > size:
        raise OdetError(
            f"{path} is truncated ({size} of {8 + n + data_end} bytes); re-copy or re-save the checkpoint"
        )
    return header


def _decode_meta(path: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    """The odet meta dict stored in a validated header (reserved optimiser part included)."""
    text = (header.get("__metadata__") or {}).get(_META_KEY)
    if text is None:
        raise OdetError(
            f"{path} is a safetensors file without odet metadata (not written by odet); "
            "import foreign weights with `odet convert-weights`"
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise OdetError(f"{path} has corrupt odet metadata (invalid JSON)") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("odet-checkpoint/"):
        raise OdetError(f"{path} has no odet checkpoint format tag; it was not written by odet")
    if fmt != FORMAT:
        raise OdetError(f"{path} uses checkpoint format {fmt!r}; this odet reads {FORMAT!r}: upgrade odet")
    return meta


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a checkpoint's meta dict, reading only the file's header (cheap for big files).

    Raises:
        OdetError: missing file, not a safetensors file, truncated, or not written by odet.
    """
    p = Path(path)
    meta = _decode_meta(p, _read_header(p))
    meta.pop(_OPTIM_KEY, None)
    return meta


def _rebuild_optimizer(tensors: Mapping[str, Tensor], optim_json: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_split_optimizer`: the structure ``optimizer.load_state_dict`` expects."""
    state: dict[int, dict[str, Any]] = {}
    for idx, entries in optim_json.get("state_scalars", {}).items():
        state.setdefault(int(idx), {}).update(entries)
    groups = [dict(g) for g in optim_json["param_groups"]]
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if kind == "state":
            state.setdefault(int(index), {})[name] = value
        elif kind == "param_groups":
            groups[int(index)][name] = value
    for group in groups:
        # JSON turns tuples into lists; torch's optimisers unpack either, but keep betas a tuple
        # so a restored state dict compares equal to the original.
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def load_checkpoint(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load an odet checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the ``.safetensors`` file.
        device: where to place the tensors (default CPU).

    Raises:
        OdetError: missing file, not a safetensors file, truncated, or not written by odet.
    """
    p = Path(path)
    header = _read_header(p)
    meta = _decode_meta(p, header)
    optim_json = meta.pop(_OPTIM_KEY, None)
    groups: dict[str, dict[str, Tensor]] = {"model": {}, "ema": {}, "optim": {}, "extra": {}}
    try:
        with safe_open(str(p), framework="pt", device=str(device)) as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not iterable
                prefix, _, rest = key.partition(".")
                if prefix in groups:
                    groups[prefix][rest] = f.get_tensor(key)
    except OdetError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt payloads
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise OdetError(f"cannot read checkpoint {p}: {reason}") from e
    return Checkpoint(
        model_state=groups["model"],
        meta=meta,
        ema_state=groups["ema"] or None,
        optimizer_state=_rebuild_optimizer(groups["optim"], optim_json) if optim_json is not None else None,
        extra_tensors=groups["extra"],
    )
