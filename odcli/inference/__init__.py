"""Running a trained detector: the one model loader (``load.py``), the :class:`Predictor`, frame
sources (images, video, cameras, streams), detection records and profiling."""
