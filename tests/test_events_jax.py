"""Events on the JAX backend: conditions and affects run translated and compiled like ``f``
(the user's closure buffers stay untouched, a second solve traces nothing), with the NumPy
backend's results, statuses and errors."""

import numpy as np
import pytest

import dxdt
from dxdt.solvers import Tsit5

TIGHT = dict(rtol=1e-10, atol=1e-12)
G = 9.81


def fall(du, u, p, t):
    du[0] = u[1]
    du[1] = -G


def floor(u, p, t):
    return u[0]


def bounce(u, p, t):
    u[1] = -0.5 * u[1]


def test_closure_buffers_stay_unchanged_and_nothing_is_traced_twice():
    work = np.array([7.0, -3.0])  # written by both the condition and the affect
    calls = []
    log = calls.append  # a bound method: the cache key does not digest the list's content

    def ceiling(u, p, t):
        log("condition")  # plain Python: runs only while tracing
        np.multiply(u, p[0], out=work)
        return work[0] - 0.5

    def damp(u, p, t):
        work[:] = u
        u[1] = -p[1] * work[1]
        u[0] = work[0] + 1e-3

    events = [dxdt.Event(ceiling, damp, direction=-1, name="ceiling"),
              dxdt.TimeEvent([0.7], lambda u, p, t: u.__setitem__(1, u[1] - p[1]), name="push")]
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 2.0), p=np.array([2.0, 0.8]))
    ts = np.linspace(0.0, 2.0, 9)
    numpy = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts)
    work[:] = [7.0, -3.0]
    calls.clear()
    jax = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend="jax")
    np.testing.assert_array_equal(work, [7.0, -3.0])
    assert jax.status == numpy.status == "success" and len(jax.t_events[0]) >= 2
    for i in range(2):
        np.testing.assert_allclose(jax.t_events[i], numpy.t_events[i], atol=1e-9)
        np.testing.assert_allclose(jax.u_events[i], numpy.u_events[i], atol=1e-8)
    np.testing.assert_allclose(jax.u, numpy.u, atol=1e-8)
    traced = len(calls)
    assert 0 < traced < 10  # traced per compiled shape, never evaluated per step on the host
    again = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend="jax")
    assert len(calls) == traced
    np.testing.assert_array_equal(again.u, jax.u)
    np.testing.assert_array_equal(work, [7.0, -3.0])


def test_a_closure_constant_changed_in_place_is_traced_again():
    level = np.array([0.5])

    def threshold(u, p, t):
        return u[0] - level[0]

    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 1.0))
    event = dxdt.Event(threshold, terminal=True)
    first = dxdt.solve(prob, Tsit5(), **TIGHT, events=[event], backend="jax")
    level[0] = 0.25
    second = dxdt.solve(prob, Tsit5(), **TIGHT, events=[event], backend="jax")
    np.testing.assert_allclose([first.t[-1], second.t[-1]], np.sqrt(2 * (1 - np.array([0.5, 0.25])) / G),
                               rtol=1e-9)


def test_zeno_stop_and_backward_time_events_match_numpy():
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 10.0))
    events = [dxdt.Event(floor, bounce, direction=-1)]
    by = {b: dxdt.solve(prob, Tsit5(), **TIGHT, events=events, backend=b) for b in ("numpy", "jax")}
    assert by["jax"].status == "dt_min" and "Zeno" in by["jax"].message
    assert len(by["jax"].t_events[0]) == len(by["numpy"].t_events[0])
    np.testing.assert_allclose(by["jax"].t_events[0], by["numpy"].t_events[0], atol=1e-9)
    np.testing.assert_allclose(by["jax"].u[-1], by["numpy"].u[-1], atol=1e-8)

    def decay(du, u, p, t):
        du[0] = -0.1 * u[0]

    backward = dxdt.ODEProblem(decay, [1.0], (10.0, 0.0))
    dose = dxdt.TimeEvent([2.0, 5.0, 20.0], lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    by = {b: dxdt.solve(backward, Tsit5(), **TIGHT, events=[dose], backend=b) for b in ("numpy", "jax")}
    np.testing.assert_array_equal(by["jax"].t_events[0], [5.0, 2.0])
    assert by["jax"].t[-1] == 0.0 and np.all(np.diff(by["jax"].t) <= 0)
    np.testing.assert_allclose(by["jax"].u[-1], by["numpy"].u[-1], rtol=1e-9)


def test_two_crossings_and_the_earlier_of_two_events_inside_one_adaptive_step():
    # u = (t - 1.5)^2 is exact for Tsit5, whose adaptive steps are [0, 1] and [1, 3]: the
    # dip below 0.01 on (1.4, 1.6) shows only at the compiled interior checks
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 2 * (t - 1.5)), [2.25], (0.0, 3.0))
    assert dxdt.solve(prob, Tsit5(), dt=1.0, backend="jax").t.tolist() == [0.0, 1.0, 3.0]
    sol = dxdt.solve(prob, Tsit5(), dt=1.0, events=[dxdt.Event(lambda u, p, t: u[0] - 0.01)], backend="jax")
    np.testing.assert_allclose(sol.t_events[0], [1.4, 1.6], atol=1e-12)
    assert sol.status == "success" and sol.t[-1] == 3.0
    line = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 1.0), [0.0], (0.0, 3.0))
    for order in [(0, 1), (1, 0)]:  # roots at 1.3 and 1.6, both inside the step [1, 3]
        events = [dxdt.Event(lambda u, p, t: u[0] - 1.6, terminal=True, name="late"),
                  dxdt.Event(lambda u, p, t: u[0] - 1.3, terminal=True, name="early")]
        events = [events[i] for i in order]
        sol = dxdt.solve(line, Tsit5(), dt=1.0, events=events, backend="jax")
        early = [e.name for e in events].index("early")
        assert sol.status == "event" and "early" in sol.message and sol.t[-1] == pytest.approx(1.3, abs=1e-13)
        assert len(sol.t_events[early]) == 1 and len(sol.t_events[1 - early]) == 0


@pytest.mark.parametrize("max_steps", [100_000, 8])
def test_events_take_the_numpy_backends_steps(max_steps):
    """Across events the JAX backend steps as the NumPy executor does: the first step
    chosen for the whole span (it was chosen for the span up to the first event: 0.0074
    against 0.049 here), and after an event the step the controller proposed, with its
    error memory (it restarted from the last, cut step, with none). So the same steps, the
    same rows and, with a small max_steps, the same partial data."""
    def f(du, u, p, t):
        du[0] = u[0] ** 2
        du[1] = -u[1]

    prob = dxdt.ODEProblem(f, np.array([0.1, 1.0]), (0.0, 2.0))
    events = [dxdt.TimeEvent([0.2, 1.3], lambda u, p, t: u.__setitem__(1, u[1] + 1.0), name="dose"),
              dxdt.Event(lambda u, p, t: u[1] - 0.8, name="level")]
    sols = [dxdt.solve(prob, Tsit5(), events=events, backend=backend, max_steps=max_steps)
            for backend in ("numpy", "jax")]
    assert sols[0].status == sols[1].status == ("success" if max_steps > 8 else "max_steps")
    assert sols[0].stats["naccept"] == sols[1].stats["naccept"] and len(sols[0].t) == len(sols[1].t)
    np.testing.assert_allclose(sols[1].t, sols[0].t, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sols[1].u, sols[0].u, rtol=1e-8, atol=1e-12)
    assert len(sols[1].t_events[1]) == len(sols[0].t_events[1]) >= (2 if max_steps > 8 else 0)


def test_state_event_backward_in_time_against_the_closed_form():
    # u(t) = exp(0.1 (10 - t)) from t = 10 back to 0 reaches 2 at t = 10 - 10 ln 2
    back = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, -0.1 * u[0]), [1.0], (10.0, 0.0))
    level = dxdt.Event(lambda u, p, t: u[0] - 2.0, direction=1, terminal=True)
    sol = dxdt.solve(back, Tsit5(), **TIGHT, events=[level], backend="jax")
    assert sol.status == "event"
    np.testing.assert_allclose(sol.t_events[0], [10 - 10 * np.log(2)], rtol=1e-10)
    np.testing.assert_allclose(sol.u[-1], [2.0], rtol=1e-9)
    assert np.all(np.diff(sol.t) < 0)


def test_chunks_return_many_saves_and_long_runs_of_steps_as_numpy_does():
    # 400 save times, each twice (a chunk returns at most 64 rows and stops at the last)
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 2.5))
    events = [dxdt.Event(floor, bounce, direction=-1)]
    ts = np.repeat(np.linspace(0.0, 2.5, 200), 2)
    by = {b: dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend=b) for b in ("numpy", "jax")}
    np.testing.assert_allclose(by["jax"].t_events[0], by["numpy"].t_events[0], atol=1e-9)
    np.testing.assert_allclose(by["jax"].u, by["numpy"].u, atol=1e-8)
    np.testing.assert_array_equal(by["jax"].u[::2], by["jax"].u[1::2])
    # every step saved, hundreds of steps between events (a chunk returns at most 128)
    spring = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), [u[1], -u[0]]), [1.0, 0.0],
                             (0.0, 40.0))
    stop = dxdt.Event(lambda u, p, t: t - 39.0, terminal=True)
    sol = dxdt.solve(spring, Tsit5(), **TIGHT, events=[stop], backend="jax")
    assert sol.status == "event" and len(sol.t) > 400 and np.all(np.diff(sol.t) > 0)
    np.testing.assert_allclose(sol.u[:, 0], np.cos(sol.t), atol=1e-8)
    assert sol.t[-1] == pytest.approx(39.0, abs=1e-12)


def test_state_event_programs_come_back_from_the_disk_cache(tmp_path, monkeypatch):
    from dxdt.sensitivity import _compiled

    monkeypatch.setenv("DXDT_CACHE_DIR", str(tmp_path))
    traced = []
    log = traced.append

    def ground(u, p, t):
        log(t)  # runs while tracing only
        return u[0]

    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 2.0))
    events = [dxdt.Event(ground, bounce, direction=-1)]
    ts = np.linspace(0.0, 2.0, 5)
    first = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend="jax")
    before, n_traced = _compiled.cache_info(), len(traced)
    _compiled.clear_cache(disk=False)  # as in a new process: the chunk and the affect are on disk
    again = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend="jax")
    after = _compiled.cache_info()
    assert after["disk_hits"] - before["disk_hits"] == 2 and after["builds"] == before["builds"]
    assert len(traced) == n_traced > 0
    np.testing.assert_array_equal(again.u, first.u)
    np.testing.assert_array_equal(again.t_events[0], first.t_events[0])


def test_complex_and_float32_states_keep_their_dtype_on_both_backends():
    # u = exp(i t) doubles when its real part falls through zero, at t = pi / 2
    rotate = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 1j * u[0]), np.array([1.0 + 0j]), (0.0, 5.0))
    double = dxdt.Event(lambda u, p, t: u[0].real, lambda u, p, t: u.__setitem__(0, 2 * u[0]), direction=-1)
    for backend in ("numpy", "jax"):
        sol = dxdt.solve(rotate, Tsit5(), **TIGHT, events=[double], saveat=[2.0, 5.0], backend=backend)
        assert sol.u.dtype == sol.u_events[0].dtype == np.complex128
        np.testing.assert_allclose(sol.t_events[0], [np.pi / 2], rtol=1e-10)
        np.testing.assert_allclose(sol.u[:, 0], 2 * np.exp(1j * np.array([2.0, 5.0])), rtol=1e-8)
    single = dxdt.ODEProblem(fall, np.array([1.0, 0.0], np.float32), (0.0, 0.6))
    for saveat in (None, [0.5]):
        sol = dxdt.solve(single, Tsit5(), events=[dxdt.Event(floor, bounce)], saveat=saveat, backend="jax")
        assert sol.u.dtype == sol.u_events[0].dtype == np.float32
        np.testing.assert_allclose(sol.t_events[0], [np.sqrt(2 / G)], rtol=1e-6)


def test_failures_between_events_keep_the_numpy_status_and_partial_data():
    def breaks(du, u, p, t):  # NaN from t = 1 on
        du[0] = np.where(t < 1.0, -u[0], np.nan)
        du[1] = 1.0

    half = dxdt.Event(lambda u, p, t: u[1] - 0.6, lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    prob = dxdt.ODEProblem(breaks, [1.0, 0.0], (0.0, 3.0))
    for saveat in (None, np.linspace(0.0, 3.0, 7)):
        by = {b: dxdt.solve(prob, Tsit5(), events=[half], saveat=saveat, backend=b) for b in ("numpy", "jax")}
        assert by["jax"].status == by["numpy"].status == "nonfinite" and "non-finite" in by["jax"].message
        np.testing.assert_allclose(by["jax"].t_events[0], [0.6], atol=1e-14)
        assert by["jax"].t[-1] == pytest.approx(by["numpy"].t[-1], abs=1e-12)
        np.testing.assert_allclose(by["jax"].u[-1], by["numpy"].u[-1], rtol=1e-6)
    # max_steps counts across events and is not overrun inside a compiled chunk
    smooth = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), [-u[0], 1.0]), [1.0, 0.0], (0.0, 3.0))
    for max_steps in (5, 9):
        sol = dxdt.solve(smooth, Tsit5(), events=[half], max_steps=max_steps, backend="jax")
        assert sol.status == "max_steps" and sol.stats["naccept"] + sol.stats["nreject"] == max_steps
        assert len(sol.t) == max_steps + 1 + len(sol.t_events[0])  # t0, the steps, a row after each jump
        assert f"max_steps={max_steps}" in sol.message and sol.t[-1] < 3.0


@pytest.mark.parametrize("make, error, match", [
    (lambda: dxdt.Event(lambda u, p, t: u, name="vector"), TypeError, "vector.*scalar"),
    (lambda: dxdt.Event(lambda u, p, t: None, name="none"), TypeError, "none.*real number"),
    (lambda: dxdt.Event(floor, lambda u, p, t: u * 2, name="returns"), TypeError, "returns.*return None"),
    (lambda: dxdt.Event(floor, lambda u, p, t: setattr(u, "shape", (1, 2)), name="reshape"),
     ValueError, "reshape.*shape"),
    (lambda: dxdt.TimeEvent([1.0], lambda u, p, t: 1.0, name="dose"), TypeError, "dose.*return None"),
    (lambda: dxdt.Event(lambda u, p, t: u[0] < 0.5, name="compare"), TypeError, "compare.*boolean"),
])
def test_bad_condition_or_affect_names_the_event(make, error, match):
    prob = dxdt.ODEProblem(fall, [1.0, 0.5], (0.0, 2.0))
    with pytest.raises(error, match=match):
        dxdt.solve(prob, Tsit5(), events=[make()], backend="jax")


# --- dosing schedules (only TimeEvents, with saveat): one compiled call, no host loop

def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


def bolus_exact(t, doses, amount, k):
    return sum(amount * np.exp(-k * (t - d)) for d in doses if d <= t)


@pytest.fixture
def no_host_loop(monkeypatch):
    """Fail if a solve falls back to the host loop of ``_events_jax``."""
    import dxdt._events_jax as events_jax

    def refuse(*args, **kwargs):
        raise AssertionError("the dosing schedule went to the host loop")
    monkeypatch.setattr(events_jax, "_Solve", refuse)


def test_dosing_schedule_is_one_compiled_call_with_the_closed_form(no_host_loop):
    from dxdt.sensitivity import cache_info

    k, amount = 0.1, 1.0
    doses = [0.0, 12.0, 24.0, 30.0]  # at t0, inside, on a save time and at t1
    prob = dxdt.ODEProblem(decay, [0.5], (0.0, 30.0), p=np.array([k]))
    marks = []
    events = [dxdt.TimeEvent(doses, lambda u, p, t: u.__setitem__(0, u[0] + amount), name="bolus"),
              dxdt.TimeEvent([6.0, 24.0, 99.0], None, name="sample"),  # records only; 99 is outside tspan
              dxdt.TimeEvent(lambda p: [18.0 / p[0] / 10.0], lambda u, p, t: u.__setitem__(0, 2 * u[0]),
                             name="double")]  # times(p): at 18
    ts = np.array([0.0, 6.0, 12.0, 20.0, 24.0, 30.0])
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts, backend="jax")

    def exact(t):  # the bolus doses plus 0.5 initially, doubled at t = 18
        before = 0.5 * np.exp(-k * min(t, 18.0)) + bolus_exact(min(t, 18.0), doses, amount, k)
        if t < 18.0:
            return before
        return 2 * before * np.exp(-k * (t - 18.0)) + bolus_exact(t, [d for d in doses if d > 18.0], amount, k)

    assert sol.status == "success"
    np.testing.assert_array_equal(sol.t, ts)
    np.testing.assert_allclose(sol.u[:, 0], [exact(t) for t in ts], rtol=1e-9)  # post-dose rows
    np.testing.assert_array_equal(sol.t_events[0], doses)
    np.testing.assert_array_equal(sol.t_events[1], [6.0, 24.0])
    np.testing.assert_array_equal(sol.t_events[2], [18.0])
    pre = [exact(d) - amount if d != 18.0 else exact(d) for d in doses]
    np.testing.assert_allclose(sol.u_events[0][:, 0], pre, rtol=1e-9)  # pre-dose states
    np.testing.assert_allclose(sol.u_events[2][:, 0], [exact(18.0) / 2], rtol=1e-9)
    # the recording event at 24 lists after the dose: it sees the post-dose state
    np.testing.assert_allclose(sol.u_events[1][:, 0], [exact(6.0), exact(24.0)], rtol=1e-9)
    assert sol.u_events[1].shape == (2, 1) and sol.stats["naccept"] > 0 and sol.stats["nfev"] > sol.stats["naccept"]
    numpy = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=ts)
    np.testing.assert_allclose(sol.u, numpy.u, rtol=1e-9)
    for i in range(3):
        np.testing.assert_allclose(sol.u_events[i], numpy.u_events[i], rtol=1e-9)
    # other dose times, the same sequence shape (rows per segment): the compiled program is reused
    builds = cache_info()["builds"]
    moved = [dxdt.TimeEvent([0.0, 11.0, 24.0, 30.0], events[0].affect, name="bolus"), events[1], events[2]]
    again = dxdt.solve(prob, Tsit5(), **TIGHT, events=moved, saveat=ts, backend="jax")
    assert cache_info()["builds"] == builds
    np.testing.assert_allclose(again.u, dxdt.solve(prob, Tsit5(), **TIGHT, events=moved, saveat=ts).u, rtol=1e-9)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_dosing_events_sharing_a_time_fire_in_list_order(order, no_host_loop):
    double = dxdt.TimeEvent([1.0], lambda u, p, t: u.__setitem__(0, 2 * u[0]), name="double")
    add = dxdt.TimeEvent([1.0, 1.5], lambda u, p, t: u.__setitem__(0, u[0] + 1.0), name="add")
    events = [[double, add][i] for i in order]
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, 0.0), [1.0], (0.0, 2.0))
    sol = dxdt.solve(prob, Tsit5(), events=events, saveat=[0.5, 1.0, 2.0], backend="jax")
    at_one = 3.0 if order == (0, 1) else 4.0
    np.testing.assert_allclose(sol.u[:, 0], [1.0, at_one, at_one + 1.0], rtol=1e-12)
    i_add = order.index(1)
    np.testing.assert_allclose(sol.u_events[i_add][:, 0], [2.0 if order == (0, 1) else 1.0, at_one], rtol=1e-12)
    np.testing.assert_allclose(sol.u_events[1 - i_add][:, 0], [1.0 if order == (0, 1) else 2.0], rtol=1e-12)


def test_dosing_backward_in_time(no_host_loop):
    prob = dxdt.ODEProblem(decay, [1.0], (10.0, 0.0), p=np.array([0.1]))
    dose = dxdt.TimeEvent([2.0, 5.0, 20.0], lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[dose], saveat=[10.0, 5.0, 0.0], backend="jax")
    np.testing.assert_array_equal(sol.t_events[0], [5.0, 2.0])
    u5 = np.exp(0.1 * 5) + 1.0
    np.testing.assert_allclose(sol.u[:, 0], [1.0, u5, (u5 * np.exp(0.1 * 3) + 1.0) * np.exp(0.1 * 2)], rtol=1e-9)


def test_dosing_closure_amount_changed_in_place_is_seen_and_buffers_stay_untouched(no_host_loop):
    amount = np.array([1.0])  # read by the affect: baked into the trace
    work = np.array([5.0])  # written by the affect before reading

    def dose(u, p, t):
        work[0] = amount[0]
        u[0] += work[0]

    prob = dxdt.ODEProblem(decay, [0.0], (0.0, 10.0), p=np.array([0.2]))
    events = [dxdt.TimeEvent([1.0, 4.0], dose)]
    first = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=[10.0], backend="jax")
    np.testing.assert_array_equal(work, [5.0])
    amount *= 3.0
    second = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, saveat=[10.0], backend="jax")
    expected = bolus_exact(10.0, [1.0, 4.0], 1.0, 0.2)
    np.testing.assert_allclose([first.u[-1, 0], second.u[-1, 0]], [expected, 3 * expected], rtol=1e-9)
    np.testing.assert_array_equal(work, [5.0])


def test_failed_dosing_solve_keeps_the_host_loops_partial_data():
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 100.0), p=np.array([0.1]))
    dose = dxdt.TimeEvent(np.arange(1.0, 100.0), lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    ts = np.linspace(0.0, 100.0, 11)
    by = {b: dxdt.solve(prob, Tsit5(), events=[dose], saveat=ts, max_steps=50, backend=b) for b in ("numpy", "jax")}
    assert by["jax"].status == by["numpy"].status == "max_steps"  # a budget counted across events
    assert by["jax"].stats["naccept"] + by["jax"].stats["nreject"] == 50
    assert 0 < len(by["jax"].t) < len(ts) and len(by["jax"].t_events[0]) > 0
    np.testing.assert_allclose(by["jax"].u, by["numpy"].u[:len(by["jax"].u)], rtol=1e-5)

    def blows_up(du, u, p, t):
        du[0] = np.where(t < 3.0, -u[0], np.nan)

    nan_prob = dxdt.ODEProblem(blows_up, [1.0], (0.0, 10.0))
    by = {b: dxdt.solve(nan_prob, Tsit5(), events=[dose], saveat=ts / 10, backend=b) for b in ("numpy", "jax")}
    assert by["jax"].status == by["numpy"].status == "nonfinite"
    np.testing.assert_array_equal(by["jax"].t, by["numpy"].t)


def _poison(u, p, t):
    with np.errstate(divide="ignore"):
        u[0] = u[0] + np.log(p[0] - 0.1)  # log(0) = -inf at p = 0.1


@pytest.mark.parametrize("kind", ["Event", "TimeEvent", "TimeEvent at t0"])
@pytest.mark.parametrize("saveat", [None, np.linspace(0.0, 3.0, 7)], ids=["steps", "saveat"])
def test_an_affect_that_makes_the_state_nonfinite_is_a_failure_that_keeps_the_partial_data(kind, saveat):
    """A failure of the solve (not bad input): status "nonfinite" on both backends, the rows
    up to the event with the state before the affect, and SolverError with throw=True."""
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 3.0), p=np.array([0.1]))
    t_fire = {"Event": np.log(2.0) / 0.1 / 10, "TimeEvent": 1.0, "TimeEvent at t0": 0.0}[kind]
    event = (dxdt.Event(lambda u, p, t: u[0] - np.exp(-0.1 * t_fire), _poison, name="inf") if kind == "Event"
             else dxdt.TimeEvent([t_fire, 2.0], _poison, name="inf"))
    by = {b: dxdt.solve(prob, Tsit5(), events=[event], saveat=saveat, backend=b) for b in ("numpy", "jax")}
    for b, sol in by.items():
        assert sol.status == "nonfinite" and not sol.success, b
        assert "'inf'" in sol.message and "non-finite" in sol.message and f"t={t_fire:.6g}" in sol.message
        np.testing.assert_allclose(sol.t_events[0], [t_fire], rtol=1e-6, atol=1e-12)
        assert np.all(np.isfinite(sol.u))
        np.testing.assert_allclose(sol.u[:, 0], np.exp(-0.1 * sol.t), rtol=1e-6)  # before the affect
        if saveat is None:
            assert sol.t[-1] == sol.t_events[0][0]
        else:
            np.testing.assert_array_equal(sol.t, saveat[saveat <= t_fire])
        with pytest.raises(dxdt.SolverError, match="non-finite") as raised:
            dxdt.solve(prob, Tsit5(), events=[event], saveat=saveat, backend=b, throw=True)
        assert raised.value.solution.status == "nonfinite"
    np.testing.assert_allclose(by["jax"].t[[0, -1]], by["numpy"].t[[0, -1]], rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dosing_keeps_the_state_dtype_without_parameters(dtype, no_host_loop):
    def rhs(du, u, p, t):
        du[:] = -0.5 * u

    prob = dxdt.ODEProblem(rhs, np.array([1.0, 2.0], dtype=dtype), (0.0, 4.0))  # p is None
    dose = dxdt.TimeEvent([1.0, 2.0], lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    ts = np.array([0.5, 1.0, 3.0, 4.0])
    sol = dxdt.solve(prob, Tsit5(), **TIGHT, events=[dose], saveat=ts, backend="jax")
    exact = np.exp(-0.5 * ts)[:, None] * [1.0, 2.0]
    exact[:, 0] += sum(np.where(ts >= d, np.exp(-0.5 * (ts - d)), 0.0) for d in (1.0, 2.0))
    assert sol.u.dtype == sol.u_events[0].dtype == dtype
    np.testing.assert_allclose(sol.u, exact, rtol=1e-6 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("backward", [False, True], ids=["forward in t", "backward in t"])
def test_dense_output_on_both_sides_of_every_jump(backward):
    """``dense=True`` with events: each piece is its chunk's own interpolant, cut at the
    event; at the event time the post-affect state answers, as on the NumPy backend. The
    ball's three bounces against the closed form (run backwards in time: the motion
    reversed, from the state the forward solve reached)."""
    e, n = 0.5, 3
    times = [np.sqrt(2.0 / G)]  # bounce times of a ball dropped from 1 with restitution e
    for k in range(1, n):
        times.append(times[-1] + 2.0 * e**k * np.sqrt(2.0 / G))
    times = np.array(times)

    def exact(t):  # (height, velocity) between the bounces
        k = np.searchsorted(times, t, side="right")
        if k == 0:
            return np.array([1.0 - G * t**2 / 2, -G * t])
        v, s = e**k * np.sqrt(2.0 * G), t - times[k - 1]
        return np.array([v * s - G * s**2 / 2, v - G * s])

    T = times[-1] + 0.1
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, T))
    if backward:  # from the state at T back to 0, the bounce reversed (v -> -v / e)
        prob = dxdt.ODEProblem(fall, exact(T), (T, 0.0))
        events = [dxdt.Event(floor, lambda u, p, t: u.__setitem__(1, -u[1] / e), direction=-1)]  # as t falls
    else:
        events = [dxdt.Event(floor, bounce, direction=-1)]
    jx = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, dense=True, backend="jax")
    npy = dxdt.solve(prob, Tsit5(), **TIGHT, events=events, dense=True)
    np.testing.assert_allclose(np.sort(jx.t_events[0]), times, rtol=1e-9)
    grid = np.linspace(0.0, T, 301)
    np.testing.assert_allclose(jx(grid), np.stack([exact(t) for t in grid]), atol=1e-7)
    np.testing.assert_allclose(jx(grid), npy(grid), atol=1e-8)
    eps, t_e = 1e-7, jx.t_events[0][-1 if backward else 0]
    sides = jx(np.array([t_e - eps, t_e, t_e + eps]))
    np.testing.assert_allclose(sides[[0, 2]], [exact(times[0] - eps), exact(times[0] + eps)], atol=1e-7)
    after = exact(times[0] - 1e-12) if backward else exact(times[0])  # post-affect, in the solve's direction
    np.testing.assert_allclose(sides[1], after, atol=1e-7)
    np.testing.assert_allclose(sides[1], npy(npy.t_events[0][-1 if backward else 0]), atol=1e-9)


@pytest.mark.parametrize("method, options", [("RK4", dict(dt=0.01)), ("Tsit5", dict(dt=0.013, adaptive=False)),
                                             ("RKC", dict(dt=0.01, adaptive=False))])
def test_fixed_steps_take_the_numpy_backends_grid_through_events(method, options):
    """Fixed steps with events (refused on this backend before): the bounce times are the
    closed form's to the root finder's accuracy, and the steps are the NumPy backend's
    grid ``t0 + k dt``, resumed after each bounce (the step an event cut short goes on to
    the grid point it aimed at), with the same rows, states and dense output."""
    method = getattr(dxdt.solvers, method)()
    prob = dxdt.ODEProblem(fall, [1.0, 0.0], (0.0, 3.0))
    events = [dxdt.Event(floor, lambda u, p, t: u.__setitem__(1, -0.9 * u[1]), direction=-1)]
    by = {b: dxdt.solve(prob, method, events=events, backend=b, dense=True, **options) for b in ("numpy", "jax")}
    t1 = np.sqrt(2 / G)
    exact = t1 * (1 + 2 * np.concatenate(([0.0], np.cumsum(0.9 ** np.arange(1, 4)))))
    for sol in by.values():
        assert sol.success and len(sol.t_events[0]) == 4
        np.testing.assert_allclose(sol.t_events[0], exact, atol=1e-12)  # a polynomial: every method is exact
    np.testing.assert_allclose(by["jax"].t, by["numpy"].t, rtol=0, atol=1e-13)
    np.testing.assert_allclose(by["jax"].u, by["numpy"].u, atol=1e-12)
    grid = by["numpy"].t[np.isin(by["numpy"].t, by["numpy"].t_events[0], invert=True)][:-1]  # t1 ends a cut step
    np.testing.assert_allclose(grid / options["dt"], np.round(grid / options["dt"]), atol=1e-9)
    ts = np.linspace(0.0, 3.0, 61)
    np.testing.assert_allclose(by["jax"](ts), by["numpy"](ts), atol=1e-12)


@pytest.mark.parametrize("tspan, times", [((0.0, 1.0), [0.15, 0.5, 0.55]), ((1.0, 0.0), [0.85, 0.5])],
                         ids=["forward in t", "backward in t"])
def test_fixed_steps_stop_at_dose_times_and_resume_the_grid(tspan, times):
    """A ``TimeEvent`` between grid points ends a step exactly at its time, and the next
    step goes on to the grid point the cut step aimed at (RK4, dt = 0.1, both backends)."""
    def decay(du, u, p, t):
        du[0] = -u[0]

    prob = dxdt.ODEProblem(decay, [1.0], tspan)
    dose = dxdt.TimeEvent(times, lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    by = {b: dxdt.solve(prob, dxdt.solvers.RK4(), dt=0.1, events=[dose], backend=b) for b in ("numpy", "jax")}
    grid = np.round(np.arange(0.0, 1.0001, 0.1), 12)
    # pre- and post-affect rows at each dose (0.5 is a grid point too)
    expected = np.sort(np.concatenate([grid[~np.isin(grid, times)], times, times]))
    expected = expected if tspan[1] > tspan[0] else expected[::-1]
    for sol in by.values():
        np.testing.assert_allclose(sol.t, expected, atol=1e-12)
    np.testing.assert_allclose(by["jax"].u, by["numpy"].u, rtol=1e-13)
    # RK4's error at dt = 0.1 on the exact solution sum_i e^{-(t - tau_i)}
    end = tspan[1]
    exact = np.exp(-(end - tspan[0])) + sum(np.exp(-(end - tau)) for tau in times)
    np.testing.assert_allclose(by["jax"].u[-1, 0], exact, rtol=1e-5)
