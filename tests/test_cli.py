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
    assert ":math:" not in out and "u_t = (D(x) u_x)_x" in out  # plain text, not the docstring's RST


def test_solve_with_plot(tmp_path, capsys):
    image = tmp_path / "lv.png"
    assert main(["solve", "lotka_volterra", "--method", "DP5", "--saveat", "11", "--plot", str(image)]) == 0
    out = capsys.readouterr().out
    assert "success" in out and "DP5" in out
    assert image.stat().st_size > 1000


def test_solve_grid_problem_on_jax_backend(capsys):
    assert main(["solve", "heat_1d", "--n", "16", "--t1", "0.1", "--backend", "jax", "--rtol", "1e-5"]) == 0
    assert "success" in capsys.readouterr().out


def _table(out: str) -> dict:
    """The rows of ``dxdt compare``'s table by method: the columns after the name."""
    rows = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) > 1 and words[1] in ("success", "max_steps", "dt_min", "nonfinite"):
            rows[words[0]] = words[1:]
    return rows


def test_compare_shows_the_stabilized_methods_advantage(capsys):
    """Brusselator 16x16 (rho ~ 1.8e4) to t = 0.5: Tsit5 is stopped by --max-steps
    (stability-bound) and its full cost extrapolated; RKC and ROCK2 finish with far fewer f
    evaluations than Tsit5 would need and agree with each other to about the tolerance."""
    argv = ["compare", "brusselator", "--n", "16", "--t1", "0.5", "--methods", "Tsit5", "RKC",
            "ROCK2", "--max-steps", "200"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["Tsit5"][0] == "max_steps"
    tsit5_full = int(rows["Tsit5"][4]) * 0.5 / float(rows["Tsit5"][1])  # f evaluations to t1
    for name in ("RKC", "ROCK2"):
        status, reached, steps, rejected, nfev, stages = rows[name][:6]
        assert status == "success" and float(reached) == 0.5
        assert int(stages) > 10 and int(nfev) < tsit5_full / 5
    assert rows["RKC"][-1] == "RKC)" and float(rows["ROCK2"][-1]) < 1e-3
    assert "Tsit5 stopped at t=" in out and "t=0.5 needs about" in out


def test_solve_max_steps(capsys):
    assert main(["solve", "brusselator", "--n", "16", "--max-steps", "50"]) == 1
    assert "max_steps" in capsys.readouterr().out


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
    assert "Stiff PDE: Brusselator 16x16" in out
    rows = _table(out)
    assert rows["ROCK2"][0] == "success" and int(rows["ROCK2"][4]) > 0
    assert image.stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["solve", "nope"], "invalid choice"),
        (["solve", "lotka_volterra", "--rtol", "abc"], "invalid float"),
        (["solve", "lotka_volterra", "--n", "8"], "--n applies to grid problems"),
        (["demo", "--n", "1"], "--n must be at least 3"),
        (["sensitivity", "lorenz", "--mode", "sideways"], "invalid choice"),
        (["compare", "heat_1d", "--methods", "Nope"], "invalid choice"),
        (["compare", "heat_1d", "--max-steps", "0"], "--max-steps must be at least 1"),
        (["solve", "heat_1d", "--max-steps", "-3"], "--max-steps must be at least 1"),
        ([], "required"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, fragment):
    run = subprocess.run([sys.executable, "-m", "dxdt", *argv], capture_output=True, text=True)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
