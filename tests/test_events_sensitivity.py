"""Derivatives through events against closed forms: event times (implicit function
theorem), jumps, parameter-dependent resets and dose times, forward and reverse, Hessians."""

import math
import warnings

import numpy as np
import pytest

import dxdt
from dxdt import sensitivity as sens

G = 9.81
TIGHT = dict(rtol=1e-10, atol=1e-12)


def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


MODES = [("forward", "interpolating"), ("reverse", "interpolating")]


@pytest.mark.parametrize("mode, adjoint", MODES + [("reverse", "checkpoint")])
def test_threshold_time_derivatives(mode, adjoint):
    k, y0, c = 0.7, 2.0, 0.5
    prob = dxdt.ODEProblem(decay, [y0], (0.0, 5.0), p=np.array([k, c]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], terminal=True)
    g_u0, g_p = sens.gradient(lambda u, *, t_events: t_events[0][0], prob, events=[ev], mode=mode,
                              adjoint=adjoint, wrt=("u0", "p"), **TIGHT)
    t_event = math.log(y0 / c) / k  # and its derivatives
    np.testing.assert_allclose(g_u0, [1 / (y0 * k)], rtol=1e-7)
    np.testing.assert_allclose(g_p, [-t_event / k, -1 / (c * k)], rtol=1e-7)


def test_condition_and_affect_with_closure_work_buffers():
    """A condition and an affect written with work buffers (as users write ``f``): the
    operators translate them with the buffers duplicated, so the derivatives equal the
    closed form and the user's buffers stay bitwise unchanged."""
    k, y0, c = 0.7, 2.0, 0.5
    gap, kicked = np.full(1, 7.0), np.full(1, 7.0)

    def crossing(u, p, t):
        np.subtract(u, p[1], out=gap)
        return gap[0]

    def halve(u, p, t):
        np.multiply(u, 0.5, out=kicked)
        u[:] = kicked

    prob = dxdt.ODEProblem(decay, [y0], (0.0, 5.0), p=np.array([k, c]))
    ev = dxdt.Event(crossing, halve, direction=-1)
    for mode in ("forward", "reverse"):
        g_p = sens.gradient(lambda u: u[-1, 0], prob, events=[ev], mode=mode, **TIGHT)
        # u(5) = (c / 2) exp(-k (5 - t_e)), t_e = ln(y0 / c) / k: u(5) = (y0 / 2) exp(-5 k)
        np.testing.assert_allclose(g_p, [-5 * y0 / 2 * math.exp(-5 * k), 0.0], atol=1e-9)
    np.testing.assert_array_equal(gap, [7.0])
    np.testing.assert_array_equal(kicked, [7.0])


def fall(du, u, p, t):
    du[0] = u[1]
    du[1] = -G


@pytest.mark.parametrize("mode, adjoint", MODES)
def test_bouncing_ball_bounce_time_and_velocity_derivatives(mode, adjoint):
    h0, e = 1.0, 0.8
    prob = dxdt.ODEProblem(fall, [h0, 0.0], (0.0, 1.5), p=np.array([e]))
    ev = dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: u.__setitem__(1, -p[0] * u[1]), direction=-1)

    def loss(u, *, t_events):  # second bounce time + final velocity
        return t_events[0][1] + u[-1, 1]

    value, (g_u0, g_p) = sens.value_and_gradient(loss, prob, events=[ev], mode=mode, adjoint=adjoint,
                                                 wrt=("u0", "p"), **TIGHT)
    t1 = math.sqrt(2 * h0 / G)
    t2 = t1 + 2 * e * t1  # v1 = G t1, flight 2 e v1 / G
    v_end = e * e * G * t1 - G * (1.5 - t2)
    assert value == pytest.approx(t2 + v_end, rel=1e-8)
    dt1_dh = 1 / (G * t1)
    # d t2 / dh = (1 + 2e) dt1/dh; d v_end / dh = e^2 G dt1/dh + G dt2/dh
    dt2_dh = (1 + 2 * e) * dt1_dh
    np.testing.assert_allclose(g_u0[0], dt2_dh + e * e * G * dt1_dh + G * dt2_dh, rtol=1e-7)
    dt2_de = 2 * t1
    np.testing.assert_allclose(g_p, [dt2_de + 2 * e * G * t1 + G * dt2_de], rtol=1e-7)


@pytest.mark.parametrize("mode, adjoint", MODES)
def test_reset_at_parameter_dependent_time(mode, adjoint):
    # u' = a, reset to 0 when u = b: u(T) = a T - b. Without the event-time term the
    # derivative in b would be 0 (the reset value does not depend on b).
    a, b, T = 2.0, 3.0, 2.5
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, p[0]), [0.0], (0.0, T), p=np.array([a, b]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], lambda u, p, t: u.__setitem__(0, 0.0))
    J = sens.jacobian(prob, events=[ev], mode=mode, adjoint=adjoint, saveat=[1.0, T], **TIGHT)
    np.testing.assert_allclose(J[:, 0, :], [[1.0, 0.0], [T, -1.0]], atol=1e-9)


def bolus(k, t_dose, amount, T=30.0):
    """u(T) of u' = -k u, u(0) = 1, with doses of ``amount`` at t_dose and t_dose + 12."""
    return (math.exp(-k * T) + amount * math.exp(-k * (T - t_dose))
            + amount * math.exp(-k * (T - 12 - t_dose)))


@pytest.fixture(scope="module")
def bolus_problem():
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 30.0), p=np.array([0.1, 5.0, 2.0]))
    dose = dxdt.TimeEvent(lambda p: p[1] + np.array([0.0, 12.0]), lambda u, p, t: u.__setitem__(0, u[0] + p[2]))
    return prob, dose


def central_gradient(fn, x, h=1e-5):
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (fn(*(x + e)) - fn(*(x - e))) / (2 * h)
    return out


@pytest.mark.parametrize("mode, adjoint", MODES + [("reverse", "checkpoint")])
def test_bolus_dose_time_and_amount_derivatives(bolus_problem, mode, adjoint):
    prob, dose = bolus_problem
    g = sens.gradient(lambda u: u[-1, 0], prob, events=[dose], mode=mode, adjoint=adjoint, **TIGHT)
    np.testing.assert_allclose(g, central_gradient(bolus, prob.p), rtol=1e-7)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_reverse_through_dose_events_hands_each_segments_forward_solve_to_its_adjoint(bolus_problem, mode,
                                                                                       monkeypatch):
    """A reverse operator's chain asks its segment solves to keep their dense forward solve
    for the adjoint (``share_forward``: each segment solved forward once, counted in
    test_jax_native); forward mode, which has no use for it, does not. Same gradient."""
    from dxdt.sensitivity import _jax_solve

    asked = []
    build = _jax_solve._differentiable

    def spy(*args, **kwargs):
        asked.append(kwargs.get("share_forward", False))
        return build(*args, **kwargs)

    monkeypatch.setattr(_jax_solve, "_differentiable", spy)
    monkeypatch.setenv("DXDT_CACHE", "0")  # traced here, not loaded from disk
    prob, dose = bolus_problem
    prep = sens.prepare("gradient", lambda u: 1.0 * u[-1, 0], prob, events=[dose], mode=mode, **TIGHT)
    np.testing.assert_allclose(prep(prob.p), central_gradient(bolus, prob.p), rtol=1e-7)
    assert asked == [mode == "reverse"]


@pytest.mark.parametrize("mode, adjoint", MODES)
def test_a_dose_time_of_p_at_t0_has_the_derivative_of_the_side_it_stays_in(bolus_problem, mode, adjoint):
    """times(p) = p[1] + [0, 12] with p[1] = t0: the dose at t0 used to be applied at a fixed
    time, so d/d(t_dose) came out 0; the closed form's derivative there is the right side's
    (a later dose stays inside tspan, an earlier one would leave it)."""
    prob, dose = bolus_problem
    at_t0 = prob.remake(p=np.array([0.1, 0.0, 2.0]))
    g = sens.gradient(lambda u: u[-1, 0], at_t0, events=[dose], mode=mode, adjoint=adjoint, **TIGHT)
    expected = central_gradient(bolus, at_t0.p)  # bolus() is smooth through t_dose = 0
    assert expected[1] == pytest.approx(0.1 * 2.0 * (math.exp(-3.0) + math.exp(-1.8)), rel=1e-8)
    np.testing.assert_allclose(g, expected, rtol=1e-7)
    if mode == "forward":
        H = sens.hessian(lambda u: u[-1, 0], at_t0, events=[dose], **TIGHT)
        exact = np.array([central_gradient(lambda *y, i=i: central_gradient(bolus, y)[i], at_t0.p, h=1e-4)
                          for i in range(3)])
        np.testing.assert_allclose(H, exact, rtol=1e-5, atol=1e-7)


def _dose_at(du, u, p, t):
    du[0] = -p[0] * u[0]


def _give_dose(u, p, t):
    u[0] += p[1]


@pytest.mark.parametrize("mode, adjoint", MODES + [("reverse", "checkpoint")])
@pytest.mark.parametrize("kind", ["TimeEvent", "Event"])
@pytest.mark.parametrize("tau, saveat", [(2.0, [0.0, 1.0, 2.0, 3.0]), (4.0, None)], ids=["on a save time", "at t1"])
def test_an_event_time_on_a_row_has_the_derivative_of_the_rows_after_it(mode, adjoint, kind, tau, saveat):
    """u' = -k u, a dose p[1] at tau = p[2] (a TimeEvent times(p), or an Event t - p[2]),
    exactly on a save time or at t1: a row at the event time shows the post-dose state, so
    the derivative is the left one, sum over rows t_i >= tau of 2 u(t_i) k D exp(-k (t_i - tau)).
    The discrete adjoint had half of it on a save time (the segment's row at its moving
    start, clipped, took half its derivative), and at t1 every strategy (every strategy of
    a state event) read the post-dose state at tau, not flowed on to t1 (-0.154 for 1.135)."""
    k, amount = 0.5, 1.0
    event = (dxdt.TimeEvent(lambda p: np.array([p[2]]), _give_dose) if kind == "TimeEvent"
             else dxdt.Event(lambda u, p, t: t - p[2], _give_dose))
    prob = dxdt.ODEProblem(_dose_at, np.array([1.0]), (0.0, 4.0), np.array([k, amount, tau]))
    rows = np.array([4.0] if saveat is None else saveat)
    u = np.exp(-k * rows) + np.where(rows >= tau, amount * np.exp(-k * (rows - tau)), 0.0)
    after = rows >= tau
    exact = np.array([np.sum(2 * u * -rows * np.exp(-k * rows) + 2 * u * np.where(after, -amount * (rows - tau)
                                                                                    * np.exp(-k * (rows - tau)), 0)),
                      np.sum(2 * u * np.where(after, np.exp(-k * (rows - tau)), 0.0)),
                      np.sum(2 * u * np.where(after, k * amount * np.exp(-k * (rows - tau)), 0.0))])
    value, g = sens.value_and_gradient(lambda u: np.sum(u[:, 0] ** 2), prob, events=[event], saveat=saveat,
                                       mode=mode, adjoint=adjoint, **TIGHT)
    assert value == pytest.approx(np.sum(u**2), rel=1e-9)
    np.testing.assert_allclose(g, exact, rtol=1e-7)


def test_bolus_hessian(bolus_problem):
    prob, dose = bolus_problem
    H = sens.hessian(lambda u: u[-1, 0] ** 2, prob, events=[dose], **TIGHT)
    squared = lambda *x: bolus(*x) ** 2  # noqa: E731
    expected = np.array([central_gradient(lambda *y, i=i: central_gradient(squared, y)[i], prob.p, h=1e-4)
                         for i in range(3)])
    np.testing.assert_allclose(H, expected, rtol=1e-5, atol=1e-6)


def oral(du, u, p, t):
    ka, ke = p
    du[0] = -ka * u[0]
    du[1] = ka * u[0] - ke * u[1]


def bateman(ka, ke, t=30.0, doses=(0.0, 12.0, 24.0), amount=100.0):
    return sum(amount * ka / (ka - ke) * (math.exp(-ke * (t - td)) - math.exp(-ka * (t - td)))
               for td in doses if td <= t)


@pytest.mark.parametrize("mode, adjoint", MODES)
def test_oral_dosing_gradient(mode, adjoint):
    prob = dxdt.ODEProblem(oral, np.zeros(2), (0.0, 30.0), p=np.array([1.2, 0.15]))
    dose = dxdt.TimeEvent([0.0, 12.0, 24.0], lambda u, p, t: u.__setitem__(0, u[0] + 100.0))
    g = sens.gradient(lambda u: u[-1, 1], prob, events=[dose], mode=mode, adjoint=adjoint, **TIGHT)
    np.testing.assert_allclose(g, central_gradient(bateman, prob.p, h=1e-6), rtol=1e-6)


def test_reverse_through_events_is_as_accurate_for_a_small_loss():
    """A loss scaled by 1e-9 (its cotangents far below atol): the adjoint through doses and
    through a state event's time keeps its relative accuracy (it came out 1e-5 off)."""
    c = 1e-9
    prob = dxdt.ODEProblem(oral, np.zeros(2), (0.0, 30.0), p=np.array([1.2, 0.15]))
    dose = dxdt.TimeEvent([0.0, 12.0, 24.0], lambda u, p, t: u.__setitem__(0, u[0] + 100.0))
    g = sens.gradient(lambda u: c * u[-1, 1], prob, events=[dose], mode="reverse", **TIGHT)
    np.testing.assert_allclose(g / c, central_gradient(bateman, prob.p, h=1e-6), rtol=1e-6)
    k, y0, level = 0.7, 2.0, 0.5
    prob = dxdt.ODEProblem(decay, [y0], (0.0, 5.0), p=np.array([k, level]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], terminal=True)
    g = sens.gradient(lambda u, *, t_events: c * t_events[0][0], prob, events=[ev], mode="reverse", **TIGHT)
    np.testing.assert_allclose(g / c, [-math.log(y0 / level) / k**2, -1 / (level * k)], rtol=1e-7)


def test_backsolve_with_jumps_raises_naming_the_event():
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 1.0), p=np.array([0.8]))
    ev = dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: u.__setitem__(1, -p[0] * u[1]), name="floor")
    with pytest.raises(ValueError, match="floor.*interpolating"):
        sens.gradient(lambda u: u[-1, 0], prob, events=[ev], mode="reverse", adjoint="backsolve")


def test_prepared_operator_replans_when_event_times_move():
    y0, c = 2.0, 0.5
    prob = dxdt.ODEProblem(decay, [y0], (0.0, 5.0), p=np.array([0.7, c]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], terminal=True)
    prep = sens.prepare("gradient", lambda u, *, t_events: t_events[0][0], prob, events=[ev],
                        mode="forward", **TIGHT)
    for k in (0.7, 0.9):
        t_event = math.log(y0 / c) / k
        np.testing.assert_allclose(prep(np.array([k, c])), [-t_event / k, -1 / (c * k)], rtol=1e-7)
    assert prep.mode == "forward" and prep.n_traces == 1  # the planned times are an argument
    with pytest.raises(ValueError, match="shape"):
        prep(np.ones(3))


@pytest.mark.parametrize("mode, adjoint", [("forward", "interpolating"), ("reverse", "checkpoint")])
def test_state_event_operator_rebuilds_only_for_a_new_plan_structure(mode, adjoint):
    """The planned times are an argument of the program, for the segments of jax_solve
    (forward) and the discrete adjoint's (checkpoint) alike."""
    # two bounces before t = 1.5 for e = 0.75 ... 0.82, three for e = 0.6
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 1.5), p=np.array([0.8]))
    ev = dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: u.__setitem__(1, -p[0] * u[1]), direction=-1)

    def loss(u, *, t_events):  # the second bounce time + the final velocity
        return t_events[0][1] + u[-1, 1]

    prep = sens.prepare("value_and_gradient", loss, prob, events=[ev], mode=mode, adjoint=adjoint, **TIGHT)
    assert prep.adjoint == (None if mode == "forward" else adjoint)
    t1 = math.sqrt(2 / G)
    for e, traces in ((0.8, 1), (0.82, 1), (0.75, 1), (0.6, 2), (0.8, 2)):
        value, grad = prep(np.array([e]))
        assert prep.n_traces == traces
        if e == 0.6:
            sol = dxdt.solve(prob.remake(p=np.array([e])), events=[ev], **TIGHT)
            assert len(sol.t_events[0]) == 3
            assert value == pytest.approx(sol.t_events[0][1] + sol.u[-1, 1], rel=1e-8)
            continue
        t2 = t1 * (1 + 2 * e)
        assert value == pytest.approx(t2 + e * e * G * t1 - G * (1.5 - t2), rel=1e-8)
        np.testing.assert_allclose(grad, [2 * t1 + 2 * e * G * t1 + G * 2 * t1], rtol=1e-7)


def test_unprepared_calls_through_a_state_event_reuse_the_operator_and_see_changed_arrays():
    # u' = -k u from 2 crosses the closure level c at t = ln(2 / c) / k; loss: that time
    # plus a closure weight times u(5)
    level, weight = np.array([0.5]), np.array([1.0])
    calls = []
    log = calls.append

    def traced():  # the calls made while tracing (the planning NumPy solve calls with floats)
        return [kind for kind in calls if kind not in ("float", "float64")]

    def below(u, p, t):
        log(type(t).__name__)
        return u[0] - level[0]

    def loss(u, *, t_events):
        return t_events[0][0] + weight[0] * u[-1, 0]

    def expected(k, c, w):
        t = math.log(2.0 / c) / k
        return -t / k - w * 5.0 * 2.0 * math.exp(-5.0 * k)

    ev = dxdt.Event(below)
    for mode in ("forward", "reverse"):
        for k, c, w in ((0.7, 0.5, 1.0), (0.9, 0.5, 1.0), (0.9, 0.25, 1.0), (0.9, 0.25, 3.0)):
            level[0], weight[0] = c, w  # changed in place between calls: seen by the next one
            n_traced, before = len(traced()), sens.cache_info()
            prob = dxdt.ODEProblem(decay, [2.0], (0.0, 5.0), p=np.array([k, 0.0]))
            grad = sens.gradient(loss, prob, events=[ev], mode=mode, **TIGHT)
            np.testing.assert_allclose(grad[0], expected(k, c, w), rtol=1e-7)
            after = sens.cache_info()
            if (k, c, w) == (0.9, 0.5, 1.0):  # only p moved: the operator of the first call
                assert len(traced()) == n_traced
                # (cache_info counted none of the operators through events)
                assert after["memory_hits"] == before["memory_hits"] + 1 and after["builds"] == before["builds"]
            elif (k, c, w) == (0.7, 0.5, 1.0):
                assert after["builds"] > before["builds"]
            elif (c, w) != (0.5, 1.0) and w == 1.0:
                assert len(traced()) > n_traced  # a changed constant: traced again
    n_traced = len(traced())
    sens.clear_cache(disk=False)  # forgets the kept operators too
    grad = sens.gradient(loss, prob, events=[ev], mode="reverse", **TIGHT)
    np.testing.assert_allclose(grad[0], expected(0.9, 0.25, 3.0), rtol=1e-7)
    assert len(traced()) > n_traced


def test_reverse_reports_the_adjoint_it_uses():
    prob = dxdt.ODEProblem(decay, [2.0], (0.0, 5.0), p=np.array([0.7, 0.5]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], terminal=True)  # changes no state
    loss = lambda u, *, t_events: t_events[0][0]  # noqa: E731
    assert sens.prepare("gradient", loss, prob, events=[ev], mode="reverse").adjoint == "interpolating"
    prep = sens.prepare("gradient", loss, prob, events=[ev], mode="reverse", adjoint="backsolve")
    assert prep.adjoint == "checkpoint" and "discrete adjoint" in prep.reason
    np.testing.assert_allclose(prep(prob.p), [-math.log(4) / 0.7**2, -1 / (0.5 * 0.7)], rtol=1e-5)


def test_interpolating_dense_buffer_overflow_is_solved_in_chunks(monkeypatch):
    """A segment that outgrows the dense step buffer sized by the planning solve runs
    jax_solve's chunked interpolating adjoint: the answer is unchanged and nothing is
    recompiled."""
    from dxdt.sensitivity import _events

    monkeypatch.setattr(_events, "segment_steps", lambda *args: 32)
    k, y0, c = 0.7, 2.0, 0.5
    prob = dxdt.ODEProblem(decay, [y0], (0.0, 5.0), p=np.array([k, c]))
    ev = dxdt.Event(lambda u, p, t: u[0] - p[1], terminal=True)
    prep = sens.prepare("gradient", lambda u, *, t_events: t_events[0][0], prob, events=[ev],
                        mode="reverse", **TIGHT)
    t_event = math.log(y0 / c) / k
    np.testing.assert_allclose(prep(prob.p), [-t_event / k, -1 / (c * k)], rtol=1e-7)
    assert prep._prepared._program.meta["dense_steps"] == 32 and prep.n_traces == 1


def test_interpolating_adjoint_accurate_where_stability_sets_the_steps():
    """Diffusion (Tsit5 at its stability limit) with a dose at t = 0.5: at default
    tolerances the interpolating adjoint through the dose is error-controlled, while the
    discrete adjoint differentiates steps chosen for stability and is 2000x less accurate."""
    from dxdt import problems

    n = 256
    prob = problems.heat_1d(n=n)
    data = np.sin(3 * np.linspace(0, 1, n))
    dose = dxdt.TimeEvent([0.5], lambda u, p, t: u.__setitem__(n // 3, u[n // 3] + 1.0))

    def loss(u):
        return np.sum((u[-1] - data) ** 2)

    reference = sens.gradient(loss, prob, events=[dose], mode="reverse", rtol=1e-11, atol=1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error-controlled adjoint does not warn
        interpolating = sens.gradient(loss, prob, events=[dose], mode="reverse", adjoint="interpolating")
    # the discrete adjoint cannot vouch for its gradient here, and says so
    with pytest.warns(RuntimeWarning, match="cannot vouch"):
        checkpoint = sens.gradient(loss, prob, events=[dose], mode="reverse", adjoint="checkpoint")
    error = {name: np.linalg.norm(g - reference) / np.linalg.norm(reference)
             for name, g in (("interpolating", interpolating), ("checkpoint", checkpoint))}
    assert error["interpolating"] < 1e-6
    assert error["checkpoint"] > 5e-5


def test_auto_through_events_uses_forward_mode_when_the_adjoints_dense_output_is_large(monkeypatch):
    """As without events: by dimensions a 4-parameter Gray-Scott gradient is an adjoint;
    with every segment's dense output above ADJOINT_DENSE_LIMIT (lowered to 64 KiB) the
    prepared operator uses forward mode, says why, and gives the adjoint's gradient."""
    from dxdt import problems
    from dxdt.sensitivity import _mode

    prob = problems.gray_scott(n=16, tspan=(0.0, 10.0))
    seed = dxdt.TimeEvent([4.0], lambda u, p, t: u.__setitem__((1, 8, 8), u[1, 8, 8] + 0.1))

    def loss(u):
        return np.mean(u[-1, 1])

    adjoint = sens.gradient(loss, prob, events=[seed], mode="reverse", rtol=1e-8, atol=1e-10)
    monkeypatch.setattr(_mode, "ADJOINT_DENSE_LIMIT", 2**16)
    prep = sens.prepare("gradient", loss, prob, events=[seed], rtol=1e-8, atol=1e-10)
    assert prep.mode == "forward" and prep.adjoint is None and "MiB of dense output" in prep.reason
    np.testing.assert_allclose(prep(prob.p), adjoint, rtol=1e-5)


def test_hessian_through_fixed_dose_times_is_forward_over_reverse():
    """Fixed dose times make a fixed chain of solves: mode="reverse" second order runs
    forward-over-reverse through jax_solve's chain (the adjoint of every segment
    differentiated forward); checked against the closed form of a bolus regimen."""
    tau, ts = np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.4, 1.0, 1.2, 2.0])
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 2.0), p=np.array([0.7, 0.5]))
    dose = dxdt.TimeEvent(tau, lambda u, p, t: u.__setitem__(0, u[0] + p[1]))

    def exact_loss(k, amount):  # sum_j u(t_j)^2, u(t) = e^{-kt} + D sum_{tau_i <= t} e^{-k (t - tau_i)}
        return sum((math.exp(-k * t) + amount * sum(math.exp(-k * (t - s)) for s in tau if s <= t)) ** 2
                   for t in ts)

    H = sens.prepare("hessian", lambda u: np.sum(u**2), prob, events=[dose], saveat=ts, mode="reverse", **TIGHT)
    assert H.mode == "forward-over-reverse"
    expected = np.array([central_gradient(lambda *y, i=i: central_gradient(exact_loss, y)[i], prob.p, h=1e-4)
                         for i in range(2)])
    np.testing.assert_allclose(H(prob.p), expected, rtol=1e-6, atol=1e-6)


def _nested_central_hessian(fn, x, h=1e-4):
    return np.array([central_gradient(lambda *y, i=i: central_gradient(fn, y)[i], x, h=h) for i in range(len(x))])


@pytest.mark.parametrize("op", ["hessian", "hvp"])
def test_second_order_through_moving_dose_times_is_forward_over_reverse(op):
    """A dose at tau = p[2] (``times(p)``): the Hessian in (k, D, tau), forward-over-reverse
    through one jax_solve segment per event between planned times, against the closed form
    ``u(t) = e^{-kt} + D e^{-k (t - tau)} [t >= tau]``."""
    ts = np.array([0.4, 1.2, 2.0])
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 2.0), p=np.array([0.7, 0.5, 1.0]))
    dose = dxdt.TimeEvent(lambda p: [p[2]], lambda u, p, t: u.__setitem__(0, u[0] + p[1]))

    def exact_loss(k, amount, tau):
        return sum((math.exp(-k * t) + (amount * math.exp(-k * (t - tau)) if t >= tau else 0.0)) ** 2 for t in ts)

    prep = sens.prepare(op, lambda u: np.sum(u**2), prob, events=[dose], saveat=ts, mode="reverse", **TIGHT)
    assert prep.mode == "forward-over-reverse"
    expected = _nested_central_hessian(exact_loss, prob.p)
    v = np.array([0.3, -1.0, 0.5])
    got = prep(prob.p) if op == "hessian" else prep(prob.p, v)
    np.testing.assert_allclose(got, expected if op == "hessian" else expected @ v, rtol=1e-6, atol=1e-6)


def test_hessian_through_a_state_event_is_forward_over_reverse():
    """Decay ``y' = -k y`` crossing ``y = c`` at ``t* = ln(y0/c)/k`` jumps by ``a``; the loss
    ``y(T)^2 + t*`` uses the event time. Its Hessian in (k, c, a), forward-over-reverse
    (the event time by the implicit function theorem to second order, every segment's
    adjoint differentiated forward), against the closed form
    ``y(T) = (c + a) e^{-k (T - t*)}``; forward-over-forward agrees."""
    y0, T = 2.0, 3.0
    prob = dxdt.ODEProblem(decay, [y0], (0.0, T), p=np.array([0.7, 0.5, 1.0]))
    cross = dxdt.Event(lambda u, p, t: u[0] - p[1], lambda u, p, t: u.__setitem__(0, u[0] + p[2]), direction=-1)

    def loss(u, *, t_events):
        return u[-1, 0] ** 2 + t_events[0][0]

    def exact_loss(k, c, a):
        t_star = math.log(y0 / c) / k
        return ((c + a) * math.exp(-k * (T - t_star))) ** 2 + t_star

    H = sens.prepare("hessian", loss, prob, events=[cross], mode="reverse", **TIGHT)
    assert H.mode == "forward-over-reverse"
    expected = _nested_central_hessian(exact_loss, prob.p)
    np.testing.assert_allclose(H(prob.p), expected, rtol=1e-6, atol=1e-6)
    forward = sens.hessian(loss, prob, events=[cross], mode="forward", **TIGHT)
    np.testing.assert_allclose(forward, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode, adjoint", MODES + [("reverse", "checkpoint")])
def test_fixed_dose_times_compile_once_and_never_replan(mode, adjoint, monkeypatch):
    """Fixed dose times: the operator is built once (on jax_solve's chain, one scan over
    the segments; the discrete adjoint on its own segments) and a call at a new target
    neither re-plans (no NumPy solve: it once cost the discrete adjoint 10x its gradient)
    nor recompiles; the Jacobian of the rows matches the closed form, and a failing solve
    still raises."""
    from dxdt.sensitivity import _events

    tau, ts = np.array([0.0, 0.5, 1.0, 1.5]), np.array([0.25, 0.75, 1.25, 2.0])
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 2.0), p=np.array([0.7]))
    dose = dxdt.TimeEvent(tau, lambda u, p, t: u.__setitem__(0, u[0] + 0.5))
    prep = sens.prepare("jacobian", prob, events=[dose], saveat=ts, mode=mode, adjoint=adjoint, **TIGHT)
    planning = []
    monkeypatch.setattr(_events, "_numpy_solve", lambda *a, **k: planning.append(a) or pytest.fail("re-planned"))
    for k in (0.7, 1.3):
        # d/dk of u(t) = e^{-kt} + 0.5 sum_{tau_i <= t} e^{-k (t - tau_i)}
        expected = [-t * math.exp(-k * t) - 0.5 * sum((t - s) * math.exp(-k * (t - s)) for s in tau if s <= t)
                    for t in ts]
        np.testing.assert_allclose(prep(np.array([k]))[:, 0, 0], expected, rtol=1e-7)
    assert prep.n_traces == 1 and not planning
    monkeypatch.undo()
    small = sens.prepare("jacobian", prob, events=[dose], saveat=ts, mode=mode, adjoint=adjoint, max_steps=300,
                         **TIGHT)
    with pytest.raises(dxdt.SolverError, match="max_steps"):
        small(np.array([1e4]))


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_dose_time_of_p_replans_only_when_the_sequence_moves(mode):
    """TimeEvent(times(p)) first derivatives run on jax_solve's chain: a dose time that moves
    between two rows reuses the compiled chain; one that crosses a row makes the chain
    report the changed sequence, and the operator re-plans and rebuilds once; moving back
    finds the first program again (kept per plan structure), as does a dose that leaves
    tspan and comes back."""
    ts = np.array([1.0, 2.0, 3.0])
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 3.0), p=np.array([0.7, 1.5]))
    dose = dxdt.TimeEvent(lambda p: p[1:2], lambda u, p, t: u.__setitem__(0, u[0] + 0.5))

    def exact(k, tau):
        return sum((math.exp(-k * t) + (0.5 * math.exp(-k * (t - tau)) if t >= tau else 0.0)) ** 2 for t in ts)

    prep = sens.prepare("gradient", lambda u: np.sum(u**2), prob, events=[dose], saveat=ts, mode=mode, **TIGHT)
    for tau, traces in ((1.5, 1), (1.7, 1), (2.5, 2), (1.6, 2), (2.4, 2), (3.5, 3), (2.6, 3), (3.6, 3)):
        np.testing.assert_allclose(prep(np.array([0.7, tau])), central_gradient(exact, [0.7, tau], h=1e-6),
                                   rtol=1e-6)
        assert prep.n_traces == traces


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_dose_times_written_with_numpy_are_translated(mode):
    """``TimeEvent(times=lambda p: np.array([0.0, p[2]]))``: times(p) written with NumPy
    runs on traced values like f (it crashed every operator with a raw
    TracerArrayConversionError). u(3) = a e^{-3k} + a e^{-k (3 - tau)}."""
    prob = dxdt.ODEProblem(decay, [0.0], (0.0, 3.0), p=np.array([0.5, 1.0, 1.0]))
    dose = dxdt.TimeEvent(times=lambda p: np.array([0.0, p[2]]), affect=lambda u, p, t: u.__setitem__(0, u[0] + p[1]))
    k, a, tau = prob.p
    expected = [-3 * a * math.exp(-3 * k) - (3 - tau) * a * math.exp(-k * (3 - tau)),
                math.exp(-3 * k) + math.exp(-k * (3 - tau)), a * k * math.exp(-k * (3 - tau))]
    np.testing.assert_allclose(sens.gradient(lambda u: u[-1, 0], prob, events=[dose], mode=mode, **TIGHT),
                               expected, rtol=1e-8)
