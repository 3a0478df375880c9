"""Raw images → the inputs of an exported file, by the rules its metadata records.

The same test pipeline as :class:`~odcli.inference.predictor.Predictor` (odet's ``Resize``, and
``Pad`` for RTMDet), then each image pasted top-left on the file's fixed canvas. PyTorch pads a
batch only up to its largest image (rounded to 32): for RetinaNet, whose padding is zeroed after
normalisation, a larger canvas moves the outputs near the image border slightly; for RTMDet
(padded to its canvas by the pipeline) and PP-YOLOE (resized to it) the inputs are identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from odcli.data.collate import META_KEYS
from odcli.data.pipelines import build_test_transforms
from odcli.data.sample import Compose, Sample, image_sample
from odcli.errors import OdetError
from odcli.inference.backends.meta import ExportMeta

__all__ = ["canvas_batch", "prepare_image", "test_transforms"]


def test_transforms(meta: ExportMeta) -> Compose:
    """The test pipeline of an exported file: resize by its rule; pad to the canvas where the
    pipeline pads (``zero_padding`` False: RTMDet, whose ``img_shape`` then is the canvas)."""
    return build_test_transforms(
        meta.test_scale,
        pad_val=int(meta.pad_value),
        pad=not meta.zero_padding,
        keep_ratio=meta.keep_ratio,
        interpolation=meta.interpolation,
    )


def prepare_image(transforms: Compose, img: np.ndarray, *, file_name: str = "", image_id: int = 0) -> Sample:
    """One (H, W, 3) uint8 BGR image through ``transforms`` (:func:`test_transforms`)."""
    return transforms(image_sample(img, file_name=file_name, image_id=image_id))


def canvas_batch(samples: Sequence[Sample], meta: ExportMeta) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Prepared samples → (B, 3, H, W) float32 BGR 0–255 canvases filled with ``pad_value``, and metas.

    Raises:
        OdetError: an image larger than the canvas (a keep-ratio model exported on a non-square
            canvas meets an image of the other orientation).
    """
    h, w = meta.canvas
    batch = np.full((len(samples), 3, h, w), meta.pad_value, dtype=np.float32)
    metas = []
    for i, s in enumerate(samples):
        img = s["img"]
        ih, iw = img.shape[:2]
        if ih > h or iw > w:
            raise OdetError(
                f"{s.get('file_name') or 'an image'} resized to {iw}x{ih} does not fit this export's "
                f"{w}x{h} canvas; re-export with --imgsz {max(h, ih)} {max(w, iw)} (multiples of 32)"
            )
        batch[i, :, :ih, :iw] = img.transpose(2, 0, 1)
        metas.append({k: s[k] for k in META_KEYS})  # type: ignore[literal-required]
    return batch, metas
