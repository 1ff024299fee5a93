"""``jax_solve`` through dosing events: ``TimeEvent``\\ s at fixed times.

With fixed event times the event sequence is the same for every ``(u0, p)``, so ``F``
is a fixed chain

.. math:: F(x) = \\text{rows of } \\; u_0 \\xrightarrow{S_1} u(\\tau_1^-) \\xrightarrow{a_1}
          u(\\tau_1^+) \\xrightarrow{S_2} \\cdots \\xrightarrow{S_K} u(t_1),

where ``S_k`` is ``jax_solve``'s differentiable solve on ``[tau_{k-1}, tau_k]`` (saving
the rows of ``saveat`` in ``[tau_{k-1}, tau_k)`` and its end) and ``a_k`` the events'
affects at ``tau_k``, in list order, translated like ``f`` (they may depend on ``p``).
Every transformation of ``F`` is then the one of the composition: each solve by its own
rules (forward sensitivities, the chosen adjoint, forward-over-reverse second order), each
affect by JAX's AD of its translation, the jump conditions of the tangents and adjoints
``v^+ = (da/du) v^-``, ``lambda^- = (da/du)^T lambda^+`` by the chain rule. A row at an
event time shows the post-affect state, as on the NumPy backend (an event at ``t0`` fires
before the first step, one at ``t1`` after the last).

Event times that move with the parameters (``times(p)``, state events) change the chain
itself; the NumPy-facing operators handle those (they plan the sequence on the host at
every call).

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

from .._events import Event, check_events
from ._events import plan, segment_steps, translate_events
from ._jax import load_jax
from ._ode import SolveOptions

jax, jnp = load_jax()

_ALTERNATIVE = ("use the NumPy-facing operators (sens.gradient(loss, prob, events=[...]), sens.jacobian, "
                "sens.hessian), which plan the event sequence on the host at every call")


@dataclass(frozen=True, eq=False)
class Link:
    """One link of the chain: a solve (``spec``, its rows then its end state), the
    affects at ``time`` (in list order), or ``rows`` copies of the state (rows at ``t1``
    after an event there)."""

    kind: str  # "solve", "affects" or "hold"
    spec: object = None
    affects: tuple = ()
    time: float = 0.0
    rows: int = 0


def check_time_events(events) -> tuple:
    """``events`` if ``jax_solve`` can chain them (``TimeEvent``\\ s at fixed times), else a
    ``NotImplementedError`` naming the event and the alternative."""
    events = check_events(events)
    for event in events:
        if isinstance(event, Event):
            raise NotImplementedError(
                f"jax_solve supports TimeEvents at fixed times; {event._label()} is located by root "
                f"finding, which changes the event sequence with (u0, p): {_ALTERNATIVE}")
        if callable(event.times):
            raise NotImplementedError(
                f"jax_solve supports TimeEvents at fixed times; {event._label()} has times(p), which "
                f"move with p: pass the times as an array, or {_ALTERNATIVE}")
    return events


def build_chain(prob, events: tuple, saveat: np.ndarray, options: SolveOptions, adjoint: str,
                duplicate_closure: bool, make_spec: Callable) -> tuple[tuple[Link, ...], int]:
    """The links of ``F`` and the dense step buffer of its segments (0 unless the
    interpolating adjoint).

    ``make_spec(t_start, t_stop, save, dense_steps)`` builds a segment's ``SolveSpec``. The
    event sequence (which times, which events at each, in which order) is the NumPy
    backend's: a NumPy solve with the events (on private copies of ``f`` and the affects)
    plans it, as for the operators.
    """
    boundaries, t_end, _ = plan(prob, events, options, saveat)
    steps = segment_steps(prob, events, options, boundaries, t_end) if adjoint == "interpolating" else 0
    _, affects = translate_events(events, prob.u0, prob.p, duplicate_closure)
    t0, t1 = prob.tspan
    direction = np.sign(t1 - t0) or 1.0
    links, start = [], t0
    for boundary in boundaries:
        if boundary.time != start:
            inside = ((saveat - start) * direction >= 0) & ((saveat - boundary.time) * direction < 0)
            links.append(Link("solve", make_spec(start, boundary.time, saveat[inside], steps)))
        fired = tuple(affects[i] for i in boundary.events if affects[i] is not None)
        if fired:
            links.append(Link("affects", affects=fired, time=boundary.time))
        start = boundary.time
    last = (saveat - start) * direction >= 0
    if start != t1:
        links.append(Link("solve", make_spec(start, t1, saveat[last], steps)))
    elif last.any():
        links.append(Link("hold", rows=int(last.sum())))
    return tuple(links), steps


def run_chain(links: tuple[Link, ...], u0, p, solve: Callable):
    """``(rows, code)`` of the chain; ``solve(link, u, p) -> (rows then end state, code)``."""
    u, rows, code = u0, [], jnp.asarray(0)
    for link in links:
        if link.kind == "solve":
            ys, status = solve(link, u, p)
            rows.append(ys[:-1])
            u, code = ys[-1], jnp.where(code == 0, status, code)  # the first failure's status
        elif link.kind == "affects":
            t = jnp.asarray(link.time, jnp.result_type(float))
            for affect in link.affects:
                u = affect(u, p, t).astype(u.dtype)
        else:
            rows.append(jnp.broadcast_to(u, (link.rows,) + u.shape))
    return jnp.concatenate(rows), code
