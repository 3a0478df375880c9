"""Running a trained detector: the one model loader (``load.py``), the :class:`Predictor`, input
sources (images, video, cameras, streams), images and frames → detections (``detect.py``), the
detection records ``odet infer`` writes (``records.py``), exported files run by their runtimes as
models (``runner.py``, over ``backends/``) and profiling (``profiling.py``, ``timing.py``)."""
