"""The notebooks run top to bottom in their offline tiny mode, and are stored without outputs."""

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name, **parameters):
    """Runs notebooks/NAME with `parameters` overriding its parameters cell (as papermill
    does: a cell inserted after the one tagged `parameters`); returns the executed notebook."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    overrides = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]}))
    client = nbclient.NotebookClient(notebook, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()           # raises CellExecutionError, with the cell and traceback, on any error
    return notebook


def text_output(notebook):
    return "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "finetune_horse10.ipynb"])
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell for cell in code if cell.outputs or cell.execution_count is not None] == []
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1


def test_quickstart_runs_offline_on_the_shipped_model(tmp_path):
    out = tmp_path / "quickstart"
    notebook = execute("quickstart.ipynb", OUT_DIR=str(out))
    shown = [o["data"]["text/plain"] for cell in notebook.cells for o in cell.get("outputs", [])
             if "text/plain" in o.get("data", {})]
    assert any("the shipped demo model" in text for text in shown), "the weights' provenance is not shown"
    assert {"overlay.png", "mesh.obj", "fused_features.npy"} <= {p.name for p in out.iterdir()}
    assert "compiled in" in text_output(notebook)
    html = [o for cell in notebook.cells for o in cell.get("outputs", []) if "text/html" in o.get("data", {})]
    assert html, "the 3D viewer produced no HTML"


def test_finetune_runs_offline_on_synthetic_data(tmp_path):
    run = tmp_path / "run"
    notebook = execute("finetune_horse10.ipynb", SYNTHETIC=True, CONFIG="configs/horse10_finetune.py:tiny",
                       STEPS=20, SYNTHETIC_EXAMPLES=32, DATA_DIR=str(tmp_path / "data"), WORKDIR=str(run))
    output = text_output(notebook)
    assert "pck@0.1" in output
    assert (run / "export" / "config.json").is_file()
    assert (run / "inference" / "standin_quadruped" / "overlay.png").is_file()
