"""Chapter 9's table of FasterRCNN's arguments, built from the class's signature and docstring.

The random-weight model helpers are in :mod:`rcnn_lab.testing`; the detection drawings and the
detection explorer are in :mod:`rcnn_lab.viz.detections`.
"""

from __future__ import annotations

import inspect
import re


def argument_table(cls: type) -> str:
    """A Markdown table of ``cls.__init__``'s arguments: name, default, meaning (docstring)."""
    meanings = _docstring_args(inspect.getdoc(cls) or "")
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        name = f"**{param.name}" if param.kind is param.VAR_KEYWORD else param.name
        if param.kind is param.VAR_KEYWORD:
            default = ""
        elif param.default is inspect.Parameter.empty:
            default = "(required)"
        else:
            default = f"`{param.default!r}`"
        meaning = meanings.get(param.name, "").replace("|", "\\|")
        rows.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(rows)


def _docstring_args(doc: str) -> dict[str, str]:
    """``{name: meaning}`` from a Google-style "Args:" section (continuation lines joined)."""
    section = doc.split("Args:", 1)[-1]
    meanings: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^\s{4}\**(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            meanings[current] = match.group(2).strip()
        elif current and line.startswith(" " * 8):
            meanings[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return meanings
