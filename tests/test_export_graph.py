"""The post-processing that ``odet export`` puts in the graph, piece by piece: candidate selection as
upstream's, the NMS op against torchvision and against ONNX Runtime, the padded outputs, and the
whole graph (run eagerly) against ``model.predict``."""

from __future__ import annotations

import pytest
import torch

from odcli.boxes.postprocess import NMSConfig, select_topk
from odcli.export.graph import ExportGraph, per_class_candidates, per_level_candidates
from odcli.export.nms import class_aware_nms, padded_detections, reference_nms
from tests.conftest import require
from tests.test_export_helpers import PPYOLOE_PDPARAMS, RTMDET_PTH, assert_same_detections


def _boxes(generator: torch.Generator, b: int, n: int) -> torch.Tensor:
    xy = torch.rand(b, n, 2, generator=generator) * 100
    return torch.cat([xy, xy + torch.rand(b, n, 2, generator=generator) * 40 + 1], dim=-1)


def test_padded_detections_by_hand() -> None:
    scores = torch.tensor([[[0.9, 0.2, 0.5], [0.1, 0.8, -1.0]], [[0.3, -1.0, -1.0], [-1.0, -1.0, -1.0]]])
    boxes = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    selected = torch.tensor([[0, 0, 0], [0, 1, 1], [0, 0, 2], [1, 0, 0]])  # (image, class, prior)
    det_boxes, det_scores, labels, num = padded_detections(selected, scores, boxes, 2)
    assert num.tolist() == [2, 1]
    assert det_scores.tolist() == [[pytest.approx(0.9), pytest.approx(0.8)], [pytest.approx(0.3), 0.0]]
    assert labels.tolist() == [[0, 1], [0, -1]]
    assert torch.equal(det_boxes[0], boxes[0, [0, 1]]) and torch.equal(det_boxes[1, 0], boxes[1, 0])
    assert torch.equal(det_boxes[1, 1], torch.zeros(4))
    empty = padded_detections(selected[:0], scores, boxes, 3)
    assert empty[3].tolist() == [0, 0] and empty[2].eq(-1).all()


def test_per_level_candidates_are_select_topk_on_each_level() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 9, 4, generator=g)
    cfg = NMSConfig(score_thr=0.3, nms_pre=5, iou_thr=0.5, max_per_img=10)
    cand = per_level_candidates(scores, (6, 3), cfg)  # level 1 has 12 pairs > 5, level 2 12 too
    for i in range(2):
        expected = set()
        for start, level in ((0, scores[i, :6]), (6, scores[i, 6:])):
            _, labels, priors = select_topk(level, cfg.score_thr, cfg.nms_pre)
            expected |= {(int(p) + start, int(c)) for p, c in zip(priors, labels, strict=True)}
        got = {(int(p), int(c)) for p, c in (cand[i] >= 0).nonzero().tolist()}
        assert got == expected and len(got) > 0
        assert torch.equal(cand[i][cand[i] >= 0], scores[i][cand[i] >= 0])


def test_per_class_candidates_are_the_best_per_class_above_threshold() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(1, 50, 3, generator=g)
    cand = per_class_candidates(scores, NMSConfig(score_thr=0.5, nms_pre=7, iou_thr=0.5, max_per_img=10))
    assert cand.shape == (1, 3, 50)
    for c in range(3):
        top = scores[0, :, c].topk(7).indices
        expected = {int(i) for i in top if scores[0, i, c] > 0.5}
        assert {int(i) for i in (cand[0, c] >= 0).nonzero().flatten()} == expected
    all_kept = per_class_candidates(scores, NMSConfig(score_thr=0.5, nms_pre=-1, iou_thr=0.5, max_per_img=10))
    assert torch.equal(all_kept >= 0, scores.transpose(1, 2) > 0.5)


def test_reference_nms_is_torchvision_per_image_and_class() -> None:
    from torchvision.ops import nms

    g = torch.Generator().manual_seed(2)
    boxes = _boxes(g, 2, 60)
    scores = torch.rand(2, 3, 60, generator=g)
    selected = reference_nms(boxes, scores, 100, 0.5, 0.2)
    for b in range(2):
        for c in range(3):
            keep = (scores[b, c] > 0.2).nonzero().flatten()
            expected = keep[nms(boxes[b, keep], scores[b, c, keep], 0.5)]
            rows = selected[(selected[:, 0] == b) & (selected[:, 1] == c)]
            assert rows[:, 2].tolist() == expected.tolist()


def test_onnx_non_max_suppression_equals_the_pytorch_path(tmp_path) -> None:
    """The custom op exported (one NonMaxSuppression node) and run by ONNX Runtime gives the padded
    outputs the eager path gives, for batch sizes other than the traced one; scores equal to the
    threshold are out in both."""
    ort = pytest.importorskip("onnxruntime", reason="odet[export] is not installed")
    import contextlib
    import io

    from odcli.export.nms import onnx_translations

    class Head(torch.nn.Module):
        def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return padded_detections(class_aware_nms(boxes, scores, 20, 0.5, 0.25), scores, boxes, 20)

    g = torch.Generator().manual_seed(3)
    boxes, scores = _boxes(g, 3, 200), torch.rand(3, 4, 200, generator=g)
    scores[0, 0, :5] = 0.25  # exactly the threshold
    batch = torch.export.Dim("batch", min=1, max=64)
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            Head().eval(), (boxes[:2], scores[:2]), dynamo=True, input_names=["boxes", "scores"],
            dynamic_shapes={"boxes": {0: batch}, "scores": {0: batch}},
            custom_translation_table=onnx_translations(),
        )  # fmt: skip
    assert [n.op_type for n in program.model.graph].count("NonMaxSuppression") == 1
    program.save(str(tmp_path / "nms.onnx"))
    session = ort.InferenceSession(str(tmp_path / "nms.onnx"), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        got = session.run(None, {"boxes": boxes[:b].numpy(), "scores": scores[:b].numpy()})
        expected = Head()(boxes[:b], scores[:b])
        for out, ref in zip(got, expected, strict=True):
            assert torch.equal(torch.from_numpy(out), ref)
        assert int(expected[3][0]) == 20


@pytest.mark.parametrize("arch", ["rtmdet_tiny", "ppyoloe_s"])
def test_the_graph_run_eagerly_predicts_what_the_model_predicts(arch: str) -> None:
    """Both post-processing styles (per level, per class) with the reference weights, with rescaling,
    clipping and a batch of two (one image smaller than the canvas)."""
    from odcli.inference.load import load_model

    weights = require(RTMDET_PTH if arch.startswith("rtmdet") else PPYOLOE_PDPARAMS)
    model = load_model(weights, arch=arch, device="cpu").model
    graph = ExportGraph(model, nms=True, style="per_level" if arch.startswith("rtmdet") else "per_class",
                        zero_padding=model.input_spec.pad_to is None)  # fmt: skip
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 128) * 255
    metas = [
        {"img_shape": (96, 128), "scale_factor": (0.5, 0.4)},
        {"img_shape": (80, 100), "scale_factor": (2.0, 2.0)},
    ]
    from odcli.data.normalize import normalize

    spec = model.input_spec
    valid = [m["img_shape"] for m in metas] if spec.pad_to is None else None
    x = normalize(images, spec.mean, spec.std, spec.to_rgb, valid_hw=valid)
    with torch.no_grad():
        refs = model.predict(x.contiguous(memory_format=torch.channels_last), metas)
        boxes, scores, labels, num = graph(
            images, torch.tensor([m["img_shape"] for m in metas], dtype=torch.float32),
            torch.tensor([m["scale_factor"] for m in metas], dtype=torch.float32),
        )  # fmt: skip
    dets = [
        {"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]}
        for i, n in enumerate(num.tolist())
    ]
    assert all(len(r["boxes"]) > 10 for r in refs)
    assert_same_detections(refs, dets, score_tol=1e-6, fraction=1.0)
