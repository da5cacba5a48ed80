"""Promise 1 of the design: rcnn_lab's model path is written here, not borrowed from torchvision.

The package may import torchvision's classification trunks and its weight enums (for the
downloads), never its detection operators or detection models.
"""

from __future__ import annotations

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "rcnn_lab"
FORBIDDEN_MODULES = ("torchvision.ops", "torchvision.models.detection")
FORBIDDEN_ATTRIBUTES = ("torch.ops.torchvision", "torchvision.ops", "torchvision.models.detection")


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if "viz" not in p.parts)


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name


def test_no_torchvision_detection_code_in_the_package():
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for module, name in _imports(tree):
            if not module.startswith(FORBIDDEN_MODULES):
                continue
            # weight enums (e.g. FasterRCNN_ResNet50_FPN_Weights) are allowed: they only download
            if (
                module.startswith("torchvision.models.detection")
                and name
                and name.endswith("_Weights")
            ):
                continue
            offenders.append(f"{path.relative_to(ROOT)}: {module} {name or ''}")
    assert offenders == []


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def test_no_torchvision_kernels_reached_by_attribute():
    """Code (not docstrings) never reaches torchvision's detection ops through attributes."""
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        chains = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
        inner = {id(n.value) for n in chains}
        for node in chains:
            name = _dotted(node) if id(node) not in inner else None  # whole chains only
            if not name or not name.startswith(FORBIDDEN_ATTRIBUTES):
                continue
            if any(part.endswith("_Weights") for part in name.split(".")):
                continue  # weight enums only download
            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert offenders == []


def test_the_check_sees_the_package():
    assert len(_sources()) >= 5
