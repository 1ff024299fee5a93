"""Sensitivity operators against exact derivatives of linear ODEs (``expm_frechet``)."""


import numpy as np
import pytest
from dxdt import problems, solvers
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5
from references import STRATEGIES, TIGHT, sq_norm_final

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


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_linear_jacobian_is_exact(linear, mode, adjoint):
    ts = [0.5, 1.5]
    J_u0 = sens.jacobian(linear, Tsit5(), wrt="u0", saveat=ts, mode=mode, adjoint=adjoint, **TIGHT)
    J_A = sens.jacobian(linear, Tsit5(), wrt="p", saveat=ts, mode=mode, adjoint=adjoint, **TIGHT)
    assert J_u0.shape == (2, 3, 3) and J_A.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(J_u0, linear.exact.jacobian_u0(ts), atol=1e-9)
    np.testing.assert_allclose(J_A, linear.exact.jacobian_A(ts), atol=1e-9)


@pytest.mark.parametrize("method", ["BS3", "DP5", "Vern7"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_linear_jacobian_is_exact_for_every_adaptive_method(linear, method, mode):
    """Save times inside the span read each method's dense output, for a state carried with
    its tangents (forward) or the adjoint's (reverse); Vern7's own interpolant, the one not
    shipped by diffrax, once failed on such a pytree state."""
    ts = [0.4, 1.1, 1.5]
    J_u0 = sens.jacobian(linear, getattr(solvers, method)(), wrt="u0", saveat=ts, mode=mode, **TIGHT)
    np.testing.assert_allclose(J_u0, linear.exact.jacobian_u0(ts), atol=1e-8)


SMALL = 1e-9  # a loss this many times smaller: its cotangents all lie below atol


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_gradient_accuracy_does_not_depend_on_the_loss_scale(linear, mode, adjoint):
    """``c L`` has the gradient ``c dL/dx`` to the same relative accuracy for any ``c``:
    the adjoint is solved for unit cotangents (a ``1e-9 L`` once came out 1e-6 off)."""
    exact_A, exact_u0 = linear.exact.gradient_sq_norm(1.5)
    g_u0, g_A = sens.gradient(lambda u: SMALL * sq_norm_final(u), linear, Tsit5(), wrt=("u0", "p"),
                              mode=mode, adjoint=adjoint, **TIGHT)
    np.testing.assert_allclose(g_A / SMALL, exact_A, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(g_u0 / SMALL, exact_u0, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_adjoint_of_a_loss_near_the_float_range_limits_is_finite_and_exact(linear, scale):
    exact_A, _ = linear.exact.gradient_sq_norm(1.5)
    g_A = sens.gradient(lambda u: scale * sq_norm_final(u), linear, Tsit5(), mode="reverse", **TIGHT)
    np.testing.assert_allclose(g_A / scale, exact_A, rtol=1e-7, atol=1e-9)


def test_hvp_accuracy_does_not_depend_on_the_loss_scale(linear):
    v = np.arange(9.0).reshape(3, 3) / 10 - 0.3
    hv = sens.hvp(lambda u: SMALL * sq_norm_final(u), linear, v, Tsit5(), mode="reverse", **TIGHT)
    np.testing.assert_allclose(hv / SMALL, exact_gradient_fd(linear, v), rtol=1e-6, atol=1e-8)


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


@pytest.mark.parametrize("adjoint", ["interpolating", "backsolve"])
def test_adjoint_jumps_at_every_save_time(linear, adjoint):
    """A loss reading ``u`` at t0, at a repeated interior time, at others and at t1: the
    adjoint's jumps (and its skipped zero-length intervals, at t1 and between the
    repeated times) against the exact Jacobians."""
    ts = np.array([0.0, 0.3, 0.3, 0.9, 1.2, 1.5])
    w = np.linspace(-1.0, 1.0, ts.size * 3).reshape(ts.size, 3)
    g_u0, g_A = sens.gradient(lambda U: np.sum(w * U), linear, Tsit5(), wrt=("u0", "p"),
                              saveat=ts, mode="reverse", adjoint=adjoint, **TIGHT)
    exact_u0 = np.einsum("ki,kij->j", w, linear.exact.jacobian_u0(ts))
    exact_A = np.einsum("ki,kiab->ab", w, linear.exact.jacobian_A(ts))
    np.testing.assert_allclose(g_u0, exact_u0, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(g_A, exact_A, rtol=1e-7, atol=1e-9)
