"""The core needs only torch and torchvision; the extras are declared where they are used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("matplotlib", "ipywidgets", "pycocotools", "tqdm", "IPython")


def test_core_imports_and_runs_without_the_extras():
    """Block every optional package, then build a model and run it: nothing may need them."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in EXTRAS_ONLY)
    code = (
        f"import sys; {blocked}\n"
        "import torch, rcnn_lab, rcnn_lab.ops, rcnn_lab.checks, rcnn_lab.testing\n"
        "model = rcnn_lab.fasterrcnn_small_fpn().eval()\n"
        "with torch.no_grad():\n"
        "    out = model([torch.rand(3, 160, 160)])\n"
        "print(sorted(out[0]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['boxes', 'labels', 'scores']"


def test_declared_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("<")[0] for d in project["dependencies"]]
    assert names == ["torch", "torchvision"]
    extras = project["optional-dependencies"]
    assert {"viz", "data", "book", "test"} <= set(extras)
    assert any(d.startswith("rcnn-lab[viz,data]") for d in extras["book"])
