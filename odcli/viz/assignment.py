"""Label assignment made visible: which priors each assigner makes positive for each GT, per level.

Every assigner runs on the priors and predictions a head exposes (:class:`~odcli.assigners.view.PriorView`):

* ``maxiou`` — RetinaNet's MaxIoU (pos ≥ 0.5, neg < 0.4, low-quality matches) on the head's anchors,
  or, for point heads, on square anchors of ``8 × stride`` centred on the points (MMDetection's ATSS
  anchor size), so it can be compared on any detector;
* ``atss`` — ATSS (top-9 per level, mean + std threshold, centre inside the GT) on squares of
  ``5 × stride`` (PP-YOLOE's anchors) or the head's anchors;
* ``tal`` — Task-Aligned (score · IoU⁶, top-13) on the head's predictions;
* ``dsl`` — RTMDet's Dynamic Soft Label on the head's predictions.

maxiou and atss need no predictions. tal and dsl rank the model's predictions, which an untrained
model does not have (its boxes barely overlap any GT: Task-Aligned finds no positive at all, DSL one
or two per GT). In **static mode** (:func:`static_view`; ``odet visualize-assign`` without trained
weights) each prior's prediction is taken to be its own box — its anchor, or a square of
:data:`STATIC_BOX_STRIDES` strides around its point — with the score :data:`STATIC_SCORE` for every
class, so the assignment follows the geometry alone. :func:`assign_image` runs the chosen assigners
on one image; :mod:`odcli.viz.assignment_figure` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from odcli.assigners.result import AssignResult
from odcli.assigners.view import PriorView
from odcli.data.collate import collate
from odcli.data.normalize import prepare_batch
from odcli.errors import OdetError
from odcli.inference.predictor import Predictor
from odcli.models.detector import Detector

ASSIGNERS = ("maxiou", "atss", "tal", "dsl")
DYNAMIC = ("tal", "dsl")

#: Side, in strides of the prior's level, of the square a point prior predicts in static mode: the
#: size of PP-YOLOE's ATSS anchors (``atss`` uses the same squares), small enough that each level
#: keeps the objects of its scale.
STATIC_BOX_STRIDES = 5.0
#: The class score every prior predicts in static mode (logit 0): the same for every class and prior,
#: so the classification terms of tal and dsl rank nothing and the IoU with the GT decides.
STATIC_SCORE = 0.5

#: Side, in strides, of the square boxes each assigner runs on for a point head (no anchors).
SQUARE_STRIDES = {"maxiou": 8.0, "atss": 5.0, "tal": STATIC_BOX_STRIDES, "dsl": STATIC_BOX_STRIDES}

#: What each ``mode`` of a result means, for titles, help and the JSON report.
MODES = {
    "static": (
        f"static: each prior predicts its own box (its anchor, or a square of {STATIC_BOX_STRIDES:g} "
        f"strides around its point) with score {STATIC_SCORE:g} for every class, so the positives follow "
        "the geometry alone, not a model"
    ),
    "predictions": "predictions: the model's own boxes and class scores for this image",
    "geometry": "needs no predictions: the priors' boxes alone decide",
}


def _squares(view: PriorView, size_in_strides: float) -> torch.Tensor:
    half = view.strides[:, None] * size_in_strides / 2
    return torch.cat([view.centers - half, view.centers + half], dim=1)


def static_view(view: PriorView, box_strides: float = STATIC_BOX_STRIDES) -> PriorView:
    """``view`` with its predictions replaced by the priors themselves (static mode).

    Returns:
        the same priors; ``boxes`` (1, N, 4) xyxy input pixels: the anchors of an anchor head, else
        squares of ``box_strides`` strides centred on the points; ``logits`` (1, N, C) zeros (every
        class scored :data:`STATIC_SCORE`).
    """
    boxes = view.anchors if view.anchors is not None else _squares(view, box_strides)
    return replace(view, boxes=boxes[None].to(view.boxes.dtype), logits=torch.zeros_like(view.logits))


def run_assigner(name: str, view: PriorView, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> AssignResult:
    """Run assigner ``name`` on one image's priors.

    ``gt_boxes`` (G, 4) xyxy input pixels, ``gt_labels`` (G,); returns a one-image AssignResult.
    """
    boxes, labels = gt_boxes[None].float(), gt_labels[None].long()
    mask = torch.ones_like(labels, dtype=torch.bool)
    if name == "maxiou":
        from odcli.assigners.max_iou import MaxIoUAssigner

        anchors = view.anchors if view.anchors is not None else _squares(view, SQUARE_STRIDES["maxiou"])
        return MaxIoUAssigner()(anchors, boxes, labels, mask)
    if name == "atss":
        from odcli.assigners.atss import ATSSAssigner

        anchors = view.anchors if view.anchors is not None else _squares(view, SQUARE_STRIDES["atss"])
        return ATSSAssigner()(anchors, view.num_per_level, boxes, labels, mask)
    if name == "tal":
        from odcli.assigners.task_aligned import TaskAlignedAssigner

        return TaskAlignedAssigner()(view.logits.sigmoid(), view.boxes, view.centers, boxes, labels, mask)
    if name == "dsl":
        from odcli.assigners.dynamic_soft_label import DynamicSoftLabelAssigner

        priors = torch.cat([view.centers, view.strides[:, None], view.strides[:, None]], dim=1)
        return DynamicSoftLabelAssigner()(view.logits, view.boxes, priors, boxes, labels, mask)
    raise OdetError(f"unknown assigner {name!r}; choose from {', '.join(ASSIGNERS)}")


@dataclass
class AssignmentSummary:
    """Positives per GT per level of one assigner (``counts[g][level]``), their prior indices, and
    the :data:`MODES` key of what the assigner ran on."""

    assigner: str
    counts: list[list[int]]
    positives: list[list[int]] = field(default_factory=list)
    mode: str = "geometry"

    def to_dict(self) -> dict:
        return {
            "assigner": self.assigner,
            "mode": self.mode,
            "mode_means": MODES[self.mode],
            "positives_per_gt_per_level": self.counts,
            "positive_priors": self.positives,
        }


def summarize(
    name: str, result: AssignResult, view: PriorView, num_gt: int, mode: str = "geometry"
) -> AssignmentSummary:
    """Count positives per (GT, level) of a one-image :class:`AssignResult`; ``mode``: a :data:`MODES` key."""
    gt_index = result.gt_index[0].cpu()
    levels = view.levels.cpu()
    counts = [[int(((gt_index == g) & (levels == lv)).sum()) for lv in range(len(view.level_sizes))]
              for g in range(num_gt)]  # fmt: skip
    positives = [torch.nonzero(gt_index == g).flatten().tolist() for g in range(num_gt)]
    return AssignmentSummary(name, counts, positives, mode)


@dataclass
class ImageAssignment:
    """What the assigners made of one image.

    Attributes:
        image: (H, W, 3) uint8 BGR network input (the test-time resize of the image, padded).
        content_shape: (h, w) of the resized image inside ``image``, top-left; the rest is padding.
        view: the head's priors and predictions on it.
        gt_boxes: (G, 4) xyxy input pixels.
        gt_labels: (G,) class indices.
        results: assigner name → its one-image result, in the order asked for.
        summaries: per assigner, positives per GT per level and its mode.
    """

    image: np.ndarray
    content_shape: tuple[int, int]
    view: PriorView
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    results: dict[str, AssignResult]
    summaries: list[AssignmentSummary]


def check_assigners(names: Sequence[str]) -> None:
    """Fail with one line when a name is not one of :data:`ASSIGNERS`."""
    for name in names:
        if name not in ASSIGNERS:
            raise OdetError(f"unknown assigner {name!r}; choose from {', '.join(ASSIGNERS)}")


@torch.no_grad()
def assign_image(
    model: Detector,
    image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    assigners: Sequence[str],
    *,
    static: bool = False,
) -> ImageAssignment:
    """Run each of ``assigners`` on ``model``'s priors for one image (the model runs on its device).

    Args:
        image: (H, W, 3) uint8 BGR original image.
        gt_boxes: (G, 4) xyxy original pixels; scaled here into the network input.
        gt_labels: (G,) class indices.
        assigners: names from :data:`ASSIGNERS`.
        static: run the dynamic assigners (:data:`DYNAMIC`) on :func:`static_view` instead of the
            model's predictions (for a model without trained weights).

    Raises:
        OdetError: an unknown assigner name; a head that cannot show its priors.
    """
    check_assigners(assigners)
    model.eval()
    if not hasattr(model.head, "prior_view"):
        raise OdetError(f"{model.arch}'s head cannot show its priors yet")
    predictor = Predictor(model)
    sample = predictor.prepare(image)
    sx, sy = sample["scale_factor"]
    gt_input = (gt_boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
    batch, _, metas = collate([sample], pad_value=int(model.input_spec.pad_value))
    view = model.head.prior_view(*model(prepare_batch(batch, metas, model.input_spec, predictor.device)))
    boxes, labels = torch.from_numpy(gt_input), torch.from_numpy(gt_labels)
    fixed = static_view(view) if static else view
    modes = {n: ("static" if static else "predictions") if n in DYNAMIC else "geometry" for n in assigners}
    results = {n: run_assigner(n, fixed if n in DYNAMIC else view, boxes, labels) for n in assigners}
    summaries = [summarize(n, result, view, len(gt_boxes), modes[n]) for n, result in results.items()]
    h, w = image.shape[:2]
    content = (min(round(h * sy), sample["img"].shape[0]), min(round(w * sx), sample["img"].shape[1]))
    return ImageAssignment(sample["img"], content, view, gt_input, gt_labels, results, summaries)
