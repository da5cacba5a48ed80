"""Show the source of a Python object in a notebook, with syntax highlighting where possible."""

from __future__ import annotations

import inspect
from typing import Any


def source_text(obj: Any) -> str:
    """The source code of ``obj`` (function, class or method) as a string, dedented."""
    try:
        return inspect.cleandoc("\n" + inspect.getsource(obj))
    except (OSError, TypeError) as err:
        raise ValueError(f"no Python source is available for {obj!r}: {err}") from err


def show_source(obj: Any, title: str | None = None):
    """Display the source of ``obj`` as a Markdown code block (falls back to plain text).

    Used by the chapters to show rcnn_lab's own code, and, for the source-walkthrough chapter,
    the installed torchvision code (with attribution, read at run time, never copied).
    """
    code = source_text(obj)
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    header = title if title is not None else f"{module}.{name}".lstrip(".")
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - outside IPython
        return f"# {header}\n{code}"
    display(Markdown(f"**`{header}`**\n\n```python\n{code}\n```"))
    return None
