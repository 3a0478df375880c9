"""COCO box evaluation: pycocotools scoring with MMDetection's settings (``coco.py``), running a
model over a dataset (``run.py``), ``odet eval`` as one call (``job.py``) and what an evaluation
reports, its numbers and tables (``report.py``)."""
