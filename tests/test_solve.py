"""``dxdt.solve`` with the NumPy backend: accuracy against independent references,
statuses and partial data, bad input, dense output, float32, backward integration."""

import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import dxdt
from dxdt.sensitivity import TranslationError
from dxdt.solvers import BS3, DP5, RK4, Euler, Heun, Tsit5, Vern7

ADAPTIVE = [BS3(), DP5(), Tsit5(), Vern7()]


def decay(du, u, p, t):
    du[...] = -p * u


def oscillator(du, u, p, t):
    du[0] = u[1]
    du[1] = -p * p * u[0]


def lotka_volterra(du, u, p, t):
    a, b, c, d = p
    du[0] = a * u[0] - b * u[0] * u[1]
    du[1] = -c * u[1] + d * u[0] * u[1]


def lv_out_of_place(u, p, t):
    du = np.empty_like(u)
    lotka_volterra(du, u, p, t)
    return du


LV_P = np.array([1.5, 1.0, 3.0, 1.0])
LV = dxdt.ODEProblem(lotka_volterra, np.array([1.0, 1.0]), (0.0, 10.0), LV_P)
TS = np.linspace(0.0, 10.0, 101)


@pytest.fixture(scope="module")
def lv_reference():
    rhs = lambda t, u: lv_out_of_place(u, LV_P, t)  # noqa: E731
    return solve_ivp(rhs, (0, 10), [1.0, 1.0], method="DOP853", rtol=1e-12, atol=1e-14, t_eval=TS).y.T


# --- accuracy against independent references ---------------------------------------

@pytest.mark.parametrize("method", ADAPTIVE, ids=repr)
def test_exponential_decay(method):
    prob = dxdt.ODEProblem(decay, np.array([1.0, 2.0, -3.0]), (0.0, 2.0), 1.7)
    sol = dxdt.solve(prob, method, rtol=1e-9, atol=1e-12, saveat=np.linspace(0, 2, 9))
    exact = np.exp(-1.7 * sol.t)[:, None] * prob.u0
    np.testing.assert_allclose(sol.u, exact, rtol=2e-7, atol=1e-11)


@pytest.mark.parametrize("method", ADAPTIVE, ids=repr)
def test_harmonic_oscillator_every_step(method):
    prob = dxdt.ODEProblem(oscillator, np.array([1.0, 0.0]), (0.0, 10.0), 2.0)
    sol = dxdt.solve(prob, method, rtol=1e-10, atol=1e-12)
    assert sol.t[0] == 0.0 and sol.t[-1] == 10.0 and np.all(np.diff(sol.t) > 0)
    assert len(sol.t) == sol.stats["naccept"] + 1
    exact = np.stack([np.cos(2 * sol.t), -2 * np.sin(2 * sol.t)], -1)
    np.testing.assert_allclose(sol.u, exact, atol=5e-8)


def test_linear_system_against_expm():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(5, 5)) / 2 - np.eye(5)
    u0 = rng.normal(size=5)
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.matmul(p, u, out=du), u0, (0.0, 3.0), A)
    ts = np.linspace(0, 3, 7)
    sol = dxdt.solve(prob, Tsit5(), rtol=1e-10, atol=1e-12, saveat=ts)
    exact = np.stack([expm(A * t) @ u0 for t in ts])
    np.testing.assert_allclose(sol.u, exact, atol=1e-9)


@pytest.mark.parametrize("method", ADAPTIVE, ids=repr)
def test_lotka_volterra_against_dop853(method, lv_reference):
    sol = dxdt.solve(LV, method, rtol=1e-10, atol=1e-12, saveat=TS)
    assert sol.success, sol.message
    np.testing.assert_array_equal(sol.t, TS)
    np.testing.assert_allclose(sol.u, lv_reference, atol=2e-8)


def test_out_of_place_rhs_matches_in_place(lv_reference):
    prob = dxdt.ODEProblem(lv_out_of_place, [1.0, 1.0], (0.0, 10.0), LV_P)
    assert not prob.inplace and LV.inplace
    a = dxdt.solve(prob, rtol=1e-10, atol=1e-12, saveat=TS)
    b = dxdt.solve(LV, rtol=1e-10, atol=1e-12, saveat=TS)
    np.testing.assert_array_equal(a.u, b.u)
    np.testing.assert_allclose(a.u, lv_reference, atol=2e-8)


def test_matrix_state_keeps_its_shape():
    u0 = np.arange(6.0).reshape(2, 3) + 1
    prob = dxdt.ODEProblem(decay, u0, (0.0, 1.0), 0.5)
    sol = dxdt.solve(prob, saveat=[0.0, 0.5, 1.0], rtol=1e-9, atol=1e-12)
    assert sol.u.shape == (3, 2, 3)
    np.testing.assert_allclose(sol.u[-1], u0 * np.exp(-0.5), rtol=1e-8)


def test_backward_integration(lv_reference):
    end = lv_reference[-1]
    prob = dxdt.ODEProblem(lotka_volterra, end, (10.0, 0.0), LV_P)
    sol = dxdt.solve(prob, Tsit5(), rtol=1e-11, atol=1e-13, saveat=TS[::-1])
    np.testing.assert_array_equal(sol.t, TS[::-1])
    np.testing.assert_allclose(sol.u[::-1], lv_reference, atol=1e-7)
    every = dxdt.solve(prob, Tsit5(), rtol=1e-8)
    assert np.all(np.diff(every.t) < 0) and every.t[-1] == 0.0


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_positive_dt_serves_a_backward_solve(backend):
    """``dt`` is the step's size, its sign follows ``tspan``: ``dt=0.25`` on ``(1, 0)`` steps
    1, 0.75, 0.5, 0.25, 0 (a negative dt is accepted too); it used to be refused with a
    message asking for the positive dt it had been given."""
    prob = dxdt.ODEProblem(decay, np.array([1.0]), (1.0, 0.0), 1.0)
    for dt in (0.25, -0.25):
        sol = dxdt.solve(prob, RK4(), dt=dt, backend=backend)
        np.testing.assert_allclose(sol.t, [1.0, 0.75, 0.5, 0.25, 0.0])
        z = 0.25  # RK4's step factor for u' = -u stepped by -0.25: its Taylor polynomial at z
        assert sol.u[-1, 0] == pytest.approx((1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** 4, rel=1e-13)


def test_fixed_step_hits_t1_and_counts_steps():
    prob = dxdt.ODEProblem(decay, np.array([1.0]), (0.0, 1.0), 1.0)
    sol = dxdt.solve(prob, RK4(), dt=0.3)
    np.testing.assert_allclose(sol.t, [0, 0.3, 0.6, 0.9, 1.0])
    # f(u0) once, then 3 more stages per step and f(u_n) at the 3 interior states
    assert sol.stats == {"nfev": 1 + 4 * 3 + 3, "naccept": 4, "nreject": 0}
    tsit = dxdt.solve(prob, Tsit5(), dt=0.1, adaptive=False)
    assert len(tsit.t) == 11 and tsit.stats["nreject"] == 0


def test_euler_matches_hand_computed_steps():
    prob = dxdt.ODEProblem(decay, np.array([1.0]), (0.0, 0.5), 2.0)
    sol = dxdt.solve(prob, Euler(), dt=0.1)
    np.testing.assert_allclose(sol.u[:, 0], 0.8 ** np.arange(6))


def test_float32_stays_float32():
    prob = dxdt.ODEProblem(decay, np.array([1.0, 2.0], dtype=np.float32), (0.0, 1.0), np.float32(1.0))
    for saveat in (None, [0.5, 1.0]):
        sol = dxdt.solve(prob, rtol=1e-4, atol=1e-6, saveat=saveat)
        assert sol.u.dtype == np.float32 and sol.t.dtype == np.float64
        np.testing.assert_allclose(sol.u[-1], np.exp(-1.0) * np.array([1, 2]), rtol=1e-4)
    dense = dxdt.solve(prob, rtol=1e-4, atol=1e-6, dense=True)
    assert dense(0.3).dtype == np.float32


def test_integer_u0_becomes_float64():
    prob = dxdt.ODEProblem(decay, [1, 2], (0, 1), 1.0)
    assert prob.u0.dtype == np.float64
    assert dxdt.solve(prob).u.dtype == np.float64


def test_saveat_uses_interpolation_not_shorter_steps():
    every = dxdt.solve(LV, Tsit5(), rtol=1e-8, atol=1e-10)
    saved = dxdt.solve(LV, Tsit5(), rtol=1e-8, atol=1e-10, saveat=TS)
    assert every.stats == saved.stats


def test_heun_and_array_atol():
    prob = dxdt.ODEProblem(oscillator, np.array([1.0, 0.0]), (0.0, 3.0), 1.0)
    sol = dxdt.solve(prob, Heun(), rtol=1e-6, atol=np.array([1e-8, 1e-6]), saveat=[3.0])
    np.testing.assert_allclose(sol.u[0], [np.cos(3.0), -np.sin(3.0)], atol=1e-4)


# --- dense output ----------------------------------------------------------------

@pytest.mark.parametrize("method", ADAPTIVE, ids=repr)
def test_dense_output_matches_reference(method, lv_reference):
    sol = dxdt.solve(LV, method, rtol=1e-10, atol=1e-12, dense=True)
    np.testing.assert_allclose(sol(TS), lv_reference, atol=1e-7 if method == BS3() else 2e-8)
    np.testing.assert_allclose(sol(3.7), sol(np.array([3.7]))[0])
    np.testing.assert_array_equal(sol(0.0), LV.u0)


def test_dense_output_backward():
    prob = dxdt.ODEProblem(decay, np.array([1.0]), (1.0, 0.0), 1.0)
    sol = dxdt.solve(prob, rtol=1e-10, atol=1e-12, dense=True)
    ts = np.linspace(0, 1, 11)
    np.testing.assert_allclose(sol(ts)[:, 0], np.exp(1 - ts), rtol=1e-8)


@pytest.mark.parametrize("method", [Tsit5(), Vern7()], ids=repr)
def test_dense_output_of_states_near_overflow_stays_finite(method):
    """u' = 1000 u to u = 1e304: the dense polynomial summed the stages (1e307) before
    multiplying by h, so sol(t) was inf or NaN where the saved rows are finite."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.multiply(u, 1000.0, out=du), np.array([1.0]), (0.0, 0.7))
    sol = dxdt.solve(prob, method, rtol=1e-8, atol=1e-10, dense=True)
    assert sol.success
    np.testing.assert_allclose(sol(sol.t[-5:])[:, 0], sol.u[-5:, 0], rtol=1e-12)
    np.testing.assert_allclose(sol(0.6995)[0], np.exp(699.5), rtol=1e-5)


def test_dense_call_errors():
    sol = dxdt.solve(LV)
    with pytest.raises(ValueError, match="dense=True"):
        sol(1.0)
    dense = dxdt.solve(LV, dense=True)
    with pytest.raises(ValueError, match="outside"):
        dense(11.0)


# --- statuses and partial data -----------------------------------------------------

def blowup(du, u, p, t):
    du[0] = u[0] * u[0]  # u = 1 / (1 - t): singular at t = 1


def test_blowup_stops_with_partial_data():
    prob = dxdt.ODEProblem(blowup, np.array([1.0]), (0.0, 2.0))
    sol = dxdt.solve(prob, Tsit5(), saveat=np.linspace(0, 2, 21))
    assert not sol.success and sol.status in ("dt_min", "nonfinite")
    assert "t=" in sol.message and "dt=" in sol.message
    assert 0.9 <= sol.t[-1] <= 1.0  # the singularity is reached, never stepped past
    early = sol.t < 0.95
    np.testing.assert_allclose(sol.u[early, 0], 1 / (1 - sol.t[early]), rtol=1e-4)


def nan_after_half(du, u, p, t):
    du[0] = -u[0] if t < 0.5 else np.nan


def test_nonfinite_status_keeps_earlier_steps():
    prob = dxdt.ODEProblem(nan_after_half, np.array([1.0]), (0.0, 1.0))
    sol = dxdt.solve(prob, Tsit5(), rtol=1e-8)
    assert sol.status == "nonfinite" and "non-finite" in sol.message
    assert 0 < sol.t[-1] <= 0.5
    np.testing.assert_allclose(sol.u[:, 0], np.exp(-sol.t), rtol=1e-6)
    fixed = dxdt.solve(prob, RK4(), dt=0.1)
    assert fixed.status == "nonfinite" and fixed.t[-1] == pytest.approx(0.4)


def test_max_steps_keeps_partial_data_and_says_what_to_try():
    sol = dxdt.solve(LV, Tsit5(), rtol=1e-10, max_steps=20, saveat=TS, dense=True)
    assert sol.status == "max_steps" and not sol.success
    assert "max_steps=20" in sol.message and "Increase max_steps" in sol.message
    assert sol.stats["naccept"] + sol.stats["nreject"] == 20
    assert 0 < len(sol.t) < len(TS)
    np.testing.assert_array_equal(sol.t, TS[: len(sol.t)])
    sol(sol.t[-1])  # dense output covers the computed part


def test_throw_raises_with_partial_solution():
    with pytest.raises(dxdt.SolverError, match="max_steps") as info:
        dxdt.solve(LV, max_steps=5, throw=True)
    assert info.value.solution.status == "max_steps"
    assert len(info.value.solution.t) >= 2


def test_nonfinite_at_start():
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.copyto(du, np.log(u - 2)), np.array([1.0]), (0, 1))
    with np.errstate(invalid="ignore"):
        sol = dxdt.solve(prob)
    assert sol.status == "nonfinite" and len(sol.t) == 1


# --- inputs are never modified ---------------------------------------------------------

def test_problem_and_closure_untouched():
    buf = np.zeros(2)

    def f(du, u, p, t):
        np.multiply(u, p, out=buf)
        du[:] = -buf

    p = np.array([1.0, 2.0])
    prob = dxdt.ODEProblem(f, np.array([1.0, 1.0]), (0, 1), p)
    dxdt.solve(prob)
    np.testing.assert_array_equal(prob.u0, [1.0, 1.0])
    np.testing.assert_array_equal(p, [1.0, 2.0])
    assert prob.p is p


def test_remake():
    new = LV.remake(u0=[2.0, 1.0])
    assert new.f is LV.f and new.p is LV.p and new.tspan == LV.tspan
    np.testing.assert_array_equal(new.u0, [2.0, 1.0])
    assert LV.remake(p=None).p is None
    assert LV.remake(tspan=(0, 1)).tspan == (0.0, 1.0)


def test_progress_bar(capsys):
    sol = dxdt.solve(LV, progress=True)
    assert sol.success
    assert "100%" in capsys.readouterr().err


# --- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"u0": [1.0, np.nan]}, ValueError, "u0"),
        ({"u0": []}, ValueError, "u0"),
        ({"u0": ["a"]}, TypeError, "u0"),
        ({"tspan": (1.0, 1.0)}, ValueError, "tspan"),
        ({"tspan": (0.0,)}, ValueError, "tspan"),
        ({"tspan": (0.0, np.inf)}, ValueError, "tspan"),
        ({"tspan": (0.0, "2")}, ValueError, "tspan"),
        ({"tspan": (0.0, 1 + 0j)}, ValueError, "tspan"),
        ({"tspan": np.array([[0.0], [1.0]])}, ValueError, r"tspan .* shape \(2, 1\)"),  # (a raw TypeError)
        ({"f": lambda du, u: None}, TypeError, "f"),
        ({"f": lambda du, u, p, t, x: None}, TypeError, "f"),
        ({"f": 3}, TypeError, "f"),
    ],
)
def test_bad_problem(kwargs, error, match):
    args = dict(f=lotka_volterra, u0=[1.0, 1.0], tspan=(0.0, 1.0), p=LV_P)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        dxdt.ODEProblem(**args)


@pytest.mark.parametrize("t0", [1e8, -3e12])
def test_span_shorter_than_the_step_floor_is_refused_and_one_just_above_solves_on_both_backends(t0):
    """Below ``16 eps |t|`` no step is accepted: the NumPy backend once reported "dt_min"
    (no rows, a message about singularities) and the JAX backend "dt_min" or "success"
    depending on a few ulps; now both refuse the problem naming tspan."""
    floor = 16 * np.finfo(float).eps * abs(t0)
    with pytest.raises(ValueError, match=r"tspan .* shorter than the smallest step .* shift time"):
        dxdt.ODEProblem(decay, [1.0], (t0, t0 + 0.9 * floor), p=1.0)
    t1 = t0 + 1.5 * floor
    prob = dxdt.ODEProblem(decay, [1.0], (t0, t1), p=1.0)
    for backend in ("numpy", "jax"):
        sol = dxdt.solve(prob, Tsit5(), backend=backend, saveat=[t1])
        assert sol.status == "success"
        np.testing.assert_allclose(sol.u[-1], [np.exp(-(t1 - t0))], rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"rtol": -1}, ValueError, "rtol"),
        ({"rtol": 0}, ValueError, "rtol"),
        ({"atol": np.nan}, ValueError, "atol"),
        ({"atol": np.ones(3)}, ValueError, "atol"),
        ({"atol": np.array(["a", "b"])}, TypeError, "atol must be"),  # (NumPy's "could not convert string")
        ({"atol": [1e-8, 1e-8j]}, TypeError, "atol must be"),
        ({"dt": 0.0}, ValueError, "dt"),
        ({"dt": -0.1}, ValueError, "dt"),
        ({"saveat": [0.5, 11.0]}, ValueError, "saveat"),
        ({"saveat": [5.0, 1.0]}, ValueError, "saveat"),
        ({"saveat": []}, ValueError, "saveat"),
        # NumPy would read these as times: True as 1.0, "0.5" as 0.5, 0.5+1j as 0.5
        ({"saveat": True}, TypeError, "saveat must be real times"),
        ({"saveat": "0.5"}, TypeError, "saveat must be real times"),
        ({"saveat": np.array([0.5 + 1j, 1.0])}, TypeError, "saveat must be real times"),
        ({"saveat": [0.5, None]}, TypeError, "saveat must be real times"),
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"backend": "torch"}, ValueError, "backend"),
        ({"adaptive": False}, ValueError, "dt"),
        ({"dense": "yes"}, TypeError, "dense"),
        ({"rtl": 1e-3}, TypeError, "rtl"),
    ],
)
def test_bad_solve_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        dxdt.solve(LV, Tsit5(), **kwargs)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_zero_dimensional_steps_and_an_unbounded_step_budget_are_accepted_on_both_backends(backend):
    """``dt`` as a 0-d array was refused (``rtol`` and ``atol`` accepted one); a
    ``max_steps`` of ``2**63`` or more (a budget meaning "no limit") overflowed the JAX
    backend's step counter and passed on the NumPy one: both read it as 2**62."""
    import sys

    fixed = dxdt.solve(LV, RK4(), dt=np.array(0.25), backend=backend)
    np.testing.assert_allclose(fixed.t, np.linspace(0.0, 10.0, 41), rtol=1e-12)
    for budget in (2**63, sys.maxsize, 10**30):
        sol = dxdt.solve(LV, Tsit5(), max_steps=budget, saveat=[10.0], backend=backend)
        assert sol.success
        np.testing.assert_allclose(sol.u[-1], dxdt.solve(LV, Tsit5(), saveat=[10.0]).u[-1], rtol=1e-6)


def test_bad_method_and_problem():
    with pytest.raises(TypeError, match="method"):
        dxdt.solve(LV, "tsit5")
    with pytest.raises(TypeError, match="prob"):
        dxdt.solve((lotka_volterra, [1.0]))
    with pytest.raises(ValueError, match="dt"):
        dxdt.solve(LV, RK4())
    assert dxdt.solve(LV, Tsit5).success  # the class itself is accepted


def test_f_that_never_writes_du():
    with pytest.raises(ValueError, match=r"never writes du at indices \[\[1\]\]"):
        dxdt.solve(dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 1.0), [1.0, 1.0], (0, 1)))
    with pytest.raises(ValueError, match="returned a value"):
        dxdt.solve(dxdt.ODEProblem(lambda du, u, p, t: -u, [1.0, 1.0], (0, 1)))


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_u0_or_p_of_another_shape_than_f_indexes_is_named(backend):
    """An index or broadcast error inside f at t0 (a state or parameters shorter than f
    reads) is a ValueError naming u0 and p with their shapes, on both backends, from the
    sensitivity operators and for an ensemble's u0 batch without its state axis."""
    from dxdt import sensitivity as sens

    short_state = dxdt.ODEProblem(lotka_volterra, [1.0], (0.0, 1.0), p=np.ones(4))
    short_p = dxdt.ODEProblem(lotka_volterra, [1.0, 1.0], (0.0, 1.0), p=np.ones(2))
    broadcast = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), u[:2] * p), np.ones(3), (0, 1),
                                p=np.ones(2))
    for prob, shapes in ((short_state, r"u0 of shape \(1,\) and p of shape \(4,\)"),
                         (short_p, r"u0 of shape \(2,\) and p of shape \(2,\)"),
                         (broadcast, r"u0 of shape \(3,\) and p of shape \(2,\)")):
        with pytest.raises(ValueError, match=shapes + ": check that u0 and p have the shapes f indexes"):
            dxdt.solve(prob, Tsit5(), backend=backend)
    if backend == "jax":
        with pytest.raises(ValueError, match=r"u0 of shape \(1,\) and p of shape \(4,\)"):
            sens.gradient(lambda u: np.sum(u), short_state, Tsit5())
        with pytest.raises(ValueError, match=r"u0 of shape \(2,\) and p of shape \(2,\)"):
            sens.jacobian(short_p, Tsit5(), mode="reverse")
        with pytest.raises(ValueError, match=r"iteration over a 0-d array\) with u0 of shape \(2,\) and p of shape \(\)"):
            sens.gradient(lambda u: np.sum(u), LV.remake(p=1.5), Tsit5())  # a, b, c, d = p
    ens = dxdt.EnsembleProblem(LV, u0=np.array([1.0, 2.0]))  # two members' u0, the state axis left out
    with pytest.raises(ValueError, match=r"u0 of shape \(\).*u0 or p batch holds the members on its first axis"):
        dxdt.solve(ens, Tsit5(), backend=backend, saveat=[1.0])
    flat_p = dxdt.EnsembleProblem(LV, p=np.ones(3))  # three members' p, the parameter axis left out
    with pytest.raises(ValueError, match=r"TypeError \(cannot unpack non-iterable.*p of shape \(\)"):
        dxdt.solve(flat_p, Tsit5(), backend=backend, saveat=[1.0])


def test_f_that_writes_nan_is_not_mistaken_for_missing_writes():
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.fill(np.nan), [1.0], (0, 1))
    sol = dxdt.solve(prob)
    assert sol.status == "nonfinite" and "at t=0;" in sol.message  # (no "(dt=nan)": no step was chosen)


def test_out_of_place_with_wrong_output():
    with pytest.raises(ValueError, match="shape"):
        dxdt.solve(dxdt.ODEProblem(lambda u, p, t: np.zeros(3), [1.0, 1.0], (0, 1)))
    with pytest.raises(TypeError, match="returned None"):
        dxdt.solve(dxdt.ODEProblem(lambda u, p, t: None, [1.0, 1.0], (0, 1)))


def test_automatic_initial_step_on_a_2d_state():
    """The initial-step trial call passes f arrays of the state's shape."""
    def shaped(du, u, p, t):
        du[:, 0] = -u[:, 0]
        du[:, 1] = -2 * u[:, 1]

    prob = dxdt.ODEProblem(shaped, np.ones((3, 2)), (0.0, 1.0))
    sol = dxdt.solve(prob, rtol=1e-9, atol=1e-12, saveat=[1.0])
    np.testing.assert_allclose(sol.u[0], np.exp([[-1, -2]] * 3), rtol=1e-7)


def test_work_buffer_as_default_argument():
    """``f(du, u, p, t, buf=...)`` is in place; the default keeps the buffer, as NumPy users write."""
    def decay_buffered(du, u, p, t, buf=np.zeros(2)):
        np.multiply(u, p, out=buf)
        np.negative(buf, out=du)

    prob = dxdt.ODEProblem(decay_buffered, np.array([1.0, 2.0]), (0.0, 1.0), 0.5)
    assert prob.inplace
    sol = dxdt.solve(prob, rtol=1e-10, atol=1e-12, saveat=[1.0])
    np.testing.assert_allclose(sol.u[0], np.exp(-0.5) * np.array([1.0, 2.0]), rtol=1e-8)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_an_f_that_changes_its_argument_u_is_refused_on_both_backends(backend):
    """Writing into ``u`` changed the NumPy solver's own state but only a copy on the JAX
    backend: two different answers, both "success". Both backends refuse it now."""
    def f(du, u, p, t):
        u[0] = 0.5 * u[0]
        du[:] = -u

    prob = dxdt.ODEProblem(f, np.array([1.0, 0.5]), (0.0, 1.0))
    with pytest.raises(ValueError, match="f changed its argument u"):
        dxdt.solve(prob, Tsit5(), backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_complex_derivative_of_a_real_state_is_refused_not_truncated(backend):
    """A real ``u0`` with a complex rate: NumPy only warns as it drops the imaginary part
    written into the real ``du`` (the solve gave exp(-t), not exp(-(1+i)t))."""
    def f(du, u, p, t):
        du[:] = -p["k"] * u

    complex_rate = dxdt.ODEProblem(f, np.array([1.0]), (0.0, 1.0), {"k": (1.0 + 1.0j)})
    with pytest.raises(TypeError, match="u0 is real but f.*complex.*u0.astype\\(complex\\)"):
        dxdt.solve(complex_rate, Tsit5(), backend=backend)
    sol = dxdt.solve(dxdt.ODEProblem(f, np.array([1.0 + 0j]), (0.0, 1.0), {"k": 1.0 + 1.0j}), Tsit5(),
                     backend=backend, rtol=1e-10, atol=1e-12, saveat=[1.0])
    np.testing.assert_allclose(sol.u[-1], np.exp(-(1.0 + 1.0j)), rtol=1e-8)

    def real_part(du, u, p, t):  # complex p, real derivative: fine
        du[:] = -np.real(p["k"]) * u

    sol = dxdt.solve(dxdt.ODEProblem(real_part, np.array([1.0]), (0.0, 1.0), {"k": 1.0 + 1.0j}), Tsit5(),
                     backend=backend, rtol=1e-10, atol=1e-12, saveat=[1.0])
    np.testing.assert_allclose(sol.u[-1], np.exp(-1.0), rtol=1e-8)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_an_f_that_changes_its_argument_p_is_refused_and_p_is_restored(backend):
    """``k = p; k *= 1.01`` wrote into p: the NumPy backend compounded it on every call (p
    grew to 1e13), the JAX backend's t0 check changed it once and then solved with it."""
    def f(du, u, p, t):
        k = p
        k *= 1.01
        du[:] = -k * u

    prob = dxdt.ODEProblem(f, np.array([1.0, 0.5]), (0.0, 1.0), np.array([1.0, 2.0]))
    with pytest.raises((ValueError, TranslationError), match="changed its argument p|writing into p"):
        dxdt.solve(prob, Tsit5(), backend=backend)
    np.testing.assert_array_equal(prob.p, [1.0, 2.0])


def test_an_object_array_p_is_passed_to_f_on_numpy_and_named_on_the_jax_paths():
    """``p`` of dtype object (a list mixing Python numbers and arrays, say) crashed both
    backends inside dxdt's check that f left p alone (``isnan`` on objects). The NumPy
    backend passes it to f as given and still catches writes into it; the JAX paths name
    its dtype and the conversion."""
    def f(du, u, p, t):
        du[:] = -p[0] * u

    p = np.array([1.0, 2.0], dtype=object)
    prob = dxdt.ODEProblem(f, np.array([1.0, 0.5]), (0.0, 1.0), p)
    sol = dxdt.solve(prob, Tsit5(), saveat=[1.0])
    np.testing.assert_allclose(sol.u[-1], np.exp(-1.0) * prob.u0, rtol=1e-5)
    with pytest.raises(TypeError, match="dtype object: convert it with np.asarray"):
        dxdt.solve(prob, Tsit5(), backend="jax")

    def writes(du, u, p, t):
        p[1] = 5.0
        du[:] = -u

    with pytest.raises(ValueError, match="changed its argument p"):
        dxdt.solve(prob.remake(f=writes), Tsit5())
    assert p[1] == 2.0


def test_zero_dimensional_arrays_are_numbers_for_the_tolerances():
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.negative(u, out=du), np.ones(2), (0.0, 1.0))
    sol = dxdt.solve(prob, Tsit5(), rtol=np.asarray(1e-10), atol=np.asarray(1e-12), saveat=[1.0])
    np.testing.assert_allclose(sol.u[-1], np.exp(-1.0), rtol=1e-8)


def test_a_longdouble_state_is_refused_by_name_on_the_jax_paths():
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 on this platform")
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.negative(u, out=du), np.ones(2, np.longdouble), (0.0, 1.0))
    assert dxdt.solve(prob, Tsit5()).success  # NumPy computes in it
    with pytest.raises(TypeError, match="backend='jax' computes in at most float64.*u0 has dtype"):
        dxdt.solve(prob, Tsit5(), backend="jax")
    with pytest.raises(TypeError, match="dxdt.sensitivity computes in at most float64"):
        dxdt.sensitivity.gradient(lambda u: u[-1, 0], prob, Tsit5(), wrt="u0")
    with pytest.raises(TypeError, match="sens.jax_solve computes in at most float64"):
        dxdt.sensitivity.jax_solve(prob, Tsit5())
    with pytest.raises(TypeError, match="backend='jax' computes in at most float64"):
        dxdt.solve(dxdt.EnsembleProblem(prob, p=np.ones((2, 1))), Tsit5(), backend="jax", saveat=[1.0])


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("with_events", [False, True])
def test_dense_output_of_a_solve_that_failed_before_its_first_step(backend, with_events):
    """``sol(t0)`` is ``u0`` when no step was accepted (NumPy crashed with "need at least
    one array to stack", JAX returned NaN); elsewhere it is outside the solved interval."""
    def rhs(du, u, p, t):
        du[0] = 1.5 * u[0] - u[0] * u[1]
        du[1] = -3.0 * u[1] + u[0] * u[1]

    prob = dxdt.ODEProblem(rhs, np.array([[1.0, 0.5]]).reshape(2), (0.0, 10.0))
    events = [dxdt.Event(lambda u, p, t: u[0] - 100.0)] if with_events else None
    sol = dxdt.solve(prob, Tsit5(), backend=backend, max_steps=1, dt=5.0, rtol=1e-12, atol=1e-14,
                     dense=True, events=events)
    assert sol.status == "max_steps" and sol.stats["naccept"] == 0
    np.testing.assert_array_equal(sol(0.0), [1.0, 0.5])
    np.testing.assert_array_equal(sol(np.array([0.0, 0.0])), [[1.0, 0.5], [1.0, 0.5]])
    with pytest.raises(ValueError, match="outside the solved interval"):
        sol(3.0)


@pytest.mark.parametrize("method, options", [(Euler, dict(dt=100.0)), (RK4, dict(dt=100.0)),
                                             (Tsit5, dict(dt=100.0, adaptive=False)), (Tsit5, {})])
def test_overflow_ends_nonfinite_without_numpy_warnings(method, options):
    """A state that overflows ends the solve ``"nonfinite"`` with its partial data, also
    under ``-W error::RuntimeWarning``: NumPy's warnings on dxdt's own arithmetic with the
    overflowed stages ("overflow encountered in dot") had leaked, and there raised."""
    def big(du, u, p, t):
        du[0] = 1e307  # one step of 100 overflows u

    prob = dxdt.ODEProblem(big, np.array([0.0]), (0.0, 1000.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = dxdt.solve(prob, method(), **options)
    assert sol.status == "nonfinite" and "non-finite" in sol.message
    assert sol.t[0] == 0.0 and np.all(np.isfinite(sol.u))
    assert np.geterr()["over"] == "warn"  # the caller's settings are restored


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_dense_output_refuses_times_that_are_not_real_numbers(backend):
    """``sol(t)`` takes real times only: ``True`` (read as 1.0), ``"0.5"`` and ``0.5+1j``
    (read as 0.5) and ``None`` (read as NaN) raise a ``TypeError`` naming ``t``."""
    sol = dxdt.solve(LV, Tsit5(), backend=backend, dense=True)
    for bad in (True, "0.5", 0.5 + 1j, np.array([0.5 + 0j]), None):
        with pytest.raises(TypeError, match="t must be real times"):
            sol(bad)
    np.testing.assert_allclose(sol(np.int64(1)), sol(1.0), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_large_absolute_times_integrate_the_span_they_report(backend):
    """At t0 = 1.7e9 (Unix time) a step h moves t by fl(t + h) - t, not h: the NumPy
    executor advanced the state by h and ended 5e-7 off at rtol 1e-8, above the tolerance."""
    prob = dxdt.ODEProblem(lotka_volterra, np.array([1.0, 1.0]), (0.0, 5.0), np.array([1.5, 1.0, 3.0, 1.0]))
    near = dxdt.solve(prob, Vern7(), backend=backend, rtol=1e-8, atol=1e-10)
    late = dxdt.solve(prob.remake(tspan=(1.7e9, 1.7e9 + 5.0)), Vern7(), backend=backend, rtol=1e-8, atol=1e-10)
    reference = solve_ivp(lambda t, u: lv_out_of_place(u, LV_P, t), (0.0, 5.0), prob.u0,
                          method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    np.testing.assert_allclose(near.u[-1], reference, atol=2e-8)
    np.testing.assert_allclose(late.u[-1], reference, atol=2e-8)
