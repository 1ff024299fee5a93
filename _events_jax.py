"""``solve(..., events=..., backend="jax")``: compiled chunks of steps, compiled conditions and affects.

What runs where:

* compiled (JAX): ``f`` and every event's ``condition`` and ``affect``, translated from
  the user's NumPy code by :func:`dxdt.sensitivity.to_jax` (closure arrays become
  private traced buffers, so the user's arrays are never written; an in-place affect
  becomes a pure ``u -> u_new``). diffrax integrates at most ``CHUNK_STEPS`` steps per
  compiled call; a second call evaluates all conditions at every step end and
  ``INTERIOR_POINTS`` interior points of the chunk's dense output at once (vmapped over
  the times) and returns one NumPy array.
* host (NumPy): the rules of :mod:`._events_numpy` applied to those values: sign
  checks, Illinois root finding on the interpolant (each iterate one call of the
  compiled conditions), earliest event first, simultaneous events in list order, the
  probe after an event, the Zeno stop, saving. The chunk is cut at the event, the
  compiled affects are applied in list order and the next chunk starts there;
  ``TimeEvent`` times end chunks exactly (``times(p)`` runs on the host).

Compiled pieces are cached per problem shape, method and tolerances and the identity of
``f`` (the chunk), and of the conditions and affects (the event code); a closure array
whose content a trace baked in and the user changed in place forces a new trace. Time
grids are padded to powers of two, so chunks of any length share a few compilations and
a second solve of the same problem does not trace again. The user's NumPy conditions
and affects never run here; derivatives through events are :mod:`dxdt.sensitivity`'s job.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from types import SimpleNamespace

import numpy as np

from ._backend_numpy import RawSolution, progress_bar
from ._events import Event, TimeEvent, affect_inplace, condition_inplace
from ._events_numpy import (INTERIOR_POINTS, PROBE, SIMULTANEOUS, ZENO_COUNT, first_crossing, is_zeno, next_clip,
                            schedule)
from .solvers._numpy_executor import failure_message

CHUNK_STEPS = 1024  # steps per compiled call: bounds the dense-output buffers diffrax allocates
_EPS = float(np.finfo(np.float64).eps)
_RUNNERS: dict = {}  # compiled chunks, per problem, method and tolerances
_EVENT_CODE: dict = {}  # compiled conditions and affects, per problem shape and event code


def _shape_key(prob) -> tuple:
    from .sensitivity._jax import load_jax

    jax, _ = load_jax()
    leaves = tuple((np.shape(x), np.asarray(x).dtype.str) for x in jax.tree_util.tree_leaves(prob.p))
    return prob.u0.shape, prob.u0.dtype.str, jax.tree_util.tree_structure(prob.p), leaves


def _fresh(entry) -> bool:
    """Whether the closure arrays that ``entry``'s traces read still hold what they read."""
    from .sensitivity.translate._fingerprint import reach

    for fn, g in entry.translated:
        if g.constant_reads:  # rare: most traces read no closure array before writing it
            reaches = [reach(fn)]
            if not all(read.matches(reaches) for read in g.constant_reads):
                return False
    return True


def _runner(prob, method, rtol, atol):
    """``chunk(t_start, t_stop, u, p, dt0) -> diffrax solution``, ``evaluate(sol, ts)``, ``status_of``."""
    from .sensitivity._jax import load_jax
    from .sensitivity.translate import to_jax

    jax, jnp = load_jax()
    atol_key = atol if np.ndim(atol) == 0 else np.asarray(atol).tobytes()
    key = (prob.f, type(method), float(rtol), atol_key) + _shape_key(prob)
    if key in _RUNNERS and _fresh(_RUNNERS[key]):
        return _RUNNERS[key]
    import diffrax

    from .solvers._diffrax import diffrax_solver, pid_coefficients

    g = to_jax(prob.f, prob.u0, prob.p)
    term = diffrax.ODETerm(lambda t, u, p: g(u, p, t))
    pcoeff, icoeff = pid_coefficients(method)
    controller = diffrax.PIDController(rtol=rtol, atol=jnp.asarray(atol), pcoeff=pcoeff, icoeff=icoeff)
    solver = diffrax_solver(method, True)

    @jax.jit
    def chunk(t_start, t_stop, u, p, dt0):
        return diffrax.diffeqsolve(term, solver, t_start, t_stop, dt0, u, args=p,
                                   saveat=diffrax.SaveAt(t1=True, dense=True), stepsize_controller=controller,
                                   max_steps=CHUNK_STEPS, throw=False)

    # compared as host integers: an enumeration item's == builds a JAX array (0.4 ms a chunk)
    names = {int(item._value): name for item, name in (
        (diffrax.RESULTS.successful, "success"), (diffrax.RESULTS.max_steps_reached, "chunk"),
        (diffrax.RESULTS.dt_min_reached, "dt_min"))}

    def status_of(result) -> str:
        return names.get(int(np.asarray(result._value)), "nonfinite")

    _RUNNERS[key] = SimpleNamespace(
        translated=[(prob.f, g)], chunk=chunk, status_of=status_of,
        evaluate=jax.jit(jax.vmap(lambda sol, t: sol.evaluate(t), in_axes=(None, 0))))
    return _RUNNERS[key]


def _event_code(prob, events: tuple):
    """The compiled conditions and affects of ``events``.

    ``at_state(u, p, t)`` and ``at_time(sol, p, t)`` give every condition's value (a
    vector, in the order of the state events), ``on_grid(sol, p, ts)`` them at every time
    of ``ts`` (rows); ``affects[i](u, p, t) -> u_new`` (None where event ``i`` has none).
    """
    from .sensitivity._jax import load_jax
    from .sensitivity.translate import to_jax

    jax, jnp = load_jax()
    key = tuple((e.name, getattr(e, "condition", None), e.affect) for e in events) + _shape_key(prob)
    if key in _EVENT_CODE and _fresh(_EVENT_CODE[key]):
        return _EVENT_CODE[key]
    translated, conditions, affects = [], [], []

    def translate(inplace, fn, event):
        wrapped = functools.partial(inplace, fn, event._label())  # the walk reaches fn's closure
        translated.append((wrapped, to_jax(wrapped, prob.u0, prob.p)))
        return translated[-1][1]

    for event in events:
        if isinstance(event, Event):
            conditions.append(translate(condition_inplace, event.condition, event))
        affects.append(None if event.affect is None else jax.jit(translate(affect_inplace, event.affect, event)))

    def values(u, p, t):
        return jnp.stack([jnp.real(c(u, p, t).reshape(-1)[0]) for c in conditions])

    def on_dense(sol, p, t):
        return values(sol.evaluate(t), p, t)

    _EVENT_CODE[key] = SimpleNamespace(
        translated=translated, affects=affects, at_state=jax.jit(values), at_time=jax.jit(on_dense),
        on_grid=jax.jit(jax.vmap(on_dense, in_axes=(None, None, 0))))
    return _EVENT_CODE[key]


def _padded(times) -> np.ndarray:
    """``times`` (float64) padded with its last entry to a power of two: few compiled shapes."""
    times = np.asarray(times, np.float64)
    n = max(16, 1 << (len(times) - 1).bit_length())
    return np.concatenate([times, np.full(n - len(times), times[-1])])


def integrate_jax_events(prob, method, events: tuple, *, rtol, atol, dt, adaptive, saveat, dense,
                         max_steps, progress) -> RawSolution:
    """Solve ``prob`` with ``events`` on the JAX backend (see the module docstring)."""
    if not adaptive:
        raise ValueError("events with backend='jax' need adaptive stepping (an adaptive method, "
                         "adaptive=True); use backend='numpy' for fixed steps")
    if dense:
        raise ValueError("dense=True with events needs backend='numpy'")
    from ._events_jax_doses import fast_path_applies, solve_time_events

    if fast_path_applies(events, saveat, progress, method):  # dosing: one compiled call
        raw = solve_time_events(prob, method, events, rtol=rtol, atol=atol, dt=dt, saveat=saveat,
                                max_steps=max_steps)
        if raw is not None:
            return raw
    with progress_bar(progress, prob.tspan) as bar:
        return _Solve(prob, method, events, rtol, atol, dt, saveat, max_steps, bar).run()


class _Solve:
    """The host loop: chunks, event location, jumps, saving."""

    def __init__(self, prob, method, events, rtol, atol, dt, saveat, max_steps, bar):
        from .sensitivity._jax import load_jax

        self.jax, self.jnp = load_jax()
        self.runner = _runner(prob, method, rtol, atol)
        self.code = _event_code(prob, events)
        self.t0, self.t1 = prob.tspan
        self.continuous, self.times = schedule(events, prob.p, prob.tspan)
        self.events, self.shape = events, prob.u0.shape
        self.p_device = self.jax.tree_util.tree_map(self.jnp.asarray, prob.p)
        self.bar, self.saveat, self.max_steps = bar, saveat, max_steps
        self.direction = 1.0 if self.t1 > self.t0 else -1.0
        self.stages = method.tableau.stages
        self.dt0 = dt
        self.u = np.array(prob.u0)
        self.t_events = [[] for _ in events]
        self.u_events = [[] for _ in events]
        self.counts = [0] * len(events)
        self.next_time = {i: 0 for i in self.times}
        self.recent = deque(maxlen=ZENO_COUNT + 1)
        self.probe = [False] * len(self.continuous)
        self.status, self.message = "success", ""
        if saveat is None:
            self.ts, self.us = [self.t0], [self.u.copy()]
        else:
            self.out, self.j = np.empty((len(saveat),) + self.shape, self.u.dtype), 0
            self._save_until(self.t0, lambda ts: np.broadcast_to(self.u, (len(ts),) + self.shape), True)

    # -- bookkeeping shared with the NumPy locator's rules
    def _due(self, t: float) -> list[int]:
        return [i for i, ts in self.times.items() if self.next_time[i] < len(ts) and ts[self.next_time[i]] == t]

    def _clip(self) -> float:
        return next_clip(self.times, self.next_time, self.direction, self.t1)

    def _conditions(self, t: float) -> np.ndarray:
        """The state events' conditions at the current state (compiled)."""
        if not self.continuous:
            return np.zeros(0)
        return np.asarray(self.code.at_state(self.u, self.p_device, np.float64(t)))

    def _save_until(self, t_end: float, states, inclusive: bool) -> None:
        """Fill ``saveat`` rows up to ``t_end`` with ``states(times)``."""
        k = self.j
        while k < len(self.saveat) and ((self.saveat[k] - t_end) * self.direction < 0
                                        or (inclusive and self.saveat[k] == t_end)):
            k += 1
        if k > self.j:
            self.out[self.j:k] = states(self.saveat[self.j:k])
            self.j = k

    def _fire(self, t: float, group: list[int]) -> None:
        changed, stop = False, None
        for i in group:
            event = self.events[i]
            self.t_events[i].append(t)
            self.u_events[i].append(self.u.copy())
            self.counts[i] += 1
            if event.affect is not None:
                u_new = np.array(self.code.affects[i](self.u, self.p_device, np.float64(t)))
                if not np.all(np.isfinite(u_new)):
                    raise ValueError(f"{event._label()}: affect at t={t:.6g} made the state non-finite")
                self.u, changed = u_new, True
            if i in self.next_time:
                self.next_time[i] += 1
            if event.terminal and self.counts[i] >= event.terminal and stop is None:
                stop = event
        if changed:
            if self.saveat is None:
                self.ts.append(t)
                self.us.append(self.u.copy())
            else:
                k = self.j - 1
                while k >= 0 and self.saveat[k] == t:
                    self.out[k] = self.u
                    k -= 1
        self.probe = [i in group for i in self.continuous]
        self.recent.append(t)
        if stop is not None:
            self.status = "event"
            self.message = f"terminal {stop._label()} fired at t={t:.10g} (occurrence {self.counts[self.events.index(stop)]})"
        elif is_zeno(self.recent, abs(self.t1 - self.t0)):
            self.status = "dt_min"
            self.message = (f"Zeno behaviour: the time between events shrank {ZENO_COUNT} times in a row, to "
                            f"{abs(self.recent[-1] - self.recent[-2]):.3g} at t={t:.10g}: events accumulate there. "
                            "The solution holds everything up to that point.")

    def run(self) -> RawSolution:
        runner = self.runner
        t, steps, naccept, nreject = self.t0, 0, 0, 0
        due = self._due(t)
        if due:
            self._fire(t, due)
        g_left = self._conditions(t)
        dt0 = self.dt0 if self.dt0 is not None else 1e-6 * abs(self.t1 - self.t0)
        while self.status == "success" and (self.t1 - t) * self.direction > 0:
            if steps >= self.max_steps:
                self.status = "max_steps"
                self.message = failure_message("max_steps", t, None, self.max_steps, self.t1)
                break
            t_clip = self._clip()
            f64 = np.float64  # strongly typed times: one compilation of the chunk
            sol = runner.chunk(f64(t), f64(t_clip), self.u, self.p_device, f64(self.direction * abs(dt0)))
            host = self.jax.device_get((sol.result, sol.stats, sol.interpolation.ts, sol.interpolation.ts_size,
                                        sol.ys))  # one transfer per chunk (ys: the t1 row alone)
            result, stats, all_ts, ts_size, ys = host
            u_reached = ys[-1]
            result = runner.status_of(result)
            steps += int(stats["num_steps"])
            naccept += int(stats["num_accepted_steps"])
            nreject += int(stats["num_rejected_steps"])
            step_ts = np.asarray(all_ts[: int(ts_size)]) * self.direction  # diffrax steps in -t backwards
            if len(step_ts) < 2:
                self.status = "dt_min" if result == "dt_min" else "nonfinite"
                self.message = failure_message(self.status, t, None, self.max_steps, self.t1)
                break
            t_reached = float(step_ts[-1])

            def evaluate(ts, sol=sol):
                n = len(ts)
                return np.asarray(runner.evaluate(sol, _padded(ts)))[:n].reshape((n,) + self.shape)

            t_event, group = self._locate(sol, step_ts, g_left)
            if t_event is None and result == "success" and t_reached == t_clip:
                group = self._due(t_clip)
                t_event = t_clip if group else None
            t_end = t_reached if t_event is None else t_event
            inner = step_ts[1:][(step_ts[1:] - t_end) * self.direction < 0]
            if self.saveat is None:
                self.ts += inner.tolist() + [t_end]
                self.us += list(evaluate(np.append(inner, t_end)))
            else:
                self._save_until(t_end, evaluate, inclusive=True)
            self.u = evaluate([t_end])[0].copy() if t_end != t_reached else np.array(u_reached)
            if self.bar is not None:
                self.bar.update(t_end - t)
            dt0 = max(abs(step_ts[-1] - step_ts[-2]), 16 * _EPS * abs(t_end))
            t = t_end
            if group:
                self._fire(t, group)
            if result not in ("success", "chunk") and t_event is None:
                self.status = result
                self.message = failure_message(result, t, dt0, self.max_steps, self.t1)
                break
            g_left = self._conditions(t)
        t_out, u_out = ((np.array(self.ts), np.stack(self.us)) if self.saveat is None
                        else (self.saveat[: self.j].copy(), self.out[: self.j]))
        stats = {"nfev": 1 + self.stages * steps, "naccept": naccept, "nreject": nreject}
        t_events = [np.array(ts, dtype=np.float64) for ts in self.t_events]
        u_events = [np.array(us).reshape((len(us),) + self.shape) if us else np.empty((0,) + self.shape)
                    for us in self.u_events]
        return RawSolution(t_out, u_out, stats, self.status, self.message, None, t_events, u_events)

    def _locate(self, sol, step_ts: np.ndarray, g_left: np.ndarray):
        """The earliest event in the chunk: ``(time, events firing together)`` or ``(None, [])``.

        All conditions at every step end and ``INTERIOR_POINTS`` interior points come from
        one compiled call; the first sign change of each (in its direction) is refined by
        Illinois on the compiled conditions along the interpolant.
        """
        if not self.continuous:
            return None, []
        n = INTERIOR_POINTS + 1
        theta = np.arange(1, n + 1) / n  # the interior points, then the step end (1.0)
        starts, widths = step_ts[:-1], np.diff(step_ts)
        grid = starts[:, None] + theta[None, :] * widths[:, None]
        grid[:, -1] = step_ts[1:]  # exactly the step ends, inside the interpolant's range
        grid = grid.ravel()
        on_grid = np.asarray(self.code.on_grid(sol, self.p_device, _padded(grid)))[: len(grid)]

        def g_at(j: int, k: int, theta: float) -> float:  # condition j along step k's interpolant
            values = self.code.at_time(sol, self.p_device, np.float64(starts[k] + theta * widths[k]))
            return float(np.asarray(values)[j])

        candidates = []
        for j, i in enumerate(self.continuous):
            direction = self.events[i].direction
            left, left_theta = g_left[j], 0.0
            if self.probe[j]:
                left_theta = PROBE * _EPS * max(abs(starts[0]), abs(widths[0])) / abs(widths[0])
                left, left_theta = (g_at(j, 0, left_theta), left_theta) if left_theta < theta[0] else (0.0, 0.0)
            values = np.concatenate(([left], on_grid[:, j]))
            a, b = values[:-1], values[1:]
            crossing = ((a < 0) & (b >= 0) & (direction >= 0)) | ((a > 0) & (b <= 0) & (direction <= 0))
            if not crossing.any():
                continue
            k = int(np.argmax(crossing)) // n
            t, h = starts[k], widths[k]
            nodes = np.concatenate(([left_theta if k == 0 else 0.0], theta))
            tol = 2 * _EPS * max(abs(t), abs(t + h), abs(h)) / abs(h)
            root = first_crossing(values[k * n: (k + 1) * n + 1], nodes, direction, functools.partial(g_at, j, k),
                                  tol)
            candidates.append((step_ts[k + 1] if root == 1.0 else t + root * h, i))
        if not candidates:
            return None, []
        t_first = min(c[0] * self.direction for c in candidates) * self.direction
        window = SIMULTANEOUS * _EPS * max(abs(t_first), abs(step_ts[-1] - step_ts[0]) / max(len(starts), 1))
        group = sorted({c[1] for c in candidates if abs(c[0] - t_first) <= window})
        due = self._due(t_first) if math.isfinite(t_first) else []
        return t_first, sorted(set(group) | set(due))
