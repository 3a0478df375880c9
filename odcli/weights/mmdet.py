"""MMDetection checkpoints → odet state dicts.

Most module names were kept identical to MMDetection's on purpose, so the mapping is a short list
of renames; tensors that upstream shares between keys (RTMDet's head convs) appear once here.
"""

from __future__ import annotations

import re

import torch

from odcli.errors import OdetError

# (pattern, replacement) applied in order to every upstream key.
_RTMDET_RENAMES: list[tuple[str, str]] = [
    (r"\.depthwise_conv\.", ".depthwise."),
    (r"\.pointwise_conv\.", ".pointwise."),
    (r"^backbone\.stage(\d)\.1\.conv1\.", r"backbone.stage\1.1.reduce."),  # SPP block of the last stage
    (r"^backbone\.stage(\d)\.1\.conv2\.", r"backbone.stage\1.1.expand."),
    # SepBN head: convs shared across levels (level 0 holds them), BN per level.
    (r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(\d+)\.conv\.", r"head.\1_convs.\3.@level\2@"),
    (r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(\d+)\.bn\.", r"head.\1_norms.\2.\3."),
    (r"^bbox_head\.rtm_cls\.", "head.cls_preds."),
    (r"^bbox_head\.rtm_reg\.", "head.reg_preds."),
]


def rtmdet_from_mmdet(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an MMDetection RTMDet state dict to odet keys.

    Returns (converted state dict, upstream keys that had no place and were skipped). Shared head
    convs are taken from level 0 and checked equal on the other levels: :class:`OdetError` when
    they differ (a head trained with ``share_conv=False``).
    """
    out: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("data_preprocessor."):
            skipped.append(key)
            continue
        new = key
        for pattern, repl in _RTMDET_RENAMES:
            new = re.sub(pattern, repl, new)
        level = re.search(r"@level(\d+)@", new)
        if level:
            new = new.replace(level.group(0), "")
            if new in out:  # the same shared conv seen from another level
                if not torch.equal(out[new], value):
                    raise OdetError(
                        f"{key} differs from level 0: this checkpoint's head does not share its convs "
                        "across levels (share_conv=False); odet's RTMDet, like upstream's default "
                        "share_conv=True, needs one set of head convs for all levels"
                    )
                continue
        out[new] = value
    return out, skipped


# RetinaNet: the backbone (MMDetection's "pytorch"-style ResNet) already has torchvision's keys; the
# neck and head wrap each conv in a ConvModule (".conv.") that odet's plain convs do not have.
_RETINANET_RENAMES: list[tuple[str, str]] = [
    (r"^neck\.(lateral|fpn)_convs\.(\d+)\.conv\.", r"neck.\1_convs.\2."),
    (r"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.", r"head.\1_convs.\2."),
    (r"^bbox_head\.retina_cls\.", "head.cls_pred."),
    (r"^bbox_head\.retina_reg\.", "head.reg_pred."),
]


def retinanet_from_mmdet(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an MMDetection RetinaNet (ResNet-FPN) state dict to odet keys.

    Returns (converted state dict, upstream keys that had no place and were skipped).
    """
    out: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("data_preprocessor."):
            skipped.append(key)
            continue
        new = key
        for pattern, repl in _RETINANET_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out, skipped
