"""odet: dense one-stage detectors (RTMDet, RetinaNet, PP-YOLOE), exact to their upstream implementations.

Public API::

    model = odcli.build_detector("rtmdet_tiny", num_classes=80)
    odcli.load_weights(model, "rtmdet_tiny.pth")          # or an odet .safetensors, a Paddle .pdparams
    cls_scores, bbox_preds = model(images)                # raw outputs per level
    dets = model.predict(images, metas)                   # boxes/scores/labels per image
    losses = model.loss(images, targets)                  # {"loss_cls": …, "loss_bbox": …}
"""

from odcli.weights import load_weights
from odcli.zoo import build_detector, list_models

__version__ = "0.1.0"
__all__ = ["__version__", "build_detector", "list_models", "load_weights"]
