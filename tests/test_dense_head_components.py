"""The ``DenseHead`` contract (odcli/models/dense_head.py), checked on every head of the zoo: the
methods exist, give the documented shapes on a tiny input, ``predict`` is ``postprocess(decode(...))``,
``assign`` is the assignment ``loss`` trains with, and ``decode`` exports with ``torch.export``
(no data-dependent shapes: what an ONNX export with or without NMS in the graph needs)."""

from __future__ import annotations

import pytest
import torch

import odcli
from odcli.models.config import DetectorConfig
from odcli.models.dense_head import Decoded, DenseHead
from odcli.models.heads.dense import flatten_levels, sigmoid_concat
from odcli.models.zoo import list_models, model_config

FAMILIES = ["rtmdet_tiny", "retinanet_r18", "ppyoloe_s"]
NUM_CLASSES = 3
SHIFT = {"rtmdet_tiny": 2.0, "retinanet_r18": 3.5, "ppyoloe_s": 3.0}  # logits → enough detections
# RTMDet's upstream regression bias 0 makes every untrained box empty (dropped by post-processing).
OVERRIDES = {"rtmdet_tiny": {"reg_bias_init": 1.0}}


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_head_is_a_dense_head(name: str) -> None:
    assert isinstance(odcli.build_detector(name, num_classes=NUM_CLASSES).head, DenseHead)


@pytest.mark.parametrize("name", FAMILIES)
def test_shared_settings_have_one_name_in_every_family(name: str) -> None:
    """``model.nms_pre`` and the BatchNorm settings mean the same in every family (PP-YOLOE's
    candidate count was ``nms_top_k``, RetinaNet had no BatchNorm settings)."""
    assert isinstance(model_config(name), DetectorConfig)
    model = odcli.build_detector(name, num_classes=NUM_CLASSES, nms_pre=7, bn_eps=1e-3, bn_momentum=0.03)
    assert model.head.nms.nms_pre == 7
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.tensor([[4.0, 6.0, 50.0, 40.0], [40.0, 20.0, 90.0, 60.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {
            "boxes": torch.tensor([[10.0, 10.0, 70.0, 55.0]]),
            "labels": torch.tensor([1]),
            "pad_shape": (64, 64),
        },
    ]


def _outputs(name: str) -> tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """A seeded model (3 classes) and its head outputs on a 2 × 3 × 64 × 96 batch."""
    torch.manual_seed(0)
    model = odcli.build_detector(name, num_classes=NUM_CLASSES, **OVERRIDES.get(name, {})).eval()
    with torch.no_grad():
        cls_out, reg_out = model(torch.randn(2, 3, 64, 96))
    return model, [c + SHIFT[name] for c in cls_out], reg_out


METAS = [
    {"img_shape": (60, 90), "scale_factor": (1.5, 1.25)},
    {"img_shape": (64, 96), "scale_factor": (0.5, 0.5)},
]


@pytest.mark.parametrize("name", FAMILIES)
def test_each_method_gives_the_documented_shapes(name: str) -> None:
    model, cls_out, reg_out = _outputs(name)
    head = model.head
    per_location = getattr(head, "num_anchors", 1)
    sizes = [tuple(c.shape[-2:]) for c in cls_out]
    assert len(sizes) == len(head.strides) and sizes[0] == (64 // head.strides[0], 96 // head.strides[0])
    assert [tuple(c.shape) for c in cls_out] == [(2, per_location * NUM_CLASSES, h, w) for h, w in sizes]
    assert [(r.shape[0], *r.shape[-2:]) for r in reg_out] == [(2, h, w) for h, w in sizes]
    n = sum(h * w * per_location for h, w in sizes)

    decoded = head.decode(cls_out, reg_out)
    assert isinstance(decoded, Decoded)
    assert decoded.scores.shape == (2, n, NUM_CLASSES) and decoded.boxes.shape == (2, n, 4)
    assert decoded.scores.dtype == decoded.boxes.dtype == torch.float32
    assert float(decoded.scores.min()) >= 0 and float(decoded.scores.max()) <= 1
    assert decoded.level_counts == tuple(h * w * per_location for h, w in sizes)

    view = head.prior_view(cls_out, reg_out)
    assert view.num_per_level == list(decoded.level_counts) and view.centers.shape == (n, 2)
    assert view.logits.shape == (1, n, NUM_CLASSES)
    assert torch.equal(view.boxes, decoded.boxes[:1])  # the first image's decoded boxes
    torch.testing.assert_close(view.logits.sigmoid(), decoded.scores[:1])

    result = head.assign(cls_out, reg_out, _targets())
    assert result.gt_index.shape == result.labels.shape == result.quality.shape == (2, n)
    assert result.positive.any(dim=1).all()  # both images have positives
    assert int(result.gt_index[0].max()) == 1 and int(result.gt_index[1].max()) == 0

    losses = head.loss(cls_out, reg_out, _targets())
    assert losses["loss"].shape == () and torch.isfinite(losses["loss"])
    assert {"loss", "loss_cls"} <= set(losses)

    for rescale in (True, False):
        dets = head.postprocess(decoded, METAS, rescale=rescale)
        assert len(dets) == 2
        for det in dets:
            k = len(det["scores"])
            assert 0 < k <= head.nms.max_per_img
            assert det["boxes"].shape == (k, 4) and det["labels"].shape == (k,)
            assert bool((det["scores"][:-1] >= det["scores"][1:]).all())  # best first


@pytest.mark.parametrize("name", FAMILIES)
def test_predict_is_postprocess_of_decode(name: str) -> None:
    model, cls_out, reg_out = _outputs(name)
    head = model.head
    for rescale in (True, False):
        predicted = head.predict(cls_out, reg_out, METAS, rescale=rescale)
        staged = head.postprocess(head.decode(cls_out, reg_out), METAS, rescale=rescale)
        for a, b in zip(predicted, staged, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", FAMILIES)
def test_assign_is_the_assignment_the_loss_trains_with(name: str) -> None:
    model, cls_out, reg_out = _outputs(name)
    head = model.head
    seen = []

    def recording(assigner):  # the real assigner, its results kept
        def call(*args, **kwargs):
            seen.append(assigner(*args, **kwargs))
            return seen[-1]

        return call

    for attr in ("assigner", "static_assigner"):  # PP-YOLOE has both (ATSS first, then TAL)
        if hasattr(head, attr):
            setattr(head, attr, recording(getattr(head, attr)))
    epochs = (0, 200) if hasattr(head, "static_assigner") else (0,)
    for epoch in epochs:
        head.loss(cls_out, reg_out, _targets(), epoch=epoch)
        trained = seen[-1]
        result = head.assign(cls_out, reg_out, _targets(), epoch=epoch)
        for field in ("gt_index", "labels", "quality"):
            assert torch.equal(getattr(result, field), getattr(trained, field)), (epoch, field)
    assert len(seen) == 2 * len(epochs)


class _Decode(torch.nn.Module):
    """The decoding stage alone, as an export sees it: per-level maps in, (scores, boxes) out."""

    def __init__(self, head: torch.nn.Module, levels: int) -> None:
        super().__init__()
        self.head, self.levels = head, levels

    def forward(self, *maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoded = self.head.decode(list(maps[: self.levels]), list(maps[self.levels :]))
        return decoded.scores, decoded.boxes


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("batch", [1, 2])
def test_decode_exports_without_data_dependent_shapes(name: str, batch: int) -> None:
    model, cls_out, reg_out = _outputs(name)
    cls_out, reg_out = [c[:batch] for c in cls_out], [r[:batch] for r in reg_out]
    module = _Decode(model.head, len(cls_out))
    exported = torch.export.export(module, (*cls_out, *reg_out))  # raises on data-dependent shapes
    scores, boxes = exported.module()(*cls_out, *reg_out)
    decoded = model.head.decode(cls_out, reg_out)
    assert torch.equal(scores, decoded.scores) and torch.equal(boxes, decoded.boxes)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sigmoid_concat_is_the_concatenated_sigmoids_bit_for_bit(
    batch: int, channels_last: bool, dtype: torch.dtype
) -> None:
    """RetinaNet's scores skip a copy for one image; the numbers must be exactly those of the plain
    per-level sigmoid (whose vector/scalar split a strided write would move)."""
    gen = torch.Generator().manual_seed(0)
    sizes = [(25, 38), (13, 19), (7, 10)]  # odd and even level sizes
    maps = [(torch.randn(batch, 9 * 80, h, w, generator=gen) * 4).to(dtype) for h, w in sizes]
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    expected = torch.cat([x.float().sigmoid() for x in flatten_levels(maps, 80)], dim=1)
    got = sigmoid_concat(maps, 80)
    assert got.dtype == torch.float32 and got.is_contiguous() and torch.equal(got, expected)
