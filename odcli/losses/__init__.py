"""Loss functions, element-wise: callers reduce and normalise (see each head's ``loss``)."""

from odcli.losses.iou import giou_loss
from odcli.losses.quality_focal import quality_focal_loss

__all__ = ["giou_loss", "quality_focal_loss"]
