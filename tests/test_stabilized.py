"""Stabilized explicit methods RKC, RKL2, ROCK2, ROCK4 on both backends.

Forced stage counts (s = 5 and 17) are tested on purpose: OrdinaryDiffEq.jl's RKC was
wrong for every s > 2 for years because its tests only ever ran s = 2.
"""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dxdt
from dxdt.solvers import RKC, RKL2, ROCK2, ROCK4, AbstractStabilized, Tsit5
from dxdt.solvers._stabilized import SAFETY, _stability_boundary, choose_stages, stage_table
from dxdt.solvers._stabilized_executor import _power_iteration, _Workspace

METHODS = [RKC, RKL2, ROCK2, ROCK4]


def forced(method_type, s):
    return method_type(min_stages=s, max_stages=s)


def nonlinear(du, u, p, t):
    """A small nonlinear, non-autonomous system (exercises the stage times c_j)."""
    du[0] = -u[0] + np.cos(t) * u[1] ** 2
    du[1] = -2.0 * u[1] + np.sin(3.0 * t) * u[0]


NONLINEAR_U0 = np.array([1.0, 0.5])


@pytest.fixture(scope="module")
def nonlinear_reference():
    sol = solve_ivp(lambda t, u: (lambda du: (nonlinear(du, u, None, t), du)[1])(np.empty(2)),
                    (0.0, 1.0), NONLINEAR_U0, method="DOP853", rtol=1e-13, atol=1e-15)
    return sol.y[:, -1]


def dirichlet_heat(n):
    """``u_t = u_xx`` on (0, 1), ``u = 0`` at both ends, ``n`` interior points."""
    scale = (n + 1) ** 2

    def rhs(du, u, p, t):
        np.subtract(u[2:], u[1:-1], out=du[1:-1])
        du[1:-1] -= u[1:-1]
        du[1:-1] += u[:-2]
        du[0] = u[1] - 2 * u[0]
        du[-1] = u[-2] - 2 * u[-1]
        du *= scale

    x = np.arange(1, n + 1) / (n + 1)
    lambda_1 = -4 * scale * np.sin(np.pi / (2 * (n + 1))) ** 2  # smallest |eigenvalue|
    rho = 4 * scale * np.sin(n * np.pi / (2 * (n + 1))) ** 2  # spectral radius
    return rhs, x, lambda_1, rho


# ------------------------------------------------------------------ the coefficients


@pytest.mark.parametrize("method_type", METHODS)
@pytest.mark.parametrize("s", [5, 17])
def test_stability_polynomial_has_the_method_order(method_type, s):
    """R_s(z) = exp(z) + O(z^(q+1)): the error shrinks 2^(q+1)x when z halves."""
    method = forced(method_type, s)
    z = np.array([0.02, 0.01, -0.02, -0.01])
    err = np.abs(method.stability_polynomial(s, z) - np.exp(z))
    assert err[0] / err[1] == pytest.approx(2 ** (method.order + 1), rel=0.05)
    assert err[2] / err[3] == pytest.approx(2 ** (method.order + 1), rel=0.05)
    assert method.recurrence(s).c[0] == 0


@pytest.mark.parametrize("s", [2, 3, 5, 17, 60])
def test_rkc_matches_its_chebyshev_closed_form(s):
    """R_s(z) = a_s + b_s T_s(w0 + w1 z) (Sommeijer et al. 1997), beta ~ 0.653 s^2."""
    from dxdt.solvers.rkc import rkc_recurrence

    _, w0, w1 = rkc_recurrence(s)
    z = np.linspace(-RKC().stability_boundary(s), 0, 50)
    cheb = np.polynomial.chebyshev.Chebyshev.basis(s)
    b_s = cheb.deriv(2)(w0) / cheb.deriv(1)(w0) ** 2
    expected = 1 - b_s * cheb(w0) + b_s * cheb(w0 + w1 * z)
    np.testing.assert_allclose(RKC().stability_polynomial(s, z), expected, atol=1e-11)
    if s >= 17:
        assert RKC().stability_boundary(s) / s**2 == pytest.approx(0.653, abs=0.005)


@pytest.mark.parametrize("s", [3, 5, 17, 41])
def test_rkl2_matches_its_legendre_closed_form(s):
    """R_s(z) = a_s + b_s P_s(1 + w1 z) (Meyer et al. 2014), beta = (s^2 + s - 2) / 2."""
    b_s = (s * s + s - 2) / (2 * s * (s + 1))
    w1 = 4 / (s * s + s - 2)
    z = np.linspace(-RKL2().stability_boundary(s), 0, 50)
    expected = 1 - b_s + b_s * np.polynomial.legendre.Legendre.basis(s)(1 + w1 * z)
    np.testing.assert_allclose(RKL2().stability_polynomial(s, z), expected, atol=1e-11)
    assert RKL2().stability_boundary(s) == (s * s + s - 2) / 2


@pytest.mark.parametrize("method_type", METHODS)
@pytest.mark.parametrize("s", [3, 5, 17])
def test_stability_interval(method_type, s):
    """|R_s| <= 1 on [-beta(s), 0] and a forced-s solve of u' = lambda u at
    h lambda = -0.9 beta(s) decays; the documented beta(s) is computed, not assumed."""
    if not method_type().supports(s):
        pytest.skip(f"{method_type.__name__} has no {s}-stage member")
    method = forced(method_type, s)
    beta = method.stability_boundary(s)
    z = np.linspace(-beta, 0, 20 * s * s)
    assert np.max(np.abs(method.stability_polynomial(s, z))) <= 1 + 1e-12
    computed = _stability_boundary(method, s)  # first |R| > 1 found on a grid, bisected
    assert beta <= computed * (1 + 1e-9)  # closed forms (RKC, RKL2) are conservative
    assert abs(method.stability_polynomial(s, np.array([-1.01 * computed]))[0]) > 1
    dt = 0.05
    lam = -0.9 * beta / dt
    prob = dxdt.ODEProblem(lambda u, p, t: lam * u, np.ones(1), (0.0, 1.0))
    sol = dxdt.solve(prob, method, dt=dt, adaptive=False)
    assert sol.success and sol.stats["naccept"] == 20
    amplitude = np.abs(sol.u[:, 0])
    assert np.all(amplitude[1:] <= amplitude[:-1] * (1 + 1e-12))
    # 10% outside the interval the same stage count grows
    prob_out = dxdt.ODEProblem(lambda u, p, t: -1.1 * computed / dt * u, np.ones(1), (0.0, 1.0))
    assert abs(dxdt.solve(prob_out, method, dt=dt, adaptive=False).u[-1, 0]) > 1.0


def taylor_coefficients(method, s, n=64, radius=0.5):
    """The first Taylor coefficients of R_s at 0, from R_s on a circle (Cauchy's formula by
    FFT; R_s is a polynomial of degree s, aliasing is below rounding at radius 0.5)."""
    z = radius * np.exp(2j * np.pi * np.arange(n) / n)
    return np.fft.fft(method.stability_polynomial(s, z)).real / n / radius ** np.arange(n)


@pytest.mark.parametrize("method_type", METHODS)
def test_every_member_matches_exp_to_its_order(method_type):
    """R_s(z) = 1 + z + ... + z^q/q! + O(z^(q+1)) to 1e-12 for every tabulated ROCK member
    (a transcribed coefficient off by more than about 1e-9 relative breaks it) and a spread
    of RKC/RKL2."""
    method = method_type()
    counts = method.stage_counts()
    if method_type in (RKC, RKL2):
        counts = [s for s in (3, 5, 17, 61, 199, 999) if method.supports(s)]
    factorials = np.array([math.factorial(k) for k in range(method.order + 1)])
    for s in counts:
        c = taylor_coefficients(method, s)[: method.order + 1]
        np.testing.assert_allclose(c, 1.0 / factorials, rtol=0, atol=1e-12, err_msg=f"s={s}")
    if method_type is ROCK2:  # order 2, not more: the z^3 coefficient is 0.0961, not 1/6
        assert taylor_coefficients(method, 200)[3] == pytest.approx(0.0961, abs=5e-4)


def test_tables_hold_the_published_degrees():
    """The transcribed tables end where Abdulle's do: ROCK2 m = 1..198 (46 degrees, 4476
    recurrence numbers), ROCK4 m = 1..148 (50 degrees, 4382); first and last numbers as
    printed in rock2.f / rock4.f (via OrdinaryDiffEq.jl)."""
    from dxdt.solvers import _rock_tables as tables
    from dxdt.solvers.rock2 import STAGE_COUNTS as ROCK2_COUNTS
    from dxdt.solvers.rock4 import STAGE_COUNTS as ROCK4_COUNTS

    for name, n, last_m, total in (("ROCK2", 46, 198, 4476), ("ROCK4", 50, 148, 4382)):
        degrees = getattr(tables, f"{name}_DEGREES")
        recurrence = getattr(tables, f"{name}_RECURRENCE")
        assert len(degrees) == n and degrees[-1] == last_m and list(degrees) == sorted(degrees)
        assert [len(r) for r in recurrence] == [2 * m - 1 for m in degrees]
        assert sum(map(len, recurrence)) == total
    assert tables.ROCK2_RECURRENCE[0] == (0.1794612899156781,)
    assert tables.ROCK2_RECURRENCE[-1][-1] == 0.9638702662671197
    assert tables.ROCK2_FINISH[-1] == (0.3679229127010114, 0.3843292556220249)
    assert tables.ROCK4_RECURRENCE[-1][-1] == 0.9136748776971255
    assert tables.ROCK4_FINISH_B[-1] == (0.783969323650751, -0.35361357119617,
                                         -0.368922535023076, 0.615238813023293)
    assert tables.ROCK4_FINISH_B_EMBEDDED[-1][-1] == 0.000122062993942758
    assert ROCK2_COUNTS[0] == 3 and ROCK2_COUNTS[-1] == ROCK2().max_stages == 200
    assert len(ROCK2_COUNTS) == 46 and len(ROCK4_COUNTS) == 48
    assert ROCK4_COUNTS[0] == 5 and ROCK4_COUNTS[-1] == 142 and ROCK4().max_stages == 152


@pytest.mark.parametrize("method_type, ratio", [(ROCK2, 0.81), (ROCK4, 0.35)])
def test_every_rock_member_is_stable_on_its_computed_interval(method_type, ratio):
    """For every supported s: |R_s| <= 1 on [-beta(s), 0] on a grid finer than R_s
    oscillates (0.01 near the origin, where the finishing stages put a bump), |R_s| > 1
    within 0.2% beyond, beta(s) ~ ratio s^2, and beta increasing in s (as the stage choice
    needs)."""
    method = method_type()
    counts, beta = stage_table(method)
    assert np.all(np.diff(beta) > 0)
    for s, b in zip(counts, beta):
        near = min(40.0, b)
        z = -np.concatenate([np.linspace(0, near, 4000), np.linspace(near, b, 2 * s * s)])
        assert np.max(np.abs(method.stability_polynomial(s, z))) <= 1 + 1e-12, s
        assert np.max(np.abs(method.stability_polynomial(s, -np.linspace(b, 1.002 * b, 50)))) > 1, s
        if s >= 12:
            assert b / s**2 == pytest.approx(ratio, abs=0.03), s


def test_rock4_members_133_and_152_are_not_used():
    """Abdulle's table has them, but their |R_s| exceeds 1 near z = -8.4 (exactly, in
    rational arithmetic: 1.00590 and 1.00774), so a mode there grows; s = 142 stays below 1."""
    from fractions import Fraction

    from dxdt.solvers.rock4 import UNSTABLE, rock4_recurrence

    def exact_r(s, z):
        rec = rock4_recurrence(s)
        y_prev, y = Fraction(1), 1 + Fraction(rec.mu1) * z
        for a, _, _, e, b in rec.rows:
            y_prev, y = y, Fraction(a) * y + Fraction(b) * y_prev + Fraction(e) * z * y
        a21, a31, a32, a41, a42, a43, b1, b2, b3, b4 = map(Fraction, rec.finish[:10])
        k1 = z * y
        k2 = z * (y + a21 * k1)
        k3 = z * (y + a31 * k1 + a32 * k2)
        k4 = z * (y + a41 * k1 + a42 * k2 + a43 * k3)
        return float(y + b1 * k1 + b2 * k2 + b3 * k3 + b4 * k4)

    z = Fraction(-84, 10)
    assert UNSTABLE == (133, 152)
    assert exact_r(133, z) == pytest.approx(1.00590, abs=5e-5)
    assert exact_r(152, z) == pytest.approx(1.00774, abs=5e-5)
    assert exact_r(142, z) == pytest.approx(0.99838, abs=5e-5)
    for s in UNSTABLE:
        assert not ROCK4().supports(s) and s not in ROCK4().stage_counts()
        with pytest.raises(ValueError, match="not stable"):
            forced(ROCK4, s)


@pytest.mark.parametrize("method_type", [ROCK2, ROCK4])
def test_stage_choice_takes_the_fewest_tabulated_stages_that_cover_h_rho(method_type):
    """Across the whole table: h rho at or just below beta(s_i) takes s_i, just above it
    s_(i+1); past the last interval the largest count, flagged as not covering."""
    counts, beta = stage_table(method_type())
    for i, (s, b) in enumerate(zip(counts, beta)):
        assert choose_stages(counts, beta, b) == (s, True)
        assert choose_stages(counts, beta, 0.999 * b) == (s, True)
        if i + 1 < len(counts):
            assert choose_stages(counts, beta, b * (1 + 1e-9)) == (counts[i + 1], True)
    assert choose_stages(counts, beta, 1.01 * beta[-1]) == (counts[-1], False)
    assert choose_stages(counts, beta, 0.0) == (counts[0], True)


# ------------------------------------------------------------------ convergence


@pytest.mark.parametrize("method_type", METHODS)
@pytest.mark.parametrize("s", [5, 17])
def test_order_with_forced_stage_count(method_type, s, nonlinear_reference):
    prob = dxdt.ODEProblem(nonlinear, NONLINEAR_U0, (0.0, 1.0))
    order = method_type.order
    errors = []
    for dt in (0.2, 0.1, 0.05) if order == 4 else (0.1, 0.05, 0.025):
        sol = dxdt.solve(prob, forced(method_type, s), dt=dt, adaptive=False, saveat=[1.0])
        assert sol.stats["max_stages_used"] == s and sol.stats["n_eigen_est"] == 0
        errors.append(np.max(np.abs(sol.u[-1] - nonlinear_reference)))
    slopes = np.log2(np.array(errors[:-1]) / errors[1:])
    assert np.all((slopes > order - 0.15) & (slopes < order + 0.4)), slopes


@pytest.mark.parametrize("method_type, s", [(ROCK2, 104), (ROCK2, 200), (ROCK4, 102), (ROCK4, 142)])
def test_order_with_forced_stage_count_from_the_end_of_the_table(method_type, s,
                                                                 nonlinear_reference):
    """The largest tabulated members (beyond the first 29 / 18 degrees transcribed before)."""
    prob = dxdt.ODEProblem(nonlinear, NONLINEAR_U0, (0.0, 1.0))
    order = method_type.order
    errors = []
    for dt in (0.2, 0.1, 0.05) if order == 4 else (0.1, 0.05, 0.025):
        sol = dxdt.solve(prob, forced(method_type, s), dt=dt, adaptive=False, saveat=[1.0])
        assert sol.stats["max_stages_used"] == s
        assert sol.stats["nfev"] == 1 + round(1 / dt) * s  # s evaluations a step
        errors.append(np.max(np.abs(sol.u[-1] - nonlinear_reference)))
    slopes = np.log2(np.array(errors[:-1]) / errors[1:])
    assert np.all((slopes > order - 0.15) & (slopes < order + 0.4)), slopes


def test_a_stiff_heat_problem_uses_the_whole_table():
    """Heat N = 1000 (rho = 4e6): the steps need more stages than the old tables had (45,
    22) and stay accurate against the exact semi-discrete solution."""
    rhs, x, lambda_1, rho = dirichlet_heat(1000)
    prob = dxdt.ODEProblem(rhs, np.sin(np.pi * x), (0.0, 0.01))
    exact = np.exp(lambda_1 * 0.01) * prob.u0
    for method, used in ((ROCK2(), 150), (ROCK4(), 142)):
        sol = dxdt.solve(prob, method, rtol=1e-3, atol=1e-6, saveat=[0.01])
        assert sol.success and sol.stats["max_stages_used"] >= used
        assert method.supports(sol.stats["max_stages_used"])
        np.testing.assert_allclose(sol.u[-1], exact, atol=5e-4)


@pytest.mark.parametrize("method_type", METHODS)
def test_adaptive_solve_meets_tolerance(method_type, nonlinear_reference):
    prob = dxdt.ODEProblem(nonlinear, NONLINEAR_U0, (0.0, 1.0))
    for rtol in (1e-4, 1e-7):
        sol = dxdt.solve(prob, method_type(), rtol=rtol, atol=rtol * 1e-2)
        assert sol.success
        assert np.max(np.abs(sol.u[-1] - nonlinear_reference)) < 50 * rtol


@pytest.fixture(scope="module")
def heat_solutions():
    n, t1 = 100, 0.1
    rhs, x, lambda_1, rho = dirichlet_heat(n)
    prob = dxdt.ODEProblem(rhs, np.sin(np.pi * x), (0.0, t1))
    ts = np.linspace(0, t1, 7)
    sols = {m: dxdt.solve(prob, m(), rtol=1e-6, atol=1e-9, saveat=ts) for m in METHODS}
    tsit5 = dxdt.solve(prob, rtol=1e-6, atol=1e-9, saveat=[t1])
    exact = np.exp(lambda_1 * ts)[:, None] * np.sin(np.pi * x)
    return prob, sols, tsit5, exact, rho


@pytest.mark.parametrize("method_type", METHODS)
def test_heat_1d_against_exact_semi_discrete_solution(method_type, heat_solutions):
    """u0 = sin(pi x) is an eigenvector: u(t) = exp(lambda_1 t) sin(pi x_i) exactly."""
    prob, sols, tsit5, exact, rho = heat_solutions
    sol = sols[method_type]
    assert sol.success
    # ROCK4 crosses t1 = 0.1 in 8 steps of h rho ~ 900: between step ends the cubic Hermite
    # interpolant multiplies the damped stiff error components by ~h rho (docs/stiff.md);
    # its step ends are as accurate as the others'
    atol = 4e-5 if method_type is ROCK4 else 2e-5 * np.max(exact[-1]) + 1e-8
    np.testing.assert_allclose(sol.u, exact, atol=atol)
    steps = dxdt.solve(prob, method_type(), rtol=1e-6, atol=1e-9)
    lambda_1 = np.log(exact[1, 50] / exact[0, 50]) / (prob.tspan[1] / 6)
    np.testing.assert_allclose(steps.u, np.exp(lambda_1 * steps.t)[:, None] * prob.u0,
                               atol=2e-5 * np.max(exact[-1]) + 1e-8)
    # stability-bound Tsit5 takes many more f evaluations (ROCK2's first-order error
    # estimate makes it the most cautious of the three at tight tolerances)
    assert sol.stats["nfev"] < tsit5.stats["nfev"] / 2
    assert sol.stats["max_stages_used"] > 5 and sol.stats["n_eigen_est"] >= 1


@pytest.mark.parametrize("method_type", METHODS)
def test_dense_output_and_every_step(method_type, heat_solutions):
    prob = heat_solutions[0]
    lambda_1 = np.log(heat_solutions[3][1, 50] / heat_solutions[3][0, 50]) / (prob.tspan[1] / 6)
    sol = dxdt.solve(prob, method_type(), rtol=1e-6, atol=1e-9, dense=True)
    steps = dxdt.solve(prob, method_type(), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(sol.t, steps.t)
    ts = np.linspace(0, prob.tspan[1], 13)
    exact = np.exp(lambda_1 * ts)[:, None] * prob.u0
    np.testing.assert_allclose(sol(ts), exact, atol=5e-5)


@pytest.mark.parametrize("method_type", METHODS)
def test_backward_in_time_and_complex_states(method_type):
    """t1 < t0 with eigenvalues > 0 (decaying backwards): no warning, accurate; complex u."""
    rates = np.linspace(1.0, 400.0, 12)
    prob = dxdt.ODEProblem(lambda u, p, t: rates * u, np.ones(12), (1.0, 0.9))
    # ROCK2's first-order error estimate is far more accurate than asked (and slow)
    rtol = 1e-5 if method_type is ROCK2 else 1e-7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = dxdt.solve(prob, method_type(), rtol=rtol, atol=1e-12, saveat=[0.95, 0.9])
    np.testing.assert_allclose(sol.u, np.exp(-np.outer([0.05, 0.1], rates)), rtol=1e-4, atol=1e-10)
    lam = -(1 + 0.1j) * np.arange(1, 4)
    complex_prob = dxdt.ODEProblem(lambda u, p, t: lam * u, np.ones(3, complex), (0.0, 1.0))
    sol = dxdt.solve(complex_prob, method_type(), rtol=rtol, atol=1e-10, saveat=[1.0])
    assert sol.u.dtype == np.complex128
    np.testing.assert_allclose(sol.u[-1], np.exp(lam), atol=50 * rtol)


def test_power_iteration_finds_the_laplacian_spectral_radius():
    """Within 10% below the exact 4 (n+1)^2 sin^2(n pi / (2 (n+1))); with the safety
    factor an upper bound. u0 = sin(pi x) makes F_0 an eigenvector of the *smallest*
    eigenvalue, so a start from F_0 alone would find the wrong end of the spectrum."""
    for n in (50, 400):
        rhs, x, _, rho = dirichlet_heat(n)
        for u0 in (np.sin(np.pi * x), x * (1 - x)):
            ws = _Workspace(u0, power=True, hermite=False)
            rhs(ws.f0, ws.u, None, 0.0)
            sigma, cosine, converged, nfev = _power_iteration(rhs, ws, None, 0.0, u0.shape)
            assert converged and cosine < -0.99 and nfev <= 10
            assert 0.9 * rho < sigma <= rho * (1 + 1e-6)
            assert SAFETY * sigma > rho


# ------------------------------------------------------------------ eigen_est, stats


class CountingRHS:
    def __init__(self, rhs):
        self.rhs, self.calls = rhs, 0

    def __call__(self, du, u, p, t):
        self.calls += 1
        self.rhs(du, u, p, t)


@pytest.mark.parametrize("estimate", ["power", "float", "callable"])
def test_eigen_est_variants_and_nfev_counts_every_call(estimate):
    rhs, x, lambda_1, rho = dirichlet_heat(60)
    counting = CountingRHS(rhs)
    calls = []

    def user_estimate(u, p, t):
        calls.append(t)
        return rho

    eigen_est = {"power": None, "float": rho, "callable": user_estimate}[estimate]
    prob = dxdt.ODEProblem(counting, np.sin(np.pi * x), (0.0, 0.05))
    sol = dxdt.solve(prob, RKC(eigen_est=eigen_est), rtol=1e-6, saveat=[0.05])
    assert sol.success
    assert sol.stats["nfev"] == counting.calls  # f(u0) of input validation included
    np.testing.assert_allclose(sol.u[-1], np.exp(lambda_1 * 0.05) * prob.u0, atol=2e-5)
    if estimate == "callable":
        assert sol.stats["n_eigen_est"] == len(calls) >= 1
    if estimate == "float":
        assert sol.stats["n_eigen_est"] == 0


def test_eigen_est_returning_garbage_raises_naming_it():
    prob = dxdt.ODEProblem(lambda u, p, t: -u, np.ones(3), (0.0, 1.0))
    with pytest.raises(ValueError, match="eigen_est"):
        dxdt.solve(prob, RKC(eigen_est=lambda u, p, t: -1.0))
    with pytest.raises(TypeError, match="eigen_est"):
        dxdt.solve(prob, RKC(eigen_est=lambda u, p, t: "big"))


# ------------------------------------------------------------------ negative controls


def robertson(du, u, p, t):
    du[0] = -0.04 * u[0] + 1e4 * u[1] * u[2]
    du[2] = 3e7 * u[1] ** 2
    du[1] = -du[0] - du[2]


def test_robertson_warns_too_stiff_and_never_returns_silently_wrong():
    prob = dxdt.ODEProblem(robertson, np.array([1.0, 0.0, 0.0]), (0.0, 1e3))
    with pytest.warns(RuntimeWarning, match="too stiff"):
        sol = dxdt.solve(prob, RKC(max_stages=20), max_steps=2000)
    assert sol.status == "max_steps" and "max_steps" in sol.message
    assert np.all(np.isfinite(sol.u)) and sol.stats["max_stages_used"] == 20


def test_eigenvalues_near_the_imaginary_axis_warn_too_oscillatory():
    def rotation(du, u, p, t):
        du[0] = -1000.0 * u[1]
        du[1] = 1000.0 * u[0]

    prob = dxdt.ODEProblem(rotation, np.array([1.0, 0.0]), (0.0, 1.0))
    for method in (RKC(), ROCK2()):
        with pytest.warns(RuntimeWarning, match="too oscillatory"):
            sol = dxdt.solve(prob, method, max_steps=2000)
        assert not sol.success


def test_a_growing_mode_is_named_as_such_not_only_as_oscillation():
    """u' = u^2 has the real, positive eigenvalue 2u: the warning must not call it only
    "oscillatory" (the message named oscillation alone, which sent users looking for one)."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.multiply(u, u, out=du), np.ones(1), (0.0, 2.0))
    with pytest.warns(RuntimeWarning, match=r"positive real part, growing\) .*Tsit5/DP5 for oscillatory or growing"):
        dxdt.solve(prob, RKC())


def test_a_state_decaying_to_zero_does_not_break_the_power_iteration():
    """Fast diffusion decays the state below 1e-300: the power iteration's cosine divided
    by ``d |J v|``, which underflowed to 0 (ZeroDivisionError ended the solve, and an
    ensemble with it)."""
    def heat3(du, u, p, t):
        du[0] = p * (-2 * u[0] + u[1])
        du[1] = p * (u[0] - 2 * u[1] + u[2])
        du[2] = p * (u[1] - 2 * u[2])

    prob = dxdt.ODEProblem(heat3, np.array([1.0, 0.5, 0.2]), (0.0, 1.0), 1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # too stiff for 5 stages: warned, then goes on
        sol = dxdt.solve(prob, RKC(max_stages=5), saveat=[0.0, 0.5, 1.0])
    assert sol.success and np.all(np.abs(sol.u[1:]) < 1e-100)


def test_diffusion_problem_does_not_warn():
    rhs, x, _, _ = dirichlet_heat(50)
    prob = dxdt.ODEProblem(rhs, x * (1 - x), (0.0, 0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method_type in METHODS:
            assert dxdt.solve(prob, method_type()).success


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(min_stages=2.5), TypeError, "min_stages"),
    (dict(max_stages=True), TypeError, "max_stages"),
    (dict(min_stages=0), ValueError, "min_stages"),
    (dict(min_stages=10, max_stages=5), ValueError, "min_stages"),
    (dict(max_stages=5000), ValueError, "max_stages"),
    (dict(eigen_est=-1.0), ValueError, "eigen_est"),
    (dict(eigen_est=float("nan")), ValueError, "eigen_est"),
    (dict(eigen_est="fast"), TypeError, "eigen_est"),
])
@pytest.mark.parametrize("method_type", METHODS)
def test_bad_arguments_raise_naming_them(method_type, kwargs, error, name):
    with pytest.raises(error, match=name):
        method_type(**kwargs)


@pytest.mark.parametrize("method_type, s", [
    (RKC, 1), (RKL2, 4), (RKL2, 1), (ROCK2, 2), (ROCK2, 23), (ROCK2, 44), (ROCK2, 199),
    (ROCK4, 4), (ROCK4, 25), (ROCK4, 143), (ROCK4, 151),
])
def test_unsupported_forced_stage_count_raises(method_type, s):
    with pytest.raises(ValueError, match="forces a stage count it does not support"):
        forced(method_type, s)


@pytest.mark.parametrize("method_type, max_stages",
                         [(RKC, 1001), (RKL2, 1000), (ROCK2, 201), (ROCK4, 153)])
def test_max_stages_beyond_the_table_raises_naming_it(method_type, max_stages):
    method_type(max_stages=max_stages - 1)
    with pytest.raises(ValueError, match=f"max_stages={max_stages} exceeds"):
        method_type(max_stages=max_stages)


def test_methods_are_hashable_values_and_accepted_by_solve():
    assert RKC() == RKC() and hash(ROCK2(min_stages=5)) == hash(ROCK2(min_stages=5))
    assert isinstance(RKL2(), AbstractStabilized)
    assert RKC(eigen_est=3).eigen_est == 3.0
    with pytest.raises(TypeError):
        RKC(5)  # keyword-only arguments
    prob = dxdt.ODEProblem(lambda u, p, t: -u, np.ones(2), (0.0, 1.0))
    assert dxdt.solve(prob, RKC).success  # the class is accepted like Tsit5


# ------------------------------------------------------------------ allocation


N_ALLOC = 10_000  # one stray temporary (80 kB) stands out


def _heat_periodic(du, u, p, t):
    """Periodic diffusion with a uniform oscillating source, without temporaries."""
    np.subtract(u[2:], u[1:-1], out=du[1:-1])
    np.subtract(du[1:-1], u[1:-1], out=du[1:-1])
    np.add(du[1:-1], u[:-2], out=du[1:-1])
    du[0] = u[1] - 2 * u[0] + u[-1]
    du[-1] = u[0] - 2 * u[-1] + u[-2]
    np.multiply(du, p, out=du)
    np.add(du, 50.0 * np.cos(50.0 * t), out=du)


def _peak(method, t1):
    x = np.linspace(0, 1, N_ALLOC, endpoint=False)
    prob = dxdt.ODEProblem(_heat_periodic, 1 + np.sin(2 * np.pi * x), (0.0, t1), 2e4)
    tracemalloc.start()
    try:
        sol = dxdt.solve(prob, method, rtol=1e-4, atol=1e-7, saveat=[0.0, t1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sol.success
    return peak, sol.stats


@pytest.mark.parametrize("method_type", [RKC, ROCK2, ROCK4])
def test_memory_does_not_grow_with_steps_or_stages(method_type):
    t_long = 0.1 if method_type is ROCK4 else 0.03  # ROCK4's large steps: 13 of them
    _peak(method_type(), t_long)  # coefficient caches filled once per stage count
    short, stats_short = _peak(method_type(), 0.004)
    long, stats_long = _peak(method_type(), t_long)
    assert stats_long["naccept"] > 3 * stats_short["naccept"]
    assert stats_long["max_stages_used"] >= 10 and stats_long["n_eigen_est"] >= 1
    assert long - short < 16_384  # a few Python objects, not arrays
    # [A, u, F0, K, B] + scratch, u_new, f_new, err, |u|, |u_new|, scale + 3 power-iteration
    # vectors + 4 Hermite rows + 2 saved rows + f(u0) and the u0 copy of input validation,
    # + at most 3 temporaries of the initial step size (Hairer & Wanner's, shared)
    assert long < 27.5 * N_ALLOC * 8, long / (N_ALLOC * 8)


# ------------------------------------------------------------------ JAX paths


def reaction_diffusion(u, p, t):
    """Dirichlet heat with diffusivity p[0] and a cubic sink p[1] u^3 (translatable to JAX)."""
    n = u.shape[0]
    du = np.empty_like(u)
    du[1:-1] = u[2:] - 2 * u[1:-1] + u[:-2]
    du[0] = u[1] - 2 * u[0]
    du[-1] = u[-2] - 2 * u[-1]
    return du * ((n + 1) ** 2 * p[0]) - p[1] * u**3


@pytest.fixture(scope="module")
def rd_problem():
    x = np.arange(1, 21) / 21
    return dxdt.ODEProblem(reaction_diffusion, np.sin(np.pi * x) + 0.2 * np.sin(3 * np.pi * x),
                           (0.0, 0.05), np.array([1.0, 0.5]))


@pytest.mark.parametrize("method", [RKC(max_stages=30), ROCK4()], ids=repr)
def test_jax_backend_agrees_with_numpy(method, rd_problem):
    numpy_sol = dxdt.solve(rd_problem, method, rtol=1e-7, atol=1e-10, saveat=[0.025, 0.05])
    jax_sol = dxdt.solve(rd_problem, method, rtol=1e-7, atol=1e-10, saveat=[0.025, 0.05],
                         backend="jax")
    assert jax_sol.success and jax_sol.u.dtype == np.float64
    np.testing.assert_allclose(jax_sol.u, numpy_sol.u, atol=2e-6)
    assert abs(jax_sol.stats["naccept"] - numpy_sol.stats["naccept"]) <= 0.2 * numpy_sol.stats["naccept"]


def _sum_of_squares(u):
    return np.sum(u[-1] ** 2)


@pytest.fixture(scope="module")
def rd_gradient_reference(rd_problem):
    """Central finite differences of NumPy solves at tight tolerance."""
    def value(p):
        prob = dxdt.ODEProblem(reaction_diffusion, rd_problem.u0, rd_problem.tspan, p)
        sol = dxdt.solve(prob, RKC(), rtol=1e-11, atol=1e-13, saveat=[0.05])
        return _sum_of_squares(sol.u)

    eps = 1e-5
    p = rd_problem.p
    return np.array([(value(p + e) - value(p - e)) / (2 * eps) for e in np.eye(2) * eps])


@pytest.mark.parametrize("method, options", [
    (ROCK2(), dict(mode="forward")),
    (RKC(max_stages=30), dict(mode="reverse", adjoint="interpolating")),
    (ROCK4(), dict(mode="reverse", adjoint="checkpoint")),  # reverse through the chunked scan
], ids=["ROCK2-forward", "RKC-interpolating", "ROCK4-checkpoint"])
def test_gradient_through_stabilized_solve_matches_finite_differences(
        method, options, rd_problem, rd_gradient_reference):
    from dxdt import sensitivity as sens

    grad = sens.gradient(_sum_of_squares, rd_problem, method, saveat=[0.05], rtol=1e-8,
                         atol=1e-10, **options)
    np.testing.assert_allclose(grad, rd_gradient_reference, rtol=1e-5)



def test_auto_mode_takes_the_adjoint_through_a_stabilized_method(rd_problem, rd_gradient_reference):
    """Two parameters: by dimensions (``choose_mode``) forward mode, but a stabilized
    method's forward sensitivities cost far more (``reverse_for_stabilized``): the
    operator takes the adjoint, says why, and the gradient is accurate. Tsit5 keeps
    forward mode; so does a Jacobian of the trajectory (many outputs)."""
    from dxdt import sensitivity as sens

    assert sens.choose_mode(rd_problem)[0] == "forward"
    prep = sens.prepare("gradient", _sum_of_squares, rd_problem, ROCK2(), saveat=[0.05], rtol=1e-8,
                        atol=1e-10)
    assert prep.mode == "reverse" and "stabilized method" in prep.reason
    # its dense output is cubic Hermite data (4 vectors a step), not max_stages + 1 stages:
    # counted as stages, the memory guard saw 634 MiB here and went back to forward mode
    assert "MiB" not in prep.reason
    np.testing.assert_allclose(prep(rd_problem.p), rd_gradient_reference, rtol=1e-5)
    assert sens.prepare("hvp", _sum_of_squares, rd_problem, ROCK2(), saveat=[0.05]).mode == "forward-over-reverse"
    assert sens.prepare("gradient", _sum_of_squares, rd_problem, saveat=[0.05]).mode == "forward"
    assert sens.prepare("jacobian", rd_problem, ROCK2(), saveat=[0.05]).mode == "forward"
    explicit = sens.prepare("gradient", _sum_of_squares, rd_problem, ROCK2(), saveat=[0.05], mode="forward")
    assert explicit.mode == "forward"


@pytest.mark.parametrize("options", [dict(mode="forward"),
                                     dict(mode="reverse", adjoint="interpolating"),
                                     dict(mode="reverse", adjoint="checkpoint")],
                         ids=["forward", "interpolating", "checkpoint"])
def test_sensitivities_use_the_users_eigen_est(options, rd_problem, rd_gradient_reference):
    """A callable ``eigen_est`` replaces the power iteration inside the sensitivity solves
    too (it is traced into the operator, as into ``solve(backend="jax")``), and the
    gradient stays accurate; the augmented systems share the spectrum of df/du."""
    from dxdt import sensitivity as sens

    n = rd_problem.u0.size
    calls = []

    def bound(u, p, t):  # Gershgorin bound of the Laplacian plus the reaction's |df/du|
        calls.append(t)
        return 4.0 * (n + 1) ** 2 * p[0] + 3.0

    grad = sens.gradient(_sum_of_squares, rd_problem, RKC(max_stages=60, eigen_est=bound),
                         saveat=[0.05], rtol=1e-8, atol=1e-10, **options)
    assert calls, "eigen_est was not used by the sensitivity solves"
    np.testing.assert_allclose(grad, rd_gradient_reference, rtol=1e-5)


# ------------------------------------------------------------------ guidance


def test_stability_bound_tsit5_solve_suggests_a_stabilized_method():
    rhs, x, _, _ = dirichlet_heat(100)
    prob = dxdt.ODEProblem(rhs, x * (1 - x), (0.0, 0.1))
    sol = dxdt.solve(prob, rtol=1e-6, saveat=[0.1])
    assert sol.success and "ROCK2()" in sol.message and "limited by stability" in sol.message
    assert "ROCK2()" not in dxdt.solve(prob, ROCK2(), rtol=1e-6, saveat=[0.1]).message


def test_the_stability_note_counts_its_f_calls_and_keeps_fs_dtype():
    """The note's power iteration calls f: nfev counts those calls (it left out up to 51),
    the message's count agrees, and a float32 problem's f never sees float64 (it did: the
    check ran in float64; float32 solves now get no note)."""
    for dtype in (np.float64, np.float32):
        calls, dtypes = [0], set()

        def stiff(du, u, p, t):
            calls[0] += 1
            dtypes.add(u.dtype)
            du[...] = -1000.0 * u

        sol = dxdt.solve(dxdt.ODEProblem(stiff, np.ones(2, dtype), (0.0, 5.0)), Tsit5())
        assert sol.stats["nfev"] == calls[0] and f"({calls[0]} f evaluations)" in sol.message
        assert dtypes == {np.dtype(dtype)}
        assert ("limited by stability" in sol.message) == (dtype == np.float64)


def test_the_stability_note_never_fails_or_warns_for_a_solve_that_succeeded():
    """The note's power iteration calls f near the final state, at states the solve never
    visits: an entry held at 0 pushed below it. A successful solve then raised the user's
    own domain error (its data lost) or warned from sqrt of a negative entry."""
    calls = [0]

    def domain_checked(du, u, p, t):
        calls[0] += 1
        if u[2] < 0:
            raise ValueError(f"negative concentration u[2]={u[2]}")
        du[0] = u[1]
        du[1] = -u[0]
        du[2] = -np.sqrt(u[2])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = dxdt.solve(dxdt.ODEProblem(domain_checked, np.array([1.0, 0.0, 0.0]), (0.0, 100.0)), Tsit5(),
                         rtol=1e-10, atol=1e-12)
    assert sol.success and sol.stats["naccept"] > 500 and sol.stats["nfev"] == calls[0]
    np.testing.assert_allclose(sol.u[-1], [np.cos(100.0), -np.sin(100.0), 0.0], atol=1e-7)


def test_accuracy_bound_solve_gets_no_note():
    from dxdt.problems import lorenz

    sol = dxdt.solve(lorenz(), rtol=1e-8)
    assert sol.success and sol.stats["naccept"] > 500 and "stability" not in sol.message


# ------------------------------------------------------------------ the transcription tool


def test_transcription_tool_parses_julia_tables_and_rejects_a_wrong_digit():
    """tools/transcribe_rock_tables.py on a Julia source written like OrdinaryDiffEq.jl's
    (first 4 ROCK2 degrees): the numbers come back as printed; one digit of one coefficient
    changed in the 8th significant place fails the order check, naming the degree."""
    import importlib.util
    from pathlib import Path

    from dxdt.solvers import _rock_tables as tables

    path = Path(__file__).resolve().parents[1] / "tools" / "transcribe_rock_tables.py"
    spec = importlib.util.spec_from_file_location("transcribe_rock_tables", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    degrees = tables.ROCK2_DEGREES[:4]
    recf = [x for row in tables.ROCK2_RECURRENCE[:4] for x in row]
    def column(values, suffix=""):
        return "".join(f"        {x!r}{suffix},\n" for x in values)

    sigma, tau = zip(*tables.ROCK2_FINISH[:4])
    source = ("function ROCK2ConstantCache(::Type{T}, ::Type{T2}, zprev) where {T, T2}\n"
              f"    ms = (\n        {', '.join(map(str, degrees))},\n    )\n"
              f"    fp1 = (\n{column(sigma, 'e+0')}    )\n    fp2 = (\n{column(tau, 'e+0')}    )\n"
              f"    recf = [\n{column(recf)}    ]\nend\n")
    parsed = tool.rock2_tables(source)
    assert parsed["ROCK2_DEGREES"] == degrees
    assert parsed["ROCK2_RECURRENCE"] == tables.ROCK2_RECURRENCE[:4]
    assert parsed["ROCK2_FINISH"] == tables.ROCK2_FINISH[:4]
    printed = repr(recf[5])  # 0.07776456841673993, of degree 3
    wrong = printed[:10] + str((int(printed[10]) + 1) % 10) + printed[11:]
    assert 1e-9 < abs(float(wrong) / recf[5] - 1) < 1e-7
    with pytest.raises(ValueError, match="ROCK2 degree 3"):
        tool.rock2_tables(source.replace(repr(recf[5]), wrong))


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("method", [cls() for cls in METHODS], ids=repr)
def test_a_step_ending_where_f_turns_nonfinite_is_not_accepted(method, backend):
    """f is NaN just after t = 0.02 while the state there is finite: a step that ended
    past 0.02 with a finite state but NaN f(u_{n+1}) was accepted, and the Hermite rows
    saved inside it came out NaN (``"nonfinite"`` with NaN partial data)."""
    n = 20
    A = (np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)) * (n + 1) ** 2

    def f(du, u, p, t):
        np.matmul(A, u, out=du)
        du[3] = np.where(t > 0.02, np.nan, du[3])

    u0 = np.sin(np.pi * np.arange(1, n + 1) / (n + 1))
    prob = dxdt.ODEProblem(f, u0, (0.0, 0.05))
    ts = np.linspace(0.0, 0.05, 11)
    for options in (dict(), dict(dt=1e-3, adaptive=False)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = dxdt.solve(prob, method, saveat=ts, backend=backend, **options)
        assert sol.status == "nonfinite"
        assert np.isfinite(sol.u).all() and 4 <= len(sol.t) <= 5  # rows up to 0.015 or 0.02
        exact = np.exp(-(2 - 2 * np.cos(np.pi / (n + 1))) * (n + 1) ** 2 * sol.t)[:, None] * u0
        np.testing.assert_allclose(sol.u, exact, atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_fixed_steps_with_an_eigen_est_far_below_the_spectral_radius_warn(backend):
    """Adaptive steps reject what an underestimate makes unstable; fixed steps returned
    "success" with max|u| ~ 1e137 (exact 0.63), silently."""
    n = 40
    A = (np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)) * (n + 1) ** 2
    rho = 4.0 * (n + 1) ** 2
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.matmul(A, u, out=du),
                           np.sin(np.pi * np.arange(1, n + 1) / (n + 1)), (0.0, 0.05))
    with pytest.warns(RuntimeWarning, match="eigen_est gives 67.24 at t0=0 but a power iteration"):
        dxdt.solve(prob, RKC(eigen_est=rho / 100), dt=1e-3, adaptive=False, backend=backend)
    with pytest.warns(RuntimeWarning, match="power iteration on df/du finds a spectral radius of 6.6"):
        dxdt.solve(prob, ROCK2(eigen_est=lambda u, p, t: rho / 100), dt=1e-3, adaptive=False, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an upper bound is silent
        sol = dxdt.solve(prob, RKC(eigen_est=rho), dt=1e-3, adaptive=False, backend=backend)
    exact = np.exp(-(2 - 2 * np.cos(np.pi / (n + 1))) * (n + 1) ** 2 * 0.05) * prob.u0
    np.testing.assert_allclose(sol.u[-1], exact, atol=1e-4)
