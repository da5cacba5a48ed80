"""Show the source of a Python object in a notebook: a collapsed dropdown titled with its name.

The dropdown is Markdown with an HTML ``<details>`` wrapper, so that it renders the same in
Jupyter, Colab and the built book (where myst-nb turns the fenced block into highlighted code).
The object's docstring is shown as text above the code (reST markup turned into Markdown); the
listing is the source without that docstring, nested docstrings with their reST roles simplified.
"""

from __future__ import annotations

import ast
import html
import inspect
import re
from typing import Any

#: Google-style docstring section headers, rendered as bold labels followed by a bullet list
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Attributes|Shapes|Note|Notes|"
    r"Example|Examples|Warning|Warnings):\s*$"
)
#: an item of a section, "name" or "name (type)", then a colon and its meaning
_ITEM = re.compile(r"^([A-Za-z_*][\w.*]*(?:\s*\([^)]*\))?):\s+(.*)$")
#: reST interpreted text with a role, such as a function reference (its target is kept)
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]+?)(?:\s*<[^`>]+>)?`")
#: reST inline literal ``x``
_LITERAL = re.compile(r"``(.+?)``")
#: characters that Markdown (or MathJax in Jupyter) would read as markup in plain text
_MARKDOWN_SPECIAL = re.compile(r"([\\*\[\]<>#|$~]|(?<!\w)_|_(?!\w))")


def source_text(obj: Any) -> str:
    """The source code of ``obj`` (function, class or method) as a string, dedented."""
    try:
        return inspect.cleandoc("\n" + inspect.getsource(obj))
    except (OSError, TypeError) as err:
        raise ValueError(f"no Python source is available for {obj!r}: {err}") from err


def simplify_rest(text: str) -> str:
    """Replace reST inline markup by single-backtick code.

    Inline literals (two backticks) become one-backtick code; a role such as ``:func:`` becomes
    its target in one-backtick code (only the last component where the target starts with ``~``).
    """

    def role(match: re.Match) -> str:
        target = match.group(1)
        return f"`{target.rsplit('.', 1)[-1] if '~' in match.group(0) else target}`"

    return _LITERAL.sub(r"`\1`", _ROLE.sub(role, text))


def _inline_markdown(text: str) -> str:
    """One line of docstring prose as Markdown: code spans kept, other markup characters escaped."""
    parts = re.split(r"(`[^`]+`)", simplify_rest(text))
    return "".join(p if p.startswith("`") else _MARKDOWN_SPECIAL.sub(r"\\\1", p) for p in parts)


def docstring_markdown(doc: str) -> str:
    """A (cleaned, dedented) Google-style docstring as Markdown.

    Paragraphs stay paragraphs; ``Args:``/``Returns:`` sections become a bold label and a bullet
    list (one bullet per ``name: meaning`` item, continuation lines joined); indented blocks
    outside sections stay literal blocks.
    """
    out: list[str] = []
    in_section = False
    for line in doc.splitlines():
        stripped = line.strip()
        if _SECTION.match(stripped) and not line.startswith(" "):
            out += ["", f"**{stripped[:-1]}**", ""]
            in_section = True
        elif not stripped:
            out.append("")
        elif in_section and line.startswith(" "):
            indent = len(line) - len(line.lstrip())
            item = _ITEM.match(stripped)
            if not out[-1].startswith("- ") or (indent <= 4 and item):
                if item:
                    out.append(f"- `{item.group(1)}`: {_inline_markdown(item.group(2))}")
                else:
                    out.append(f"- {_inline_markdown(stripped)}")
            else:  # a continuation line of the current item
                out[-1] += " " + _inline_markdown(stripped)
        else:
            in_section = False
            out.append(line if line.startswith("    ") else _inline_markdown(line))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _docstring_lines(tree: ast.AST) -> list[tuple[int, int]]:
    """(first, last) 1-based line numbers of every docstring in ``tree``, outermost first."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                spans.append((first.lineno, first.end_lineno or first.lineno))
    return spans


def split_docstring(code: str) -> tuple[str | None, str]:
    """The top docstring of ``code`` (cleaned) and the code without it.

    Nested docstrings (a class's methods) stay in the code, their reST roles simplified.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:  # pragma: no cover - inspect returned something that is not a statement
        return None, code
    top = tree.body[0] if tree.body else None
    doc = ast.get_docstring(top) if isinstance(top, (ast.FunctionDef, ast.ClassDef)) else None
    doc = doc if doc is None else inspect.cleandoc(doc)
    lines = code.splitlines()
    spans = _docstring_lines(tree)
    drop: set[int] = set()
    for i, (first, last) in enumerate(spans):
        if i == 0 and doc is not None:
            drop.update(range(first, last + 1))
            if last < len(lines) and not lines[last].strip():  # the blank line after it
                drop.add(last + 1)
        else:
            for n in range(first, last + 1):
                lines[n - 1] = simplify_rest(lines[n - 1])
    kept = [line for n, line in enumerate(lines, start=1) if n not in drop]
    return doc, "\n".join(kept)


def source_markdown(obj: Any, title: str | None = None) -> str:
    """The Markdown that :func:`show_source` displays: a collapsed ``<details>`` dropdown."""
    doc, code = split_docstring(source_text(obj))
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    label = title if title is not None else name
    where = "" if title is not None or not module else f" in <code>{html.escape(module)}</code>"
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", code)), default=0))
    body = [
        '<details class="rcnn-source">',
        f"<summary>Source of <code>{html.escape(label)}</code>{where}</summary>",
        "",
    ]
    if doc:
        body += [docstring_markdown(doc), ""]
    body += [f"{fence}python", code, fence, "", "</details>"]
    return "\n".join(body)


def show_source(obj: Any, title: str | None = None):
    """Display the source of ``obj`` as a collapsed dropdown titled with its name.

    Used by the chapters to show rcnn_lab's own code, and, for the source-walkthrough chapter,
    the installed torchvision code (with attribution, read at run time, never copied). Outside
    IPython it returns the Markdown instead.
    """
    text = source_markdown(obj, title)
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - outside IPython
        return text
    display(Markdown(text))
    return None
