"""The walkthrough notebooks run top to bottom without an error, offline, as a user would run them."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart", "debugging-session", "model-comparison", "gradients-and-influence"]


def test_every_notebook_is_tested_and_committed_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        cells = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), f"{name} has outputs"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_top_to_bottom(name, tmp_path):
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", tmp_path)
    notebook = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    # a failing cell raises CellExecutionError naming the cell and the error
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
