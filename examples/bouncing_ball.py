"""A bouncing ball: bounce times and sensitivities through the bounces, against the closed form.

A ball dropped from ``h0 = 1`` m falls under gravity ``g = 9.81``; where it reaches the
floor (an ``Event`` on ``x = 0``, downward crossings only) its velocity flips and
shrinks by the restitution ``e = 0.8`` (the affect changes ``u`` in place). Closed
forms: ``t_1 = sqrt(2 h0 / g)`` and ``t_k = t_1 (1 + 2e + ... + 2e^(k-1))``, so

* ``d t_k / d h0 = t_k / (2 h0)`` and ``d t_k / d e = 2 t_1 (1 + 2e + ... + (k-1) e^(k-2))``;
* between the first two bounces the height ``x(T) = e g t_1 (T - t_1) - g (T - t_1)^2 / 2``
  has ``dx(T)/dh0 = ((1 + e)(T - t_1) - e t_1) / t_1``.

A solver that jumps the sensitivities with the affect's Jacobian alone, dropping the
event-time (saltation) term, reports ``dx(T)/dh0 = 1`` after the bounce: wrong in sign
and size. The script checks dxdt's bounce times (1e-8), their derivatives (1e-6) and
``dx(T)/dh0`` (1e-6) against the closed forms, fails otherwise, and plots the
trajectory and dx(T)/dh0 (closed form, dxdt, and without the saltation term); the
other two sensitivities are printed.

Run: ``python examples/bouncing_ball.py [--quick] [--outdir DIR]``.
"""

import argparse
import os
from pathlib import Path

import numpy as np

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

G = 9.81
H0, E = 1.0, 0.8
RTOL, ATOL = 1e-10, 1e-12


def fall(du, u, p, t):
    du[0] = u[1]
    du[1] = -G


def floor(u, p, t):
    return u[0]


def bounce(u, p, t):
    u[1] = -p[0] * u[1]


def bounce_times(h0: float, e: float, n: int) -> np.ndarray:
    t_first = np.sqrt(2 * h0 / G)
    return t_first * (1 + 2 * np.concatenate(([0.0], np.cumsum(e ** np.arange(1, n)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 bounces instead of 4 (or DXDT_EXAMPLES_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write bouncing_ball.png")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("DXDT_EXAMPLES_QUICK") == "1"

    t_end = 1.5 if quick else 2.5
    prob = dxdt.ODEProblem(fall, [H0, 0.0], (0.0, t_end), p=np.array([E]))
    events = [dxdt.Event(floor, bounce, direction=-1, name="floor")]
    sol = dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, events=events, dense=True)
    found = sol.t_events[0]
    exact = bounce_times(H0, E, len(found))
    time_error = np.max(np.abs(found - exact))

    # the last bounce time and its derivatives (implicit function theorem through every bounce)
    k = len(found)
    t_last, (g_u0, g_p) = sens.value_and_gradient(
        lambda u, *, t_events: t_events[0][-1], prob, events=events, wrt=("u0", "p"), rtol=RTOL, atol=ATOL)
    t1 = exact[0]
    d_dh0 = exact[-1] / (2 * H0)
    d_de = 2 * t1 * sum(j * E ** (j - 1) for j in range(1, k))
    derivative_error = max(abs(g_u0[0] - d_dh0), abs(g_p[0] - d_de))

    # dx(T)/dh0 between the first two bounces
    ts = np.linspace(exact[0] + 0.02, exact[1] - 0.02, 8 if quick else 20)
    J = sens.jacobian(prob, events=events, saveat=ts, wrt="u0", rtol=RTOL, atol=ATOL)
    dx_dh0 = J[:, 0, 0]
    closed = ((1 + E) * (ts - t1) - E * t1) / t1
    sensitivity_error = np.max(np.abs(dx_dh0 - closed))

    print(f"{k} bounces; bounce times vs closed form: max error {time_error:.2e}")
    print(f"t_{k} = {t_last:.10f}; d/dh0 = {g_u0[0]:.8f} (exact {d_dh0:.8f}), "
          f"d/de = {g_p[0]:.8f} (exact {d_de:.8f})")
    print(f"dx(T)/dh0 between bounces 1 and 2: max error {sensitivity_error:.2e} "
          f"(without the saltation term: 1.0, off by up to {np.max(np.abs(1 - closed)):.2f})")
    _plot(sol, found, ts, dx_dh0, closed, Path(args.outdir) / "bouncing_ball.png")
    if time_error > 1e-8 or derivative_error > 1e-6 or sensitivity_error > 1e-6:
        raise SystemExit("bouncing ball: dxdt disagrees with the closed form")


def _plot(sol, found, ts, dx_dh0, closed, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    grid = np.linspace(sol.t[0], sol.t[-1], 600)
    left.plot(grid, sol(grid)[:, 0], color="C0")
    left.plot(found, np.zeros_like(found), "o", color="C3", label="bounces (Event)")
    left.set(xlabel="t [s]", ylabel="height x [m]", title="Ball dropped from 1 m, e = 0.8")
    left.legend()
    right.plot(ts, closed, color="k", lw=3, alpha=0.3, label="closed form")
    right.plot(ts, dx_dh0, "o", color="C0", ms=4, label="dxdt (IFT + jump)")
    right.plot(ts, np.ones_like(ts), "--", color="C3", label="without saltation term")
    right.set(xlabel="T [s] (between bounces 1 and 2)", ylabel="dx(T)/dh0",
              title="Sensitivity of the height to the drop height")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
