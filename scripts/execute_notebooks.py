#!/usr/bin/env python
"""Re-execute chapter notebooks in place so that their stored outputs are what nbval compares.

    python scripts/execute_notebooks.py                  # every book/*.ipynb
    python scripts/execute_notebooks.py book/01_*.ipynb  # some chapters

For every notebook it
  1. makes the first cell the canonical Colab install cell (built from ``repository.url`` in
     ``_config.yml``, the one place the repository address is written), tagged ``remove-cell``;
  2. sets the kernelspec to ``python3``;
  3. executes it with nbclient in the notebook's folder (as nbval does), without timing metadata,
     storing the widget state (so the built book can render the widgets);
  4. merges consecutive stream outputs and resolves carriage returns the way nbval does, so the
     stored text is exactly what nbval will produce on re-execution;
  5. renames the widget models (random uuid4s in the kernel) to ids derived from the chapter's
     name and the models' order, and keeps a cell's previous outputs when the new ones differ
     only where ``sanitize.cfg`` masks them (timings), so re-executing an unchanged chapter
     leaves the file unchanged.
"""

from __future__ import annotations

import argparse
import configparser
import copy
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
COLAB_TAG = "remove-cell"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
MODEL_ID = re.compile(r"[0-9a-f]{32}")  # ipywidgets' model ids are uuid4().hex


def repository_url() -> str:
    """The repository address, read from ``_config.yml`` (the one place it is set)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def colab_cell_source(url: str | None = None) -> str:
    """Source of the install cell that runs only in Colab (a no-op everywhere else)."""
    url = url or repository_url()
    return (
        "# Installs rcnn_lab when this chapter runs in Google Colab; does nothing elsewhere.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "rcnn-lab @ git+{url}"'
    )


def ensure_colab_cell(nb: nbformat.NotebookNode) -> None:
    """Insert (or refresh) the Colab install cell as the notebook's first cell."""
    cell = nbformat.v4.new_code_cell(colab_cell_source())
    cell.metadata["tags"] = [COLAB_TAG]
    first = nb.cells[0] if nb.cells else None
    if first is not None and COLAB_TAG in first.get("metadata", {}).get("tags", []):
        first.source = cell.source
        first.cell_type = "code"
    else:
        nb.cells.insert(0, cell)


def _resolve_carriage_returns(text: str) -> str:
    """Keep, on each line, only what follows the last ``\\r`` (what a terminal would show)."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def merge_streams(outputs: list) -> list:
    """Merge consecutive stream outputs of one name, then resolve ``\\r`` (nbval's rule)."""
    merged: list = []
    for out in outputs:
        if (
            out.get("output_type") == "stream"
            and merged
            and merged[-1].get("output_type") == "stream"
            and merged[-1].get("name") == out.get("name")
        ):
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = _resolve_carriage_returns(out["text"])
    return merged


def clean(nb: nbformat.NotebookNode, name: str = "") -> None:
    """Strip volatile metadata and normalise outputs after execution.

    ``name`` (the chapter's file name) seeds the stable widget ids.
    """
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    stabilise_widget_ids(nb, name)


def _widget_order(nb: nbformat.NotebookNode, state: dict) -> list[str]:
    """Model ids in a machine-independent order.

    First the models that cell outputs display, in cell order, each followed depth-first by
    the models its state references (``IPY_MODEL_<id>``); then any others, ordered by content.
    """
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in state and model_id not in order:
            order.append(model_id)
            for ref in re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state[model_id])):
                visit(ref)

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW_MIME)
            if view:
                visit(view["model_id"])
    rest = [m for m in state if m not in order]
    return order + sorted(rest, key=lambda m: json.dumps(state[m], sort_keys=True))


def stabilise_widget_ids(nb: nbformat.NotebookNode, name: str = "") -> None:
    """Replace the random widget model ids everywhere in ``nb`` by deterministic ones.

    The static book still renders every widget: the state and the views refer to the same
    (renamed) ids.
    """
    store = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME)
    if not store or not store.get("state"):
        return
    order = _widget_order(nb, store["state"])
    mapping = {
        old: hashlib.sha256(f"{name}/{index}".encode()).hexdigest()[:32]
        for index, old in enumerate(order)
    }
    text = MODEL_ID.sub(lambda m: mapping.get(m.group(0), m.group(0)), json.dumps(nb))
    renamed = nbformat.from_dict(json.loads(text))
    nb.clear()
    nb.update(renamed)


def sanitizers(path: Path = ROOT / "sanitize.cfg") -> list[tuple[re.Pattern, str]]:
    """The (regex, replacement) pairs of nbval's sanitizer file, in file order."""
    parser = configparser.ConfigParser()
    parser.read(path)
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def _sanitised(outputs: list, rules: list[tuple[re.Pattern, str]]) -> str:
    """``outputs`` as JSON text with every sanitizer rule applied (what nbval compares)."""
    text = json.dumps(outputs, sort_keys=True)
    for regex, replacement in rules:
        text = regex.sub(replacement, text)
    return re.sub(r"[ \t]+", " ", text)  # a masked number's width moves the padding around it


def keep_unchanged_outputs(old: nbformat.NotebookNode, new: nbformat.NotebookNode) -> None:
    """Give each cell of ``new`` its ``old`` outputs where they differ only in masked text.

    A chapter that prints a timing would otherwise change its file at every execution even
    though nbval, which masks timings, sees no difference.
    """
    rules = sanitizers()
    old_cells = [c for c in old.cells if c.cell_type == "code"]
    new_cells = [c for c in new.cells if c.cell_type == "code"]
    if len(old_cells) != len(new_cells):
        return
    for before, after in zip(old_cells, new_cells):
        if before.source != after.source or before.outputs == after.outputs:
            continue
        if _sanitised(before.outputs, rules) == _sanitised(after.outputs, rules):
            after.outputs = before.outputs


def _no_output_widget_echo() -> None:
    """Stop nbclient from sending each captured Output-widget output back to the kernel.

    nbclient mirrors every output an ``Output`` widget (an ``interact`` explorer) captures back
    to the kernel as a comm message on the shell channel, while the cell still runs. With the
    large figures of some explorers this stalled chapter 4's execution for minutes, kernel and
    client both idle (see jupyter/nbclient#312). The kernel never reads those outputs back: the
    stored widget state, which the book renders, is kept on the client side either way.
    """
    from nbclient.output_widget import OutputWidget

    OutputWidget.sync_state = lambda self: None


def execute(path: Path, timeout: int = 900) -> float:
    """Execute one notebook in place; returns the seconds it took."""
    _no_output_widget_echo()
    nb = nbformat.read(path, as_version=4)
    ensure_colab_cell(nb)
    previous = copy.deepcopy(nb)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNELSPEC["name"],  # clean() then records the same spec in the metadata
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        store_widget_state=True,
        allow_errors=False,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    clean(nb, path.name)
    keep_unchanged_outputs(previous, nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: execute the given notebooks (default: every chapter)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        print("no notebooks to execute", file=sys.stderr)
        return 1
    for path in paths:
        if path.suffix != ".ipynb":
            print(f"skipping {path}: not a notebook", file=sys.stderr)
            continue
        seconds = execute(path.resolve(), timeout=args.timeout)
        print(f"executed {path} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
