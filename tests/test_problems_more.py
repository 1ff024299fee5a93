"""Tests of ``gierer_meinhardt``, ``brusselator`` and ``fitzhugh_nagumo`` in ``dxdt.problems``.

Each right-hand side is checked against an independent out-of-place reference written
here (a padded-array Laplacian for the matrix form of Gierer-Meinhardt, a point-by-point
transliteration of the SciMLBenchmarks loop for the Brusselator), for allocation-free
calls (tracemalloc), purity and argument validation; the documented defaults and steady
states are checked, each problem is solved once, and FitzHugh-Nagumo is compared with
``solve_ivp``.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dxdt
from dxdt import ODEProblem, problems
from dxdt.solvers import Tsit5, Vern7
from references import assert_matches, call, random_arguments, traced_growth

# ---------------------------------------------------------------------------------------
# Independent out-of-place references
# ---------------------------------------------------------------------------------------


def neumann_laplacian(a):
    """Five-point Laplacian, unit spacing, mirrored ghost points ``a[-1] = a[1]``."""
    padded = np.pad(a, 1, mode="reflect")
    return padded[2:, 1:-1] + padded[:-2, 1:-1] + padded[1:-1, 2:] + padded[1:-1, :-2] - 4 * a


def gierer_meinhardt_reference(r, p, t):
    a, alpha, ubar, beta, D1, D2 = p
    u, v = r
    return np.stack([
        D1 * neumann_laplacian(u) + a * u * u / v + ubar - alpha * u,
        D2 * neumann_laplacian(v) + a * u * u - beta * v,
    ])


def brusselator_reference(u, p, t):
    """The benchmark's loop over grid points, 0-based, ``limit`` as a modulo."""
    A, B, alpha = p
    n = u.shape[1]
    x = np.linspace(0, 1, n)
    alpha = alpha * (n - 1) ** 2
    du = np.empty_like(u)
    for i in range(n):
        for j in range(n):
            ip1, im1, jp1, jm1 = (i + 1) % n, (i - 1) % n, (j + 1) % n, (j - 1) % n
            source = 5.0 if (x[i] - 0.3) ** 2 + (x[j] - 0.6) ** 2 <= 0.1**2 and t >= 1.1 else 0.0
            lap = [u[k, im1, j] + u[k, ip1, j] + u[k, i, jp1] + u[k, i, jm1] - 4 * u[k, i, j] for k in (0, 1)]
            uuv = u[0, i, j] ** 2 * u[1, i, j]
            du[0, i, j] = alpha * lap[0] + B + uuv - (A + 1) * u[0, i, j] + source
            du[1, i, j] = alpha * lap[1] + A * u[0, i, j] - uuv
    return du


def fitzhugh_nagumo_reference(u, p, t):
    a, b, tau, I = p
    v, w = u
    return np.array([v - v**3 / 3 - w + I, (v + a - b * w) / tau])


# name -> (problem, reference, times at which to compare); sizes small for the comparisons
CASES = {
    "gierer_meinhardt": (problems.gierer_meinhardt(n=7), gierer_meinhardt_reference, [0.3]),
    "brusselator": (problems.brusselator(n=8), brusselator_reference, [0.3, 1.5]),
    "fitzhugh_nagumo": (problems.fitzhugh_nagumo(), fitzhugh_nagumo_reference, [0.3]),
}

ALLOCATION_BOUND = 2048  # bytes: view objects and NumPy scalars, no array data
ALLOCATION_CASES = {
    "gierer_meinhardt": problems.gierer_meinhardt(n=32),
    "brusselator": problems.brusselator(n=32),
    "fitzhugh_nagumo": problems.fitzhugh_nagumo(),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return CASES[request.param]


# ---------------------------------------------------------------------------------------
# Right-hand sides
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rhs_matches_independent_reference(case, seed):
    prob, reference, times = case
    u, p = random_arguments(prob, seed)
    for t in times:
        assert_matches(call(prob, u, p, t), reference(u, p, t))


def test_rhs_reads_parameters_at_every_call(case):
    prob, reference, _ = case
    u, p = random_arguments(prob, 3)
    call(prob, u, prob.p)
    assert_matches(call(prob, u, p), reference(u, p, 0.3))


def test_rhs_is_pure_and_writes_all_of_du(case):
    prob, _, _ = case
    u, p = random_arguments(prob, 4)
    u_before, p_before = u.copy(), p.copy()
    first = call(prob, u, p)
    second = np.full_like(u, -np.inf)
    prob.f(second, u, p, 0.3)
    assert np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(u, u_before)
    np.testing.assert_array_equal(p, p_before)


@pytest.mark.parametrize("name", sorted(ALLOCATION_CASES))
def test_rhs_allocates_no_arrays_per_call(name):
    prob = ALLOCATION_CASES[name]
    assert prob.u0.size < 8 or prob.u0.nbytes >= 4 * ALLOCATION_BOUND  # a temporary would show
    u, p = random_arguments(prob, 5)
    du = np.empty_like(u)
    growth = traced_growth(lambda: prob.f(du, u, p, 2.0))  # t >= 1.1: the Brusselator source is on
    assert growth < ALLOCATION_BOUND, f"{name}: {growth} bytes traced over 50 calls"


def test_problems_are_float64_inplace_odeproblems(case):
    prob, _, _ = case
    assert isinstance(prob, ODEProblem) and prob.inplace
    assert prob.u0.dtype == np.float64 and prob.p.dtype == np.float64


# ---------------------------------------------------------------------------------------
# Documented defaults and steady states
# ---------------------------------------------------------------------------------------


def test_gierer_meinhardt_documented_defaults():
    prob = problems.gierer_meinhardt(n=5, seed=3)
    np.testing.assert_array_equal(prob.p, [1.0, 1.0, 1.0, 10.0, 0.001, 100.0])
    assert prob.tspan == (0.0, 0.1) and prob.u0.shape == (2, 5, 5)
    uss, vss = 11.0, 12.1  # (ubar + beta) / alpha, (a / beta) uss^2
    assert np.all((prob.u0[0] >= uss) & (prob.u0[0] < uss + 0.1)) and np.ptp(prob.u0[0]) > 0
    np.testing.assert_allclose(prob.u0[1], vss, rtol=1e-15)
    np.testing.assert_array_equal(prob.u0, problems.gierer_meinhardt(n=5, seed=3).u0)
    assert not np.array_equal(prob.u0, problems.gierer_meinhardt(n=5, seed=4).u0)
    assert problems.gierer_meinhardt().u0.shape == (2, 64, 64)


def test_gierer_meinhardt_vanishes_at_its_homogeneous_steady_state():
    prob = problems.gierer_meinhardt(n=6)
    r = np.stack([np.full((6, 6), 11.0), np.full((6, 6), 12.1)])
    assert np.abs(call(prob, r, prob.p)).max() < 1e-13


def test_gierer_meinhardt_matrices_are_neumann_second_differences():
    from dxdt.problems._gierer_meinhardt import second_difference_matrices

    rng = np.random.default_rng(0)
    Ax, Ay = second_difference_matrices(6)
    a = rng.standard_normal((6, 6))
    np.testing.assert_allclose(Ay @ a + a @ Ax, neumann_laplacian(a), rtol=0, atol=1e-14)
    np.testing.assert_array_equal(Ay, Ax.T)


def test_brusselator_documented_defaults():
    prob = problems.brusselator(n=6)
    np.testing.assert_array_equal(prob.p, [3.4, 1.0, 10.0])
    assert prob.tspan == (0.0, 11.5)
    x = np.linspace(0, 1, 6)
    for i in range(6):
        for j in range(6):
            assert prob.u0[0, i, j] == pytest.approx(22 * (x[j] * (1 - x[j])) ** 1.5, rel=1e-14)
            assert prob.u0[1, i, j] == pytest.approx(27 * (x[i] * (1 - x[i])) ** 1.5, rel=1e-14)
    assert problems.brusselator().u0.shape == (2, 32, 32)


def test_brusselator_source_switches_on_at_t_1_1():
    prob = problems.brusselator(n=32)
    u = np.stack([np.full((32, 32), 1.0), np.full((32, 32), 3.4)])  # u = B, v = A / B
    roundoff = 1e-14 * 4 * 3.4 * 10 * 31**2  # the Laplacian of a constant, times alpha / dx^2
    assert np.abs(call(prob, u, prob.p, 1.0)).max() < roundoff
    source = call(prob, u, prob.p, 1.1)
    assert np.abs(source[1]).max() < roundoff
    assert set(np.unique(np.round(source[0], 9))) == {0.0, 5.0}
    assert np.count_nonzero(np.round(source[0], 9)) == 30  # nodes (i, j) / 31 in the disc (exact count)


def test_fitzhugh_nagumo_documented_defaults():
    prob = problems.fitzhugh_nagumo()
    np.testing.assert_array_equal(prob.p, [0.7, 0.8, 12.5, 0.5])
    np.testing.assert_array_equal(prob.u0, [1.0, 1.0])
    assert prob.tspan == (0.0, 100.0)


def test_gierer_meinhardt_translates_through_its_work_buffers():
    from dxdt.sensitivity import TranslationError, to_jax

    prob = problems.gierer_meinhardt(n=5)
    u, p = random_arguments(prob, 6)
    assert_matches(np.asarray(to_jax(prob.f, u, p)(u, p, 0.0)), call(prob, u, p, 0.0))
    with pytest.raises(TranslationError, match="closure variable 'Ayu'"):
        to_jax(prob.f, u, p, duplicate_closure=False)(u, p, 0.0)


# ---------------------------------------------------------------------------------------
# Solves
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, prob", [
    ("gierer_meinhardt", problems.gierer_meinhardt(n=8)),
    ("brusselator", problems.brusselator(n=8, tspan=(0.0, 1.5))),  # past the source switch
    ("fitzhugh_nagumo", problems.fitzhugh_nagumo()),
])
def test_quick_solve_succeeds(name, prob):
    sol = dxdt.solve(prob, Tsit5(), saveat=np.linspace(*prob.tspan, 4))
    assert sol.success, sol.message
    assert sol.u.shape == (4, *prob.u0.shape) and np.all(np.isfinite(sol.u))


def test_fitzhugh_nagumo_matches_solve_ivp():
    prob = problems.fitzhugh_nagumo()
    ts = np.linspace(0.0, 100.0, 41)
    sol = dxdt.solve(prob, Vern7(), rtol=1e-11, atol=1e-13, saveat=ts)
    ref = solve_ivp(lambda t, u: fitzhugh_nagumo_reference(u, prob.p, t), prob.tspan, prob.u0,
                    method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-14)
    assert sol.success and ref.success
    assert_matches(sol.u, ref.y.T, rtol=1e-8)


# ---------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (lambda: problems.gierer_meinhardt(n=2), "n"),
    (lambda: problems.gierer_meinhardt(n=8.0), "n"),
    (lambda: problems.gierer_meinhardt(n=8, p=(1.0, 1.0, 1.0, 10.0, 0.001)), "p"),
    (lambda: problems.gierer_meinhardt(n=8, p=(1.0, 1.0, 1.0, 10.0, -0.001, 100.0)), "p"),
    (lambda: problems.gierer_meinhardt(n=8, p=(1.0, 0.0, 1.0, 10.0, 0.001, 100.0)), "p"),
    (lambda: problems.gierer_meinhardt(n=8, p=(1.0, 1.0, np.nan, 10.0, 0.001, 100.0)), "p"),
    (lambda: problems.gierer_meinhardt(n=8, tspan=(0.1, 0.1)), "tspan"),
    (lambda: problems.brusselator(n=2), "n"),
    (lambda: problems.brusselator(n=True), "n"),
    (lambda: problems.brusselator(n=8, p=(3.4, 1.0)), "p"),
    (lambda: problems.brusselator(n=8, p="abc"), "p"),
    (lambda: problems.brusselator(n=8, p=(3.4, 1.0, -10.0)), "p"),
    (lambda: problems.brusselator(n=8, tspan=(0.0, np.inf)), "tspan"),
    (lambda: problems.fitzhugh_nagumo(u0=(1.0, 1.0, 1.0)), "u0"),
    (lambda: problems.fitzhugh_nagumo(u0=(np.inf, 1.0)), "u0"),
    (lambda: problems.fitzhugh_nagumo(p=(0.7, 0.8, 12.5)), "p"),
    (lambda: problems.fitzhugh_nagumo(p=(0.7, 0.8, 0.0, 0.5)), "p"),
    (lambda: problems.fitzhugh_nagumo(tspan=(0.0,)), "tspan"),
]


@pytest.mark.parametrize("make, name", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        make()
