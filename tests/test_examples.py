"""Run every example in ``examples/`` at its reduced (``--quick``) size.

Each example asserts its own result (it raises ``SystemExit`` when the fit, the
agreement or the error it demonstrates is not met); here we also check that it wrote
its figure as a non-empty PNG.
"""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# example script -> the figures it writes
FIGURES = {
    "lotka_volterra_fit.py": ["lotka_volterra_fit.png"],
    "heat_inverse.py": ["heat_inverse.png"],
    "gray_scott_sensitivity.py": ["gray_scott_sensitivity.png"],
    "closure_caches.py": ["closure_caches.png"],
    "optax_fit.py": ["optax_fit.png"],
    "optimal_design.py": ["optimal_design.png"],
    "multi_experiment_fit.py": ["multi_experiment_fit.png"],
}


def load_example(filename):
    """Import ``examples/<filename>`` as a module without running its ``__main__`` block."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(filename).stem}", EXAMPLES / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("filename", sorted(FIGURES))
def test_example_runs_quick_and_writes_its_figures(filename, tmp_path, capsys):
    example = load_example(filename)
    example.main(["--quick", "--outdir", str(tmp_path)])
    for figure in FIGURES[filename]:
        path = tmp_path / figure
        assert path.is_file(), f"{filename} did not write {figure}"
        content = path.read_bytes()
        assert len(content) > 1000 and content.startswith(PNG_SIGNATURE), f"{figure} is not a PNG image"
    assert "saved" in capsys.readouterr().out
