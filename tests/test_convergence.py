"""Observed convergence orders on the Kepler problem match the theoretical orders.

Fixed steps over one orbit (eccentricity 0.3, exact solution from Kepler's equation);
the slope of log(error) against log(dt) must be within 0.3 of the order, for the
solution at t1 and for the dense output at interior ``saveat`` times
(order ``min(p, q + 1)`` for an interpolant of order ``q``).
"""

import numpy as np
import pytest

import dxdt
from dxdt.solvers import BS3, DP5, RK4, Euler, Heun, Tsit5, Vern7

from references import kepler_exact

T = 2 * np.pi
SAVEAT = np.linspace(0.1, T - 0.1, 23)
CASES = [  # method, step counts in the asymptotic range, solution order, dense order
    (Euler(), [2000, 4000, 8000, 16000], 1, 1),
    (Heun(), [100, 200, 400, 800], 2, 2),
    (RK4(), [100, 200, 400, 800], 4, 4),
    (BS3(), [50, 100, 200, 400], 3, 3),
    (DP5(), [50, 100, 200, 400], 5, 5),
    (Tsit5(), [50, 100, 200, 400], 5, 5),
    (Vern7(), [60, 90, 135, 200], 7, 7),
]


def slope(dts, errors):
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]


@pytest.mark.parametrize("method, counts, order, dense_order", CASES, ids=lambda x: repr(x) if hasattr(x, "tableau") else "")
def test_observed_order(kepler_problem, method, counts, order, dense_order):
    dts = [T / n for n in counts]
    final, dense = [], []
    for dt in dts:
        sol = dxdt.solve(kepler_problem, method, dt=dt, adaptive=False, saveat=np.append(SAVEAT, T))
        assert sol.success
        final.append(np.abs(sol.u[-1] - kepler_exact(T)[0]).max())
        dense.append(np.abs(sol.u[:-1] - kepler_exact(SAVEAT)).max())
    assert slope(dts, final) == pytest.approx(order, abs=0.3)
    assert slope(dts, dense) == pytest.approx(dense_order, abs=0.3)


@pytest.mark.parametrize("method", [BS3(), DP5(), Tsit5(), Vern7()], ids=repr)
def test_error_shrinks_with_tolerance(kepler_problem, method):
    """Adaptive solves: tighter tolerance gives proportionally smaller global error."""
    errors = []
    for tol in (1e-5, 1e-7, 1e-9):
        sol = dxdt.solve(kepler_problem, method, rtol=tol, atol=tol, saveat=SAVEAT)
        errors.append(np.abs(sol.u - kepler_exact(SAVEAT)).max())
        assert errors[-1] < 300 * tol
    assert errors[0] > errors[1] > errors[2]
