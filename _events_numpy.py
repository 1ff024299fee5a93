"""Event location and jumps inside the NumPy executor.

After every accepted step from ``t`` to ``t + h`` the locator evaluates each
condition ``g`` at the step's end and at ``INTERIOR_POINTS`` interior points of the
method's own dense output ``u(t + theta h)``, so two crossings inside one step are
seen, and two closer than those points by the vertex of the parabola through three of
them (:func:`hidden_vertex`). In the first sub-interval where ``g`` changes sign (in the event's direction) it
finds the root of ``theta -> g(u(t + theta h), p, t + theta h)`` by the Illinois
variant of regula falsi (with a bisection every ``BISECT_EVERY`` iterations) to a
bracket of a few machine epsilons in ``t``, and reports the end of the bracket on the
far side of the crossing. The earliest root of all events wins; events within
``SIMULTANEOUS`` epsilons of it fire at the same time, **in the order of the events
list**, each affect seeing the state left by the previous one. The step is cut at the
event (its state is the interpolant there), the affects are applied, the stage
``f(u)`` carried over by FSAL methods is recomputed, and the solve restarts.

A condition that is zero at the start of a step gives no sign; right after an event
the sign of its condition is read ``PROBE`` epsilons later (as DifferentialEquations.jl
does), so an event exactly at a step end, or one whose affect leaves ``g = 0``, fires
once. A condition already zero at ``t0`` does not fire there (use a ``TimeEvent``).
``TimeEvent`` times are reached exactly by shortening the step (no root finding).

References
----------
M. Dowell, P. Jarratt, "A modified regula falsi method for computing the root of an
equation", BIT 11 (1971) 168-174 (Illinois); L. F. Shampine, S. Thompson, "Event
location for ordinary differential equations", Comput. Math. Appl. 39 (2000) 43-54.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ._events import (Event, TimeEvent, apply_affect, check_condition_value, check_conditions,
                      nan_condition_message, nonfinite_affect_message)
from .solvers._controller import EPS as _EPS

INTERIOR_POINTS = 10  # sign checks inside a step: DifferentialEquations.jl's interp_points
BISECT_EVERY = 4  # Illinois iterations between safeguarding bisections
ROOT_MAX_ITER = 300
PROBE = 100  # after an event its condition's sign is read 100 eps later
SIMULTANEOUS = 1000  # roots within 1000 eps * |t| of the earliest fire together
ZENO_COUNT = 16  # this many ever shorter gaps between event times, ...
ZENO_GAP = 1e-8  # ... the last below ZENO_GAP * |t1 - t0|: a Zeno accumulation, stop
VERTEX_MARGIN = 2.0  # hidden_vertex's quick exit: samples further from 0 than this times their range


def schedule(events: tuple, p, tspan: tuple[float, float]) -> tuple[list, dict]:
    """The state events' indices, and each ``TimeEvent``'s times inside ``tspan`` in the
    order the solve meets them (``times(p)`` resolved), by index."""
    t0, t1 = tspan
    lo, hi = min(t0, t1), max(t0, t1)
    times = {}
    for i, event in enumerate(events):
        if isinstance(event, TimeEvent):
            ts = event.resolve_times(p)
            ts = np.unique(ts[(ts >= lo) & (ts <= hi)])
            times[i] = ts if t1 > t0 else ts[::-1]
    return [i for i, e in enumerate(events) if isinstance(e, Event)], times


def next_clip(times: dict, next_time: dict, direction: float, t1: float) -> float:
    """The next time a solve must step onto exactly: the earliest ``TimeEvent`` time not
    yet fired (``next_time[i]`` counts those fired of event ``i``), else ``t1``."""
    pending = [ts[k] for i, ts in times.items() if (k := next_time[i]) < len(ts)]
    if not pending:
        return t1
    return min(pending) if direction > 0 else max(pending)


class EventSet:
    """The events of one solve, checked against the problem (times resolved with ``p``).

    Raises
    ------
    TypeError
        A condition that does not return a real scalar at ``(u0, p, t0)``, naming the event.
    """

    def __init__(self, events: tuple, u0: np.ndarray, p, tspan: tuple[float, float]):
        self.events = events
        self.continuous, self.times = schedule(events, p, tspan)
        check_conditions(events, self.continuous, u0, p, tspan[0])

    def start(self, ws, saver, f, p, t0: float, t1: float, interpolant) -> "Locator":
        """A locator bound to one run of an executor (fires events due at ``t0``);
        ``interpolant`` is the step's dense output (:class:`StageInterpolant`,
        :class:`HermiteInterpolant`)."""
        return Locator(self, ws, saver, f, p, t0, t1, interpolant)


class StageInterpolant:
    """A Runge-Kutta step's own dense output ``u + h sum_i b_i(theta) k_i``, read from the
    executor's stage matrix ``ws.uk`` (interpolation-only stages evaluated on demand)."""

    def __init__(self, ws, saver, tableau, thetas: np.ndarray):
        self.ws, self.saver, self.tableau = ws, saver, tableau
        powers = thetas[:, None] ** np.arange(1, tableau.interp.shape[1] + 1)
        self.grid_interp = powers @ tableau.interp.T  # (points, stages)
        # the state's dtype: np.dot into ``out`` needs operands of one type (complex states)
        self.grid_w = np.ones((len(thetas), tableau.total_stages + 1), ws.uk.dtype)

    def prepare(self, t: float, dt: float, f, p) -> int:
        """Ready the step ``[t, t + dt]`` for evaluation; returns the ``f`` evaluations spent."""
        return self.saver._extra_stages(t, dt, f, p)

    def grid(self, dt: float, out: np.ndarray) -> None:
        """The states at the interior points into the rows of ``out``."""
        np.multiply(self.grid_interp, dt, out=self.grid_w[:, 1:])
        np.dot(self.grid_w, self.ws.uk, out=out)

    def at(self, dt: float, theta: float, out: np.ndarray) -> None:
        powers = theta ** np.arange(1, self.tableau.interp.shape[1] + 1)
        weights = np.empty(self.tableau.total_stages + 1, self.ws.uk.dtype)
        weights[0] = 1.0
        weights[1:] = dt * (self.tableau.interp @ powers)
        np.dot(weights, self.ws.uk, out=out)


class HermiteInterpolant:
    """A stabilized step's cubic Hermite interpolant on ``[u_n, F_0, F_1, (u_{n+1} - u_n)/h]``
    (the rows ``ws.hermite``, which the executor fills before locating: the saver reads them
    too, and an event overwrites ``ws.u_new``)."""

    def __init__(self, ws, thetas: np.ndarray):
        from .solvers._stabilized import hermite_weights

        self.ws, self.weights = ws, hermite_weights
        self.grid_w = np.empty((len(thetas), 4), ws.u.dtype)
        for row, theta in zip(self.grid_w, thetas):  # [1, b_0, b_1, b_2]: the step scales the b's
            hermite_weights(theta, 1.0, row)
        self.grid_b = self.grid_w[:, 1:].copy()

    def prepare(self, t: float, dt: float, f, p) -> int:
        return 0

    def grid(self, dt: float, out: np.ndarray) -> None:
        np.multiply(self.grid_b, dt, out=self.grid_w[:, 1:])
        np.dot(self.grid_w, self.ws.hermite, out=out)

    def at(self, dt: float, theta: float, out: np.ndarray) -> None:
        np.dot(self.weights(theta, dt, np.empty(4, self.ws.u.dtype)), self.ws.hermite, out=out)


def interior_thetas() -> np.ndarray:
    """The ``INTERIOR_POINTS`` interior points of a step where conditions are sampled."""
    return np.arange(1, INTERIOR_POINTS + 1) / (INTERIOR_POINTS + 1)


class Locator:
    """Per-solve event state; the executor calls :meth:`locate` and :meth:`fire`.

    Attributes
    ----------
    t_clip : float
        The next time the solver must step to exactly (a ``TimeEvent`` time or ``t1``).
    restart : bool
        Events fired at ``t0`` changed the state: ``f(u0)`` must be re-evaluated.
    firing : list of int
        Events to fire at the end of the step just located.
    """

    def __init__(self, spec: EventSet, ws, saver, f, p, t0, t1, interpolant):
        self.spec, self.events, self.ws, self.saver, self.f, self.p = spec, spec.events, ws, saver, f, p
        self.interpolant, self.t1, self.span = interpolant, t1, abs(t1 - t0)
        self.direction = 1.0 if t1 > t0 else -1.0
        self.shape = saver.shape
        self.u_view = ws.u.reshape(self.shape)
        self.buffer = np.empty(self.shape, ws.u.dtype)
        self.t_events = [[] for _ in self.events]
        self.u_events = [[] for _ in self.events]
        self.counts = [0] * len(self.events)
        self.next_time = {i: 0 for i in spec.times}
        self.firing: list[int] = []
        self.truncated = False
        self.status, self.message = "success", ""
        self.recent = deque(maxlen=ZENO_COUNT + 1)
        self.theta = np.append(interior_thetas(), 1.0)
        self.grid_u = np.empty((INTERIOR_POINTS, ws.u.size), ws.u.dtype)
        self.values = np.empty(INTERIOR_POINTS + 2)
        self.g_left = np.zeros(len(spec.continuous))
        self.g_end = np.zeros(len(spec.continuous))
        self.probe = [False] * len(spec.continuous)
        self.t_clip = self._next_clip()
        self.firing = [i for i in spec.times if self._due(i, t0)]
        self.restart = False
        if self.firing:
            self.restart = True
            self.fire(t0)
        self._condition_values(t0, self.g_left)
        nan = [i for j, i in enumerate(spec.continuous) if np.isnan(self.g_left[j])]
        if nan and self.status == "success":
            self.status, self.message = "nonfinite", nan_condition_message(self.events[nan[0]], t0)

    def _due(self, i: int, t: float) -> bool:
        ts, k = self.spec.times[i], self.next_time[i]
        return k < len(ts) and ts[k] == t

    def _next_clip(self) -> float:
        return next_clip(self.spec.times, self.next_time, self.direction, self.t1)

    def _condition_values(self, t: float, out: np.ndarray) -> None:
        for j, i in enumerate(self.spec.continuous):
            event = self.events[i]
            out[j] = check_condition_value(event, event.condition(self.u_view, self.p, t))

    def _g_at(self, event: Event, t: float, dt: float, theta: float) -> float:
        """The condition on the dense output at ``t + theta dt``, read at the ``theta`` that
        the time rounds to (as :meth:`locate` cuts the step there): at a shallow crossing
        the interpolant's rounding is worth more than the last ulp of ``theta``, and a state
        on the near side of the root fired the event again at the next step."""
        u = np.empty_like(self.ws.u)
        time = t + theta * dt
        self.interpolant.at(dt, (time - t) / dt, u)
        return check_condition_value(event, event.condition(u.reshape(self.shape), self.p, time))

    def locate(self, t: float, dt: float, t_new: float) -> tuple[float, int]:
        """Find the earliest event in the accepted step ``[t, t + dt]`` (state ``ws.u_new``).

        Cuts the step there (``ws.u_new`` becomes the interpolant) and returns the end
        of the (possibly shortened) step and the extra ``f`` evaluations spent.
        """
        self.firing, self.truncated = [], False
        candidates = []  # (t_event, list index)
        direction = 1.0 if dt > 0 else -1.0
        if (self.t_clip - t_new) * direction <= 4 * _EPS * max(abs(t_new), abs(dt)):
            t_new = self.t_clip
            candidates += [(t_new, i) for i in self.spec.times if self._due(i, t_new)]
        nfev = 0
        if self.spec.continuous:
            nfev += self.interpolant.prepare(t, dt, self.f, self.p)
            self.interpolant.grid(dt, self.grid_u)
            for j, i in enumerate(self.spec.continuous):
                root = self._first_root(j, self.events[i], t, dt, t_new)
                if root is not None:
                    candidates.append((root, i))
            if not candidates:
                self.g_left, self.g_end = self.g_end, self.g_left
                self.probe = [False] * len(self.probe)
                return t_new, nfev
        if not candidates:
            return t_new, nfev
        t_first = min(c[0] * direction for c in candidates) * direction
        window = SIMULTANEOUS * _EPS * max(abs(t), abs(t_new), abs(dt))
        together = [c for c in candidates if abs(c[0] - t_first) <= window]
        exact = [c[0] for c in together if c[1] in self.spec.times]
        t_event = exact[0] if exact else t_first
        self.firing = sorted({c[1] for c in together})
        if t_event != t_new:
            self.interpolant.at(dt, (t_event - t) / dt, self.ws.u_new)
            self.truncated = True
        return t_event, nfev

    def _first_root(self, j: int, event: Event, t: float, dt: float, t_new: float) -> float | None:
        """The earliest root of condition ``j`` in the step, or None."""
        u_new = self.ws.u_new.reshape(self.shape)
        values, theta = self.values, self.theta
        left_theta = 0.0
        values[0] = self.g_left[j]
        if self.probe[j]:
            left_theta = PROBE * _EPS * max(abs(t), abs(dt)) / abs(dt)
            if left_theta < theta[0]:
                values[0] = self._g_at(event, t, dt, left_theta)
            else:
                left_theta, values[0] = 0.0, 0.0
        for m in range(INTERIOR_POINTS):
            g = event.condition(self.grid_u[m].reshape(self.shape), self.p, t + theta[m] * dt)
            values[m + 1] = check_condition_value(event, g)
        values[-1] = self.g_end[j] = check_condition_value(event, event.condition(u_new, self.p, t_new))
        nodes = np.concatenate(([left_theta], theta))
        tol = 2 * _EPS * max(abs(t), abs(t_new), abs(dt)) / abs(dt)
        theta_root = first_crossing(values, nodes, event.direction,
                                    lambda th: self._g_at(event, t, dt, th), tol)
        if theta_root is None:
            return None
        return t_new if theta_root == 1.0 else t + theta_root * dt

    def fire(self, t_event: float) -> tuple[str, float]:
        """Record and apply the events in ``firing`` at ``t_event``; returns (status, t_clip)."""
        ws, saver, u = self.ws, self.saver, self.u_view
        if self.truncated and saver.dense is not None:
            saver.dense.truncate_last(t_event)
        changed, stop, failed = False, None, None
        for i in self.firing:
            event = self.events[i]
            self.t_events[i].append(t_event)
            self.u_events[i].append(u.copy())
            self.counts[i] += 1
            if event.affect is not None:
                if not apply_affect(event, u, self.buffer, self.p, t_event):
                    failed = event
                    break
                changed = True
            if i in self.next_time:
                self.next_time[i] += 1
            if event.terminal and self.counts[i] >= event.terminal and stop is None:
                stop = event
        if changed:
            self._save_post_affect(t_event)
        np.abs(ws.u, out=ws.abs_u)
        self._condition_values(t_event, self.g_left)
        for j, i in enumerate(self.spec.continuous):
            self.probe[j] = i in self.firing
        self.t_clip = self._next_clip()
        self.recent.append(t_event)
        if failed is not None:
            self.status, self.message = "nonfinite", nonfinite_affect_message(failed, t_event)
        elif stop is not None:
            self.status = "event"
            self.message = f"terminal {stop._label()} fired at t={t_event:.10g} (occurrence {self.counts[self.events.index(stop)]})"
        elif self._zeno():
            self.status = "dt_min"
            self.message = zeno_message(self.recent, t_event)
        return self.status, self.t_clip

    def _zeno(self) -> bool:
        return is_zeno(self.recent, self.span)

    def _save_post_affect(self, t_event: float) -> None:
        """Add the post-affect row (every step saved) or overwrite ``saveat`` rows at ``t_event``."""
        saver = self.saver
        if saver.saveat is None:
            saver.ts.append(t_event)
            saver.us.append(self.ws.u.copy())
            return
        j = saver.j - 1
        while j >= 0 and saver.saveat[j] == t_event:
            saver.out[j] = self.ws.u
            j -= 1

    def result(self) -> tuple[list, list] | tuple[None, None]:
        """``(t_events, u_events)``: per event, the times and the states before the affect."""
        t_events = [np.array(ts, dtype=np.float64) for ts in self.t_events]
        u_events = [np.array(us).reshape((len(us),) + self.shape) if us else
                    np.empty((0,) + self.shape, self.ws.u.dtype) for us in self.u_events]
        return t_events, u_events


def first_crossing(values: np.ndarray, nodes: np.ndarray, direction: int, h, tol: float) -> float | None:
    """The earliest root in ``nodes`` (sample positions with condition ``values``), or None.

    A crossing lies in the first interval whose ends change sign in ``direction``
    (a zero at the left end gives no sign; a zero at the right end is the root), or in
    the interval of a :func:`hidden_vertex` where ``g`` at that vertex has the other sign
    (two crossings closer than the samples); ``h(theta)`` evaluates the condition.
    """
    hidden = hidden_vertex(values, nodes)
    for m in range(len(nodes) - 1):
        ga, gb = values[m], values[m + 1]
        if _crosses(ga, gb, direction):
            return nodes[m + 1] if gb == 0 else _illinois(h, nodes[m], nodes[m + 1], ga, gb, tol)
        if hidden is not None and hidden[1] == m:
            theta = hidden[0]
            gv = h(theta)
            if _crosses(ga, gv, direction):
                return theta if gv == 0 else _illinois(h, nodes[m], theta, ga, gv, tol)
            if _crosses(gv, gb, direction):
                return _illinois(h, theta, nodes[m + 1], gv, gb, tol)
    return None


def _crosses(ga, gb, direction) -> bool:
    return (ga < 0 <= gb and direction >= 0) or (ga > 0 >= gb and direction <= 0)


def hidden_vertex(values: np.ndarray, nodes: np.ndarray) -> tuple[float, int] | None:
    """``(theta, m)``: the earliest vertex of the parabolas through three neighbouring
    samples that lies in an interval ``m`` whose ends have one sign while the parabola
    has the other sign (or 0) there: a dip through zero and back between two samples,
    which the sign checks miss. None if there is none (most steps: the samples then stay
    further from 0 than a parabola through them can dip, which is checked first).

    For samples ``(x_0, v_0), (x_1, v_1), (x_2, v_2)``, with divided differences
    ``d_01``, ``d_12`` and ``c = (d_12 - d_01) / (x_2 - x_0)``, the vertex is at
    ``x* = (x_0 + x_1) / 2 - d_01 / (2 c)``. ``_events_jax_locate`` applies the same rule.
    """
    listed = values.tolist()  # (a dozen values: faster in Python than in NumPy)
    lo, hi = min(listed), max(listed)
    # quick exit: a parabola with its vertex between its samples dips below them by at most
    # half their largest change (equal spacing), which is at most their range
    if lo > VERTEX_MARGIN * (hi - lo) or -hi > VERTEX_MARGIN * (hi - lo):
        return None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    theta, m, ok = parabola_vertices(np, values, nodes)
    if not ok.any():
        return None
    k = int(np.argmin(np.where(ok, theta, np.inf)))
    return float(theta[k]), int(m[k])


def parabola_vertices(xp, values, nodes):
    """``(theta, interval, ok)`` per triple of neighbouring samples (see
    :func:`hidden_vertex`), with ``xp`` NumPy or ``jax.numpy``."""
    v0, v1, v2 = values[:-2], values[1:-1], values[2:]
    x0, x1, x2 = nodes[:-2], nodes[1:-1], nodes[2:]
    d01, d12 = (v1 - v0) / (x1 - x0), (v2 - v1) / (x2 - x1)
    c = (d12 - d01) / (x2 - x0)
    curved = c != 0
    c = xp.where(curved, c, 1.0)
    theta = 0.5 * (x0 + x1) - d01 / (2 * c)
    q = v0 + d01 * (theta - x0) + c * (theta - x0) * (theta - x1)
    left = theta < x1
    ga, gb = xp.where(left, v0, v1), xp.where(left, v1, v2)
    ok = curved & (theta > x0) & (theta < x2) & (ga * gb > 0) & (q * ga <= 0)
    first = xp.arange(len(x1)).reshape((-1,) + (1,) * (values.ndim - 1)) + xp.where(left, 0, 1)
    return theta, first, ok


def is_zeno(recent, span: float) -> bool:
    """Whether events accumulate: the gaps between the last event times shrank
    ``ZENO_COUNT`` times in a row to a tiny gap (a ball coming to rest), or were all tiny
    (an affect that leaves the state just short of the threshold: chattering)."""
    gaps = np.abs(np.diff(np.array(recent)))
    tiny = gaps <= ZENO_GAP * span
    return len(gaps) == ZENO_COUNT and bool(tiny[-1]) and (bool(np.all(gaps[1:] < gaps[:-1])) or bool(tiny.all()))


def zeno_message(recent, t_event: float) -> str:
    """The message of a solve stopped by :func:`is_zeno` at ``t_event``."""
    return (
        f"Zeno behaviour: events accumulate at t={t_event:.10g} (the last {ZENO_COUNT} gaps between events "
        f"shrank steadily or stayed tiny, down to {abs(recent[-1] - recent[-2]):.3g}; e.g. a ball coming to "
        "rest, or an affect that leaves the state just short of the threshold). The solution holds "
        "everything up to that point; stop the solve at the accumulation time with a terminal event, or "
        "change the model (or the affect) there."
    )


def _illinois(h, a: float, b: float, ha: float, hb: float, tol: float) -> float:
    """Root of ``h`` in ``[a, b]`` (``h(a)``, ``h(b)`` of opposite signs): the bracket end past it.

    Illinois regula falsi (Dowell & Jarratt 1971) with a bisection every
    ``BISECT_EVERY`` iterations; stops when the bracket is narrower than ``tol``.
    """
    side = 0
    for k in range(ROOT_MAX_ITER):
        if b - a <= tol:
            break
        if k % BISECT_EVERY == BISECT_EVERY - 1:
            c = 0.5 * (a + b)
        else:
            c = (a * hb - b * ha) / (hb - ha)
            if not a < c < b:
                c = 0.5 * (a + b)
        hc = h(c)
        if hc == 0 or not np.isfinite(hc):
            return c
        if (hc > 0) == (hb > 0):
            b, hb = c, hc
            if side == -1:
                ha *= 0.5
            side = -1
        else:
            a, ha = c, hc
            if side == 1:
                hb *= 0.5
            side = 1
    return b
