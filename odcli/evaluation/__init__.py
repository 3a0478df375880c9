"""COCO box evaluation: pycocotools scoring with MMDetection's settings (``coco.py``), running a
model (or an exported file) over a dataset (``run.py``), what a TARGET names (``targets.py``),
``odet eval`` as one call (``job.py``) and what an evaluation
reports, its numbers and tables (``report.py``)."""
