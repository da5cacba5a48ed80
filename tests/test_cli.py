"""The command line answers --version, info and help."""

from __future__ import annotations

import subprocess
import sys

import rcnn_lab
from rcnn_lab.cli import info, main


def test_version_flag():
    out = subprocess.run(
        [sys.executable, "-m", "rcnn_lab", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"rcnn-lab {rcnn_lab.__version__}"


def test_info_names_versions(capsys):
    import torch

    assert main(["info"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == info()
    assert torch.__version__ in printed


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: rcnn-lab" in capsys.readouterr().out
