"""Label assigners: which priors learn which ground-truth box."""

from odcli.assigners.atss import ATSSAssigner
from odcli.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from odcli.assigners.max_iou import MaxIoUAssigner
from odcli.assigners.result import BACKGROUND, IGNORED, AssignResult
from odcli.assigners.task_aligned import TaskAlignedAssigner

__all__ = [
    "BACKGROUND",
    "IGNORED",
    "ATSSAssigner",
    "AssignResult",
    "DynamicSoftLabelAssigner",
    "MaxIoUAssigner",
    "TaskAlignedAssigner",
]
