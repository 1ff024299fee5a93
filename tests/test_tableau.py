"""Every tableau satisfies the Runge-Kutta identities; bad tableaus are rejected."""

from fractions import Fraction

import numpy as np
import pytest

from dxdt.solvers import BS3, DP5, RK4, ButcherTableau, Euler, Heun, Tsit5, Vern7

METHODS = [Euler(), Heun(), RK4(), BS3(), DP5(), Tsit5(), Vern7()]
EXPECTED = {  # order, stages, fsal, error order, interpolant order
    "Euler": (1, 1, False, None, 1),
    "Heun": (2, 2, False, 1, 2),
    "RK4": (4, 4, False, None, 3),
    "BS3": (3, 4, True, 2, 3),
    "DP5": (5, 7, True, 4, 4),
    "Tsit5": (5, 7, True, 4, 4),
    "Vern7": (7, 10, False, 6, 7),
}


@pytest.mark.parametrize("method", METHODS, ids=repr)
def test_tableau_identities(method):
    tab = method.tableau
    assert np.allclose(tab.a.sum(axis=1), tab.c, atol=1e-14)
    assert tab.b.sum() == pytest.approx(1.0, abs=1e-14)
    assert not np.any(np.triu(tab.a))
    if tab.b_err is not None:
        assert tab.b_err.sum() == pytest.approx(0.0, abs=1e-14)
    # the interpolant reproduces the step at theta = 1 and starts at u_n
    assert np.allclose(tab.interp_weights(1.0)[: tab.stages], tab.b, atol=1e-13)
    assert np.allclose(tab.interp_weights(0.0), 0.0)


@pytest.mark.parametrize("method", METHODS, ids=repr)
def test_tableau_properties(method):
    tab = method.tableau
    order, stages, fsal, error_order, interp_order = EXPECTED[type(method).__name__]
    assert (tab.order, tab.stages, tab.fsal, tab.error_order, tab.interp_order) == (
        order, stages, fsal, error_order, interp_order)
    assert method.adaptive == (error_order is not None)


@pytest.mark.parametrize("method", METHODS, ids=repr)
def test_order_conditions_up_to_four(method):
    """Butcher's order conditions for orders 1..min(p, 4) (Hairer, Norsett & Wanner I, II.2)."""
    tab = method.tableau
    a, b, c = tab.a, tab.b, tab.c
    conditions = [
        (b.sum(), 1),
        (b @ c, 1 / 2),
        (b @ c**2, 1 / 3), (b @ a @ c, 1 / 6),
        (b @ c**3, 1 / 4), (b @ (c * (a @ c)), 1 / 8), (b @ a @ c**2, 1 / 12), (b @ a @ a @ c, 1 / 24),
    ]
    count = {1: 1, 2: 2, 3: 4}.get(tab.order, 8)
    for value, exact in conditions[:count]:
        assert value == pytest.approx(exact, abs=1e-13)


def test_methods_compare_by_type():
    assert Tsit5() == Tsit5() and hash(Tsit5()) == hash(Tsit5())
    assert Tsit5() != DP5()
    assert repr(Vern7()) == "Vern7()"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"c": [0, 0.4]}, "row sums"),
        ({"b": [0.5, 0.6], "interp": [[0.5], [0.6]]}, "sum(b)"),
        ({"b_err": [0.5, 0.5]}, "sum(b_err)"),
        ({"a": [[0, 1], [1, 0]]}, "strictly lower"),
        ({"interp": [[1, -0.5], [0, 0.4]]}, "b_i(1)"),
    ],
)
def test_inconsistent_tableau_is_rejected(change, message):
    base = dict(a=[[0, 0], [1, 0]], b=[Fraction(1, 2)] * 2, c=[0, 1], order=2,
                b_err=[-0.5, 0.5], error_order=1, interp=[[1, -0.5], [0, 0.5]], interp_order=2)
    base.update(change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ButcherTableau(**base)
