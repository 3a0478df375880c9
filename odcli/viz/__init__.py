"""Pictures: detections and label assignments drawn on images."""
