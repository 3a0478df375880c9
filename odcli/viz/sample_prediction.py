"""The picture a training run ends with: its best weights' detections on the first validation image.

:class:`SamplePredictionHook` is a :class:`~odcli.engine.hooks.TrainHook`; ``odet train`` passes it
to the trainer, which calls it once the run has finished.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import torch

from odcli.data.image_io import read_image
from odcli.engine.hooks import RunView
from odcli.evaluation.report import EvalResult
from odcli.inference.load import load_model
from odcli.inference.predictor import Predictor
from odcli.viz.draw import draw_detections

#: Detections below this score are left out of the picture (the evaluation keeps them all).
SCORE_THR = 0.3


def draw_sample_prediction(weights: Path, image: Path, out_dir: Path, device: torch.device) -> Path:
    """Predict ``image`` with the checkpoint ``weights`` and save the annotated picture.

    Returns:
        ``out_dir/prediction_<image stem>.jpg``: boxes and "name score" tags of the detections
        scoring at least :data:`SCORE_THR`, in the image's own pixels.
    """
    loaded = load_model(weights, device=device, optimize=False)
    img = read_image(image)
    det = Predictor(loaded.model)([img])[0]
    picture = draw_detections(
        img, det["boxes"], det["scores"], det["labels"], loaded.classes, score_thr=SCORE_THR
    )
    path = out_dir / f"prediction_{image.stem}.jpg"
    cv2.imwrite(str(path), picture)
    return path


class SamplePredictionHook:
    """After training: draw :func:`draw_sample_prediction` of the run's best weights into its run
    directory (the command names the picture once it has reported the run).

    Attributes:
        picture: the picture written (None until then, or when there is no validation image).
    """

    def __init__(self) -> None:
        self.picture: Path | None = None

    def after_evaluation(self, run: RunView, result: EvalResult) -> None:
        """Nothing: one picture, of the final best weights."""

    def after_fit(self, run: RunView, best: Path) -> None:
        if not best.exists() or len(run.val_set) == 0:
            return
        self.picture = draw_sample_prediction(best, Path(run.val_set.image_path(0)), run.run_dir, run.device)
