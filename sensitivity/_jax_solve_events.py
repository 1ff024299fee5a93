"""``jax_solve`` through events: ``TimeEvent`` events (at fixed times or ``times(p)``)
and state ``Event`` events.

With fixed event times the event sequence is the same for every ``(u0, p)``, so ``F``
is a fixed chain

.. math:: F(x) = \\text{rows of } \\; u_0 \\xrightarrow{S_1} u(\\tau_1^-) \\xrightarrow{a_1}
          u(\\tau_1^+) \\xrightarrow{S_2} \\cdots \\xrightarrow{S_K} u(t_1),

where ``S_k`` is ``jax_solve``'s differentiable solve on ``[tau_{k-1}, tau_k]`` (saving
the rows of ``saveat`` in ``[tau_{k-1}, tau_k)`` and its end) and ``a_k`` the events'
affects at ``tau_k``, in list order, translated like ``f`` (they may depend on ``p``).
The segments run in one ``lax.scan`` over their times: one solve in the compiled program
whatever the number of events.
Every transformation of ``F`` is then the one of the composition: each solve by its own
rules (forward sensitivities, the chosen adjoint, forward-over-reverse second order), each
affect by JAX's AD of its translation, the jump conditions of the tangents and adjoints
``v^+ = (da/du) v^-``, ``lambda^- = (da/du)^T lambda^+`` by the chain rule. A row at an
event time shows the post-affect state, as on the NumPy backend (an event at ``t0`` fires
before the first step, one at ``t1`` after the last).

Dose times ``times(p)`` are evaluated inside the trace; the segments end at them held
constant for differentiation, and each joint moves the state along the flow to the
differentiable dose time and back (:func:`along_flow`), so first and second derivatives
follow from the solves' rules; the chain checks that the planned sequence still holds and
reports :data:`SEQUENCE_CHANGED` when it does not.

State events change the chain itself with ``(u0, p)``. ``F`` is then built for the event
sequence of a NumPy solve at ``prob`` and every call re-plans on the host
(:class:`HostPlanner`, a ``jax.pure_callback``): the planned times are an argument of the
chain of :func:`._events.joined_trajectory`, whose joints give the event times by the
implicit function theorem, as for the NumPy-facing operators. A call whose sequence has
another structure (an event more or less) reports :data:`SEQUENCE_CHANGED`.

References
----------
S. Galan, W. F. Feehery, P. I. Barton, "Parametric sensitivity functions for hybrid
discrete/continuous systems", Appl. Numer. Math. 31 (1999) 17-47 (jump conditions at
events at fixed times: no saltation term).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._events import Event, TimeEvent, check_events
from ._events import (_time_position, plan, plan_structure, planned_times, refuse_backsolve_through_jumps,
                      segment_steps, traced_times, translate_events)
from ._jax import load_jax
from ._jax_solve_passes import nan_unless
from ._ode import SolveOptions
from ._options import SEQUENCE_CHANGED, STATUS_CODES

jax, jnp = load_jax()
_CODES = {status: code for code, status in STATUS_CODES.items()}  # a failed planning solve's status code


@dataclass(frozen=True, eq=False)
class Chain:
    """``F`` through fixed-time events: the affects at ``t0``, then ``K`` segments, each a
    solve from ``starts[k]`` to ``stops[k]`` saving its rows then its end, followed by the
    affect set ``branches[which[k]]`` at ``stops[k]``; then ``hold`` copies of the final
    state (rows at ``t1`` after an event there).

    The segments run in one ``lax.scan`` (their solves share one static part, see
    :class:`._jax_solve_passes.SolveSpec`), so the compiled program holds one solve
    whatever the number of events. Every segment saves ``width`` times: its rows, then its
    end time repeated (a zero-length interval, which no solve integrates); ``rows`` picks
    the real rows out of the ``(K, width)`` stack.
    """

    t0: float
    first: tuple  # affects at t0, in list order
    starts: np.ndarray  # (K,)
    stops: np.ndarray  # (K,)
    saves: np.ndarray  # (K, width)
    which: np.ndarray  # (K,) index into branches
    branches: tuple  # affect sets, each a tuple of translated affects in list order
    rows: np.ndarray  # flat indices into the (K * width) saved rows
    hold: int
    t1: float = 0.0
    # TimeEvents with times(p): per event the callable (None for fixed times); per segment
    # stop, at t0 and at t1, the (event, position in its sorted times) that fire there; per
    # such event the positions outside tspan at planning, and on which side (-1: before t0)
    timers: tuple = ()
    stop_sources: tuple = ()
    first_sources: tuple = ()
    hold_sources: tuple = ()
    outside: tuple = ()
    n_rows: np.ndarray = None  # (K,) real rows per segment (the others are its end)
    final_inclusive: bool = True  # the last segment's rows may lie on its end (t1)


def check_jax_solve_events(events, adjoint: str) -> tuple:
    """``events`` of ``jax_solve``; ``adjoint="backsolve"`` is refused with an event that
    changes the state, as by the operators (API.md)."""
    events = check_events(events)
    refuse_backsolve_through_jumps(events, adjoint)
    return events


class HostPlanner:
    """The event sequence of a call of ``F`` through state events, planned on the host.

    State events change the chain with ``(u0, p)``: which events fire, in which order,
    near which times. ``F`` is built for the sequence of a NumPy solve with the events at
    ``prob``'s ``(u0, p)`` (its *structure*, :func:`._events.plan_structure`, is static in
    the program); every call plans again at its own ``(u0, p)`` by a NumPy solve run as a
    ``jax.pure_callback`` on values held constant for differentiation (the derivatives
    come from the joints, :func:`._events.joined_trajectory`), and the planned times
    enter the program as an argument. A call whose sequence has another structure (an
    event more or less, another order, a save time on the other side of an event) gets
    :data:`SEQUENCE_CHANGED`; one whose NumPy solve fails gets its status code.
    """

    def __init__(self, prob, events: tuple, options: SolveOptions, saveat: np.ndarray):
        self._prob, self._events, self._options, self._saveat = prob, events, options, saveat
        self.planned = plan(prob, events, options, saveat)
        self._structure = plan_structure(self.planned, saveat, prob.tspan)
        self._times = planned_times(self.planned[0])
        self.message = ""  # why the last planning failed (for an eager call's error)

    @property
    def n_events(self) -> int:
        return len(self._times)

    def __call__(self, u0, p):
        """``(planned times, code)`` at ``(u0, p)`` (NumPy arrays)."""
        from .._solution import SolverError
        from ._target import to_numpy

        prob = self._prob.remake(u0=np.array(u0), p=to_numpy(p))
        self.message = ""
        try:
            planned = plan(prob, self._events, self._options, self._saveat)
        except SolverError as err:
            self.message = err.solution.message
            return self._times, np.int32(_CODES.get(err.solution.status, 3))
        if plan_structure(planned, self._saveat, prob.tspan) != self._structure:
            return self._times, np.int32(SEQUENCE_CHANGED)
        return planned_times(planned[0]), np.int32(0)

    def traced(self, u0, p):
        """The planner inside a trace: ``(planned times, code)``, without derivatives."""
        dtype = jnp.result_type(float)
        shapes = (jax.ShapeDtypeStruct(self._times.shape, dtype), jax.ShapeDtypeStruct((), jnp.int32))
        return jax.pure_callback(self, shapes, jax.lax.stop_gradient(u0), jax.lax.stop_gradient(p),
                                 vmap_method="sequential")


def build_chain(prob, events: tuple, saveat: np.ndarray, options: SolveOptions, adjoint: str,
                duplicate_closure: bool) -> tuple[Chain, int]:
    """The chain of ``F`` and the dense step buffer of its segments (0 unless the
    interpolating adjoint).

    The event sequence (which times, which events at each, in which order) is the NumPy
    backend's: a NumPy solve with the events (on private copies of ``f`` and the affects)
    plans it, as for the operators.
    """
    boundaries, t_end, _ = plan(prob, events, options, saveat)
    steps = segment_steps(prob, events, options, boundaries, t_end) if adjoint == "interpolating" else 0
    _, affects = translate_events(events, prob.u0, prob.p, duplicate_closure)
    return chain_of(boundaries, affects, prob.tspan, saveat, events, prob.p), steps


def chain_of(boundaries: tuple, affects: tuple, tspan, saveat: np.ndarray, events: tuple = (), p=None) -> Chain:
    """The :class:`Chain` of a planned event sequence (``boundaries`` of
    :func:`._events.plan`) with the translated ``affects`` (None for an event without);
    ``events`` and ``p`` locate the times of ``TimeEvent(times(p))`` in the sequence."""
    t0, t1 = tspan
    direction = np.sign(t1 - t0) or 1.0
    timers = tuple(e.times if isinstance(e, TimeEvent) and callable(e.times) else None for e in events) \
        or (None,) * len(affects)
    planned = {i: e.resolve_times(p) for i, e in enumerate(events) if timers[i] is not None}

    def sources(boundary):
        return tuple((i, _time_position(events[i], p, boundary.time))
                     for i in boundary.events if timers[i] is not None)

    first, first_sources, segments, start = (), (), [], t0
    for boundary in boundaries:
        fired = tuple(i for i in boundary.events if affects[i] is not None)
        if boundary.time == start:  # at t0 (before any solve): the affects come first
            first, first_sources = first + fired, first_sources + sources(boundary)
            continue
        inside = ((saveat - start) * direction >= 0) & ((saveat - boundary.time) * direction < 0)
        segments.append((start, boundary.time, saveat[inside], fired, sources(boundary)))
        start = boundary.time
    last = (saveat - start) * direction >= 0
    hold, hold_sources = 0, ()
    if start != t1:
        segments.append((start, t1, saveat[last], (), ()))
    else:
        hold = int(last.sum())
        if segments:  # the affects at t1 end the last segment: its sources hold at t1
            hold_sources = segments[-1][4]
    width = 1 + max((len(seg[2]) for seg in segments), default=0)
    saves = np.array([np.concatenate([rows, np.full(width - len(rows), b)]) for a, b, rows, *_ in segments])
    branches = sorted({seg[3] for seg in segments})
    used = {(i, k) for seg in segments for i, k in seg[4]} | set(first_sources)
    outside = tuple((i, k, -1.0 if (t - t0) * direction < 0 else 1.0)
                    for i, times in planned.items() for k, t in enumerate(times) if (i, k) not in used)
    return Chain(
        t0=t0, first=tuple(affects[i] for i in first),
        starts=np.array([seg[0] for seg in segments]), stops=np.array([seg[1] for seg in segments]), saves=saves,
        which=np.array([branches.index(seg[3]) for seg in segments]),
        branches=tuple(tuple(affects[i] for i in fired) for fired in branches),
        rows=np.concatenate([k * width + np.arange(len(seg[2])) for k, seg in enumerate(segments)]
                            + [np.zeros(0, int)]).astype(int),
        hold=hold, t1=t1, timers=timers, stop_sources=tuple(seg[4] for seg in segments),
        first_sources=first_sources, hold_sources=hold_sources, outside=outside,
        n_rows=np.array([len(seg[2]) for seg in segments]), final_inclusive=start != t1,
    )


def chainable(events: tuple) -> bool:
    """Whether ``events`` make a fixed chain (``TimeEvent`` events at fixed times)."""
    return all(not isinstance(e, Event) and not callable(e.times) for e in events)


def event_times(chain: Chain, p, dtype):
    """``times(p)`` of every event with moving times, sorted (traced)."""
    out = {}
    for i, times in enumerate(chain.timers):
        if times is not None:
            out[i] = jnp.sort(jnp.ravel(traced_times(times, p, dtype)))
    return out


def _moving_times(chain: Chain, p, dtype):
    """``(stops, valid, first)``: the segments' end times with ``times(p)`` (traced where
    they move), whether the planned event sequence still holds there, and the moving time
    of the events at ``t0`` (None if none moves). The sequence holds where
    every group of events still at one time, the segments still in order with their rows
    inside them, the times at ``t0``/``t1`` still there, and the times outside ``tspan``
    still outside."""
    times = event_times(chain, p, dtype)
    direction = 1.0 if chain.t1 >= chain.t0 else -1.0
    valid = jnp.asarray(True)
    stops = []
    for k, sources in enumerate(chain.stop_sources):
        if not sources:
            stops.append(jnp.asarray(chain.stops[k], dtype))
            continue
        stop = times[sources[0][0]][sources[0][1]]
        for i, position in sources[1:]:
            valid &= times[i][position] == stop
        stops.append(stop)
    stops = jnp.stack(stops)
    starts = jnp.concatenate([jnp.asarray([chain.t0], dtype), stops[:-1]])
    valid &= jnp.all(direction * (stops - starts) > 0)
    for k in range(len(stops)):
        rows = chain.saves[k, :chain.n_rows[k]]
        valid &= jnp.all(direction * (rows - starts[k]) >= 0)
        last = k == len(stops) - 1 and chain.final_inclusive
        valid &= jnp.all(direction * (stops[k] - rows) >= 0) if last else jnp.all(direction * (stops[k] - rows) > 0)
    for i, position in chain.first_sources:
        valid &= times[i][position] == chain.t0
    for i, position in chain.hold_sources:
        valid &= times[i][position] == chain.t1
    for i, position, side in chain.outside:
        bound = chain.t0 if side < 0 else chain.t1
        valid &= side * direction * (times[i][position] - bound) > 0
    first = times[chain.first_sources[0][0]][chain.first_sources[0][1]] if chain.first_sources else None
    return stops, valid, first


def _apply(affects: tuple, u, p, t):
    for affect in affects:
        u = affect(u, p, t).astype(u.dtype)
    return u


def along_flow(g: Callable, u, p, t, delta):
    """The solution through ``(t, u)`` at ``t + delta`` to second order, ``u + f delta +
    (f_u f + f_t) delta^2 / 2``: exact in value and in first and second derivatives at
    ``delta = 0`` (the neglected ``O(delta^3)`` has none there)."""
    f, a = jax.jvp(lambda uu, tt: g(uu, p, tt), (u, t), (g(u, p, t), jnp.ones_like(t)))
    return u + delta * f + 0.5 * delta**2 * a


def run_chain(chain: Chain, u0, p, solve: Callable, g: Callable):
    """``(rows, code)`` of the chain; ``solve(times, u, p) -> (saved rows, code)`` for a
    segment with ``times = (t_start, t_stop, saves)``, ``g(u, p, t)`` the vector field; the
    code is the first failing segment's (:data:`SEQUENCE_CHANGED`, rows NaN, when
    ``times(p)`` moved the planned event sequence).

    With ``times(p)`` the segments end at the dose times ``tau`` held constant for
    differentiation (``stop_gradient``); at each joint the end state is moved along the
    flow by ``tau(p) - tau`` (zero in value, ``dtau/dp`` in derivative) to the dose time,
    the affects act there, and the result is moved back (:func:`along_flow`): no solve
    has a moving end, so first and second derivatives through the dose times follow from
    the solves' rules (second order forward-over-reverse) and JAX's AD of the joints.
    """
    dtype = jnp.result_type(float)
    u = u0.astype(jnp.promote_types(u0.dtype, dtype))  # the segments solve in float64, as F without events
    t0 = jnp.asarray(chain.t0, dtype)
    starts, stops = jnp.asarray(chain.starts, dtype), jnp.asarray(chain.stops, dtype)
    saves = jnp.asarray(chain.saves, dtype)
    moving = any(t is not None for t in chain.timers)
    valid, taus, first = jnp.asarray(True), stops, None
    if moving:  # the solves end at the dose times, held constant for differentiation
        taus, valid, first = _moving_times(chain, p, dtype)
        stops = jax.lax.stop_gradient(taus)
        starts = jnp.concatenate([jnp.asarray([chain.t0], dtype), stops[:-1]])
        real = np.arange(chain.saves.shape[1])[None, :] < chain.n_rows[:, None]
        saves = jnp.where(real, saves, stops[:, None])  # a segment's padding saves its end
    if first is None:
        u = _apply(chain.first, u, p, t0)
    else:  # a dose time at t0 that moves: the joint of the segments below, the side it stays in
        u = along_flow(g, u, p, t0, first - t0)  # to the dose time (zero in value)
        u = _apply(chain.first, u, p, first)
        u = along_flow(g, u, p, first, t0 - first)  # and back

    def segment(carry, xs):
        u, code = carry
        t_start, t_stop, saves, which, tau = xs
        ys, status = solve((t_start, t_stop, saves), u, p)
        u = ys[-1]
        if moving:
            u = along_flow(g, u, p, t_stop, tau - t_stop)
        if len(chain.branches) == 1:
            u = _apply(chain.branches[0], u, p, tau)
        else:
            u = jax.lax.switch(which, [lambda v, a=a: _apply(a, v, p, tau) for a in chain.branches], u)
        if moving:
            u = along_flow(g, u, p, tau, t_stop - tau)
        return (u, jnp.where(code == 0, status, code)), ys  # the first failure's status

    (u, code), ys = jax.lax.scan(segment, (u, jnp.asarray(0)),
                                 (starts, stops, saves, jnp.asarray(chain.which), taus))
    rows = ys.reshape((-1,) + ys.shape[2:])[chain.rows]
    if chain.hold:
        rows = jnp.concatenate([rows, jnp.broadcast_to(u, (chain.hold,) + u.shape)])
    return nan_unless(valid, rows), jnp.where(valid, code, SEQUENCE_CHANGED)
