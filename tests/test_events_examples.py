"""The two event examples at their reduced size: each asserts its own result against the
closed form (bouncing ball) or the true parameters (PK fit) and writes its figure."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["bouncing_ball", "pk_dosing_fit"])
def test_event_example_runs_quick(name, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--outdir", str(tmp_path)])  # raises SystemExit when its check fails
    figure = (tmp_path / f"{name}.png").read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 1000
    assert "saved" in capsys.readouterr().out
