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

    def ceiling(u, p, t):
        calls.append("condition")  # plain Python: runs only while tracing
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


@pytest.mark.parametrize("make, error, match", [
    (lambda: dxdt.Event(lambda u, p, t: u, name="vector"), TypeError, "vector.*scalar"),
    (lambda: dxdt.Event(floor, lambda u, p, t: u * 2, name="returns"), TypeError, "returns.*return None"),
    (lambda: dxdt.Event(floor, lambda u, p, t: setattr(u, "shape", (1, 2)), name="reshape"),
     ValueError, "reshape.*shape"),
    (lambda: dxdt.TimeEvent([1.0], lambda u, p, t: 1.0, name="dose"), TypeError, "dose.*return None"),
    (lambda: dxdt.TimeEvent([1.0], lambda u, p, t: u.__setitem__(0, np.inf), name="inf"), ValueError,
     "inf.*non-finite"),
])
def test_bad_condition_or_affect_names_the_event(make, error, match):
    prob = dxdt.ODEProblem(fall, [1.0, 0.5], (0.0, 2.0))
    with pytest.raises(error, match=match):
        dxdt.solve(prob, Tsit5(), events=[make()], backend="jax")
