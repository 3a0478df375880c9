"""Every weights file odet reads or writes: its own checkpoints (``checkpoint.py``), MMDetection
``.pth`` (``mmdet.py``), PaddleDetection ``.pdparams`` (``ppdet.py``) and torchvision backbones
(``torchvision.py``), all unpickled without executing code (``safe_unpickle.py``), and loading any
of them into a detector (``load.py``)."""
