"""Label assignment made visible: which priors each assigner makes positive for each GT, per level.

Every assigner runs on the priors and predictions a head exposes (:class:`~odcli.assigners.view.PriorView`):

* ``maxiou`` — RetinaNet's MaxIoU (pos ≥ 0.5, neg < 0.4, low-quality matches) on the head's anchors,
  or, for point heads, on square anchors of ``8 × stride`` centred on the points (MMDetection's ATSS
  anchor size), so it can be compared on any detector;
* ``atss`` — ATSS (top-9 per level, mean + std threshold, centre inside the GT) on squares of
  ``5 × stride`` (PP-YOLOE's anchors) or the head's anchors;
* ``tal`` — Task-Aligned (score · IoU⁶, top-13) on the head's predictions;
* ``dsl`` — RTMDet's Dynamic Soft Label on the head's predictions.

The static ones (maxiou, atss) need no weights; the dynamic ones (tal, dsl) depend on the model's
predictions — untrained, they are driven by the priors alone. :func:`assign_image` runs the chosen
assigners on one image; :func:`draw_assignment` draws one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from odcli.assigners.result import AssignResult
from odcli.assigners.view import PriorView
from odcli.data.loader import collate, prepare_batch
from odcli.errors import OdetError
from odcli.inference.predictor import Predictor
from odcli.models.detector import Detector
from odcli.viz.draw import class_color

ASSIGNERS = ("maxiou", "atss", "tal", "dsl")
DYNAMIC = ("tal", "dsl")


def _squares(view: PriorView, size_in_strides: float) -> torch.Tensor:
    half = view.strides[:, None] * size_in_strides / 2
    return torch.cat([view.centers - half, view.centers + half], dim=1)


def run_assigner(name: str, view: PriorView, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> AssignResult:
    """Run assigner ``name`` on one image's priors.

    ``gt_boxes`` (G, 4) xyxy input pixels, ``gt_labels`` (G,); returns a one-image AssignResult.
    """
    boxes, labels = gt_boxes[None].float(), gt_labels[None].long()
    mask = torch.ones_like(labels, dtype=torch.bool)
    if name == "maxiou":
        from odcli.assigners.max_iou import MaxIoUAssigner

        anchors = view.anchors if view.anchors is not None else _squares(view, 8.0)
        return MaxIoUAssigner()(anchors, boxes, labels, mask)
    if name == "atss":
        from odcli.assigners.atss import ATSSAssigner

        anchors = view.anchors if view.anchors is not None else _squares(view, 5.0)
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
    """Positives per GT per level of one assigner (``counts[g][level]``) and their prior indices."""

    assigner: str
    counts: list[list[int]]
    positives: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "assigner": self.assigner,
            "positives_per_gt_per_level": self.counts,
            "positive_priors": self.positives,
        }


def summarize(name: str, result: AssignResult, view: PriorView, num_gt: int) -> AssignmentSummary:
    """Count positives per (GT, level) of a one-image :class:`AssignResult`."""
    gt_index = result.gt_index[0].cpu()
    levels = view.levels.cpu()
    counts = [[int(((gt_index == g) & (levels == lv)).sum()) for lv in range(len(view.level_sizes))]
              for g in range(num_gt)]  # fmt: skip
    positives = [torch.nonzero(gt_index == g).flatten().tolist() for g in range(num_gt)]
    return AssignmentSummary(name, counts, positives)


@dataclass
class ImageAssignment:
    """What the assigners made of one image.

    Attributes:
        image: (H, W, 3) uint8 BGR network input (the test-time resize of the image).
        view: the head's priors and predictions on it.
        gt_boxes: (G, 4) xyxy input pixels.
        gt_labels: (G,) class indices.
        results: assigner name → its one-image result, in the order asked for.
        summaries: per assigner, positives per GT per level.
    """

    image: np.ndarray
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
    model: Detector, image: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, assigners: Sequence[str]
) -> ImageAssignment:
    """Run each of ``assigners`` on ``model``'s priors for one image (the model runs on its device).

    Args:
        image: (H, W, 3) uint8 BGR original image.
        gt_boxes: (G, 4) xyxy original pixels; scaled here into the network input.
        gt_labels: (G,) class indices.
        assigners: names from :data:`ASSIGNERS`.

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
    results = {name: run_assigner(name, view, boxes, labels) for name in assigners}
    summaries = [summarize(name, result, view, len(gt_boxes)) for name, result in results.items()]
    return ImageAssignment(sample["img"], view, gt_input, gt_labels, results, summaries)


def _gt_color(g: int) -> tuple[int, int, int]:
    return class_color(g * 7 + 3)


def draw_assignment(
    image: np.ndarray,
    view: PriorView,
    result: AssignResult,
    gt_boxes: np.ndarray,
    title: str,
    *,
    panel_width: int = 360,
) -> np.ndarray:
    """One row of panels, one per level: the image with GT boxes and the positive priors as dots.

    Args:
        image: (H, W, 3) uint8 BGR, the network input (resized) image; boxes are in its pixels.
        gt_boxes: (G, 4) xyxy input pixels.
    Returns:
        (h, W_total, 3) uint8 BGR strip with a title line above each panel.
    """
    scale = panel_width / image.shape[1]
    base = cv2.resize(image, (panel_width, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    base = (base * 0.6 + 255 * 0.4).astype(np.uint8)  # faded so the markers stand out
    gt_index = result.gt_index[0].cpu().numpy()
    centers = view.centers.cpu().numpy() * scale
    levels = view.levels.cpu().numpy()
    panels = []
    for lv in range(len(view.level_sizes)):
        panel = base.copy()
        for g, box in enumerate(gt_boxes):
            x1, y1, x2, y2 = (round(float(v) * scale) for v in box)
            cv2.rectangle(panel, (x1, y1), (x2, y2), _gt_color(g), 2, cv2.LINE_AA)
        stride = float(view.strides[levels == lv][0]) if (levels == lv).any() else 0.0
        radius = max(2, int(stride * scale / 3))
        sel = np.nonzero((levels == lv) & (gt_index >= 0))[0]
        for i in sel:
            cx, cy = centers[i]
            cv2.circle(panel, (int(cx), int(cy)), radius, _gt_color(int(gt_index[i])), -1, cv2.LINE_AA)
            cv2.circle(panel, (int(cx), int(cy)), radius, (0, 0, 0), 1, cv2.LINE_AA)
        header = np.full((26, panel.shape[1], 3), 255, np.uint8)
        text = f"{title} | P{lv + 3} stride {int(stride)} | {len(sel)} pos"
        cv2.putText(header, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.vstack([header, panel]))
        panels.append(np.full((panels[-1].shape[0], 4, 3), 255, np.uint8))
    return np.hstack(panels[:-1])


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Stack strips of possibly different widths vertically on a white canvas."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.vstack(padded)
