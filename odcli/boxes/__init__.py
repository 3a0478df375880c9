"""Box math: overlaps (IoU/GIoU), coders (distances, DeltaXYWH), priors (points, anchors), padded
targets and test-time post-processing (top-k, class-aware NMS). Depends on torch and torchvision only."""
