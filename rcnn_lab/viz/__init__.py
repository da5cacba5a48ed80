"""Drawing helpers (matplotlib, stateless), ipywidgets explorers and source display for the book."""

from rcnn_lab.viz.source import show_source

__all__ = ["show_source"]
