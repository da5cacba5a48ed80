"""The notebook executor normalises outputs exactly as nbval will see them."""

from __future__ import annotations

import nbformat


def test_merge_streams_joins_and_resolves_carriage_returns(executor):
    outs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\n"),
        nbformat.v4.new_output("stream", name="stdout", text="10%\r50%\r100%\n"),
        nbformat.v4.new_output("stream", name="stderr", text="warn\n"),
        nbformat.v4.new_output("stream", name="stdout", text="b\n"),
    ]
    merged = executor.merge_streams(outs)
    assert [o["name"] for o in merged] == ["stdout", "stderr", "stdout"]
    assert merged[0]["text"] == "a\n100%\n"


def test_colab_cell_inserted_once_with_config_url(executor):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 1. T")])
    executor.ensure_colab_cell(nb)
    executor.ensure_colab_cell(nb)
    assert len(nb.cells) == 2
    assert nb.cells[0].metadata["tags"] == ["remove-cell"]
    assert executor.repository_url() in nb.cells[0].source
    assert "google.colab" in nb.cells[0].source


def test_execute_runs_a_notebook_in_place(tmp_path, executor):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 1. T"), nbformat.v4.new_code_cell("print(1 + 1)")]
    )
    path = tmp_path / "01_t.ipynb"
    nbformat.write(nb, path)
    executor.execute(path)
    done = nbformat.read(path, as_version=4)
    assert done.metadata.kernelspec.name == "python3"
    code = [c for c in done.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    assert code[1].outputs[0]["text"] == "2\n"
    assert "execution" not in code[1].metadata


def test_widget_ids_are_stable_across_executions(tmp_path, executor):
    code = "import ipywidgets as w\nbox = w.VBox([w.IntSlider(value=3), w.Label('x')])\nbox"
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 1. T"), nbformat.v4.new_code_cell(code)]
    )
    path = tmp_path / "01_t.ipynb"
    nbformat.write(nb, path)
    executor.execute(path)
    first = path.read_text()
    executor.execute(path)
    assert path.read_text() == first, "re-executing an unchanged notebook changed the file"
    done = nbformat.read(path, as_version=4)
    state = done.metadata.widgets[executor.WIDGET_STATE_MIME]["state"]
    (view,) = [o for o in done.cells[-1].outputs if executor.WIDGET_VIEW_MIME in o.get("data", {})]
    top = view["data"][executor.WIDGET_VIEW_MIME]["model_id"]
    assert top in state, "the displayed view must point at a stored model"
    children = state[top]["state"]["children"]
    assert len(children) == 2 and all(c.removeprefix("IPY_MODEL_") in state for c in children)


def test_stabilise_widget_ids_renames_consistently(executor):
    a, b = "a" * 32, "b" * 32
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {
        executor.WIDGET_STATE_MIME: {
            "state": {a: {"state": {"children": [f"IPY_MODEL_{b}"]}}, b: {"state": {}}},
            "version_major": 2,
            "version_minor": 0,
        }
    }
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={executor.WIDGET_VIEW_MIME: {"model_id": a}, "text/plain": "v"}
        )
    ]
    nb.cells = [cell]
    executor.stabilise_widget_ids(nb, "01_x.ipynb")
    state = nb.metadata.widgets[executor.WIDGET_STATE_MIME]["state"]
    assert a not in state and b not in state and len(state) == 2
    top = nb.cells[0].outputs[0]["data"][executor.WIDGET_VIEW_MIME]["model_id"]
    (child,) = state[top]["state"]["children"]
    assert child.removeprefix("IPY_MODEL_") in state and child != f"IPY_MODEL_{top}"


def test_masked_differences_keep_the_stored_outputs(executor):
    def notebook(text):
        cell = nbformat.v4.new_code_cell("print(t)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return nbformat.v4.new_notebook(cells=[cell])

    old = notebook("forward 68.8 ms, 3 boxes\n")
    timing_only = notebook("forward  5.1 ms, 3 boxes\n")  # right-aligned: padding moves too
    executor.keep_unchanged_outputs(old, timing_only)
    assert timing_only.cells[0].outputs[0]["text"] == "forward 68.8 ms, 3 boxes\n"
    real_change = notebook("forward 45.1 ms, 4 boxes\n")
    executor.keep_unchanged_outputs(old, real_change)
    assert real_change.cells[0].outputs[0]["text"] == "forward 45.1 ms, 4 boxes\n"
