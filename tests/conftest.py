"""Shared paths and fixtures: the upstream references and the COCO128 images live in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"
MMDET_REF = REFERENCE / "mmdet"
COCO128 = SHARED / "data" / "coco128"


def require(path: Path) -> Path:
    """Skip the calling test when a shared fixture is absent (e.g. a clone without ../shared)."""
    if not path.exists():
        pytest.skip(f"missing shared fixture {path}")
    return path


@pytest.fixture(scope="session")
def rtmdet_ref() -> dict:
    """RTMDet-tiny reference: the batch-A inputs, metadata and converted model."""
    import torch
    from safetensors.torch import load_file

    import odcli

    root = require(MMDET_REF / "rtmdet_tiny_fp16")
    model = odcli.build_detector("rtmdet_tiny", num_classes=80)
    odcli.load_weights(model, root / "checkpoint_fp16.pth")
    torch.manual_seed(0)
    return {
        "model": model,
        "inputs": load_file(MMDET_REF / "inputs" / "rtmdet_batchA.safetensors")["inputs"],
        "meta": json.loads((MMDET_REF / "inputs" / "rtmdet_batchA.json").read_text()),
        "root": root,
    }
