"""The ``dxdt`` command: every subcommand, and one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from dxdt._cli import main


def test_problems_lists_every_problem(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    for name in ("lotka_volterra", "gray_scott", "heat_1d"):
        assert name in out


def test_solve_with_plot(tmp_path, capsys):
    image = tmp_path / "lv.png"
    assert main(["solve", "lotka_volterra", "--method", "DP5", "--saveat", "11", "--plot", str(image)]) == 0
    out = capsys.readouterr().out
    assert "success" in out and "DP5" in out
    assert image.stat().st_size > 1000


def test_solve_grid_problem_on_jax_backend(capsys):
    assert main(["solve", "heat_1d", "--n", "16", "--t1", "0.1", "--backend", "jax", "--rtol", "1e-5"]) == 0
    assert "success" in capsys.readouterr().out


def test_sensitivity_reports_mode_and_reason(capsys):
    assert main(["sensitivity", "heat_1d", "--n", "16"]) == 0
    out = capsys.readouterr().out
    assert "mode: " in out and "16 target entries" in out and "gradient" in out
    assert main(["sensitivity", "lotka_volterra", "--mode", "reverse", "--wrt", "u0"]) == 0
    assert "adjoint=interpolating" in capsys.readouterr().out


def test_demo_writes_image(tmp_path, capsys):
    image = tmp_path / "gs.png"
    assert main(["demo", "--n", "16", "--out", str(image)]) == 0
    out = capsys.readouterr().out
    assert "Gray-Scott 16x16" in out and "Sensitivity" in out and "Saved" in out
    assert image.stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["solve", "nope"], "invalid choice"),
        (["solve", "lotka_volterra", "--rtol", "abc"], "invalid float"),
        (["solve", "lotka_volterra", "--n", "8"], "--n applies to grid problems"),
        (["demo", "--n", "1"], "--n must be at least 3"),
        (["sensitivity", "lorenz", "--mode", "sideways"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, fragment):
    run = subprocess.run([sys.executable, "-m", "dxdt", *argv], capture_output=True, text=True)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
