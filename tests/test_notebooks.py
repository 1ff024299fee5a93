"""Execute the notebooks in ``examples/notebooks/`` at reduced size, and check they are stripped.

Each notebook reads ``DXDT_NOTEBOOK_QUICK=1`` to shrink its grids, horizons and sample
counts, and ends with a cell that asserts its own results (a fit close to the truth,
sensitivities that match finite differences, ...). Here every notebook is run by a
Jupyter kernel through ``nbclient``, on the ``python3`` kernel spec, which must resolve
to the interpreter running the tests (the virtual environment with dxdt installed).
Committed notebooks must carry no outputs, so that diffs show only source changes.
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "examples" / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"gray_scott_exploration.ipynb", "parameter_fitting_uncertainty.ipynb"}
CELL_TIMEOUT = 300  # seconds per cell
KERNEL_NAME = "python3"
MARKER = "__dxdt_notebook_kernel__"

# appended to the executed copy (never to the file): which interpreter ran the notebook
PROBE = f"""import json, os, sys
print({MARKER!r}, json.dumps({{"prefix": sys.prefix, "executable": sys.executable,
       "quick": os.environ.get("DXDT_NOTEBOOK_QUICK")}}))"""


def test_the_notebooks_are_there():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME
    assert nb.metadata.get("kernelspec", {}).get("language") == "python"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            assert "outputs" not in cell, f"{path.name}: {cell.cell_type} cell {index} has outputs"
            continue
        assert cell.outputs == [], f"{path.name}: code cell {index} has outputs; strip them before committing"
        assert cell.execution_count is None, f"{path.name}: code cell {index} has an execution count"
    # the notebook switches to reduced size from the environment and checks its own results
    source = "\n".join(cell.source for cell in code_cells)
    assert 'os.environ.get("DXDT_NOTEBOOK_QUICK") == "1"' in source
    assert "assert " in code_cells[-1].source, f"{path.name} must end with a cell that asserts its results"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_executes_at_reduced_size(path, tmp_path, monkeypatch):
    monkeypatch.setenv("DXDT_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # look up kernel specs in this interpreter's environment first (before ~/.local/share/jupyter)
    venv_specs = str(Path(sys.prefix) / "share" / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [venv_specs, os.environ.get("JUPYTER_PATH")])))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # drop the traceback's colours
        pytest.fail(f"{path.name} failed at reduced size:\n{message}")

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    # the final self-check cell of the notebook (before the probe) ran through
    checks = nb.cells[-2]
    assert any("all checks passed" in output.get("text", "") for output in checks.outputs), checks.outputs

    probe = "".join(output.get("text", "") for output in nb.cells[-1].outputs)
    assert MARKER in probe, probe
    kernel = json.loads(probe.split(MARKER, 1)[1])
    assert kernel["quick"] == "1"
    assert os.path.realpath(kernel["prefix"]) == os.path.realpath(sys.prefix), (
        f"the {KERNEL_NAME!r} kernel ran {kernel['executable']}, not the test interpreter {sys.executable}"
    )
