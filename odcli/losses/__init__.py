"""Loss functions, element-wise: callers reduce and normalise (see each head's ``loss``)."""

from odcli.losses.distribution_focal import distribution_focal_loss
from odcli.losses.focal import sigmoid_focal_loss
from odcli.losses.iou import giou_loss, giou_loss_eps_added
from odcli.losses.l1 import l1_loss
from odcli.losses.quality_focal import quality_focal_loss
from odcli.losses.varifocal import varifocal_loss

__all__ = [
    "distribution_focal_loss",
    "giou_loss",
    "giou_loss_eps_added",
    "l1_loss",
    "quality_focal_loss",
    "sigmoid_focal_loss",
    "varifocal_loss",
]
