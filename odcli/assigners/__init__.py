"""Label assigners: which priors learn which ground-truth box."""

from odcli.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from odcli.assigners.result import AssignResult

__all__ = ["AssignResult", "DynamicSoftLabelAssigner"]
