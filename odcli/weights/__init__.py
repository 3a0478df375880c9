"""Every weights file odet reads or writes: its own checkpoints (``checkpoint.py``), MMDetection
``.pth`` (``mmdet.py``), PaddleDetection ``.pdparams`` (``ppdet.py``) and torchvision backbones
(``torchvision.py``), all unpickled without executing code (``safe_unpickle.py``), loading any
of them into a detector (``load.py``) and converting them into odet checkpoints (``convert.py``)."""
