"""COCO box evaluation: pycocotools scoring with MMDetection's settings (``coco.py``), running a
model over a dataset (``run.py``) and the report tables (``report.py``)."""
