"""Documentation hygiene: every public name has a docstring, and the API page can render it."""

from __future__ import annotations

import inspect
import re

import pytest

import rcnn_lab
import rcnn_lab.ops
from tests.conftest import ROOT

PUBLIC = [(rcnn_lab, name) for name in rcnn_lab.__all__ if not name.startswith("__")] + [
    (rcnn_lab.ops, name) for name in rcnn_lab.ops.__all__
]


@pytest.mark.parametrize("module, name", PUBLIC, ids=[n for _, n in PUBLIC])
def test_public_name_has_a_docstring(module, name):
    obj = getattr(module, name)
    doc = inspect.getdoc(obj)
    assert doc and len(doc.split()) >= 4, f"{module.__name__}.{name} needs a real docstring"


@pytest.mark.parametrize("module, name", PUBLIC, ids=[n for _, n in PUBLIC])
def test_public_methods_have_docstrings(module, name):
    obj = getattr(module, name)
    if not inspect.isclass(obj):
        return
    missing = [
        attr
        for attr, member in vars(obj).items()
        if not attr.startswith("_") and inspect.isfunction(member) and not inspect.getdoc(member)
    ]
    assert missing == [], f"{name} methods without docstrings: {missing}"


ROLE_OR_LITERAL = re.compile(r":[a-z]+:`[^`]*`|``[^`]*``")


def test_constant_comments_have_no_first_line_colon():
    """napoleon reads ``#: a: b`` as type ``a``: the API page would show prose as a type."""
    offenders = []
    for path in sorted((ROOT / "rcnn_lab").rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            first = line.strip().startswith("#:") and not lines[i - 1].strip().startswith("#:")
            text = ROLE_OR_LITERAL.sub("", line.strip()[2:])  # napoleon skips these too
            if first and re.search(r"(?<!:):(?!:)", text):
                offenders.append(f"{path.relative_to(ROOT)}:{i + 1}")
    assert offenders == []


def test_api_page_documents_every_component_module():
    api = (ROOT / "book" / "api.md").read_text()
    modules = {
        obj.__module__
        for module, name in PUBLIC
        if (obj := getattr(module, name)) is not None and hasattr(obj, "__module__")
    }
    missing = sorted(m for m in modules if f"automodule:: {m}\n" not in api)
    assert missing == [], f"book/api.md lacks automodule sections for {missing}"
