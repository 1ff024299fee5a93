"""``solve(..., events=..., backend="jax")``: compiled chunks of steps, events on their dense output.

``f`` is translated to JAX and integrated by diffrax in compiled chunks of at most
``CHUNK_STEPS`` steps (one compiled call, reused for every chunk and every solve of the
same problem shape, since the start, stop, state and parameters are arguments). After
each chunk the host locates events on the chunk's dense output exactly as the NumPy
backend does on its own (:mod:`._events_numpy`): sign checks at every step end and
``INTERIOR_POINTS`` interior points, Illinois root finding on the interpolant, earliest
first, simultaneous events in list order, the probe after an event, the Zeno stop.
The chunk is cut at the event, the affects (the user's NumPy code, on a private copy of
the state) are applied and the next chunk starts there; ``TimeEvent`` times end chunks
exactly. Conditions and affects run on the host: they see the same values, and the
derivatives through them are the job of :mod:`dxdt.sensitivity`.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ._backend_numpy import RawSolution, progress_bar
from ._events import apply_affect, check_condition_value
from ._events_numpy import (INTERIOR_POINTS, PROBE, SIMULTANEOUS, ZENO_COUNT, EventSet, first_crossing,
                            is_zeno)
from .solvers._numpy_executor import failure_message

CHUNK_STEPS = 1024  # steps per compiled call: bounds the dense-output buffers diffrax allocates
_EPS = float(np.finfo(np.float64).eps)
_RUNNERS: dict = {}


def _runner(prob, method, rtol, atol):
    """The compiled chunk ``(t_start, t_stop, u, p, dt0) -> diffrax solution`` and its evaluator."""
    from .sensitivity._jax import load_jax
    from .sensitivity.translate import to_jax

    jax, jnp = load_jax()
    atol_key = atol if np.ndim(atol) == 0 else np.asarray(atol).tobytes()
    leaves = tuple((np.shape(x), np.asarray(x).dtype.str) for x in jax.tree_util.tree_leaves(prob.p))
    key = (prob.f, type(method), float(rtol), atol_key, prob.u0.shape, prob.u0.dtype.str,
           jax.tree_util.tree_structure(prob.p), leaves)
    if key in _RUNNERS:
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

    evaluate = jax.jit(jax.vmap(lambda sol, t: sol.evaluate(t), in_axes=(None, 0)))
    names = ((diffrax.RESULTS.successful, "success"), (diffrax.RESULTS.max_steps_reached, "chunk"),
             (diffrax.RESULTS.dt_min_reached, "dt_min"))

    def status_of(result) -> str:
        return next((name for item, name in names if bool(result == item)), "nonfinite")

    _RUNNERS[key] = (chunk, evaluate, status_of, jnp, jax)
    return _RUNNERS[key]


def integrate_jax_events(prob, method, events: tuple, *, rtol, atol, dt, adaptive, saveat, dense,
                         max_steps, progress) -> RawSolution:
    """Solve ``prob`` with ``events`` on the JAX backend (see the module docstring)."""
    if not adaptive:
        raise ValueError("events with backend='jax' need adaptive stepping (an adaptive method, "
                         "adaptive=True); use backend='numpy' for fixed steps")
    if dense:
        raise ValueError("dense=True with events needs backend='numpy'")
    with progress_bar(progress, prob.tspan) as bar:
        return _Solve(prob, method, events, rtol, atol, dt, saveat, max_steps, bar).run()


class _Solve:
    """The host loop: chunks, event location, jumps, saving."""

    def __init__(self, prob, method, events, rtol, atol, dt, saveat, max_steps, bar):
        self.chunk, self.evaluate, self.status_of, jnp, self.jax = _runner(prob, method, rtol, atol)
        self.spec = EventSet(events, prob.u0, prob.p, prob.tspan)
        self.events, self.p, self.shape = events, prob.p, prob.u0.shape
        self.p_device = self.jax.tree_util.tree_map(jnp.asarray, prob.p)
        self.jnp, self.bar, self.saveat, self.max_steps = jnp, bar, saveat, max_steps
        self.t0, self.t1 = prob.tspan
        self.direction = 1.0 if self.t1 > self.t0 else -1.0
        self.stages = method.tableau.stages
        self.dt0 = dt
        self.u = np.array(prob.u0)
        self.buffer = np.empty_like(self.u)
        self.t_events = [[] for _ in events]
        self.u_events = [[] for _ in events]
        self.counts = [0] * len(events)
        self.next_time = {i: 0 for i in self.spec.times}
        self.recent = deque(maxlen=ZENO_COUNT + 1)
        self.probe = [False] * len(self.spec.continuous)
        self.status, self.message = "success", ""
        if saveat is None:
            self.ts, self.us = [self.t0], [self.u.copy()]
        else:
            self.out, self.j = np.empty((len(saveat),) + self.shape, self.u.dtype), 0
            self._save_until(self.t0, lambda ts: np.broadcast_to(self.u, (len(ts),) + self.shape), True)

    # -- bookkeeping shared with the NumPy locator's rules
    def _due(self, t: float) -> list[int]:
        return [i for i, ts in self.spec.times.items() if self.next_time[i] < len(ts) and ts[self.next_time[i]] == t]

    def _clip(self) -> float:
        pending = [ts[k] for i, ts in self.spec.times.items() if (k := self.next_time[i]) < len(ts)]
        if not pending:
            return self.t1
        return min(pending) if self.direction > 0 else max(pending)

    def _conditions(self, u: np.ndarray, t: float) -> np.ndarray:
        return np.array([check_condition_value(self.events[i], self.events[i].condition(u, self.p, t))
                         for i in self.spec.continuous])

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
                apply_affect(event, self.u, self.buffer, self.p, t)
                changed = True
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
        self.probe = [i in group for i in self.spec.continuous]
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
        jnp = self.jnp
        t, steps, naccept, nreject = self.t0, 0, 0, 0
        due = self._due(t)
        if due:
            self._fire(t, due)
        g_left = self._conditions(self.u, t)
        dt0 = self.dt0 if self.dt0 is not None else 1e-6 * abs(self.t1 - self.t0)
        while self.status == "success" and (self.t1 - t) * self.direction > 0:
            if steps >= self.max_steps:
                self.status = "max_steps"
                self.message = failure_message("max_steps", t, None, self.max_steps, self.t1)
                break
            t_clip = self._clip()
            sol = self.chunk(t, t_clip, jnp.asarray(self.u), self.p_device, self.direction * abs(dt0))
            host = self.jax.device_get((sol.result, sol.stats, sol.interpolation.ts, sol.interpolation.ts_size,
                                        sol.ys[-1]))  # one transfer per chunk
            result, stats, all_ts, ts_size, u_reached = host
            result = self.status_of(result)
            steps += int(stats["num_steps"])
            naccept += int(stats["num_accepted_steps"])
            nreject += int(stats["num_rejected_steps"])
            step_ts = np.asarray(all_ts[: int(ts_size)])
            if len(step_ts) < 2:
                self.status = "dt_min" if result == "dt_min" else "nonfinite"
                self.message = failure_message(self.status, t, None, self.max_steps, self.t1)
                break
            t_reached = float(step_ts[-1])
            evaluate = lambda ts, sol=sol: np.asarray(self.evaluate(sol, jnp.asarray(ts))).reshape(  # noqa: E731
                (len(ts),) + self.shape)
            t_event, group = self._locate(step_ts, g_left, evaluate)
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
            g_left = self._conditions(self.u, t)
        t_out, u_out = ((np.array(self.ts), np.stack(self.us)) if self.saveat is None
                        else (self.saveat[: self.j].copy(), self.out[: self.j]))
        stats = {"nfev": 1 + self.stages * steps, "naccept": naccept, "nreject": nreject}
        t_events = [np.array(ts, dtype=np.float64) for ts in self.t_events]
        u_events = [np.array(us).reshape((len(us),) + self.shape) if us else np.empty((0,) + self.shape)
                    for us in self.u_events]
        return RawSolution(t_out, u_out, stats, self.status, self.message, None, t_events, u_events)

    def _locate(self, step_ts: np.ndarray, g_left: np.ndarray, evaluate):
        """The earliest event in the chunk: ``(time, events firing together)`` or ``(None, [])``."""
        if not self.spec.continuous:
            return None, []
        theta = np.arange(1, INTERIOR_POINTS + 1) / (INTERIOR_POINTS + 1)
        starts, widths = step_ts[:-1], np.diff(step_ts)
        grid = (starts[:, None] + np.append(theta, 1.0)[None, :] * widths[:, None]).ravel()
        states = evaluate(grid).reshape((len(starts), INTERIOR_POINTS + 1) + self.shape)
        candidates = []
        for j, i in enumerate(self.spec.continuous):
            event, left, left_theta = self.events[i], g_left[j], 0.0
            for k, (t, h) in enumerate(zip(starts, widths)):
                g_at = lambda th, t=t, h=h, event=event: check_condition_value(  # noqa: E731
                    event, event.condition(evaluate([t + th * h])[0], self.p, t + th * h))
                if k == 0 and self.probe[j]:
                    left_theta = PROBE * _EPS * max(abs(t), abs(h)) / abs(h)
                    left = g_at(left_theta) if left_theta < theta[0] else 0.0
                    left_theta = left_theta if left_theta < theta[0] else 0.0
                values = np.array([left] + [check_condition_value(event, event.condition(s, self.p, t + th * h))
                                            for s, th in zip(states[k], np.append(theta, 1.0))])
                nodes = np.concatenate(([left_theta if k == 0 else 0.0], theta, [1.0]))
                tol = 2 * _EPS * max(abs(t), abs(t + h), abs(h)) / abs(h)
                root = first_crossing(values, nodes, event.direction, g_at, tol)
                if root is not None:
                    candidates.append((step_ts[k + 1] if root == 1.0 else t + root * h, i))
                    break
                left = values[-1]
        if not candidates:
            return None, []
        t_first = min(c[0] * self.direction for c in candidates) * self.direction
        window = SIMULTANEOUS * _EPS * max(abs(t_first), abs(step_ts[-1] - step_ts[0]) / max(len(starts), 1))
        group = sorted({c[1] for c in candidates if abs(c[0] - t_first) <= window})
        due = self._due(t_first) if math.isfinite(t_first) else []
        return t_first, sorted(set(group) | set(due))
