"""``solve(..., events=[TimeEvent, ...], saveat=..., backend="jax")``: a dosing schedule as
one compiled call.

With only ``TimeEvent`` events the event sequence is known before the solve: each event's
times inside ``tspan`` in the order the solve meets them, the events of one time in list
order. The solve is then a fixed chain (:class:`dxdt.sensitivity._jax_solve_events.Chain`,
the one ``jax_solve`` differentiates): the affects at ``t0``, then one ``lax.scan`` over the
segments between event times, each a solve that saves its ``saveat`` rows and ends in the
affects at its end time; each segment starts with the step its predecessor proposed, as
the host loop of :mod:`._events_jax` does. One compiled call replaces that loop's call,
transfer and affect call per event (a 30-dose schedule: 1 call instead of about 60), and
the program is reused for every schedule with the same sequence shape (the times are
arguments), from the compiled-code cache in memory or on disk.

This path answers successful solves only. A failed segment, more steps in all than
``max_steps`` (a budget counted across events) or a non-finite state sends the solve to
the host loop, which stops where the NumPy backend stops, with its partial data and
message. A row at an event time shows the post-affect state; ``u_events`` holds each
event's pre-affect state (after the affects listed before it at the same time).
"""

from __future__ import annotations

import functools

import numpy as np

from ._backend_numpy import RawSolution
from ._events import TimeEvent, inplace_affect
from ._events_numpy import schedule


def fast_path_applies(events: tuple, saveat, progress: bool, method) -> bool:
    """Whether :func:`solve_time_events` can take this solve (else the host loop does)."""
    from .solvers import AbstractStabilized

    return (saveat is not None and not progress and not isinstance(method, AbstractStabilized)
            and all(isinstance(e, TimeEvent) for e in events))


def _boundaries(events: tuple, p, tspan) -> tuple:
    """The event sequence as :class:`dxdt.sensitivity._events.Boundary` items (``times(p)``
    resolved with this ``p``)."""
    from .sensitivity._events import Boundary, by_time

    _, times = schedule(events, p, tspan)
    return tuple(Boundary(t, tuple(group), None) for t, group in by_time(times.items(), tspan))


def wrapped_affects(events: tuple) -> dict:
    """Each affect as the in-place function the translation runs (the objects the cache
    key walks, so that the labels of the arrays a trace read match a later walk)."""
    return {i: inplace_affect(e)
            for i, e in enumerate(events) if e.affect is not None}


def solve_time_events(prob, method, events: tuple, *, rtol, atol, dt, saveat: np.ndarray,
                      max_steps: int) -> RawSolution | None:
    """The solve as one compiled chain; None where the host loop must answer (a failure)."""
    from .sensitivity._compiled import lookup
    from .sensitivity._jax import load_jax
    from .sensitivity._jax_solve_events import chain_of
    from ._backend_jax import as_numpy, stats_rule, structure

    load_jax()
    boundaries = _boundaries(events, prob.p, prob.tspan)
    wrapped = wrapped_affects(events)
    # the chain's affect sets hold event indices; the program maps them to translations
    chain = chain_of(boundaries, tuple(i if i in wrapped else None for i in range(len(events))),
                     prob.tspan, saveat)
    f64 = np.float64
    args = (prob.u0, as_numpy(prob.p), chain.starts.astype(f64), chain.stops.astype(f64),
            chain.saves.astype(f64), f64(rtol), np.asarray(atol, f64), f64(0.0 if dt is None else abs(dt)))
    shape = (tuple(chain.first), chain.branches, tuple(chain.which.tolist()), tuple(chain.rows.tolist()),
             chain.hold, chain.saves.shape)
    static = ("time events", structure(prob.u0), structure(args[1]), structure(args[6]), repr(method),
              max_steps, dt is None, tuple(sorted(wrapped)), shape)
    program = lookup("solve", static, (prob.f,) + tuple(wrapped.values()),
                     lambda: _build(prob, method, chain, wrapped, max_steps, dt is None, args))
    rows, first, states, counts, codes = program(*args)
    steps = counts[:, 0].sum()
    if codes.any() or steps > max_steps or not (np.isfinite(rows).all() and np.isfinite(states).all()
                                                and np.isfinite(first).all()):
        return None  # the host loop stops where the NumPy backend does, with its partial data
    t_events, u_events = _event_records(events, boundaries, chain, first, states, prob.u0)
    rule = stats_rule(method, False, interpolant=True)  # per segment (each starts afresh: FSAL does not carry over)
    per_segment = [rule(int(s), int(a), int(r)) for s, a, r in counts.astype(np.int64)]
    stats = {key: sum(s[key] for s in per_segment) for key in ("nfev", "naccept", "nreject")}
    stats["nfev"] += 2 * (dt is None)  # the first step's selection
    u = np.array(rows.reshape((-1,) + prob.u0.shape), dtype=prob.u0.dtype)
    return RawSolution(saveat.copy(), u, stats, "success", "", None, t_events, u_events)


def _event_records(events, boundaries, chain, first, states, u0) -> tuple[list, list]:
    """``t_events``, ``u_events`` from the states through each affect set (``first`` at
    ``t0``, ``states[k]`` at the end of segment ``k``: the pre-affect state, then the state
    after each affect of the set)."""
    t_events = [[] for _ in events]
    u_events = [[] for _ in events]
    at_t0 = bool(boundaries) and boundaries[0].time == chain.t0  # fired before the first segment
    for k, boundary in enumerate(boundaries):
        through = first if at_t0 and k == 0 else states[k - at_t0]
        j = 0
        for i in boundary.events:
            t_events[i].append(boundary.time)
            u_events[i].append(through[j])
            j += events[i].affect is not None
    shape = u0.shape
    return ([np.array(ts, dtype=np.float64) for ts in t_events],
            [np.array(us, dtype=u0.dtype).reshape((len(us),) + shape) for us in u_events])


def _build(prob, method, chain, wrapped: dict, max_steps: int, auto_dt: bool, example: tuple):
    """Trace and compile the chain: ``run(u0, p, starts, stops, saves, rtol, atol, dt) ->
    (rows, first, states, counts, codes)``; a :class:`~dxdt.sensitivity._compiled.Program`."""
    import dataclasses

    from .sensitivity._compiled import Program, compile_function
    from .sensitivity._jax import load_jax
    from .sensitivity._ode import SolveOptions, initial_step, odeint
    from .sensitivity.translate import to_jax

    jax, jnp = load_jax()
    g = to_jax(prob.f, prob.u0, prob.p)
    affects = {i: to_jax(fn, prob.u0, prob.p) for i, fn in wrapped.items()}
    g_once = jax.jit(g)  # diffrax evaluates the field at several places: trace f once
    width = 1 + max((len(b) for b in chain.branches + (chain.first,)), default=0)

    def through(indices, u, p, t):
        """The state before and after each affect of ``indices``, padded to ``width``."""
        states = [u]
        for i in indices:
            u = affects[i](u, p, t).astype(u.dtype)
            states.append(u)
        return jnp.stack(states + [u] * (width - len(states)))

    def field(t, y, a):
        return g_once(y, a, t)

    def run(u0, p, starts, stops, saves, rtol, atol, dt):
        options = SolveOptions(method, rtol, atol, max_steps)
        u0 = u0.astype(jnp.promote_types(u0.dtype, starts.dtype))  # as diffrax promotes a float32 state
        first = through(chain.first, u0, p, jnp.asarray(chain.t0, starts.dtype))
        u = first[-1]
        h = initial_step(field, u, p, starts[0], stops[-1], options) if auto_dt else dt  # (for the whole span)
        branches = [functools.partial(through, b) for b in chain.branches]

        def segment(carry, xs):
            u, h = carry
            start, stop, save, which = xs
            sol, code = odeint(field, u, p, start, stop, options, ts=save, dt0=jnp.sign(stop - start) * h)
            states = branches[0](sol.ys[-1], p, stop) if len(branches) == 1 else \
                jax.lax.switch(which, branches, sol.ys[-1], p, stop)
            h_next = jnp.where(jnp.isfinite(sol.next_step) & (sol.next_step > 0), sol.next_step, h)
            counts = jnp.stack([sol.stats["num_steps"], sol.stats["num_accepted_steps"],
                                sol.stats["num_rejected_steps"]])
            return (states[-1], h_next), (sol.ys[:-1], states, counts, code)

        (u, _), (ys, states, counts, codes) = jax.lax.scan(
            segment, (u, h), (starts, stops, saves, jnp.asarray(chain.which)))
        rows = ys.reshape((-1,) + ys.shape[2:])[chain.rows]
        if chain.hold:
            rows = jnp.concatenate([rows, jnp.broadcast_to(u, (chain.hold,) + u.shape)])
        return rows, first, states, counts, codes

    executable, meta = compile_function(run, *example)
    reads = list(g.constant_reads)
    for owner, i in enumerate(sorted(wrapped), start=1):  # the affects' reads, by their place in the key
        reads += [dataclasses.replace(read, owner=owner) for read in affects[i].constant_reads]
    return Program(executable, tuple(reads), meta, traces=g.n_traces)
