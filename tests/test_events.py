"""Events on the NumPy backend against closed forms: threshold crossings, a bouncing ball,
resets, intravenous and oral dosing, double crossings in one step, ordering, bad input."""

import math

import numpy as np
import pytest

import dxdt
from dxdt.solvers import DP5, RK4, Euler, Tsit5, Vern7

G = 9.81
TIGHT = dict(rtol=1e-10, atol=1e-12)


def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


def fall(du, u, p, t):
    du[0] = u[1]
    du[1] = -G


def bounce_times(h0: float, e: float, n: int) -> np.ndarray:
    """Times of the first ``n`` bounces of a ball dropped from ``h0`` with restitution ``e``."""
    t_first = math.sqrt(2 * h0 / G)
    v, times = G * t_first, [t_first]
    for _ in range(n - 1):
        v *= e
        times.append(times[-1] + 2 * v / G)
    return np.array(times)


def make_bounce(e):
    def bounce(u, p, t):
        u[1] = -e * u[1]
    return bounce


def floor(u, p, t):
    return u[0]


@pytest.mark.parametrize("method", [Tsit5(), DP5(), Vern7()], ids=repr)
def test_threshold_crossing_of_exponential_decay(method):
    k, y0, c = 0.7, 2.0, 0.5
    prob = dxdt.ODEProblem(decay, [y0], (0.0, 5.0), p=np.array([k]))
    ev = dxdt.Event(lambda u, p, t: u[0] - c, terminal=True, name="threshold")
    sol = dxdt.solve(prob, method, **TIGHT, events=[ev])
    assert sol.status == "event" and sol.success
    assert "threshold" in sol.message
    t_exact = math.log(y0 / c) / k
    assert sol.t_events[0] == pytest.approx([t_exact], abs=1e-9)
    assert sol.u_events[0].shape == (1, 1)
    assert sol.u_events[0][0, 0] == pytest.approx(c, abs=1e-9)
    assert sol.t[-1] == sol.t_events[0][0]


def test_direction_filters_crossings():
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, math.cos(t)), [0.0], (0.0, 10.0))
    up = dxdt.Event(lambda u, p, t: u[0] - 0.5, direction=1)
    down = dxdt.Event(lambda u, p, t: u[0] - 0.5, direction=-1)
    both = dxdt.Event(lambda u, p, t: u[0] - 0.5)
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[up, down, both])
    a = math.asin(0.5)
    ups = [a, a + 2 * math.pi]
    downs = [math.pi - a, 3 * math.pi - a]
    np.testing.assert_allclose(sol.t_events[0], ups, atol=1e-8)
    np.testing.assert_allclose(sol.t_events[1], downs, atol=1e-8)
    np.testing.assert_allclose(sol.t_events[2], np.sort(ups + downs), atol=1e-8)


def test_bouncing_ball_times_and_velocities():
    e = 0.8
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 3.0))
    ev = dxdt.Event(floor, make_bounce(e), direction=-1, name="floor")
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[ev])
    expected = bounce_times(1.0, e, 6)
    np.testing.assert_allclose(sol.t_events[0], expected, rtol=1e-8)
    v_before = G * expected[0] * e ** np.arange(6)
    np.testing.assert_allclose(sol.u_events[0][:, 1], -v_before, rtol=1e-8)
    np.testing.assert_allclose(sol.u_events[0][:, 0], 0.0, atol=1e-9)
    # saveat=None: the pre- and post-affect rows at every bounce
    rows = np.flatnonzero(sol.t == sol.t_events[0][2])
    assert len(rows) == 2
    np.testing.assert_allclose(sol.u[rows[1], 1], -e * sol.u[rows[0], 1], rtol=1e-14)


def test_bouncing_ball_zeno_stops_with_partial_data():
    e = 0.5
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 10.0))
    ev = dxdt.Event(floor, make_bounce(e), direction=-1)
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[ev])
    t_first = math.sqrt(2 / G)
    t_rest = t_first + 2 * G * t_first * e / G / (1 - e)  # the accumulation time
    assert not sol.success and sol.status == "dt_min"
    assert "Zeno" in sol.message
    assert len(sol.t_events[0]) > 20
    assert sol.t[-1] == pytest.approx(t_rest, abs=1e-6)
    np.testing.assert_allclose(sol.t_events[0][:8], bounce_times(1.0, e, 8), rtol=1e-8)
    with pytest.raises(dxdt.SolverError, match="Zeno"):
        dxdt.solve(prob, Tsit5(), **TIGHT, events=[ev], throw=True)


def test_terminal_count_and_dense_output_across_jumps():
    e = 0.8
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 10.0))
    ev = dxdt.Event(floor, make_bounce(e), direction=-1, terminal=3)
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[ev], dense=True)
    expected = bounce_times(1.0, e, 3)
    assert sol.status == "event" and len(sol.t_events[0]) == 3
    assert sol.t[-1] == pytest.approx(expected[-1], rel=1e-10)
    t1 = expected[0]
    v1 = G * t1 * e
    eps = 1e-6
    before, after = sol(np.array([t1 - eps, t1 + eps]))
    assert before[1] == pytest.approx(-G * (t1 - eps), rel=1e-8)
    assert after[1] == pytest.approx(v1 - G * eps, rel=1e-8)
    assert after[0] == pytest.approx(v1 * eps - G * eps**2 / 2, rel=1e-4)
    with pytest.raises(ValueError, match="outside"):
        sol(expected[-1] + 1e-3)  # the solve ended at the third bounce


def test_reset_at_parameter_dependent_time():
    # u' = a; reset u -> 0 when u = b: t* = b / a, u(T) = a (T - t*)
    a, b, T = 2.0, 3.0, 4.0
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, p[0]), [0.0], (0.0, T), p=np.array([a, b]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], lambda u, p, t: u.__setitem__(0, 0.0))
    # (no save time at the second event, t = 3: its row would show the state on whichever
    # side of the event the rounding of the root puts it)
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[ev], saveat=[1.0, 1.6, 2.5, T])
    np.testing.assert_allclose(sol.t_events[0], [b / a, b / a + b / a], rtol=1e-12)
    np.testing.assert_allclose(sol.u[:, 0], [a * 1.0, a * (1.6 - b / a), a * (2.5 - b / a), a * (T - 2 * b / a)],
                               atol=1e-9)


def iv_exact(t, dose_times, amount, k):
    return sum(amount * math.exp(-k * (t - td)) for td in dose_times if td <= t)


def test_intravenous_bolus_doses():
    k, amount = 0.1, 1.0
    doses = [0.0, 12.0, 24.0]
    prob = dxdt.ODEProblem(decay, [0.0], (0.0, 30.0), p=np.array([k]))
    dose = dxdt.TimeEvent(doses, lambda u, p, t: u.__setitem__(0, u[0] + amount), name="bolus")
    ts = [0.0, 6.0, 12.0, 20.0, 24.0, 30.0]
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[dose], saveat=ts)
    np.testing.assert_allclose(sol.u[:, 0], [iv_exact(t, doses, amount, k) for t in ts], rtol=1e-9)
    np.testing.assert_allclose(sol.t_events[0], doses)
    np.testing.assert_allclose(sol.u_events[0][:, 0], [iv_exact(t, doses, amount, k) - amount for t in doses],
                               atol=1e-9)
    # every step saved: pre- and post-dose rows at each dose time, t0 included (fired once)
    full = dxdt.solve(prob, Tsit5(), **TIGHT, events=[dose])
    for td in doses:
        rows = np.flatnonzero(full.t == td)
        assert len(rows) == 2
        assert full.u[rows[1], 0] - full.u[rows[0], 0] == pytest.approx(amount, rel=1e-12)
    assert np.all(np.diff(full.t) >= 0)


def oral(du, u, p, t):
    ka, ke = p
    du[0] = -ka * u[0]
    du[1] = ka * u[0] - ke * u[1]


def bateman(t, dose_times, amount, ka, ke):
    """Central amount after oral doses: a sum of Bateman functions."""
    return sum(amount * ka / (ka - ke) * (math.exp(-ke * (t - td)) - math.exp(-ka * (t - td)))
               for td in dose_times if td <= t)


def test_oral_dosing_bateman():
    ka, ke, amount = 1.2, 0.15, 100.0
    doses = np.arange(0.0, 48.0, 12.0)
    prob = dxdt.ODEProblem(oral, np.zeros(2), (0.0, 60.0), p=np.array([ka, ke]))
    dose = dxdt.TimeEvent(doses, lambda u, p, t: u.__setitem__(0, u[0] + amount))
    ts = np.linspace(0.0, 60.0, 41)
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[dose], saveat=ts)
    expected = [bateman(t, doses, amount, ka, ke) for t in ts]
    np.testing.assert_allclose(sol.u[:, 1], expected, rtol=1e-8, atol=1e-9)


def rotation(du, u, p, t):
    du[0] = u[1]
    du[1] = -u[0]


def test_double_crossing_inside_one_step():
    # u = (t - 1.5)^2 dips below 0.01 only on (1.4, 1.6), inside the fixed step [1, 2]
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 2 * (t - 1.5)), [2.25], (0.0, 3.0))
    ev = dxdt.Event(lambda u, p, t: u[0] - 0.01)
    sol = dxdt.solve(prob, Tsit5(), dt=1.0, adaptive=False, events=[ev])
    np.testing.assert_allclose(sol.t_events[0], [1.4, 1.6], atol=1e-12)
    assert sol.t[-1] == 3.0 and 1.0 in sol.t and 2.0 in sol.t  # the fixed grid resumes


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_double_crossing_closer_than_the_sign_checks(backend):
    """u = (t - 1.5)^2 dips below c only on (1.5 - sqrt(c), 1.5 + sqrt(c)), between two of
    the step's sample points (1/11 of the step apart): the parabola through neighbouring
    samples finds the dip, in each direction. Both roots are shallow (slope 2 sqrt(c)),
    so the state at the first lands within rounding of it: the event must not fire again
    (it did on the NumPy backend, whose state was read at a rounded time)."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 2 * (t - 1.5)), [2.25], (0.0, 3.0))
    for c in (1e-4, 1e-8):
        down, up = 1.5 - np.sqrt(c), 1.5 + np.sqrt(c)
        for direction, expected in ((0, [down, up]), (1, [up]), (-1, [down])):
            ev = dxdt.Event(lambda u, p, t, c=c: u[0] - c, direction=direction)
            sol = dxdt.solve(prob, Tsit5(), dt=1.0, adaptive=False, events=[ev], backend=backend)
            # (the roots are shallow: a rounding error of g moves them by it over the slope)
            np.testing.assert_allclose(sol.t_events[0], expected, rtol=0, atol=1e-15 / np.sqrt(c))
            assert sol.t[-1] == 3.0


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_an_oscillation_grazing_its_threshold_fires_twice_per_pass(backend):
    """cos t above 1 - 1e-6 for |t - 2 pi k| < arccos(1 - 1e-6) = 0.0014: the adaptive
    steps near t = 2 pi straddle the excursion, far narrower than their sample spacing
    (the sign checks alone saw only the first crossing, at t = 0.0014)."""
    def rotate(du, u, p, t):
        du[0], du[1] = u[1], -u[0]

    prob = dxdt.ODEProblem(rotate, [1.0, 0.0], (0.0, 13.0))
    sol = dxdt.solve(prob, Tsit5(), rtol=1e-8, atol=1e-10, backend=backend,
                     events=[dxdt.Event(lambda u, p, t: u[0] - (1 - 1e-6))])
    x = np.arccos(1 - 1e-6)
    np.testing.assert_allclose(sol.t_events[0], [x, 2 * np.pi - x, 2 * np.pi + x, 4 * np.pi - x, 4 * np.pi + x],
                               atol=1e-5)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_earliest_of_two_events_in_one_step_wins(order):
    # roots at t=1.3 and t=1.6, both inside the fixed step [1, 2]
    events = [dxdt.Event(lambda u, p, t: u[0] - 1.6, terminal=True, name="late"),
              dxdt.Event(lambda u, p, t: u[0] - 1.3, terminal=True, name="early")]
    events = [events[i] for i in order]
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 1.0), [0.0], (0.0, 3.0))
    sol = dxdt.solve(prob, Tsit5(), dt=1.0, adaptive=False, events=events)
    assert "early" in sol.message and sol.t[-1] == pytest.approx(1.3, abs=1e-13)
    early = [e.name for e in events].index("early")
    assert len(sol.t_events[early]) == 1 and len(sol.t_events[1 - early]) == 0


def test_simultaneous_events_fire_in_list_order():
    double = dxdt.Event(lambda u, p, t: t - 1.0, lambda u, p, t: u.__setitem__(0, 2 * u[0]))
    add = dxdt.TimeEvent([1.0], lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 0.0), [1.0], (0.0, 2.0))
    first = dxdt.solve(prob, Tsit5(), events=[double, add])
    second = dxdt.solve(prob, Tsit5(), events=[add, double])
    assert first.u[-1, 0] == pytest.approx(3.0) and second.u[-1, 0] == pytest.approx(4.0)
    assert first.t_events[0][0] == pytest.approx(1.0, abs=1e-13) and first.t_events[1][0] == 1.0
    # u_events: the state just before each event's own affect
    assert first.u_events[1][0, 0] == pytest.approx(2.0) and second.u_events[1][0, 0] == pytest.approx(2.0)


def test_event_exactly_at_a_step_end_fires_once():
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 1.0), [0.0], (0.0, 3.0))
    ev = dxdt.Event(lambda u, p, t: u[0] - 1.0)
    sol = dxdt.solve(prob, Euler(), dt=0.5, events=[ev])
    assert sol.t_events[0].tolist() == [1.0]
    assert len(dxdt.solve(prob, RK4(), dt=0.5, events=[ev]).t_events[0]) == 1


def test_backward_integration_and_time_events():
    prob = dxdt.ODEProblem(decay, [1.0], (10.0, 0.0), p=np.array([0.1]))
    dose = dxdt.TimeEvent([2.0, 5.0, 20.0], lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[dose], saveat=[10.0, 0.0])
    np.testing.assert_allclose(sol.t_events[0], [5.0, 2.0])
    u = math.exp(0.1 * 5) + 1.0
    u = u * math.exp(0.1 * 3) + 1.0
    assert sol.u[-1, 0] == pytest.approx(u * math.exp(0.1 * 2), rel=1e-9)


def test_max_steps_counts_across_events():
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 100.0), p=np.array([0.1]))
    dose = dxdt.TimeEvent(np.arange(1.0, 100.0), lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    sol = dxdt.solve(prob, Tsit5(), events=[dose], max_steps=50)
    assert sol.status == "max_steps" and sol.stats["naccept"] + sol.stats["nreject"] == 50
    assert len(sol.t_events[0]) > 0 and sol.t[-1] < 100.0


def test_user_buffers_unchanged():
    p = np.array([0.3, 0.5])
    work = np.zeros(1)

    def f(du, u, p, t):
        work[0] = p[0] * u[0]
        du[0] = -work[0]

    def affect(u, p, t):
        u[0] += p[1]

    prob = dxdt.ODEProblem(f, np.array([1.0]), (0.0, 5.0), p=p)
    u0 = prob.u0.copy()
    sol = dxdt.solve(prob, Tsit5(), events=[dxdt.TimeEvent([1.0, 2.0], affect)])
    np.testing.assert_array_equal(prob.u0, u0)
    np.testing.assert_array_equal(p, [0.3, 0.5])
    assert sol.u_events[0][0, 0] != sol.u_events[0][1, 0]


@pytest.mark.parametrize("make, error, match", [
    (lambda: dxdt.Event(lambda u, p, t: u, name="vector"), TypeError, "vector.*scalar"),
    (lambda: dxdt.Event(lambda u, p, t: complex(u[0]), name="complex"), TypeError, "complex.*real number"),
    (lambda: dxdt.Event(lambda u, p, t: None, name="none"), TypeError, "none.*real number"),
    (lambda: dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: u * 2, name="returns"), TypeError,
     "returns.*return None"),
    (lambda: dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: setattr(u, "shape", (1, 2)), name="reshape"),
     ValueError, "reshape.*shape"),
    (lambda: dxdt.TimeEvent([1.0], lambda u, p, t: 1.0, name="dose"), TypeError, "dose.*return None"),
    (lambda: dxdt.Event(lambda u, p, t: u[0] < 0.5, name="compare"), TypeError, "compare.*boolean"),
    (lambda: dxdt.Event(lambda u, p, t: bool(u[0] < 0.5), name="bool"), TypeError, "bool.*boolean"),
    (lambda: dxdt.Event(lambda u, p, t: "a", name="text"), TypeError, "text.*real number, got str"),
])
def test_bad_condition_or_affect_names_the_event(make, error, match):
    prob = dxdt.ODEProblem(fall, [1.0, 0.5], (0.0, 2.0))
    with pytest.raises(error, match=match):
        dxdt.solve(prob, Tsit5(), events=[make()])


def test_a_condition_that_is_nan_at_the_start_fails_the_numpy_solve_and_the_derivatives():
    """A condition NaN at ``t0`` (here from a parameter outside its domain) cannot change
    sign: the solve went on and never fired the event, silently. Now the NumPy backend's
    solve, which also plans every derivative through events, fails with status
    "nonfinite" at ``t0``, naming the event, and so does the JAX backend's (its compiled
    chunk returns the conditions' values at its start); under ``jax.vmap`` of
    ``jax_solve`` only that member is NaN."""
    import jax
    import jax.numpy as jnp

    from dxdt import sensitivity as sens

    def decay(du, u, p, t):
        du[:] = -u

    level = dxdt.Event(lambda u, p, t: np.log(np.abs(p[0])) * np.sqrt(p[0]) - u[0],
                       lambda u, p, t: u.__setitem__(0, u[0] + 1.0), name="level")
    bad = dxdt.ODEProblem(decay, np.array([1.0]), (0.0, 2.0), np.array([-1.0]))
    with np.errstate(invalid="ignore"):
        for backend in ("numpy", "jax"):
            sol = dxdt.solve(bad, Tsit5(), events=[level], backend=backend)
            assert sol.status == "nonfinite" and "Event 'level'" in sol.message and "nan at t=0" in sol.message
            np.testing.assert_array_equal(sol.t, [0.0])
            np.testing.assert_array_equal(sol.u, [[1.0]])
        with pytest.raises(dxdt.SolverError, match="Event 'level'.*nan"):
            sens.gradient(lambda u: np.sum(u), bad, Tsit5(), events=[level], saveat=[2.0])
        F = sens.jax_solve(bad.remake(p=np.array([2.0])), Tsit5(), events=[level], saveat=[2.0])
        rows = jax.vmap(lambda q: F(jnp.ones(1), q))(jnp.array([[2.0], [-1.0]]))
    # u = e^-t reaches c at -ln c, jumps to c + 1, decays back to c after ln((c + 1) / c), ...
    c = np.log(2.0) * np.sqrt(2.0)
    last = -np.log(c) + np.log((c + 1) / c) * np.floor((2.0 + np.log(c)) / np.log((c + 1) / c))
    np.testing.assert_allclose(rows[0, 0, 0], (c + 1.0) * np.exp(-(2.0 - last)), rtol=1e-5)
    assert np.isnan(rows[1]).all()


def test_an_error_in_a_condition_or_affect_on_numpy_names_the_event():
    """The NumPy backend let a condition's IndexError out raw, and any error of an affect
    without saying whose it was (the JAX backend's translation names both)."""
    prob = dxdt.ODEProblem(fall, [1.0, 0.5], (0.0, 2.0), np.array([0.5]))
    level = dxdt.Event(lambda u, p, t: u[7] - 0.5, name="level")
    with pytest.raises(ValueError, match=r"Event 'level': condition raised IndexError \(index 7"):
        dxdt.solve(prob, Tsit5(), events=[level])

    def grows(u, p, t):
        u.resize(3, refcheck=False)

    reset = dxdt.Event(lambda u, p, t: u[0] - 0.5, grows, name="reset")
    with pytest.raises(ValueError, match="cannot resize") as info:
        dxdt.solve(prob, Tsit5(), events=[reset])
    assert any("affect of Event 'reset' at t=" in note for note in info.value.__notes__)


def test_an_index_error_in_a_condition_or_affect_on_jax_names_the_event():
    """It came out as "f raised IndexError ... check that u0 and p have the shapes f indexes"."""
    prob = dxdt.ODEProblem(fall, [1.0, 0.5], (0.0, 2.0), np.array([0.5]))
    reset = dxdt.Event(lambda u, p, t: u[0] - 0.5, lambda u, p, t: u.__setitem__(5, 1.0), name="reset")
    with pytest.raises(ValueError, match=r"Event 'reset': affect raised IndexError \(index 5"):
        dxdt.solve(prob, Tsit5(), events=[reset], backend="jax")
    level = dxdt.Event(lambda u, p, t: u[7] - 0.5, name="level")
    with pytest.raises(ValueError, match=r"Event 'level': condition raised IndexError \(index 7"):
        dxdt.solve(prob, Tsit5(), events=[level], backend="jax")


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_complex_condition_or_an_affect_writing_p_is_refused_on_both_backends(backend):
    """The JAX backend took the real part of a complex condition and solved on; the NumPy
    backend let an affect write into p, so that prob.p changed with every solve."""
    from dxdt.sensitivity import TranslationError

    prob = dxdt.ODEProblem(fall, [1.0, 0.5], (0.0, 2.0), np.array([0.5]))
    level = dxdt.Event(lambda u, p, t: (u[0] - 0.5) + 0j, name="complex level")
    with pytest.raises(TypeError, match="'complex level'.*must return a real number"):
        dxdt.solve(prob, Tsit5(), events=[level], backend=backend)

    def doubles_p(u, p, t):
        p[0] = 2.0 * p[0]

    counts = dxdt.Event(lambda u, p, t: u[0] - 0.5, doubles_p, name="counter")
    with pytest.raises((ValueError, TranslationError), match="changed its argument p|writing into p"):
        dxdt.solve(prob, Tsit5(), events=[counts], backend=backend)
    np.testing.assert_array_equal(prob.p, [0.5])


@pytest.mark.parametrize("call, error, match", [
    (lambda: dxdt.Event(3.0), TypeError, "condition must be callable"),
    (lambda: dxdt.Event(floor, direction=2, name="d"), ValueError, "'d'.*direction"),
    (lambda: dxdt.Event(floor, direction=np.array([1, 0]), name="d2"), ValueError, "'d2'.*direction"),
    (lambda: dxdt.Event(floor, terminal=0, name="n"), ValueError, "'n'.*terminal"),
    (lambda: dxdt.Event(floor, affect=1, name="a"), TypeError, "'a'.*affect"),
    (lambda: dxdt.TimeEvent([0.0, np.nan], None, name="bad"), ValueError, "'bad'.*non-finite"),
    (lambda: dxdt.TimeEvent([[0.5, 1.0], [1.5, 1.9]], None, name="grid"), ValueError, "'grid'.*1-D"),
    (lambda: dxdt.TimeEvent([0.5, 1.0, 0.5], None, name="twice"), ValueError, "'twice'.*repeat t=0.5"),
    (lambda: dxdt.TimeEvent([True], None, name="flag"), TypeError, "'flag'.*real numbers"),
    (lambda: dxdt.TimeEvent(["12"], None, name="text"), TypeError, "'text'.*real numbers"),
    (lambda: dxdt.solve(dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 1.0)), events=[
        dxdt.TimeEvent(lambda p: [0.5, 0.5], None, name="twice(p)")]), ValueError, r"'twice\(p\)'.*repeat"),
    (lambda: dxdt.solve(dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 1.0)), events=[floor]), TypeError,
     r"events\[0\]"),
    # the wrong number of parameters, named before any solve (it was a raw TypeError inside it)
    (lambda: dxdt.Event(lambda u, p: u[0], name="c2"), TypeError, r"'c2': condition must take 3 .*takes 2"),
    (lambda: dxdt.Event(floor, lambda u, p: None, name="a2"), TypeError, r"'a2': affect must take 3 .*takes 2"),
    (lambda: dxdt.TimeEvent([1.0], lambda u: None, name="d1"), TypeError, r"'d1': affect must take 3"),
    (lambda: dxdt.TimeEvent(lambda: [1.0], None, name="t0"), TypeError, r"'t0': times must be .*times\(p\)"),
    (lambda: dxdt.solvers.RKC(eigen_est=lambda u, p: 1.0), TypeError, r"eigen_est must take 3"),
    (lambda: dxdt.EnsembleProblem(dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 1.0)), n=2, prob_func=lambda m: m),
     TypeError, r"prob_func must take 2"),
])
def test_bad_event_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_stepping_between_events_does_not_allocate():
    import tracemalloc

    n = 4_000  # one stray temporary state (32 kB) would stand out

    def rotation_n(du, u, p, t):
        half = u.shape[0] // 2
        np.multiply(u[half:], -p, out=du[:half])
        np.multiply(u[:half], p, out=du[half:])

    never = dxdt.Event(lambda u, p, t: u[0] - 100.0)  # checked every step, never fires

    def peak(t1):
        prob = dxdt.ODEProblem(rotation_n, np.linspace(1.0, 2.0, n), (0.0, t1), 10.0)
        tracemalloc.start()
        try:
            sol = dxdt.solve(prob, Tsit5(), dt=0.01, saveat=[0.0, t1], events=[never])
            return tracemalloc.get_traced_memory()[1], sol.stats["naccept"]
        finally:
            tracemalloc.stop()

    short, n_short = peak(0.5)
    long, n_long = peak(5.0)
    assert n_long > 5 * n_short
    assert long - short < 16_384


def test_jax_backend_matches_numpy_backend():
    def kick(u, p, t):
        u[1] += 2.0

    events = [dxdt.Event(floor, make_bounce(0.8), direction=-1, name="floor"),
              dxdt.TimeEvent([1.0, 2.0], kick, name="kick")]
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 3.0))
    ts = np.linspace(0.0, 3.0, 13)
    by = {b: dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend=b) for b in ("numpy", "jax")}
    for i in range(2):
        np.testing.assert_allclose(by["jax"].t_events[i], by["numpy"].t_events[i], atol=1e-9)
        np.testing.assert_allclose(by["jax"].u_events[i], by["numpy"].u_events[i], atol=1e-8)
    np.testing.assert_allclose(by["jax"].u, by["numpy"].u, atol=1e-8)
    assert by["jax"].status == "success" and len(by["jax"].t_events[0]) >= 4
    fixed = {b: dxdt.solve(prob, RK4(), dt=0.1, events=events, backend=b) for b in ("numpy", "jax")}
    np.testing.assert_allclose(fixed["jax"].t, fixed["numpy"].t, atol=1e-12)
    np.testing.assert_allclose(fixed["jax"].u, fixed["numpy"].u, atol=1e-12)


# stabilized methods: (solve tolerances, test tolerance), the latter about 4x the method's
# own largest error on the decay at those settings (RKC 7.5e-6, RKL2 5.5e-6, ROCK2 4.1e-7,
# ROCK4 4.4e-9): second-order methods at tight tolerances take 10^4-10^5 steps
STABILIZED_EVENT_TOL = {"RKC": (dict(rtol=1e-7, atol=1e-9), 3e-5), "RKL2": (dict(rtol=1e-7, atol=1e-9), 3e-5),
                        "ROCK2": (dict(rtol=1e-6, atol=1e-8), 2e-6), "ROCK4": (dict(rtol=1e-8, atol=1e-10), 2e-8)}


def _stabilized():
    from dxdt.solvers import RKC, RKL2, ROCK2, ROCK4

    return [RKC(), RKL2(), ROCK2(), ROCK4()]


@pytest.mark.parametrize("method", _stabilized(), ids=lambda m: type(m).__name__)
def test_stabilized_methods_locate_and_apply_events(method):
    """RKC, RKL2, ROCK2, ROCK4 on the NumPy backend locate events on their cubic Hermite
    interpolant: a terminal threshold crossing at ln(y0/c)/k; doses at given times and a
    state event doubling the state when it falls to c, against the closed form, in the
    saveat rows, the event records and the dense output on both sides of the jump."""
    settings, tol = STABILIZED_EVENT_TOL[type(method).__name__]
    k, y0, c = 1.3, 4.0, 1.0
    prob = dxdt.ODEProblem(decay, [y0], (0.0, 3.0), p=np.array([k]))
    threshold = dxdt.Event(lambda u, p, t: u[0] - c, terminal=True, name="threshold")
    sol = dxdt.solve(prob, method, **settings, events=[threshold])
    assert sol.status == "event" and "threshold" in sol.message
    assert sol.t_events[0] == pytest.approx([math.log(y0 / c) / k], abs=tol)
    assert sol.t[-1] == sol.t_events[0][0] and sol.u[-1, 0] == pytest.approx(c, abs=tol)

    def add_one(u, p, t):
        u[0] += 1.0

    def double(u, p, t):
        u[0] *= 2.0

    doses, low = [0.7, 1.9], 0.5
    before_low = (((y0 * math.exp(-k * 0.7) + 1) * math.exp(-k * 1.2)) + 1)  # just after the second dose
    t_low = 1.9 + math.log(before_low / low) / k
    ts = np.linspace(0.0, 3.0, 7)

    def exact(t):
        if t < 0.7:
            return y0 * math.exp(-k * t)
        if t < 1.9:
            return (y0 * math.exp(-k * 0.7) + 1) * math.exp(-k * (t - 0.7))
        if t < t_low:
            return before_low * math.exp(-k * (t - 1.9))
        return 2 * low * math.exp(-k * (t - t_low))

    events = [dxdt.Event(lambda u, p, t: u[0] - low, double, direction=-1), dxdt.TimeEvent(doses, add_one)]
    sol = dxdt.solve(prob, method, **settings, events=events, saveat=ts, dense=True)
    assert sol.status == "success"
    assert sol.t_events[0] == pytest.approx([t_low], abs=tol)
    np.testing.assert_array_equal(sol.t_events[1], doses)
    assert sol.u_events[0][0, 0] == pytest.approx(low, abs=tol)
    np.testing.assert_allclose(sol.u[:, 0], [exact(t) for t in ts], atol=tol)
    eps = 1e-3
    left, right = sol(np.array([t_low - eps, t_low + eps]))[:, 0]
    assert left == pytest.approx(exact(t_low - eps), abs=tol)
    assert right == pytest.approx(exact(t_low + eps), abs=tol)
    jax_sol = dxdt.solve(prob, method, **settings, events=events, saveat=ts, backend="jax")
    assert jax_sol.t_events[0] == pytest.approx(sol.t_events[0], abs=2 * tol)
    np.testing.assert_allclose(jax_sol.u, sol.u, atol=2 * tol)


def test_stabilized_fixed_steps_resume_their_grid_after_an_event():
    """With ``adaptive=False`` a step cut short by a dose is followed by the rest of the
    fixed grid ``t0 + k dt`` (as with the Runge-Kutta methods), every step saved."""
    from dxdt.solvers import ROCK4

    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 1.0), p=np.array([0.5]))

    def add_one(u, p, t):
        u[0] += 1.0

    sol = dxdt.solve(prob, ROCK4(), dt=0.25, adaptive=False, events=[dxdt.TimeEvent([0.6], add_one)])
    np.testing.assert_allclose(sol.t, [0.0, 0.25, 0.5, 0.6, 0.6, 0.75, 1.0])
    exact = (math.exp(-0.3) + 1) * math.exp(-0.2)
    assert sol.u[-1, 0] == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_chattering_events_stop_as_zeno(backend):
    """An affect that leaves the state 1e-13 short of the threshold fires again 1e-13
    later, forever: the gaps do not shrink, they stay tiny. It stops as Zeno behaviour
    after 17 events, with the data up to t = 0.5 (it once ran to max_steps)."""
    def ramp(du, u, p, t):
        du[0] = 1.0
        du[1] = 0.0

    def push_back(u, p, t):
        u[0] = 0.5 - 1e-13
        u[1] += 1.0

    prob = dxdt.ODEProblem(ramp, np.array([0.0, 0.0]), (0.0, 1.0))
    ev = dxdt.Event(lambda u, p, t: u[0] - 0.5, push_back, direction=1)
    sol = dxdt.solve(prob, Tsit5(), events=[ev], backend=backend, max_steps=3000)
    assert sol.status == "dt_min" and "Zeno" in sol.message and "stayed tiny" in sol.message
    assert len(sol.t_events[0]) == 17
    assert sol.t[-1] == pytest.approx(0.5, abs=1e-11)
    assert sol.u[-1, 1] == 17.0


def test_time_event_keeps_the_times_it_was_given():
    """``TimeEvent(times=array)`` copies the array (docs/events.md): a later change of the
    user's array does not move the doses."""
    times = np.array([1.0, 2.0])

    def dose(u, p, t):
        u += 1.0

    event = dxdt.TimeEvent(times, dose)
    times[0] = 5.0
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), 0.0), np.zeros(1), (0.0, 3.0))
    sol = dxdt.solve(prob, Tsit5(), events=[event], saveat=[0.5, 1.5, 2.5])
    np.testing.assert_array_equal(sol.u[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(sol.t_events[0], [1.0, 2.0])


def test_the_quick_exit_of_the_dip_check_never_skips_a_dip():
    """``hidden_vertex`` returns early when the samples stay further from 0 than
    ``VERTEX_MARGIN`` times their range. A parabola that dips through 0 between two of its
    samples (all of them of one sign) must never take that exit, and the full check must
    find it: 5,000 random dips, on the nodes of a step and of a step after an event."""
    from dxdt import _events_numpy as ev

    rng = np.random.default_rng(7)
    theta = ev.interior_thetas()
    for k in range(5_000):
        x = np.concatenate(([1e-13 if k % 2 else 0.0], theta, [1.0]))
        m = rng.integers(0, x.size - 1)
        vertex = rng.uniform(x[m], x[m + 1])
        curvature = 10.0 ** rng.uniform(-2, 3) * rng.choice([-1.0, 1.0])
        gap = np.min((x - vertex) ** 2)  # the samples' closest approach to the vertex
        depth = abs(curvature) * gap * rng.uniform(0.01, 0.99)  # below 0 at the vertex, every sample above
        values = curvature * ((x - vertex) ** 2) - np.sign(curvature) * depth
        listed = values.tolist()
        lo, hi = min(listed), max(listed)
        assert not (lo > ev.VERTEX_MARGIN * (hi - lo) or -hi > ev.VERTEX_MARGIN * (hi - lo))
        found = ev.hidden_vertex(values, x)
        assert found is not None and found[1] == m and abs(found[0] - vertex) < 1e-9
