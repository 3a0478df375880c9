"""What the export tests share: the reference images through an export's own preprocessing, the
PyTorch model's outputs on the same canvases, and detections compared as sets."""

from __future__ import annotations

import numpy as np
import torch

from odcli.boxes.overlaps import pairwise_iou
from tests.conftest import COCO128, MMDET_REF, PPDET_REF, require

RTMDET_PTH = MMDET_REF / "rtmdet_tiny_fp16" / "checkpoint_fp16.pth"
RETINANET_PTH = MMDET_REF / "retinanet_r18_fp16" / "checkpoint_fp16.pth"
PPYOLOE_PDPARAMS = PPDET_REF / "ppyoloe_crn_s_300e_coco" / "model.pdparams"
#: Batch A of the reference outputs.
BATCH_A = ("000000000009.jpg", "000000000025.jpg")


def reference_images(names: tuple[str, ...] = BATCH_A, *, shrink: dict[str, float] | None = None) -> list:
    """COCO128 images (H, W, 3) uint8 BGR; ``shrink`` scales named ones down first, so that the test
    resize enlarges them (a scale factor other than 1 to undo)."""
    import cv2

    from odcli.data import read_image

    out = []
    for name in names:
        img = read_image(require(COCO128 / "images" / name))
        factor = (shrink or {}).get(name)
        if factor:
            img = cv2.resize(img, (int(img.shape[1] * factor), int(img.shape[0] * factor)))
        out.append(img)
    return out


def export_inputs(meta, images: list) -> tuple[np.ndarray, list[dict]]:
    """``images`` through an export's test pipeline onto its canvas → (B, 3, H, W) float32, metas."""
    from odcli.inference.backends.inputs import canvas_batch, prepare_image, test_transforms

    transforms = test_transforms(meta)
    return canvas_batch([prepare_image(transforms, img) for img in images], meta)


def torch_outputs(model, batch: np.ndarray, metas: list[dict]) -> tuple:
    """The PyTorch model on the same canvases, normalised as odet's pipeline does → (decoded, detections)."""
    from odcli.data.normalize import normalize

    spec = model.input_spec
    valid = [tuple(m["img_shape"]) for m in metas] if spec.pad_to is None else None
    x = normalize(torch.from_numpy(batch), spec.mean, spec.std, spec.to_rgb, valid_hw=valid)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        raw = model(x)
        return model.head.decode(*raw), model.head.predict(*raw, metas)


def matched_fraction(
    ref: dict[str, torch.Tensor], det: dict[str, torch.Tensor], *, score_tol: float
) -> float:
    """Fraction of ``ref``'s detections matched one-to-one in ``det``: same label, IoU > 0.99, score
    within ``score_tol`` (each detection of ``det`` matches at most once)."""
    if len(ref["boxes"]) == 0:
        return 1.0 if len(det["boxes"]) == 0 else 0.0
    iou = pairwise_iou(ref["boxes"], det["boxes"]) * (ref["labels"][:, None] == det["labels"][None, :])
    ok = (iou > 0.99) & ((ref["scores"][:, None] - det["scores"][None, :]).abs() <= score_tol)
    used: set[int] = set()
    matched = 0
    for i in range(len(ref["boxes"])):  # greedy over a few hundred rows: test code only
        free = [j for j in torch.nonzero(ok[i]).flatten().tolist() if j not in used]
        if free:
            used.add(free[0])
            matched += 1
    return matched / len(ref["boxes"])


def assert_same_detections(
    refs: list[dict], dets: list[dict], *, score_tol: float, fraction: float = 0.99
) -> None:
    """Per image as many detections, and at least ``fraction`` of them matched."""
    assert len(refs) == len(dets)
    for ref, det in zip(refs, dets, strict=True):
        assert len(det["boxes"]) == len(ref["boxes"])
        assert det["labels"].dtype == torch.int64 and det["boxes"].shape[1:] == (4,)
        assert matched_fraction(ref, det, score_tol=score_tol) >= fraction


def level_strides(meta) -> torch.Tensor:
    """(N, 1) the stride of each prior of an export, from its metadata."""
    return torch.cat(
        [torch.full((n, 1), float(s)) for n, s in zip(meta.level_counts, meta.strides, strict=True)]
    )


def test_matching_is_one_to_one() -> None:
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    ref = {"boxes": box.repeat(2, 1), "scores": torch.tensor([0.9, 0.9]), "labels": torch.tensor([1, 1])}
    one = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    assert matched_fraction(ref, one, score_tol=1e-4) == 0.5
    assert matched_fraction(ref, ref, score_tol=1e-4) == 1.0
    other_label = {**one, "labels": torch.tensor([2])}
    assert matched_fraction(one, other_label, score_tol=1e-4) == 0.0
