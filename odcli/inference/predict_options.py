"""The predict options of ``odet infer``, as Ultralytics users know them, and what each changes.

Every option is an exact change of the model's own post-processing or test resize — the result is
what the model computes with that setting, not an approximation of it:

* ``iou``: the class-aware NMS IoU threshold (a copy of ``model.head.nms`` with ``iou_thr``
  replaced): no two kept detections of one class overlap by more than it.
* ``max_det`` N: the best N detections of each image, i.e. the first N of what the post-processing
  keeps with ``max_per_img`` = max(the model's, N) — early-stopping NMS keeps the best first, so the
  first N of a longer result are the N best.
* ``classes``: the detections of these classes among those the model keeps (its ``max_per_img``
  best), then the first ``max_det`` of them. Filtering after NMS makes ``--classes person`` exactly
  the person detections of the full run (filtering before would let other classes' candidates drop
  out of upstream's per-level ``nms_pre`` top-k and change which person candidates get in).
* ``imgsz``: the test resize target (the model's :class:`~odcli.models.detector.InputSpec`
  ``test_scale``, and the fixed canvas ``pad_to`` for RTMDet), see :func:`sized_input_spec`.
* ``half``: fp16 weights and compute on CUDA (:func:`~odcli.models.fuse.to_half`); the
  post-processing still runs in float32.

Exported files (.onnx, .xml, …) carry their own canvas and, with NMS in the graph, their own IoU
threshold and detection limit: :func:`check_exported` says when an option needs a re-export.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from odcli.errors import OdetError
from odcli.inference.backends.meta import ExportMeta
from odcli.inference.load import LoadedModel
from odcli.inference.predictor import Predictor
from odcli.inference.runner import ExportedPredictor, LoadedExport
from odcli.models.detector import Detector, InputSpec
from odcli.models.fuse import to_half
from odcli.runtime.device import resolve_device

__all__ = [
    "MIN_IMGSZ",
    "AppliedOptions",
    "PredictOptions",
    "check_exported",
    "configure_predictor",
    "parse_imgsz",
    "resolve_classes",
    "select_detections",
    "sized_input_spec",
    "split_values",
]

#: The smallest accepted ``--imgsz`` side: one cell of the coarsest backbone level.
MIN_IMGSZ = 32


def split_values(values: Sequence[str]) -> tuple[str, ...]:
    """``["person,car", "dog"]`` → ``("person", "car", "dog")``: a repeatable option whose values may
    also be comma-separated (blank entries dropped)."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def parse_imgsz(text: str | None) -> tuple[int, ...]:
    """``--imgsz`` text → ``()`` (not given), ``(N,)`` or ``(H, W)`` pixels.

    Accepts ``640``, ``480,640``, ``480x640`` and ``"480 640"``.

    Raises:
        OdetError: not one or two integers of at least :data:`MIN_IMGSZ`.
    """
    if text is None:
        return ()
    parts = text.replace("x", " ").replace("X", " ").replace(",", " ").split()
    try:
        sides = tuple(int(p) for p in parts)
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2):
        raise OdetError(f"--imgsz takes one size or H,W in pixels (e.g. 640 or 480,640), got {text!r}")
    if min(sides) < MIN_IMGSZ:
        raise OdetError(f"--imgsz sides must be at least {MIN_IMGSZ} px, got {text!r}")
    return sides


def resolve_classes(tokens: Sequence[str], names: Sequence[str]) -> tuple[int, ...]:
    """Class names or label indices → sorted unique label indices into ``names``.

    Names match exactly, or else ignoring case; a number is a label index (0 … K-1).

    Raises:
        OdetError: an index out of range, or an unknown name (the message lists close matches).
    """
    lower = {n.lower(): i for i, n in reversed(list(enumerate(names)))}
    labels: set[int] = set()
    for token in tokens:
        if token.isdigit():
            index = int(token)
            if index >= len(names):
                raise OdetError(f"--classes {token}: the model has classes 0-{len(names) - 1}")
        elif token in names:
            index = list(names).index(token)
        elif token.lower() in lower:
            index = lower[token.lower()]
        else:
            close = difflib.get_close_matches(token, list(names), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            some = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            raise OdetError(f"--classes: the model has no class {token!r}{hint} (its classes: {some})")
        labels.add(index)
    return tuple(sorted(labels))


def sized_input_spec(spec: InputSpec, imgsz: Sequence[int], multiple: int) -> tuple[InputSpec, str | None]:
    """``spec`` with the test resize targeting ``imgsz``, and a note when a side had to be rounded.

    One size N means ``test_scale`` (N, N): a keep-ratio model (RTMDet, RetinaNet) scales each image's
    longer side to N (RTMDet then pads to the N×N canvas), PP-YOLOE resizes to exactly N×N. (H, W)
    means ``test_scale`` (W, H): RTMDet's canvas becomes H×W (mmcv's keep-ratio rule fits the long
    side to max(H, W) and the short side to min(H, W), so a non-square canvas only holds images of
    its own orientation), RetinaNet fits each image inside it either way round (as its 1333×800),
    PP-YOLOE resizes to exactly H×W.

    Models whose input has a fixed size (RTMDet's canvas, PP-YOLOE's exact resize) need sides that
    are multiples of ``multiple`` (the largest stride): other sides are rounded up to one, with a
    note. RetinaNet's batch is padded to a multiple of 32 after the resize, so it takes any size.

    Args:
        spec: the model's input spec.
        imgsz: (N,) or (H, W) pixels.
        multiple: the model's largest stride.
    """
    h, w = (imgsz[0], imgsz[0]) if len(imgsz) == 1 else (imgsz[0], imgsz[1])
    note = None
    if spec.pad_to is not None or not spec.keep_ratio:
        rh, rw = (math.ceil(side / multiple) * multiple for side in (h, w))
        if (rh, rw) != (h, w):
            given = "x".join(str(v) for v in imgsz)
            done = str(rh) if len(imgsz) == 1 else f"{rh}x{rw}"
            note = (
                f"--imgsz {given} rounded up to {done}, a multiple of the model's largest stride ({multiple})"
            )
        h, w = rh, rw
    pad_to = (h, w) if spec.pad_to is not None else None
    return dataclasses.replace(spec, test_scale=(w, h), pad_to=pad_to), note


def select_detections(
    det: dict[str, torch.Tensor], labels: Sequence[int] | None, max_dets: int | None
) -> dict[str, torch.Tensor]:
    """The detections of ``labels`` (None: all) among ``det``, then the first ``max_dets`` (None: all).

    Args:
        det: ``boxes`` (K, 4), ``scores`` (K,), ``labels`` (K,), best first.
    """
    if labels is None and (max_dets is None or len(det["scores"]) <= max_dets):
        return det
    keep = torch.ones_like(det["scores"], dtype=torch.bool)
    if labels is not None:
        keep = torch.isin(det["labels"], torch.tensor(list(labels), dtype=det["labels"].dtype))
    index = keep.nonzero()[:, 0][:max_dets]
    return {k: v[index] for k, v in det.items()}


@dataclass(frozen=True)
class AppliedOptions:
    """What :meth:`PredictOptions.apply` did.

    Attributes:
        labels: the kept class indices, None for all.
        max_dets: detections per image the caller keeps (None: all the post-processing returns).
        settings: the values in effect, for the output's header: ``iou``, ``classes`` (names or None),
            ``imgsz`` [H, W] (the test resize target), ``max_det``, ``half``.
        notes: lines to show the user (a rounded ``imgsz``).
    """

    labels: tuple[int, ...] | None
    max_dets: int | None
    settings: dict[str, Any]
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class PredictOptions:
    """``--iou``, ``--classes``, ``--imgsz``, ``--max-det``, ``--half`` as given (None / empty: not given).

    Attributes:
        iou: NMS IoU threshold in [0, 1].
        classes: class names or label indices.
        imgsz: () / (N,) / (H, W) pixels (:func:`parse_imgsz`).
        max_det: detections per image, >= 1.
        half: fp16 weights (CUDA only).
    """

    iou: float | None = None
    classes: tuple[str, ...] = ()
    imgsz: tuple[int, ...] = ()
    max_det: int | None = None
    half: bool = False

    def check(self, device: str) -> None:
        """Fail with one line on a value that cannot work, before any model is loaded.

        Raises:
            OdetError: ``iou`` outside [0, 1], ``max_det`` < 1, ``half`` on a device without CUDA.
        """
        if self.iou is not None and not 0.0 <= self.iou <= 1.0:
            raise OdetError(f"--iou must be in [0, 1], got {self.iou}")
        if self.max_det is not None and self.max_det < 1:
            raise OdetError(f"--max-det must be >= 1, got {self.max_det}")
        if self.half and resolve_device(device).type != "cuda":
            raise OdetError(
                "--half needs a CUDA device (fp16 convolutions on the CPU are slow or missing); drop --half"
            )

    def apply(self, model: Detector, names: Sequence[str]) -> AppliedOptions:
        """Change ``model`` in place for these options (before a predictor is built from it).

        Args:
            model: a loaded detector; its ``head.nms`` and ``input_spec`` are replaced, and with
                ``half`` its weights become float16.
            names: its class names in label order (for ``classes``).
        """
        labels = resolve_classes(self.classes, names) if self.classes else None
        nms = model.head.nms
        limit = self.max_det if self.max_det is not None else nms.max_per_img
        if self.iou is not None or limit > nms.max_per_img:
            iou = self.iou if self.iou is not None else nms.iou_thr
            model.head.nms = dataclasses.replace(nms, iou_thr=iou, max_per_img=max(limit, nms.max_per_img))
        notes = []
        if self.imgsz:
            model.input_spec, note = sized_input_spec(
                model.input_spec, self.imgsz, int(max(model.head.strides))
            )
            notes += [note] if note else []
        if self.half:
            to_half(model)
        w, h = model.input_spec.test_scale
        settings = {
            "iou": model.head.nms.iou_thr,
            "classes": None if labels is None else [names[i] for i in labels],
            "imgsz": [int(h), int(w)],
            "max_det": limit,
            "half": self.half,
        }
        return AppliedOptions(labels, self.max_det, settings, tuple(notes))


def check_exported(
    options: PredictOptions, meta: ExportMeta, names: Sequence[str]
) -> tuple[AppliedOptions, ExportMeta]:
    """What of ``options`` an exported file can honour, and its metadata with them in effect.

    The filters (``classes``, ``max_det`` up to what a graph with NMS keeps) always work; ``imgsz``
    only as the file's own canvas; ``iou`` (and a larger ``max_det``) only without NMS in the graph
    (``--no-nms`` files: odet's post-processing runs the returned metadata's config); never
    ``half`` (the file has the precision it was exported with).

    Args:
        meta: the file's metadata.
        names: its class names.

    Raises:
        OdetError: an option the file cannot honour, with the re-export that would.
    """
    if options.half:
        fix = "it already runs in fp16" if meta.half else "re-export with --half"
        raise OdetError(f"--half does not apply to an exported file ({fix})")
    canvas = tuple(int(v) for v in meta.canvas)
    if options.imgsz:
        want = (options.imgsz[0],) * 2 if len(options.imgsz) == 1 else tuple(options.imgsz)
        if want != canvas:
            raise OdetError(
                f"--imgsz {'x'.join(map(str, options.imgsz))}: this file's input is {canvas[0]}x{canvas[1]}; "
                f"re-export with --imgsz {want[0]} {want[1]}"
            )
    if options.iou is not None and meta.nms and options.iou != meta.iou_thr:
        raise OdetError(
            f"--iou {options.iou}: this file has NMS at IoU {meta.iou_thr} in its graph; re-export "
            "with --no-nms to choose the IoU threshold when running it"
        )
    if options.max_det is not None and meta.nms and options.max_det > meta.max_per_img:
        raise OdetError(
            f"--max-det {options.max_det}: this file's graph keeps at most {meta.max_per_img} detections "
            "per image; re-export with --no-nms for more"
        )
    labels = resolve_classes(options.classes, names) if options.classes else None
    limit = options.max_det if options.max_det is not None else meta.max_per_img
    if not meta.nms and (options.iou is not None or limit > meta.max_per_img):
        iou = options.iou if options.iou is not None else meta.iou_thr
        meta = dataclasses.replace(meta, iou_thr=iou, max_per_img=max(limit, meta.max_per_img))
    w, h = meta.test_scale
    settings = {
        "iou": meta.iou_thr,
        "classes": None if labels is None else [names[i] for i in labels],
        "imgsz": [int(h), int(w)],
        "max_det": limit,
        "half": bool(meta.half),
    }
    return AppliedOptions(labels, options.max_det, settings), meta


def configure_predictor(
    options: PredictOptions, loaded: LoadedModel | LoadedExport, predictor: Predictor | ExportedPredictor
) -> tuple[Predictor | ExportedPredictor, AppliedOptions]:
    """Apply ``options`` to what :func:`~odcli.inference.runner.load_predictor` gave: a PyTorch model
    is changed in place (:meth:`PredictOptions.apply`), an exported file checked
    (:func:`check_exported`); returns the predictor to use (rebuilt: its test pipeline follows the
    new input spec) and what was applied. Keeps ``predictor``'s own ``score_thr``."""
    if isinstance(loaded, LoadedModel):
        applied = options.apply(loaded.model, loaded.classes)
        return Predictor(loaded.model, score_thr=predictor.score_thr), applied
    applied, meta = check_exported(options, loaded.meta, loaded.classes)
    if meta is not loaded.meta:  # a --no-nms file post-processed with another IoU / limit
        loaded.meta = loaded.backend.meta = meta
    return ExportedPredictor(loaded.backend, score_thr=predictor.score_thr), applied
