"""The NumPy executor allocates its buffers once per solve and nothing per step."""

import tracemalloc

import numpy as np
import pytest

import dxdt
from dxdt.solvers import DP5, RK4, Tsit5, Vern7

N = 20_000  # large enough that one stray temporary array (160 kB) stands out


def rotation(du, u, p, t):
    """Harmonic oscillators ``x' = -w y``, ``y' = w x`` with frequency ``w = p``, no allocation."""
    half = u.shape[0] // 2
    np.multiply(u[half:], -p, out=du[:half])
    np.multiply(u[:half], p, out=du[half:])


def peak_memory(method, t1, saveat, dt):
    # a small solve first: the first one in a process imports modules lazily, whose objects
    # tracemalloc would count (the peak test failed when run alone, 18.7 vectors)
    dxdt.solve(dxdt.ODEProblem(rotation, np.linspace(1.0, 2.0, 4), (0.0, 0.1), 10.0), method, dt=dt,
               saveat=[0.0, 0.1])
    prob = dxdt.ODEProblem(rotation, np.linspace(1.0, 2.0, N), (0.0, t1), 10.0)
    tracemalloc.start()
    try:
        sol = dxdt.solve(prob, method, dt=dt, saveat=saveat, rtol=1e-8, atol=1e-10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sol.success
    return peak, sol.stats["naccept"]


@pytest.mark.parametrize("method", [Tsit5(), DP5(), Vern7()], ids=repr)
def test_memory_does_not_grow_with_steps(method, monkeypatch):
    # after a long solve, solve() may run the stability guidance's power iteration (its own
    # few vectors, once); this test is about the executor's steps
    monkeypatch.setattr("dxdt.solvers._guidance.MIN_STEPS", 10**9)
    short, n_short = peak_memory(method, 1.0, [0.0, 1.0], 0.01)
    long, n_long = peak_memory(method, 10.0, [0.0, 10.0], 0.01)
    assert n_long > 5 * n_short
    assert long - short < 16_384  # a few Python objects, not arrays


@pytest.mark.parametrize("method", [Tsit5(), DP5(), RK4(), Vern7()], ids=repr)
def test_peak_memory_is_the_workspace(method):
    """Peak = [u; stages] + 6 work vectors + f(u0) + the saved rows; no temporaries."""
    peak, steps = peak_memory(method, 2.0, [0.0, 1.0, 2.0], 0.01)
    assert steps >= 20
    vectors = method.tableau.total_stages + 1 + 6 + 1 + 3
    assert peak < (vectors + 0.5) * N * 8, peak / (N * 8)
