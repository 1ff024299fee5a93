"""Sensitivity operators against exact derivatives (linear ODEs, ``expm_frechet``), finite
differences and each other; preparation, mode choice, failure paths and guarantees."""

import warnings

import numpy as np
import pytest

import dxdt
from dxdt import problems
from dxdt import sensitivity as sens
from dxdt.solvers import Euler, Tsit5

TIGHT = dict(rtol=1e-10, atol=1e-12)
STRATEGIES = [  # (mode, adjoint)
    ("forward", "interpolating"),
    ("reverse", "interpolating"),
    ("reverse", "checkpoint"),
    ("reverse", "backsolve"),
]


def sq_norm_final(u):
    return np.sum(u[-1] ** 2)


# --- linear ODE: exact first and second derivatives -------------------------------------

@pytest.fixture(scope="module")
def linear():
    A = np.array([[-0.8, 0.6, 0.1], [-0.5, -0.4, 0.3], [0.2, -0.1, -1.1]])
    return problems.linear(A, np.array([1.0, -0.5, 0.7]), 1.5)


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_linear_gradient_is_exact(linear, mode, adjoint):
    exact_A, exact_u0 = linear.exact.gradient_sq_norm(1.5)
    g_u0, g_A = sens.gradient(sq_norm_final, linear, Tsit5(), wrt=("u0", "p"), mode=mode,
                              adjoint=adjoint, **TIGHT)
    np.testing.assert_allclose(g_A, exact_A, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(g_u0, exact_u0, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_linear_jacobian_is_exact(linear, mode):
    ts = [0.5, 1.5]
    J_u0 = sens.jacobian(linear, Tsit5(), wrt="u0", saveat=ts, mode=mode, **TIGHT)
    J_A = sens.jacobian(linear, Tsit5(), wrt="p", saveat=ts, mode=mode, **TIGHT)
    assert J_u0.shape == (2, 3, 3) and J_A.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(J_u0, linear.exact.jacobian_u0(ts), atol=1e-9)
    np.testing.assert_allclose(J_A, linear.exact.jacobian_A(ts), atol=1e-9)


def exact_gradient_fd(linear, direction, eps=1e-5):
    """Central difference of the exact gradient w.r.t. A along ``direction``."""
    plus = problems.linear(linear.p + eps * direction, linear.u0, 1.5).exact.gradient_sq_norm(1.5)[0]
    minus = problems.linear(linear.p - eps * direction, linear.u0, 1.5).exact.gradient_sq_norm(1.5)[0]
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_linear_hvp_and_hessian(linear, mode):
    v = np.arange(9.0).reshape(3, 3) / 10 - 0.3
    hv = sens.hvp(sq_norm_final, linear, v, Tsit5(), mode=mode, **TIGHT)
    np.testing.assert_allclose(hv, exact_gradient_fd(linear, v), rtol=1e-6, atol=1e-8)
    H = sens.hessian(sq_norm_final, linear, Tsit5(), mode=mode, **TIGHT)
    assert H.shape == (9, 9)
    np.testing.assert_allclose(H, H.T, atol=1e-10)
    np.testing.assert_allclose(H @ v.ravel(), hv.ravel(), rtol=1e-7, atol=1e-9)


def test_hessian_wrt_u0_is_exact(linear):
    E = linear.exact.jacobian_u0(1.5)
    H = sens.hessian(sq_norm_final, linear, Tsit5(), wrt="u0", **TIGHT)
    np.testing.assert_allclose(H, 2 * E.T @ E, rtol=1e-8)


# --- every strategy on nonlinear problems, against finite differences --------------------

def central_fd(loss, prob, wrt, eps=1e-6):
    """Finite-difference gradient of ``loss(solve(prob))`` w.r.t. ``u0`` or an array ``p``."""
    ts = np.array([prob.tspan[1]])
    base = prob.u0 if wrt == "u0" else np.asarray(prob.p, dtype=float)
    grad = np.zeros(base.shape)
    for i in np.ndindex(base.shape):
        values = []
        for sign in (1, -1):
            x = base.copy()
            x[i] += sign * eps * max(1.0, abs(base[i]))
            new = prob.remake(u0=x) if wrt == "u0" else prob.remake(p=x)
            values.append(loss(dxdt.solve(new, Tsit5(), saveat=ts, rtol=1e-12, atol=1e-14).u))
        grad[i] = (values[0] - values[1]) / (2 * eps * max(1.0, abs(base[i])))
    return grad


NONLINEAR = {
    "lotka_volterra": lambda: problems.lotka_volterra(tspan=(0.0, 5.0)),
    "lorenz": lambda: problems.lorenz(tspan=(0.0, 1.0)),
    "gray_scott": lambda: problems.gray_scott(n=8, tspan=(0.0, 10.0)),
    "heat_1d": lambda: problems.heat_1d(n=16, tspan=(0.0, 0.5)),
}


# integrating these backwards amplifies errors by far more than the tolerance: diffusion
# (Gray-Scott at this size; heat_1d(16) is too coarse to notice) and Lorenz's strongly contracting direction (exp(14.6 t) backwards)
ILL_POSED_BACKWARDS = ("gray_scott", "lorenz")


def weighted_loss(u):
    w = np.linspace(0.5, 1.5, u[-1].size).reshape(u[-1].shape)
    return np.sum(w * u[-1] ** 2)


@pytest.fixture(scope="module", params=sorted(NONLINEAR))
def nonlinear(request):
    prob = NONLINEAR[request.param]()
    return request.param, prob, {w: central_fd(weighted_loss, prob, w) for w in ("p", "u0")}


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_strategies_agree_with_finite_differences(nonlinear, mode, adjoint):
    name, prob, fd = nonlinear
    if adjoint == "backsolve" and name in ILL_POSED_BACKWARDS:
        with pytest.raises(dxdt.SolverError, match="adjoint='interpolating'"):
            sens.gradient(weighted_loss, prob, Tsit5(), wrt=("u0", "p"), mode=mode,
                          adjoint=adjoint, rtol=1e-9, atol=1e-11)
        return
    g_u0, g_p = sens.gradient(weighted_loss, prob, Tsit5(), wrt=("u0", "p"), mode=mode,
                              adjoint=adjoint, rtol=1e-9, atol=1e-11)
    for got, want in ((g_u0, fd["u0"]), (g_p, fd["p"])):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=1e-4)


def test_tuple_and_dict_parameters():
    def lv_tuple(du, u, p, t):
        (a, b), (c, d) = p
        du[0] = a * u[0] - b * u[0] * u[1]
        du[1] = -c * u[1] + d * u[0] * u[1]

    def lv_dict(du, u, p, t):
        du[0] = p["prey"][0] * u[0] - p["prey"][1] * u[0] * u[1]
        du[1] = -p["pred"] * u[1] + p["d"] * u[0] * u[1]

    ref_prob = problems.lotka_volterra(tspan=(0.0, 3.0))
    ref = sens.gradient(weighted_loss, ref_prob, Tsit5(), **TIGHT)
    tup = dxdt.ODEProblem(lv_tuple, ref_prob.u0, (0.0, 3.0), (np.array([1.5, 1.0]), np.array([3.0, 1.0])))
    g = sens.gradient(weighted_loss, tup, Tsit5(), **TIGHT)
    assert isinstance(g, tuple) and len(g) == 2
    np.testing.assert_allclose(np.concatenate(g), ref, rtol=1e-7)
    dct = dxdt.ODEProblem(lv_dict, ref_prob.u0, (0.0, 3.0), {"prey": np.array([1.5, 1.0]), "pred": 3.0, "d": 1.0})
    for mode in ("forward", "reverse"):
        g = sens.gradient(weighted_loss, dct, Tsit5(), mode=mode, **TIGHT)
        assert set(g) == {"prey", "pred", "d"} and np.shape(g["pred"]) == ()
        np.testing.assert_allclose([*g["prey"], g["pred"], g["d"]], ref, rtol=1e-7)


def test_loss_with_parameters_and_saveat():
    """``loss(u, p)`` sees p (its direct derivative counts) and the whole saved trajectory."""
    prob = problems.lotka_volterra(tspan=(0.0, 2.0))
    ts = np.linspace(0.5, 2.0, 4)
    loss = lambda u, p: np.sum(u[:, 0] * u[:, 1]) + np.sum(p ** 2)  # noqa: E731
    got = sens.gradient(loss, prob, Tsit5(), saveat=ts, **TIGHT)
    eps, want = 1e-6, np.zeros(4)
    for i in range(4):
        vals = []
        for s in (1, -1):
            p = prob.p.copy()
            p[i] += s * eps
            u = dxdt.solve(prob.remake(p=p), saveat=ts, rtol=1e-12, atol=1e-14).u
            vals.append(loss(u, p))
        want[i] = (vals[0] - vals[1]) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    value, grad = sens.value_and_gradient(loss, prob, Tsit5(), saveat=ts, **TIGHT)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, loss(dxdt.solve(prob, saveat=ts, rtol=1e-12, atol=1e-14).u, prob.p), rtol=1e-8)


# --- accuracy at default tolerances on the stiff-ish PDE --------------------------------

@pytest.fixture(scope="module")
def heat256():
    prob = problems.heat_1d(n=256)
    data = np.sin(3 * np.linspace(0, 1, 256))

    def loss(u):
        return np.sum((u[-1] - data) ** 2)

    reference = sens.gradient(loss, prob, Tsit5(), mode="reverse", rtol=1e-11, atol=1e-13)
    return prob, loss, reference


def test_auto_gradient_accurate_at_default_tolerance(heat256):
    prob, loss, reference = heat256
    prep = sens.prepare("gradient", loss, prob, Tsit5())
    assert prep.mode == "reverse" and prep.adjoint == "interpolating"
    got = prep(prob.p)
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 1e-3


def test_checkpoint_warns_where_it_cannot_vouch(heat256):
    prob, loss, reference = heat256
    with pytest.warns(RuntimeWarning, match="cannot vouch"):
        got = sens.gradient(loss, prob, Tsit5(), mode="reverse", adjoint="checkpoint")
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) > 1e-3  # why it warns


def test_checkpoint_silent_where_accurate():
    prob = problems.lotka_volterra(tspan=(0.0, 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sens.gradient(weighted_loss, prob, Tsit5(), mode="reverse", adjoint="checkpoint")


def test_backsolve_raises_on_ill_posed_backward_problem():
    prob = problems.heat_1d(n=128)  # backwards, the fastest mode grows like exp(100 t)
    with pytest.raises(dxdt.SolverError, match="interpolating"):
        sens.gradient(weighted_loss, prob, Tsit5(), mode="reverse", adjoint="backsolve")


# --- preparation --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lv_prepared():
    prob = problems.lotka_volterra(tspan=(0.0, 5.0))
    return prob, sens.prepare("value_and_gradient", weighted_loss, prob, Tsit5(), **TIGHT)


def test_prepared_at_one_point_evaluated_at_another(lv_prepared):
    prob, prep = lv_prepared
    assert prep.mode == "forward"
    for scale in (0.9, 1.05, 1.2):
        p = prob.p * scale
        value, grad = prep(p)
        direct_value, direct_grad = sens.value_and_gradient(weighted_loss, prob.remake(p=p), Tsit5(), **TIGHT)
        assert value == pytest.approx(direct_value, rel=1e-12)
        np.testing.assert_allclose(grad, direct_grad, rtol=1e-10)
    assert prep.n_traces == 1


def test_prepared_calls_are_identical_and_pure(lv_prepared):
    prob, prep = lv_prepared
    p = prob.p.copy()
    first, second = prep(p), prep(p)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(p, prob.p)
    assert first[1].dtype == np.float64


def test_prepared_rejects_other_shapes(lv_prepared):
    prob, prep = lv_prepared
    with pytest.raises(ValueError, match="shape"):
        prep(np.ones(3))
    with pytest.raises(ValueError, match="structure"):
        prep((np.ones(2), np.ones(2)))


def test_prepared_hvp_and_jacobian_modes():
    prob = problems.heat_1d(n=24, tspan=(0.0, 0.3))
    hvp = sens.prepare("hvp", weighted_loss, prob, Tsit5())
    assert hvp.mode == "forward-over-reverse"
    small = problems.lotka_volterra(tspan=(0.0, 2.0))
    assert sens.prepare("hessian", weighted_loss, small, Tsit5()).mode == "forward-over-forward"
    v = np.linspace(-1, 1, 24)
    hv = hvp(prob.p, v)
    eps = 1e-6
    gp = sens.gradient(weighted_loss, prob.remake(p=prob.p + eps * v), Tsit5(), rtol=1e-10, atol=1e-12)
    gm = sens.gradient(weighted_loss, prob.remake(p=prob.p - eps * v), Tsit5(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, (gp - gm) / (2 * eps), rtol=1e-3, atol=1e-3 * np.abs(hv).max())
    assert hvp.n_traces == 1


# --- mode choice ----------------------------------------------------------------------------

def test_choose_mode_by_dimensions():
    mode, reason = sens.choose_mode(problems.gray_scott(n=64), wrt="p")
    assert mode == "forward" and "4 target entries" in reason and "8192 states" in reason
    mode, reason = sens.choose_mode(problems.heat_1d(n=256), wrt="p")
    assert mode == "reverse" and "256 target entries" in reason
    assert sens.choose_mode(problems.heat_1d(n=256), wrt="p", order=2)[0] == "forward-over-reverse"
    assert sens.choose_mode(problems.lorenz(), wrt="u0", order=2)[0] == "forward-over-forward"
    assert sens.choose_mode(problems.heat_1d(n=256), n_outputs=256)[0] == "forward"


# --- failures and bad input ------------------------------------------------------------------

def test_solve_failure_raises_solver_error():
    prob = problems.lotka_volterra()
    with pytest.raises(dxdt.SolverError, match="max_steps"):
        sens.gradient(weighted_loss, prob, Tsit5(), max_steps=5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"wrt": "q"}, ValueError, "wrt"),
        ({"mode": "sideways"}, ValueError, "mode"),
        ({"adjoint": "magic"}, ValueError, "adjoint"),
        ({"rtol": -1.0}, ValueError, "rtol"),
        ({"saveat": [20.0]}, ValueError, "saveat"),
        ({"method": Euler()}, ValueError, "adaptive"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        sens.gradient(weighted_loss, problems.lotka_volterra(), **kwargs)


def test_bad_loss():
    prob = problems.lotka_volterra()
    with pytest.raises(TypeError, match="loss"):
        sens.gradient(None, prob)
    with pytest.raises(ValueError, match="scalar"):
        sens.gradient(lambda u: u[-1], prob)
    with pytest.raises(ValueError, match="no parameters"):
        sens.gradient(weighted_loss, dxdt.ODEProblem(lambda du, u, p, t: np.negative(u, out=du), [1.0], (0, 1)))


def test_hvp_with_discrete_adjoint_is_refused():
    with pytest.raises(ValueError, match="forward-differentiable"):
        sens.hvp(weighted_loss, problems.lotka_volterra(), np.ones(4), mode="reverse", adjoint="checkpoint")
