"""Image decoding that matches MMCV's ``cv2`` backend byte for byte.

Upstream (``LoadImageFromFile`` → ``mmcv.imfrombytes(flag='color', backend='cv2')``) reads the raw
file bytes and hands them to ``cv2.imdecode(..., cv2.IMREAD_COLOR)``. Doing exactly the same here
keeps the decoded pixels identical (same libjpeg, same EXIF-orientation handling, same grey → BGR
expansion), which the reference sha256 checks rely on.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from odcli.errors import OdetError

__all__ = ["is_truncated_jpeg", "read_image"]

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


def is_truncated_jpeg(data: bytes | np.ndarray) -> bool:
    """Whether ``data`` is a JPEG stream cut off before its end-of-image marker.

    libjpeg decodes a truncated file "successfully" (grey bottom rows plus a warning on stderr), so
    the decoder alone cannot tell. Inside entropy-coded scan data every 0xFF byte is stuffed as
    ``FF 00``, so neither an SOS (``FF DA``) nor an EOI (``FF D9``) marker can appear there by chance:
    a complete file has an EOI after its last SOS. Looking for it after the *last* SOS (instead of
    requiring the file to end in ``FF D9``) accepts the valid files that carry trailing bytes after
    EOI and is not fooled by the EOI of an embedded EXIF thumbnail, which precedes the main scan.

    Args:
        data: the raw file bytes (``bytes`` or a 1-D uint8 array).

    Returns:
        ``False`` for non-JPEG data and complete JPEGs, ``True`` for JPEGs missing their tail.
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    if not raw.startswith(_JPEG_SOI):
        return False
    last_sos = raw.rfind(_JPEG_SOS)
    start = last_sos + 2 if last_sos >= 0 else 2
    return raw.find(_JPEG_EOI, start) < 0


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 **BGR** array, exactly as MMCV's cv2 backend does.

    Grey images are expanded to 3 channels, alpha is dropped and EXIF orientation is applied (all by
    ``cv2.IMREAD_COLOR``, as upstream).

    Args:
        path: image file path.

    Returns:
        (H, W, 3) uint8 BGR, C-contiguous.

    Raises:
        OdetError: the file is missing or unreadable, empty, not a decodable image, or a truncated JPEG.
    """
    p = Path(path)
    try:
        # np.fromfile (not cv2.imread) so that non-ASCII paths work on every platform.
        buf = np.fromfile(p, dtype=np.uint8)
    except FileNotFoundError:
        raise OdetError(f"image not found: {p} (check data.root / the recipe's image directory)") from None
    except IsADirectoryError:
        raise OdetError(f"image path is a directory, not a file: {p} (check its file_name)") from None
    except OSError as exc:
        raise OdetError(f"cannot read image {p}: {exc.strerror or exc} (check file permissions)") from None
    if buf.size == 0:
        raise OdetError(f"image file is empty: {p} (re-download or remove it from the annotations)")
    # Checked before decoding: libjpeg would otherwise hand back a partly grey image without error.
    if is_truncated_jpeg(buf):
        raise OdetError(f"truncated JPEG: {p} (file is incomplete; re-download or remove it)")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None:
        raise OdetError(f"cannot decode image: {p} (corrupt or unsupported format; re-download or remove it)")
    return np.ascontiguousarray(img)
