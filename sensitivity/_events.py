"""Sensitivities through events: event times by the implicit function theorem, jumps.

A NumPy solve with the events first fixes the *event sequence*: which events fire,
in which order, near which times ``t*_k``. The differentiable function of the target
is then a chain of segment solves ``t_{k-1} -> t*_k`` joined at every event by

* the event time. For a state event with condition ``g``, ``G(t, theta) =
  g(u(t; theta), p, t) = 0`` defines ``t_k(theta)``; two Newton steps from ``t*_k``
  with the frozen slope ``dG/dt = g_u f + g_t`` give its value and, by the implicit
  function theorem, its first and second derivatives exactly:

  .. math:: \\frac{dt_k}{d\\theta} = -\\frac{\\partial_\\theta G}{g_u f + g_t}.

  For a ``TimeEvent`` ``t_k`` is the given time (``times(p)`` differentiable);
* the state at the event, ``u(t_k^-) = u* + f \\delta + \\tfrac12 (f_u f + f_t) \\delta^2``
  with ``\\delta = t_k - t*_k`` (value ``u*``; the ``f \\, dt_k/d\\theta`` term is the
  saltation that a solver dropping the event-time derivative misses);
* the affects, ``u(t_k^+) = a(u(t_k^-), p, t_k)``, translated like ``f``; the next
  segment starts at the traced ``t_k`` (or at ``t*_k``, see below).

The chain is differentiated in one of two ways:

* ``jax_solve``'s segments (every strategy but the discrete adjoint):
  :func:`joined_trajectory`, one ``jax_solve`` segment per event solved between the
  *planned* times (the post-affect state moved to the planned time along the flow, to
  second order), so that every segment is ``jax_solve``'s differentiable solve: forward
  sensitivities with the tangents inside the error norm (``mode="forward"``), the
  continuous interpolating adjoint (error-controlled, over a dense forward solve, chunked
  when a segment outgrows the dense buffer sized by the planning solve), and either
  differentiated forward for second order (forward-over-forward, forward-over-reverse).
  The joints are differentiated by JAX's AD: the jump conditions for the tangents and
  their transposes ``lambda^- = (da/du)^T lambda^+ + ...`` with the event-time terms.
  With only ``TimeEvent`` events the segments run in one ``lax.scan``
  (:func:`_build_chained`);
* ``adjoint="checkpoint"``: the discrete adjoint (reverse-mode AD of diffrax's
  ``RecursiveCheckpointAdjoint`` in every segment, from the traced event time in
  rescaled time, :func:`trajectory`), exact for the discrete scheme but not
  error-controlled where stability sets the steps; its second order is
  forward-over-forward on ``jax_solve``'s segments. ``adjoint="backsolve"`` is refused
  with an event that changes the state (the jump cannot be integrated backwards); without
  one, it is the discrete adjoint (reported as ``"checkpoint"``).

The event sequence itself is piecewise constant in ``theta``: derivatives hold while no
event appears, disappears or changes order.

References
----------
S. Galan, W. F. Feehery, P. I. Barton, "Parametric sensitivity functions for hybrid
discrete/continuous systems", Appl. Numer. Math. 31 (1999) 17-47; R. T. Q. Chen,
B. Amos, M. Nickel, "Learning neural event functions for ordinary differential
equations", ICLR (2021).
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from ._jax import load_jax

jax, jnp = load_jax()  # first: JAX is imported once, under its lock
from jax.flatten_util import ravel_pytree  # noqa: E402

from .._backend_jax import structure
from .._events import Event, TimeEvent, inplace_affect, inplace_condition
from .._solution import SolverError
from . import _compiled
from ._estimate import estimate_callables, translate_eigen_est
from ._loss import _refers_to_jax, _required_positional, translate_loss
from ._ode import SolveOptions, odeint
from ._strategies import checkpoint_stiffness, loss_code
from .translate import duplicate, to_jax
from .translate._fingerprint import content_digest, reach
from .translate._trace import call



@dataclass(frozen=True)
class Boundary:
    """One event time of the sequence: the NumPy time, the events fired there (in list
    order) and, for a ``TimeEvent``, ``(event index, position in its sorted times)``."""

    time: float
    events: tuple[int, ...]
    timed: tuple[int, int] | None


@dataclass(frozen=True, eq=False)
class EventSetup:
    """Everything fixed at preparation for a solve with events."""

    g: Callable  # g(u, p, t) -> du
    loss: Callable | None  # L(U, p, t_events) -> scalar
    target: Any
    u0: Any
    p: Any
    t0: float
    saveat: np.ndarray  # the rows the solve reaches
    options: SolveOptions
    events: tuple
    conditions: tuple  # per event: c(u, p, t) -> scalar, or None
    affects: tuple  # per event: a(u, p, t) -> u+, or None
    boundaries: tuple[Boundary, ...]
    t_end: float  # t1, or the time of a terminal event
    dense_steps: int = 0


def plan(prob, events: tuple, options: SolveOptions, saveat: np.ndarray) -> tuple:
    """The event sequence of the NumPy solve: ``(boundaries, t_end, rows reached)``.

    Raises
    ------
    SolverError
        The NumPy solve with the events failed (its message says why).
    """
    sol = _numpy_solve(prob, events, options, saveat)
    if not sol.success:
        raise SolverError(f"the solve with events failed: {sol.message}", sol)
    boundaries = []
    for time, group in by_time(enumerate(sol.t_events), prob.tspan):
        timed = next(((i, _time_position(events[i], prob.p, time)) for i in group
                      if isinstance(events[i], TimeEvent)), None)
        boundaries.append(Boundary(time, tuple(group), timed))
    t_end = boundaries[-1].time if sol.status == "event" else prob.tspan[1]
    return tuple(boundaries), t_end, len(sol.t)


def by_time(times, tspan) -> list[tuple[float, list[int]]]:
    """``(time, events)`` in the order a solve over ``tspan`` meets them, from ``times``
    (pairs of an event's index and its times); events at one time in list order."""
    t0, t1 = tspan
    direction = 1.0 if t1 > t0 else -1.0
    fired = sorted(((float(t), i) for i, ts in times for t in ts), key=lambda x: ((x[0] - t0) * direction, x[1]))
    grouped: list = []
    for t, i in fired:
        if grouped and grouped[-1][0] == t:
            grouped[-1][1].append(i)
        else:
            grouped.append((t, [i]))
    return grouped


def _numpy_solve(prob, events: tuple, options: SolveOptions, saveat=None):
    """The NumPy solve with ``events`` that plans an operator (every step without
    ``saveat``), on private copies of ``f`` and the events' functions: never the user's
    buffers."""
    from .._problem import ODEProblem
    from .._solve import solve

    private = ODEProblem(duplicate(prob.f), prob.u0, prob.tspan, prob.p)
    return solve(private, options.method, rtol=options.rtol, atol=options.atol,
                 max_steps=options.max_steps, saveat=saveat, events=private_events(events))


def private_events(events: tuple) -> list:
    """Copies of the events whose callables own private copies of their closure arrays."""
    def own(fn):
        return None if fn is None else duplicate(fn)

    return [Event(duplicate(e.condition), own(e.affect), direction=e.direction, terminal=e.terminal or False,
                  name=e.name) if isinstance(e, Event) else
            TimeEvent(own(e.times) if callable(e.times) else e.times, own(e.affect), name=e.name)
            for e in events]


def _time_position(event: TimeEvent, p, time: float) -> int:
    return int(np.flatnonzero(event.resolve_times(p) == time)[0])


def segment_steps(prob, events: tuple, options: SolveOptions, boundaries: tuple, t_end: float) -> int:
    """Step buffer of the interpolating adjoint's dense segment solves.

    diffrax sizes a dense output by its ``max_steps``, statically. A NumPy solve with the
    events, saving every step, counts the steps of each segment; the buffer is the most
    of any segment, plus the rejected steps of the whole solve, a quarter and 16 (the JAX
    solve's steps differ a little), rounded up to a power of two. A segment that still
    outgrows it is solved in chunks (``jax_solve``'s chunked interpolating adjoint).
    """
    sol = _numpy_solve(prob, events, options)
    if not sol.success:
        return options.max_steps
    direction = np.sign(t_end - prob.tspan[0]) or 1.0
    t = (np.asarray(sol.t) - prob.tspan[0]) * direction
    edges = [(e - prob.tspan[0]) * direction for e in (prob.tspan[0], *(b.time for b in boundaries), t_end)]
    counts = [int(np.count_nonzero((t > a) & (t <= b))) for a, b in zip(edges[:-1], edges[1:])]
    n = max(counts, default=0) + int(sol.stats["nreject"])
    n = n + n // 4 + 16
    return min(options.max_steps, 1 << (n - 1).bit_length())


def translate_events(events: tuple, u0, p, duplicate_closure: bool) -> tuple[tuple, tuple]:
    """Conditions ``c(u, p, t) -> scalar`` and affects ``a(u, p, t) -> u+`` in JAX.

    Both go through :func:`to_jax` as in-place functions writing a state-shaped output,
    so they may use NumPy exactly as ``f`` does (the affect writes ``u`` in place).
    """
    conditions, affects = [], []
    for event in events:
        condition = None
        if isinstance(event, Event):
            # the closure walk reaches the user's condition and duplicates the buffers it writes
            translated = to_jax(inplace_condition(event), u0, p, duplicate_closure=duplicate_closure)
            condition = lambda u, p, t, _g=translated: _g(u, p, t).reshape(-1)[0]  # noqa: E731
        conditions.append(condition)
        affect = None
        if event.affect is not None:
            affect = to_jax(inplace_affect(event), u0, p, duplicate_closure=duplicate_closure)
        affects.append(affect)
    return tuple(conditions), tuple(affects)


def traced_times(times: Callable, p, dtype=None):
    """``times(p)`` of a ``TimeEvent`` on a traced ``p``: a function written with NumPy
    (``np.array([0.0, p[2]])``) runs on traced stand-ins as ``f`` does (private copies of
    its closure arrays); one written with ``jax.numpy`` is called as it is."""
    value = times(p) if _refers_to_jax(times) else call(times, (p,))
    return jnp.asarray(value, dtype)


def translate_event_loss(loss: Callable, duplicate_closure: bool, p_like=None) -> Callable:
    """``L(U, p, t_events)`` for ``loss(u[, p])`` or ``loss(u[, p], *, t_events)``."""
    try:
        parameters = inspect.signature(loss).parameters
    except (TypeError, ValueError):
        parameters = {}
    wants = "t_events" in parameters and parameters["t_events"].kind == inspect.Parameter.KEYWORD_ONLY
    if not wants:
        plain = translate_loss(loss, duplicate_closure, p_like)
        return lambda U, p, t_events: plain(U, p)
    n = _required_positional(loss)
    if n not in (1, 2):
        raise TypeError("loss must be loss(u, *, t_events) or loss(u, p, *, t_events)")
    pure = _refers_to_jax(loss)

    def with_times(U, p, t_events):
        args = (U,) if n == 1 else (U, p)
        if pure:
            value = loss(*args, t_events=t_events)
        else:
            value = call(lambda *a: loss(*a[:-1], t_events=a[-1]), args + (t_events,),
                         duplicate_closure=duplicate_closure)
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"loss must return a scalar, got shape {value.shape}")
        return value
    return with_times


def _segment(setup: EventSetup, u, p, t_start, t_stop, ts):
    """Solve from the traced ``t_start`` to ``t_stop`` (a planned time, traced, held
    constant), saving at ``ts``, under diffrax's ``RecursiveCheckpointAdjoint`` (the
    discrete adjoint).

    Time is rescaled to ``s in [0, 1]`` so that ``t_start`` and ``t_stop`` are ordinary
    arguments.
    """
    def field(s, y, args):
        pp, start, stop = args
        span = stop - start
        return span * setup.g(y, pp, start + s * span)

    s_save = None if len(ts) == 0 else (jnp.asarray(ts) - t_start) / (t_stop - t_start)
    estimate = setup.options.spectral_radius(  # in the segment's time s: scaled by its span
        lambda s, y, args: (args[1] + s * (args[2] - args[1]), y, args[0]))
    rho = None if estimate is None else (
        lambda s, y, args: jnp.abs(args[2] - args[1]) * estimate(s, y, args))
    sol, code = odeint(field, u, (p, t_start, t_stop), 0.0, 1.0, setup.options, ts=s_save,
                       differentiable="reverse", spectral_radius=rho)
    return sol.ys[-1], sol.ys[:-1], code, sol.stats["num_accepted_steps"]


def _joint(setup: EventSetup, boundary: Boundary, u_star, p, t_star):
    """``(t_k, u(t_k^-))``: the event time (implicit function theorem) and the state there,
    from the state ``u_star`` at the planned time ``t_star`` (traced)."""
    f_star, a_star = jax.jvp(lambda uu, tt: setup.g(uu, p, tt), (u_star, t_star),
                             (setup.g(u_star, p, t_star), jnp.ones_like(t_star)))

    def state_at(delta):
        return u_star + delta * f_star + 0.5 * delta**2 * a_star

    if boundary.timed is not None:
        i, position = boundary.timed
        times = setup.events[i].times
        if callable(times):
            t_k = jnp.sort(jnp.ravel(traced_times(times, p)))[position]
        else:
            t_k = jnp.asarray(t_star)
        return t_k, state_at(t_k - t_star)
    condition = setup.conditions[boundary.events[0]]
    _, slope = jax.jvp(lambda uu, tt: condition(uu, p, tt), (u_star, t_star), (f_star, jnp.ones_like(t_star)))
    slope = jax.lax.stop_gradient(slope)
    delta = -condition(u_star, p, t_star) / slope
    delta = delta - condition(state_at(delta), p, t_star + delta) / slope
    return t_star + delta, state_at(delta)


def joined_trajectory(setup: EventSetup, segment: Callable, u, p, planned):
    """``(U, t_events, code)`` from ``(u0, p)`` with every segment solved between
    *planned* times.

    ``segment((t_start, t_stop, saves), u, p) -> (rows, code)`` is ``jax_solve``'s
    differentiable solve (rows at ``saves``, then the end). A segment starts at the
    planned time of the previous event from the post-affect state moved there along the
    flow (:func:`._jax_solve_events.along_flow`, to second order) and ends at the planned
    time of the next, where :func:`_joint` finds the event time ``t_k(theta)`` and the
    state. The planned times are the NumPy solve's at this ``theta`` (re-planned at every
    call), so the moves are within a Newton correction. No solve has a moving end, and
    every derivative of the chain follows from ``jax_solve``'s rules (the chosen adjoint,
    forward-over-reverse second order) and JAX's AD of the joints.

    ``planned``: the planned times of ``setup.boundaries`` as an array (traced: one
    program serves every call whose plan has the same structure, see
    :func:`plan_structure`). The segments run in one ``lax.scan`` (:func:`_scan_chain`).
    """
    def solve(t_start, t_stop, saves, u):
        ys, code = segment((t_start, t_stop, saves), u, p)
        return ys, code, jnp.asarray(0)

    rows, t_events, code, _ = _scan_chain(setup, u, p, planned, solve, from_event_time=False)
    return rows, t_events, code


def trajectory(setup: EventSetup, theta, planned):
    """``(U, t_events, code, naccept)`` for the discrete adjoint: the saved states, the
    event times per event, the status and the accepted steps of all segments, each segment
    a diffrax solve from the traced event time to the next planned time (:func:`_segment`),
    in one ``lax.scan`` (:func:`_scan_chain`).

    ``planned``: the planned times of ``setup.boundaries`` (an argument, as for
    :func:`joined_trajectory`: one program per plan structure).
    """
    u, p = setup.target.merge(theta, setup.u0, setup.p)

    def solve(t_start, t_stop, saves, u):  # the last of the saves is t_stop: its row is the end
        _, rows, code, steps = _segment(setup, u, p, t_start, t_stop, saves)
        return rows, code, steps

    return _scan_chain(setup, u, p, planned, solve, from_event_time=True)


def _scan_chain(setup: EventSetup, u, p, planned, solve: Callable, from_event_time: bool):
    """``(U, t_events, code, steps)``: the chain of segment solves and joints of
    ``setup.boundaries`` in one ``lax.scan``.

    ``solve(t_start, t_stop, saves, u) -> (rows at saves, code, steps)``; the last save
    is ``t_stop`` (every segment saves ``width`` times, its rows then its end repeated).
    Each segment ends at a planned time, where :func:`_joint` gives the event time
    ``t_k(theta)`` and the state, and the affects act. With ``from_event_time`` the next
    segment starts at ``t_k`` (the discrete adjoint's rescaled segments); otherwise at the
    planned time, the post-affect state moved back there along the flow, to second order
    (:func:`._jax_solve_events.along_flow`). The joint after each segment is chosen by
    ``lax.switch`` among the distinct joints of the sequence (:func:`_kind`), the last
    segment (to ``t1``) followed by one that does nothing: the compiled program holds one
    copy of the segment solve whatever the number of events. The first failing segment's
    code is reported.
    """
    from ._jax_solve_events import along_flow

    saveat, direction = setup.saveat, np.sign(setup.t_end - setup.t0) or 1.0
    dtype = jnp.result_type(float)
    boundaries, planned = setup.boundaries, jnp.asarray(planned, dtype)
    u = u.astype(jnp.promote_types(u.dtype, dtype))  # the segments solve in float64, as without events
    times = [[] for _ in setup.events]  # per event: its firings' segments (-1: at t0)

    def joint(boundary, after):
        """``(state at the planned time t_star, t_star) -> (state after the event, t_k)``.

        ``after``: ``"carry"`` (a segment follows: it starts at ``t_k`` with
        ``from_event_time``, else at ``t_star``, the state moved back there along the
        flow), ``"hold"`` (an event at ``t1``, not terminal: the rows at ``t1`` show the
        post-affect state flowed from ``t_k`` to ``t1``, whose derivative in ``t_k`` the
        event time's dependence gives) or ``"stop"`` (a terminal event: the rows at the
        stop show the post-affect state there).
        """
        def apply(u_star, t_star):
            t_k, u = _joint(setup, boundary, u_star, p, t_star)
            for i in boundary.events:
                if setup.affects[i] is not None:
                    u = setup.affects[i](u, p, t_k).astype(u.dtype)
            if (after == "carry" and not from_event_time) or after == "hold":  # to t_star, to second order
                u = along_flow(setup.g, u, p, t_k, t_star - t_k)
            return u.astype(u_star.dtype), jnp.asarray(t_k, dtype)
        return apply

    def after(boundary) -> str:
        if boundary.time != setup.t_end:
            return "carry"
        return "stop" if any(getattr(setup.events[i], "terminal", None) for i in boundary.events) else "hold"

    start, t_start, first_t = setup.t0, jnp.asarray(setup.t0, dtype), None
    if boundaries and boundaries[0].time == setup.t0:  # at t0: the joint before any solve
        u, first_t = joint(boundaries[0], after(boundaries[0]))(u, planned[0])
        times = [[-1] if i in boundaries[0].events else [] for i in range(len(setup.events))]
        t_start = first_t if from_event_time else planned[0]
        boundaries, planned = boundaries[1:], planned[1:]
    kinds, saves = [], []
    for k, boundary in enumerate(boundaries):
        inside = ((saveat - start) * direction >= 0) & ((saveat - boundary.time) * direction < 0)
        saves.append(saveat[inside])
        kinds.append((_kind(setup, boundary), after(boundary)))
        for i in boundary.events:
            times[i].append(k)
        start = boundary.time
    last = (saveat - start) * direction >= 0
    terminal = setup.t_end == start  # the last event ended the solve
    if not terminal:
        saves.append(saveat[last])
    distinct = list(dict.fromkeys(kinds))
    branches = [joint(boundary, then) for boundary, then in distinct]
    branches.append(lambda u, t_star: (u, t_star))  # after the last segment
    which = [distinct.index(kind) for kind in kinds] + ([] if terminal else [len(distinct)])

    code, steps, t_ks = jnp.asarray(0), jnp.asarray(0), jnp.zeros((0,), dtype)
    rows = jnp.zeros((0,) + jnp.shape(u), u.dtype)
    if saves:
        width = 1 + max(len(ts) for ts in saves)
        ends = jnp.concatenate([planned, jnp.full(len(saves) - len(planned), setup.t_end, dtype)])
        real = np.arange(width)[None, :] < np.array([len(ts) for ts in saves])[:, None]
        padded = np.array([np.concatenate([ts, np.zeros(width - len(ts))]) for ts in saves])
        grid = jnp.where(real, jnp.asarray(padded, dtype), ends[:, None])  # padding saves the segment's end

        def step(carry, xs):
            u, t_start, code, steps = carry
            t_stop, ts, kind = xs
            ys, status, n = solve(t_start, t_stop, ts, u)
            u, t_k = branches[0](ys[-1], t_stop) if len(branches) == 1 else \
                jax.lax.switch(kind, branches, ys[-1], t_stop)
            t_next = t_k if from_event_time else t_stop
            return (u, t_next, jnp.where(code == 0, status, code), steps + n), (ys[:-1], t_k)

        (u, _, code, steps), (ys, t_ks) = jax.lax.scan(step, (u, t_start, code, steps),
                                                       (ends, grid, jnp.asarray(which)))
        flat = np.concatenate([k * (width - 1) + np.arange(len(ts)) for k, ts in enumerate(saves)]).astype(int)
        rows = ys.reshape((-1,) + ys.shape[2:])[flat]
    if terminal:  # rows at the final event's time show the post-affect state
        rows = jnp.concatenate([rows, jnp.broadcast_to(u, (int(last.sum()),) + u.shape)])
    t_events = tuple(jnp.stack([first_t if k < 0 else t_ks[k] for k in ks]) if ks else jnp.zeros((0,), dtype)
                     for ks in times)
    return rows, t_events, code, steps


def _kind(setup: EventSetup, boundary: Boundary) -> Boundary:
    """What :func:`_joint` does at ``boundary`` (its time is an argument): equal for every
    firing of the same events, but for ``times(p)``, whose position in the times counts."""
    timed = boundary.timed
    if timed is not None and not callable(setup.events[timed[0]].times):
        timed = (timed[0], 0)
    return replace(boundary, time=0.0, timed=timed)


def planned_times(boundaries: tuple) -> np.ndarray:
    """The boundaries' planned times (float64), the argument of :func:`joined_trajectory`."""
    return np.array([b.time for b in boundaries], float)


def plan_structure(planned: tuple, saveat: np.ndarray, tspan) -> tuple:
    """What a program built by :func:`joined_trajectory` depends on in a plan
    ``(boundaries, t_end, rows reached)``, other than the planned times: the events at
    each boundary, which segment each saved row falls in, whether the first event is at
    ``t0`` and whether the last one ends the solve."""
    boundaries, t_end, n_rows = planned
    t0 = tspan[0]
    direction = np.sign(t_end - t0) or 1.0
    times = planned_times(boundaries)
    segment_of_row = np.searchsorted(times * direction, np.asarray(saveat[:n_rows]) * direction, side="right")
    return (tuple((b.events, b.timed) for b in boundaries), tuple(segment_of_row.tolist()), n_rows,
            bool(len(times)) and times[0] == t0, bool(len(times)) and times[-1] == t_end)


def _sides_of_tspan(events: tuple, p, tspan) -> tuple:
    """Per event, where each of its times lies: -1 before ``tspan``, 0 inside, 1 after."""
    t0, t1 = tspan
    direction = np.sign(t1 - t0) or 1.0

    def sides(times):
        return tuple(np.where((times - t0) * direction < 0, -1, np.where((times - t1) * direction > 0, 1, 0)).tolist())
    return tuple(sides(e.resolve_times(p)) if isinstance(e, TimeEvent) else () for e in events)


def _no_aux(code):
    zero = jnp.asarray(0.0)
    return {"code": code, "mismatch": zero, "dense_overflow": jnp.asarray(False),
            "naccept": jnp.asarray(0), "nreject": jnp.asarray(0), "stiffness": zero}


def checkpoint_gradient(setup: EventSetup) -> Callable:
    """``(theta, planned) -> ((L, grad), aux)`` by the discrete adjoint on
    :func:`trajectory`, with the estimate of whether stability set its steps
    (``aux["stiffness"]``)."""
    def loss_of(theta, planned):
        U, t_events, code, naccept = trajectory(setup, theta, planned)
        p = setup.target.merge(theta, setup.u0, setup.p)[1]
        u_last = U[-1] if U.shape[0] else setup.u0  # the last saved state (for the stiffness)
        L = setup.loss(U, p, t_events)
        return L, (jnp.maximum(code, loss_code(U, L)), naccept, u_last)

    def run(theta, planned):
        (L, (code, naccept, u_last)), grad = jax.value_and_grad(loss_of, has_aux=True)(theta, planned)
        u0, p = setup.target.merge(theta, setup.u0, setup.p)
        stiffness = checkpoint_stiffness(setup.g, p, (u0, setup.t0), (u_last, setup.t_end), naccept,
                                         setup.options.method)
        return (L, grad), {**_no_aux(code), "stiffness": stiffness}
    return run


def _forward_gradient(loss: Callable, theta):
    """``(L, dL/dtheta, aux)`` of ``loss(theta) -> (L, aux)`` by forward mode: one ``jvp``
    per entry of the flattened target, vmapped (``aux`` batched over them)."""
    flat, unravel = ravel_pytree(theta)
    push = lambda v: jax.jvp(lambda x: loss(unravel(x)), (flat,), (v,), has_aux=True)  # noqa: E731
    L, dL, aux = jax.vmap(push)(jnp.eye(flat.size, dtype=flat.dtype))
    return L[0], unravel(dL), aux


def checkpoint_jacobian(setup: EventSetup) -> Callable:
    """``(theta, planned) -> (dU/dtheta, aux)`` shaped ``(n_save, *u0.shape, *leaf.shape)``
    per leaf, by the discrete adjoint on :func:`trajectory`."""
    def run(theta, planned):
        def rows(theta):
            U, _, code, _ = trajectory(setup, theta, planned)
            return U, code

        J, code = jax.jacrev(rows, has_aux=True)(theta)
        return J, _no_aux(code)
    return run


def _build_chained(op: str, chain, inner: str, adjoint: str | None, setup: EventSetup) -> Callable:
    """``op`` through dose events by ``jax_solve``'s chain of segment solves (one
    ``lax.scan``, compiled once whatever the number of events; see
    :mod:`._jax_solve_events`).

    The status code is the first failing segment's (``SEQUENCE_CHANGED`` when
    ``times(p)`` moved the planned sequence: the operator re-plans).
    """
    from ._jax_solve import chain_function
    from ._jax_solve_events import event_times

    u0_, p_ = setup.u0, setup.p
    run_chain = chain_function(chain, _segment_static(setup, adjoint), share_forward=inner == "reverse")
    dtype = jnp.result_type(float)
    planning_p = jax.tree_util.tree_map(np.asarray, p_)
    firings = [[(b.time, None if chain.timers[i] is None else _time_position(setup.events[i], planning_p, b.time))
                for b in setup.boundaries if i in b.events] for i in range(len(setup.events))]

    def fired_times(p):
        """Per event the times it fired, traced where ``times(p)`` moves them."""
        moving = event_times(chain, p, dtype)
        return tuple(jnp.stack([moving[i][k] if k is not None else jnp.asarray(t, dtype) for t, k in fired])
                     if fired else jnp.zeros((0,), dtype) for i, fired in enumerate(firings))

    def rows_and_times(theta):
        u0, p = setup.target.merge(theta, u0_, p_)
        U, code = run_chain(u0, p)
        return U, fired_times(p), code
    return _chain_operator(op, inner, rows_and_times, setup)


def _build_joined(op: str, inner: str, adjoint: str | None, setup: EventSetup) -> Callable:
    """``op`` through state events and ``TimeEvent(times(p))`` by :func:`joined_trajectory`
    (one ``jax_solve`` segment per event, between planned times): ``operator(theta[, v],
    planned)``, the planned event times an argument."""
    from ._jax_solve import _differentiable

    segment = _differentiable(_segment_static(setup, adjoint), segments=len(setup.boundaries) + 1,
                              share_forward=inner == "reverse")

    def operator(*args):  # (theta[, v], planned times)
        *head, planned = args
        def rows_and_times(theta):
            return joined_trajectory(setup, segment, *setup.target.merge(theta, setup.u0, setup.p), planned)
        return _chain_operator(op, inner, rows_and_times, setup)(*head)
    return operator


def _segment_static(setup: EventSetup, adjoint: str | None):
    from ._jax_solve import solve_static

    return solve_static(setup.g, setup.options, adjoint or "interpolating", setup.dense_steps,
                        1 + len(jax.tree_util.tree_leaves(setup.p)))


def _chain_operator(op: str, inner: str, rows_and_times: Callable, setup: EventSetup) -> Callable:
    """``op`` of a chain of ``jax_solve`` segments, ``rows_and_times(theta) -> (U,
    t_events, code)``: ``inner="forward"`` pushes tangents through every segment (forward
    sensitivities), ``"reverse"`` transposes them into each segment's adjoint, and second
    order differentiates either forward (forward-over-forward, forward-over-reverse:
    every segment's tangent or adjoint solve differentiated forward).

    A non-finite result where every forward solve succeeded (a failed adjoint or tangent
    solve gives NaN) is reported as ``"nonfinite"``.
    """
    from . import _strategies as strategies

    def rows(theta):
        U, _, code = rows_and_times(theta)
        return U, code

    def loss(theta):
        U, t_events, code = rows_and_times(theta)
        p = setup.target.merge(theta, setup.u0, setup.p)[1]
        L = setup.loss(U, p, t_events)
        return L, jnp.maximum(code, loss_code(U, L))

    if op == "jacobian":
        differentiate = jax.jacfwd if inner == "forward" else jax.jacrev

        def fn(theta):
            J, code = differentiate(rows, has_aux=True)(theta)
            return J, _no_aux(code)
    else:
        if inner == "reverse":
            def first(theta):
                (L, code), grad = jax.value_and_grad(loss, has_aux=True)(theta)
                return (L, grad), _no_aux(code)
        else:
            def first(theta):
                L, grad, code = _forward_gradient(loss, theta)
                return (L, grad), _no_aux(code.max())
        fn = {"hvp": strategies.hvp, "hessian": strategies.hessian}.get(op, lambda f: f)(first)

    def checked(*args):
        result, aux = fn(*args)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(result)]))
        return result, {**aux, "code": jnp.where((aux["code"] == 0) & ~finite, 3, aux["code"])}
    return checked


def refuse_backsolve_through_jumps(events: tuple, adjoint: str, more: str = "") -> None:
    """A ``ValueError`` naming the first event that changes the state if ``adjoint`` is
    ``"backsolve"`` (the state cannot be integrated backwards through a jump; API.md);
    ``more`` adds alternatives to the message."""
    jumps = [e for e in events if e.affect is not None]
    if adjoint == "backsolve" and jumps:
        raise ValueError(
            f"adjoint='backsolve' cannot integrate the state backwards through the jump of "
            f"{jumps[0]._label()}: use adjoint='interpolating' or adjoint='checkpoint'{more}")


def prepare_with_events(op: str, loss, prob, events, options: SolveOptions, saveat: np.ndarray, target,
                        chosen: str, reason: str, adjoint: str, duplicate_closure: bool,
                        auto: bool = False) -> "EventOperator":
    """The prepared operator ``op`` differentiating through ``events`` (see the module)."""
    from .._events import check_events

    events = check_events(events)
    if "reverse" in chosen:
        refuse_backsolve_through_jumps(events, adjoint, ", or mode='forward'")
    if chosen == "forward-over-reverse" and adjoint == "checkpoint":
        # diffrax's checkpointed reverse pass is not jvp-able
        chosen, reason = "forward-over-forward", (
            f"{reason}; through events the discrete adjoint's second order is forward-over-forward")
    if chosen == "reverse" and adjoint == "backsolve":  # no jumps: the state is continuous
        adjoint, reason = "checkpoint", f"{reason}; through events adjoint='backsolve' is the discrete adjoint"
    key = _operator_key(op, loss, prob, events, options, saveat, target, chosen, adjoint, duplicate_closure, auto)
    operator = _OPERATORS.get(key)
    if operator is not None:
        _compiled.count("memory_hits")
    else:
        operator = EventOperator(op, loss, prob, events, options, saveat, target, chosen, reason, adjoint,
                                 duplicate_closure, auto)
        _OPERATORS[key] = operator
        while len(_OPERATORS) > OPERATORS_KEPT:
            _OPERATORS.popitem(last=False)
    _OPERATORS.move_to_end(key)
    operator._requested = prob  # an unprepared call differentiates at this problem's target
    return operator


# Operators through events, reused by a later call with the same functions, data and
# options (an unprepared sens.gradient in a loop compiles once): by _operator_key
_OPERATORS: OrderedDict = OrderedDict()
OPERATORS_KEPT = 16
_compiled.MEMORY_CACHES.append(_OPERATORS)


def _operator_key(op, loss, prob, events, options, saveat, target, chosen, adjoint, duplicate_closure,
                  auto) -> str:
    """What an :class:`EventOperator` is built from, as a compiled-code cache key: the code
    and every closure array of ``f``, the loss and the events' functions (their content:
    an array changed in place misses), the events' settings, the part of the problem that
    is not the target (it is baked in), and the options."""
    u0, p = np.asarray(prob.u0), prob.p
    held = (None if "u0" in target.wrt else content_digest(u0),
            None if "p" in target.wrt else [content_digest(np.asarray(x)) for x in jax.tree_util.tree_leaves(p)])
    callables, described = [prob.f] + ([] if loss is None else [loss]), []
    for event in events:
        functions = [getattr(event, "condition", None), event.affect, event.times if isinstance(event, TimeEvent)
                     and callable(event.times) else None]
        callables += [fn for fn in functions if fn is not None]
        described.append((type(event).__name__, event.name, getattr(event, "direction", None),
                          getattr(event, "terminal", None), [fn is None for fn in functions],
                          None if not isinstance(event, TimeEvent) or callable(event.times)
                          else content_digest(np.asarray(event.times, float))))
    callables += list(estimate_callables(options.method))  # (repr(method) names it without its code)
    static = (op, chosen, adjoint, duplicate_closure, auto, target.wrt, repr(options.method), options.rtol,
              np.asarray(options.atol).tolist(), options.max_steps, structure(u0), structure(p),
              content_digest(np.asarray(saveat, float)), tuple(map(float, prob.tspan)), held, tuple(described))
    return _compiled._key("event operator", static, [reach(fn, constant_arrays=True) for fn in callables])


STRUCTURES_KEPT = 8  # compiled programs an operator through state events keeps, one per plan structure


class EventOperator:
    """A prepared operator through events: compiled per event sequence.

    Through state events every call first re-plans the event sequence with a NumPy solve
    at the new target; fixed dose times are planned once (the sequence is the same for
    every target, and the compiled program reports a failed segment itself). The
    compiled code is reused while the sequence stays the same: ``times(p)`` is checked inside the
    program, and through state events the planned times are an argument of the program,
    which is rebuilt only when the structure of the plan changes (other events, or a
    saved row on the other side of an event; :func:`plan_structure`). A call never
    differentiates a stale sequence.

    Attributes: ``op``, ``mode``, ``reason``, ``adjoint``, ``n_traces`` as
    :class:`dxdt.sensitivity.PreparedOperator`.
    """

    def __init__(self, op, loss, prob, events, options, saveat, target, chosen, reason, adjoint,
                 duplicate_closure, auto=False):
        from ._target import describe

        self.op, self.mode, self.reason, self._auto = op, chosen, reason, auto
        self.adjoint = adjoint if "reverse" in chosen else None
        self._prob, self._events, self._options, self._saveat = prob, events, options, saveat
        self._target, self._inner = target, "forward" if chosen.endswith("forward") else "reverse"
        self._signature = describe(target.select(prob.u0, prob.p))
        self._g = to_jax(prob.f, prob.u0, prob.p, duplicate_closure=duplicate_closure)
        self._estimate = translate_eigen_est(options.method)
        self._loss = None if loss is None else translate_event_loss(loss, duplicate_closure, prob.p)
        self._conditions, self._affects = translate_events(events, prob.u0, prob.p, duplicate_closure)
        self._plan, self._prepared, self._built = None, None, []
        self._requested = prob
        self._by_structure: dict = {}  # state events and times(p): the programs of the last plan structures
        from ._jax_solve_events import chainable

        # On jax_solve's chain: TimeEvents at fixed times ("fixed": one event sequence for
        # every target) and TimeEvent(times(p)) ("moving": re-planned only when the chain
        # reports EventSequenceChanged). The discrete adjoint keeps the segment solves below,
        # which estimate whether stability set its steps.
        discrete = self._inner == "reverse" and self.adjoint == "checkpoint"
        moving = all(isinstance(e, TimeEvent) for e in events)
        self._fixed = chainable(events)  # the same event sequence for every target: planned once
        self._chained = None if discrete else "fixed" if self._fixed else "moving" if moving else None
        # state events: one jax_solve segment per event between planned times (see
        # joined_trajectory), or the discrete adjoint's segments (see trajectory),
        # re-planned at every call, the planned times an argument of the program
        self._joined = self._chained is None and not discrete
        self._ensure(prob)

    @property
    def n_traces(self) -> int:
        return sum(prepared.n_traces for prepared in self._built)

    @property
    def _host_context(self):
        """``(u0, p)`` of the problem this operator was last asked for (by :func:`prepare`
        or, reused, by an unprepared call), as ``PreparedOperator``'s context."""
        from ._target import to_numpy

        return np.asarray(self._requested.u0), to_numpy(self._requested.p)

    def _ensure(self, prob) -> None:
        """(Re)build the compiled operator if the event sequence at ``prob`` differs."""
        from ._operators import PreparedOperator, _auto_forward_note, _check_dense_memory
        from ._target import as_jax_tree

        planned = plan(prob, self._events, self._options, self._saveat)
        if planned == self._plan:
            return
        boundaries, t_end, n_rows = planned
        structure, times = None, None
        if self._chained != "fixed":  # same plan structure, same program (a fit moving back and forth)
            structure = plan_structure(planned, self._saveat, prob.tspan)
            if self._chained is None:  # the planned times are an argument
                times = planned_times(boundaries)
            else:  # times(p) inside the chain; which of them lie before t0 or after t1
                structure += (_sides_of_tspan(self._events, prob.p, prob.tspan),)
            if structure in self._by_structure:
                self._prepared = self._by_structure[structure]
                self._prepared.extra = times
                self._plan, self._prob = planned, prob
                return
        steps = 0
        if self._inner == "reverse" and self.adjoint == "interpolating":
            steps = segment_steps(prob, self._events, self._options, boundaries, t_end)
            n_seg = len(boundaries) + 1
            note = None
            if self._auto:  # as prepare(): a too large adjoint gives way to forward mode
                note = _auto_forward_note(self.op, prob, self._target.wrt, len(self._saveat), steps * n_seg,
                                          self._options)
            if note is not None:
                self._inner, self.adjoint, steps = "forward", None, 0
                self.mode, self.reason = self.mode.replace("reverse", "forward"), self.reason + note
            else:
                _check_dense_memory(steps * n_seg, self._options, prob.u0)  # every segment's buffer is live
        setup = EventSetup(
            g=self._g, loss=self._loss, target=self._target, u0=jnp.asarray(prob.u0),
            p=as_jax_tree(prob.p, prob.u0.dtype), t0=prob.tspan[0], saveat=np.asarray(self._saveat[:n_rows]),
            options=replace(self._options, estimate=self._estimate), events=self._events,
            conditions=self._conditions, affects=self._affects, boundaries=boundaries, t_end=t_end,
            dense_steps=steps,
        )
        op, inner, adjoint = self.op, self._inner, self.adjoint

        if self._chained:  # dose times: jax_solve's chain (see _build_chained)
            from ._jax_solve_events import chain_of

            chain = chain_of(boundaries, self._affects, prob.tspan, setup.saveat, self._events, prob.p)
            build = functools.partial(_build_chained, op, chain, inner, adjoint)
        elif self._joined:  # state events: one jax_solve segment per event (see _build_joined)
            build = functools.partial(_build_joined, op, inner, adjoint)
        else:  # the discrete adjoint, first order (its second order is forward-over-forward, joined)
            build = checkpoint_jacobian if op == "jacobian" else checkpoint_gradient
        try:
            self._prepared = PreparedOperator.from_build(op, build, setup, self.mode, self.reason, self.adjoint,
                                                         extra=times)
        except Exception as err:  # e.g. u[-1] in the loss, with no row before a terminal event
            if n_rows < len(self._saveat):
                err.add_note(f"dxdt: a terminal event ends the solve at t={t_end:.10g}, before the save times "
                             f"{self._saveat[n_rows:].tolist()}: the loss receives the {n_rows} rows saved before "
                             "the stop (saveat=None means [t1]); save up to the stop, or use t_events")
            raise
        _compiled.count("builds")
        self._built.append(self._prepared)
        if structure is not None:
            self._by_structure[structure] = self._prepared
            while len(self._by_structure) > STRUCTURES_KEPT:
                del self._by_structure[next(iter(self._by_structure))]
        self._plan, self._prob = planned, prob

    def __call__(self, target, v=None):
        from ._target import to_numpy

        from ._options import EventSequenceChanged

        self._target.check(target, self._signature, "target")

        def replan():
            u0, p = self._target.merge(to_numpy(target), self._prob.u0, self._prob.p)
            self._ensure(self._prob.remake(u0=np.asarray(u0), p=p))

        if self._chained is None and not self._fixed:  # state events: a NumPy solve at the target plans the call
            replan()
        if self._chained != "moving":  # fixed dose times: one sequence for every target
            return self._prepared(target, v)
        try:
            return self._prepared(target, v)
        except EventSequenceChanged:  # times(p) moved the doses past a row or one another
            replan()
            return self._prepared(target, v)

    def __repr__(self) -> str:
        return f"EventOperator(op={self.op!r}, mode={self.mode!r}, n_traces={self.n_traces})"
