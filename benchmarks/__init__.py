"""Side-by-side benchmarks of rcnn_lab against torchvision: ``python -m benchmarks``."""
