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
