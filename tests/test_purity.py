"""API.md: "the user's f, its closure arrays and prob are never modified" by an operator.

Every problem in ``dxdt.problems`` goes through the reverse-mode interpolating gradient
(which sizes its dense buffer with a counting solve) with respect to ``(u0, p)``; every
user array reachable from ``f`` and every field of the problem must be bitwise unchanged. The closure-buffer model also goes through every
operator and strategy.
"""

import jax
import numpy as np
import pytest

import dxdt
from dxdt import problems
from dxdt import sensitivity as sens
from dxdt.sensitivity.translate._fingerprint import reach
from dxdt.solvers import Tsit5

PROBLEMS = {
    "lotka_volterra": lambda: problems.lotka_volterra(tspan=(0.0, 1.0)),
    "lorenz": lambda: problems.lorenz(tspan=(0.0, 0.2)),
    "fitzhugh_nagumo": lambda: problems.fitzhugh_nagumo(tspan=(0.0, 1.0)),
    "gray_scott": lambda: problems.gray_scott(n=6, tspan=(0.0, 2.0)),
    "gierer_meinhardt": lambda: problems.gierer_meinhardt(n=6, tspan=(0.0, 0.2)),
    "brusselator": lambda: problems.brusselator(n=4, tspan=(0.0, 0.01)),
    "heat_1d": lambda: problems.heat_1d(n=8, tspan=(0.0, 0.01)),
    "linear": lambda: problems.linear(np.array([[-1.0, 0.5], [0.0, -2.0]]), np.array([1.0, 2.0]), 0.5),
}


def user_arrays(prob):
    """Every array the user holds: closure/global arrays of f, u0 and the leaves of p."""
    arrays = dict(reach(prob.f).roots)
    arrays["u0"] = prob.u0
    for i, leaf in enumerate(jax.tree_util.tree_leaves(prob.p)):
        arrays[f"p leaf {i}"] = leaf
    return arrays


def snapshot(prob):
    return {label: np.array(array, copy=True) for label, array in user_arrays(prob).items()}


def assert_unchanged(prob, before):
    now = user_arrays(prob)
    assert now.keys() == before.keys()
    for label, array in before.items():
        assert np.asarray(now[label]).tobytes() == array.tobytes(), f"{label} was modified"


def salted(prob):
    """Fill the closure buffers with a marker so that any write shows."""
    for array in reach(prob.f).roots.values():
        if array.flags.writeable and array.dtype.kind == "f":
            array[...] = np.pi
    return prob


def quadratic(u):
    return np.sum(u[-1] ** 2)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_reverse_gradient_leaves_user_arrays_unchanged(name):
    prob = PROBLEMS[name]()
    dxdt.solve(prob, Tsit5())  # the buffers hold what a NumPy solve leaves: realistic content
    before = snapshot(prob)
    wrt = "u0" if prob.p is None or isinstance(prob.p, (dict, tuple, list)) else ("u0", "p")
    grad = sens.gradient(quadratic, prob, Tsit5(), wrt=wrt, mode="reverse", rtol=1e-5, atol=1e-7)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))
    assert_unchanged(prob, before)


def closure_model():
    """du = -k * (u - mean(u)) with the work done in two preallocated closure buffers."""
    centred = np.zeros(3)
    scratch = np.zeros(3)

    def f(du, u, p, t):
        np.subtract(u, u.mean(), out=centred)
        np.multiply(p, centred, out=scratch)
        np.negative(scratch, out=du)
        du -= 0.1 * u

    return dxdt.ODEProblem(f, np.array([1.0, 2.0, 4.0]), (0.0, 0.5), p=np.array([1.0, 2.0, 3.0]))


CASES = [("gradient", "forward", "interpolating"), ("value_and_gradient", "reverse", "interpolating"),
         ("gradient", "reverse", "backsolve"), ("gradient", "reverse", "checkpoint"),
         ("jacobian", "forward", "interpolating"), ("hvp", "reverse", "interpolating"),
         ("hessian", "forward", "interpolating")]


@pytest.mark.parametrize("op, mode, adjoint", CASES)
def test_every_operator_and_strategy_leaves_closure_buffers_unchanged(op, mode, adjoint):
    prob = salted(closure_model())
    before = snapshot(prob)
    kwargs = dict(mode=mode, adjoint=adjoint, rtol=1e-6, atol=1e-8)
    if op == "jacobian":
        sens.jacobian(prob, Tsit5(), **kwargs)
    elif op == "hvp":
        sens.hvp(quadratic, prob, np.ones(3), Tsit5(), **kwargs)
    else:
        getattr(sens, op)(quadratic, prob, Tsit5(), **kwargs)
    assert_unchanged(prob, before)


_LAZY: dict = {}  # work buffers allocated on the first call of f
_LAST = None  # f keeps its last state here (a debugging habit)


def _lazy_and_global(du, u, p, t):
    global _LAST
    work = _LAZY.get("work")
    if work is None:
        work = _LAZY["work"] = np.empty(u.shape)
    np.multiply(u, u, out=work)
    _LAST = u.copy()
    du[:] = -p[0] * work


def test_translation_leaves_module_state_alone():
    """A trace of ``f`` runs on copies of the dicts and lists ``f`` reaches and with its own
    globals: a buffer allocated lazily into a module-level dict, or a global assigned by
    ``f``, no longer ends up holding a traced array in the user's module."""
    prob = dxdt.ODEProblem(_lazy_and_global, np.array([1.0, 0.5]), (0.0, 1.0), np.array([0.7]))
    grad = sens.gradient(lambda u: np.sum(u[-1]), prob, Tsit5(), rtol=1e-10, atol=1e-12)
    assert _LAZY == {} and _LAST is None
    y = dxdt.solve(prob, Tsit5(), backend="jax", saveat=[1.0], rtol=1e-10, atol=1e-12).u[-1]
    assert _LAZY == {} and _LAST is None
    exact = prob.u0 / (1 + 0.7 * prob.u0)  # u' = -k u^2
    np.testing.assert_allclose(y, exact, rtol=1e-8)
    np.testing.assert_allclose(grad, [-np.sum(prob.u0**2 / (1 + 0.7 * prob.u0) ** 2)], rtol=1e-6)
