"""Tests of ``dxdt.problems``.

Every right-hand side is checked against an independent out-of-place reference written
here in plain NumPy/SciPy, for allocation-free calls (tracemalloc), for purity, and for
argument validation; ``linear(...).exact`` is checked against ``solve_ivp`` and finite
differences.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.integrate import solve_ivp

from dxdt import ODEProblem, problems
from references import assert_matches, call, random_arguments, traced_growth

# ---------------------------------------------------------------------------------------
# Independent out-of-place references
# ---------------------------------------------------------------------------------------


def lotka_volterra_reference(u, p):
    a, b, c, d = p
    x, y = u
    return np.array([a * x - b * x * y, -c * y + d * x * y])


def lorenz_reference(u, p):
    sigma, rho, beta = p
    x, y, z = u
    return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])


def gray_scott_reference(u, p):
    Du, Dv, F, k = p
    U, V = u

    def laplacian(a):
        return np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1) - 4 * a

    return np.stack([Du * laplacian(U) - U * V**2 + F * (1 - U), Dv * laplacian(V) + U * V**2 - (F + k) * V])


def heat_1d_reference(u, p):
    """Sparse tridiagonal matrix of the no-flux finite-volume operator, times ``u``."""
    n = u.size
    face = (p[:-1] + p[1:]) / 2
    diagonal = np.zeros(n)
    diagonal[:-1] -= face
    diagonal[1:] -= face
    K = sp.diags([face, diagonal, face], [-1, 0, 1]) * n**2
    return K @ u


def linear_reference(u, p):
    return p @ u


RNG = np.random.default_rng(1963)
A_SMALL = RNG.standard_normal((5, 5)) / 2
U0_SMALL = RNG.standard_normal(5)

# name -> (problem, reference); sizes small for the comparisons
CASES = {
    "lotka_volterra": (problems.lotka_volterra(), lotka_volterra_reference),
    "lorenz": (problems.lorenz(), lorenz_reference),
    "gray_scott": (problems.gray_scott(n=16), gray_scott_reference),
    "heat_1d": (problems.heat_1d(n=24), heat_1d_reference),
    "linear": (problems.linear(A_SMALL, U0_SMALL, 1.0), linear_reference),
}

# name -> problem large enough that one state-sized temporary is far above ALLOCATION_BOUND
ALLOCATION_BOUND = 2048  # bytes: view objects and NumPy scalars, no array data
ALLOCATION_CASES = {
    "lotka_volterra": problems.lotka_volterra(),
    "lorenz": problems.lorenz(),
    "gray_scott": problems.gray_scott(n=32),
    "heat_1d": problems.heat_1d(n=1024),
    "linear": problems.linear(np.eye(1024), np.ones(1024), 1.0),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return CASES[request.param]


# ---------------------------------------------------------------------------------------
# Right-hand sides
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rhs_matches_independent_reference(case, seed):
    prob, reference = case
    u, p = random_arguments(prob, seed)
    assert_matches(call(prob, u, p), reference(u, p))


def test_rhs_reads_parameters_at_every_call(case):
    prob, reference = case
    u, p = random_arguments(prob, 3)
    call(prob, u, prob.p)
    assert_matches(call(prob, u, p), reference(u, p))


def test_rhs_is_pure_and_writes_all_of_du(case):
    prob, _ = case
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
    growth = traced_growth(lambda: prob.f(du, u, p, 0.0))
    assert growth < ALLOCATION_BOUND, f"{name}: {growth} bytes traced over 50 calls"


def test_problems_are_float64_inplace_odeproblems(case):
    prob, _ = case
    assert isinstance(prob, ODEProblem) and prob.inplace
    assert prob.u0.dtype == np.float64 and prob.p.dtype == np.float64


def test_heat_1d_conserves_mass():
    prob, _ = CASES["heat_1d"]
    u, p = random_arguments(prob, 6)
    du = call(prob, u, p)
    assert abs(du.sum()) <= 1e-13 * np.abs(du).sum()


def test_heat_1d_documented_defaults():
    prob = problems.heat_1d(n=10)
    x = (np.arange(10) + 0.5) / 10
    np.testing.assert_allclose(prob.p, 1e-3 * (1 + 0.5 * np.sin(2 * np.pi * x)), rtol=1e-15)
    bumps = np.exp(-(((x - 0.3) / 0.05) ** 2)) + 0.5 * np.exp(-(((x - 0.65) / 0.1) ** 2))
    np.testing.assert_allclose(prob.u0, 0.2 + 0.1 * np.cos(8 * np.pi * x) + bumps, rtol=1e-15)
    assert prob.tspan == (0.0, 1.0)


def test_gray_scott_documented_initial_state():
    prob = problems.gray_scott(n=16, seed=7)
    np.testing.assert_array_equal(prob.p, [0.16, 0.08, 0.035, 0.065])
    expected = np.zeros((2, 16, 16))
    expected[0] = 1.0
    expected[0, 7:9, 7:9] = 0.5  # side 16 // 8 = 2, centred
    expected[1, 7:9, 7:9] = 0.25
    np.testing.assert_allclose(prob.u0, expected, rtol=0.01, atol=0)
    np.testing.assert_array_equal(prob.u0, problems.gray_scott(n=16, seed=7).u0)
    assert not np.array_equal(prob.u0, problems.gray_scott(n=16, seed=8).u0)


# ---------------------------------------------------------------------------------------
# linear(...).exact
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_problem():
    return CASES["linear"][0]


def test_linear_exact_solution_matches_solve_ivp(linear_problem):
    A, u0 = linear_problem.p, linear_problem.u0
    ts = np.linspace(0.0, 1.0, 7)
    ref = solve_ivp(lambda t, u: A @ u, (0.0, 1.0), u0, method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-14)
    exact = linear_problem.exact.solution(ts)
    assert exact.shape == (7, 5)
    assert_matches(exact, ref.y.T, rtol=1e-10)
    assert_matches(linear_problem.exact.solution(1.0), ref.y[:, -1], rtol=1e-10)


def test_linear_exact_jacobian_u0_matches_solve_ivp(linear_problem):
    A = linear_problem.p
    m = A.shape[0]
    ref = solve_ivp(
        lambda t, y: (A @ y.reshape(m, m)).ravel(), (0.0, 0.8), np.eye(m).ravel(),
        method="DOP853", rtol=1e-12, atol=1e-14,
    )
    assert_matches(linear_problem.exact.jacobian_u0(0.8), ref.y[:, -1].reshape(m, m), rtol=1e-10)
    assert linear_problem.exact.jacobian_u0([0.2, 0.8]).shape == (2, m, m)


def test_linear_exact_jacobian_A_matches_central_differences(linear_problem):
    A, u0 = linear_problem.p, linear_problem.u0
    m, t, h = A.shape[0], 0.9, 1e-6
    fd = np.empty((m, m, m))
    for j in range(m):
        for k in range(m):
            E = np.zeros((m, m))
            E[j, k] = h
            plus = problems.linear(A + E, u0, 1.0).exact.solution(t)
            minus = problems.linear(A - E, u0, 1.0).exact.solution(t)
            fd[:, j, k] = (plus - minus) / (2 * h)
    assert_matches(linear_problem.exact.jacobian_A(t), fd, rtol=1e-7)
    assert linear_problem.exact.jacobian_A([0.1, 0.9]).shape == (2, m, m, m)


def test_linear_gradient_sq_norm_matches_jacobians_and_differences(linear_problem):
    exact, T = linear_problem.exact, 1.0
    u = exact.solution(T)
    grad_A, grad_u0 = exact.gradient_sq_norm(T)
    assert_matches(grad_A, 2 * np.einsum("i,ijk->jk", u, exact.jacobian_A(T)), rtol=1e-12)
    assert_matches(grad_u0, 2 * exact.jacobian_u0(T).T @ u, rtol=1e-12)
    A, u0, h = linear_problem.p, linear_problem.u0, 1e-6
    E = np.zeros_like(A)
    E[1, 3] = h
    sq_norm = lambda A_, u0_: np.sum(problems.linear(A_, u0_, T).exact.solution(T) ** 2)
    fd_A = (sq_norm(A + E, u0) - sq_norm(A - E, u0)) / (2 * h)
    fd_u0 = (sq_norm(A, u0 + h * np.eye(5)[2]) - sq_norm(A, u0 - h * np.eye(5)[2])) / (2 * h)
    assert grad_A[1, 3] == pytest.approx(fd_A, rel=1e-7)
    assert grad_u0[2] == pytest.approx(fd_u0, rel=1e-7)


def test_linear_parameter_is_read_only(linear_problem):
    with pytest.raises(ValueError):
        linear_problem.p[0, 0] = 1.0


def test_linear_remake_recomputes_exact(linear_problem):
    u0 = np.arange(5.0)
    moved = linear_problem.remake(u0=u0, tspan=(0.5, 2.0))
    assert isinstance(moved, problems.LinearProblem)
    np.testing.assert_allclose(moved.exact.solution(0.5), u0, rtol=0, atol=0)
    scaled = linear_problem.remake(p=2 * linear_problem.p)
    np.testing.assert_allclose(scaled.exact.solution(0.5), linear_problem.exact.solution(1.0), rtol=1e-12)
    plain = linear_problem.remake(f=lambda u, p, t: p @ u)
    assert type(plain) is ODEProblem and not plain.inplace


# ---------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (lambda: problems.lotka_volterra(u0=(1.0, 2.0, 3.0)), "u0"),
    (lambda: problems.lotka_volterra(p=(1.0, 2.0, 3.0)), "p"),
    (lambda: problems.lotka_volterra(p=(1.0, np.nan, 3.0, 1.0)), "p"),
    (lambda: problems.lorenz(u0=(1.0, 0.0)), "u0"),
    (lambda: problems.lorenz(p="abc"), "p"),
    (lambda: problems.lorenz(tspan=(1.0, 1.0)), "tspan"),
    (lambda: problems.gray_scott(n=2), "n"),
    (lambda: problems.gray_scott(n=8.0), "n"),
    (lambda: problems.gray_scott(n=True), "n"),
    (lambda: problems.gray_scott(n=8, p=(0.16, 0.08, 0.035)), "p"),
    (lambda: problems.gray_scott(n=8, p=(-0.16, 0.08, 0.035, 0.065)), "p"),
    (lambda: problems.heat_1d(n=2), "n"),
    (lambda: problems.heat_1d(n=8, p=np.ones(7)), "p"),
    (lambda: problems.heat_1d(n=8, p=-np.ones(8)), "p"),
    (lambda: problems.heat_1d(n=8, u0=np.ones(9)), "u0"),
    (lambda: problems.heat_1d(n=8, u0=np.full(8, np.inf)), "u0"),
    (lambda: problems.linear(np.ones((2, 3)), [1.0, 1.0], 1.0), "A"),
    (lambda: problems.linear(np.ones(4), [1.0, 1.0], 1.0), "A"),
    (lambda: problems.linear(np.full((2, 2), np.nan), [1.0, 1.0], 1.0), "A"),
    (lambda: problems.linear(np.eye(2), [1.0, 2.0, 3.0], 1.0), "u0"),
    (lambda: problems.linear(np.eye(2), [1.0, 2.0], 0.0), "T"),
    (lambda: problems.linear(np.eye(2), [1.0, 2.0], np.inf), "T"),
    (lambda: problems.linear(np.eye(2), [1.0, 2.0], "1"), "T"),
    (lambda: problems.linear(np.eye(2), [1.0, 2.0], 1.0).exact.gradient_sq_norm(np.nan), "T"),
]


@pytest.mark.parametrize("make, name", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        make()
