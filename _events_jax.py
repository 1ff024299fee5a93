"""``solve(..., events=..., backend="jax")``: compiled chunks of steps, compiled conditions and affects.

What runs where:

* compiled (JAX): ``f`` and every event's ``condition`` and ``affect``, translated from
  the user's NumPy code by :func:`dxdt.sensitivity.to_jax` (closure arrays become
  private traced buffers, so the user's arrays are never written; an in-place affect
  becomes a pure ``u -> u_new``). One compiled call per chunk integrates at most
  ``CHUNK_STEPS`` steps with diffrax, stopping at the first step end where a condition
  changed sign, and locates the earliest event over the chunk's steps
  (:mod:`._events_jax_locate`: sign checks at every step end and ``INTERIOR_POINTS``
  interior points of the dense output, Illinois root finding, simultaneous events).
* host (NumPy): the rest of the rules of :mod:`._events_numpy`: simultaneous events in
  list order (with the ``TimeEvent``s due then), the probe after an event, the Zeno
  stop, terminal counts, saving. The chunk is cut at the event, the compiled affects
  are applied in list order and the next chunk starts there; ``TimeEvent`` times end
  chunks exactly (``times(p)`` runs on the host).

The chunk and each affect are compiled programs of :mod:`dxdt.sensitivity._compiled`:
kept in memory and in the disk cache under a key of the code and closure constants of
``f`` and the conditions (or the affect), shapes, method and options, so a second solve
of the same problem, also in a later process, traces nothing; a closure array whose
content a trace baked in and the user changed in place forces a new trace. Tolerances,
times and states are arguments. The user's NumPy conditions and affects never run here;
derivatives through events are :mod:`dxdt.sensitivity`'s job.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ._backend_numpy import RawSolution, progress_bar
from ._events import inplace_condition, nan_condition_message, nonfinite_affect_message
from ._events_numpy import ZENO_COUNT, is_zeno, next_clip, schedule, zeno_message
from .sensitivity._options import STATUS_CODES
from .solvers import AbstractStabilized
from .solvers._controller import EPS as _EPS
from .solvers._numpy_executor import failure_message
from .solvers._stabilized_executor import recheck_estimate

CHUNK_STEPS = 1024  # steps per compiled call: bounds the dense-output buffers diffrax allocates
SAVE_WINDOW = 64  # saveat rows one chunk returns (a chunk stops at the last of them)
STEP_ROWS = 128  # steps per chunk when every step is saved (their states come back)
SIGN_CHANGE = len(STATUS_CODES)  # the chunk's code when it stopped early for the event location
_RESULTS = {**STATUS_CODES, 1: "chunk", SIGN_CHANGE: "sign change"}  # max_steps of a chunk: go on


def _chunk_program(prob, method, events: tuple, continuous: list, every_step: bool, example: tuple,
                   dense: bool = False, fixed: bool = False):
    """The compiled chunk ``(t_start, t_stop, u, p, dt0, probe, save_ts, rtol, atol, grid)
    -> (summary, states)``, from memory, the disk cache or built (:func:`_build_chunk`).

    With ``fixed`` steps ``dt0`` is the step and ``grid = (origin, k)`` the NumPy
    executor's grid ``origin + j dt``, resumed at ``j = k`` (see
    :class:`~dxdt.solvers._diffrax_controller.FixedGrid`); adaptive chunks read
    ``grid = (t1, inv)``: where the whole solve ends, so that a first step chosen here
    (``dt0 = 0``) is the one a solve without events chooses (the selection depends on the
    span), and the step-size controller's ``1 / e`` of the last step before the chunk, so
    that it goes on as the NumPy executor's does across an event.

    ``summary`` (float64): diffrax's result code, steps, accepted, rejected, the number of
    step times, whether an event was found, its time, the stabilized work (3 numbers), the
    step the controller proposed after the last and its ``1 / e`` (0 with fixed steps),
    which conditions fire, their values at ``t_start``, then the step times. ``states``:
    the state at the chunk's end and at the event, then the states at ``save_ts``
    (clipped to the chunk) or, with ``every_step``, at each step end;
    with ``dense``, also the chunk's dense interpolation (then at most ``STEP_ROWS`` steps
    a chunk, and kept in memory only: it is not a flat program).
    """
    from ._backend_jax import structure
    from .sensitivity._compiled import lookup
    from .sensitivity._estimate import with_estimate

    conditions = tuple(inplace_condition(events[i]) for i in continuous)  # as translated and keyed
    directions = tuple(int(events[i].direction) for i in continuous)
    static = ("state events", structure(prob.u0), structure(example[3]), structure(example[8]), repr(method),
              directions, every_step, len(example[6]), CHUNK_STEPS, STEP_ROWS, dense, fixed)
    callables, constant_arrays = with_estimate(method, (prob.f,) + conditions, (False,) * (1 + len(conditions)))
    return lookup("event chunk", static, callables, constant_arrays=constant_arrays,
                  build=lambda: _build_chunk(prob, method, conditions, directions, every_step, example, dense, fixed),
                  disk=not dense)


def _build_chunk(prob, method, conditions: tuple, directions: tuple, every_step: bool, example: tuple,
                 dense: bool = False, fixed: bool = False):
    """Trace and compile the chunk (see :func:`_chunk_program`): diffrax integrates up to
    the first step end where a condition changed sign (a ``diffrax.Event`` without root
    finding: it only saves steps), then :func:`._events_jax_locate.locate` finds the
    earliest event over all the chunk's steps."""
    import dataclasses

    from .sensitivity._jax import load_diffrax

    diffrax = load_diffrax()

    from ._events_jax_locate import locate
    from .sensitivity._compiled import Program, compile_function
    from .sensitivity._estimate import translate_eigen_est
    from .sensitivity._jax import load_jax
    from .sensitivity.translate import to_jax
    from .sensitivity._ode import initial_step, quiet_about_complex, status_code
    from .sensitivity._options import SolveOptions
    from .solvers._diffrax import diffrax_solver, pid_coefficients
    from .solvers._diffrax_controller import FixedGrid, GuardedController
    from .solvers._stabilized_diffrax import stabilized_counters

    jax, jnp = load_jax()
    g = to_jax(prob.f, prob.u0, prob.p)
    translated = [to_jax(fn, prob.u0, prob.p) for fn in conditions]
    g_once = jax.jit(g)  # diffrax evaluates the field at several places: trace f once
    term = diffrax.ODETerm(lambda t, u, p: g_once(u, p, t))
    rho = translate_eigen_est(method, owner=1 + len(conditions))  # keyed after f and the conditions
    solver = diffrax_solver(method, True, dense_buffer=True, limited=not fixed, spectral_radius=rho)
    pcoeff, icoeff = pid_coefficients(method)

    def values(u, p, t):
        return jnp.stack([jnp.real(c(u, p, t).reshape(-1)[0]) for c in translated])

    def sign_change(j):
        return lambda t, u, p, **kwargs: values(u, p, t)[j]

    event = diffrax.Event([sign_change(j) for j in range(len(directions))],
                          direction=[None if d == 0 else d > 0 for d in directions]) if directions else None
    stabilized = isinstance(method, AbstractStabilized)  # its work is counted by its solver state
    saveat = diffrax.SaveAt(steps=every_step, t1=not every_step, dense=True, controller_state=True,
                            solver_state=stabilized)

    def chunk(t_start, t_stop, u, p, dt0, probe, save_ts, rtol, atol, grid):
        u = u.astype(jnp.promote_types(u.dtype, t_start.dtype))  # as diffrax promotes a float32 state
        direction = jnp.sign(t_stop - t_start)
        if fixed:  # the NumPy executor's grid, resumed where the last chunk (or an event) left it
            controller = FixedGrid(grid[0], grid[1].astype(jnp.int32))
        else:  # the NumPy backend's step-size floor; non-finite steps are rejected and reported
            controller = GuardedController(rtol, atol, pcoeff, icoeff, 16 * _EPS, first_inv=grid[1],
                                           never_shrink_after_accept=stabilized)
            options = SolveOptions(method, rtol, atol, CHUNK_STEPS)
            dt0 = jax.lax.cond(dt0 == 0, lambda: direction * initial_step(  # 0: choose, as a solve without events
                lambda t, y, a: g_once(y, a, t), u, p, t_start, grid[0], options), lambda: dt0)
        with quiet_about_complex((u, p)):
            sol = diffrax.diffeqsolve(term, solver, t_start, t_stop, dt0, u, args=p, saveat=saveat,
                                      stepsize_controller=controller,
                                      max_steps=STEP_ROWS if every_step or dense else CHUNK_STEPS,
                                      throw=False, event=event)
        ts_size = sol.interpolation.ts_size
        ts = sol.interpolation.ts * direction  # diffrax steps in -t backwards
        if every_step:
            rows = sol.ys
            u_reached = rows[jnp.maximum(ts_size - 2, 0)]
        else:
            u_reached = sol.ys[-1]
            ends = jnp.stack([t_start, ts[jnp.maximum(ts_size - 1, 0)]])
            rows = jax.vmap(sol.evaluate)(jnp.clip(save_ts, ends.min(), ends.max()))
        if directions:
            at_start = values(u, p, t_start)
            found, t_event, fires = locate(sol, values, p, at_start, probe > 0, np.asarray(directions), direction)
        else:
            found, t_event, fires, at_start = jnp.asarray(False), t_start, probe, probe
        stats, f64 = sol.stats, jnp.float64
        code = jnp.where(sol.result == diffrax.RESULTS.event_occurred, SIGN_CHANGE,
                         status_code(sol.result, sol.controller_state[1]))
        work = stabilized_counters(sol).astype(f64) if stabilized else jnp.zeros(3, f64)
        control = jnp.zeros(2, f64) if fixed else jnp.stack([jnp.abs(sol.controller_state.next_step),
                                                             sol.controller_state.inv]).astype(f64)
        head = jnp.concatenate([jnp.stack([code, stats["num_steps"], stats["num_accepted_steps"],
                                           stats["num_rejected_steps"], ts_size, found, t_event]).astype(f64),
                                work, control])
        summary = jnp.concatenate([head, fires.astype(f64), at_start.astype(f64), ts])
        states = jnp.concatenate([jnp.stack([u_reached, sol.evaluate(t_event)]), rows])
        return (summary, states, sol.interpolation) if dense else (summary, states)

    executable, meta = compile_function(chunk, *example, flat=not dense)
    reads = list(g.constant_reads)
    for owner, c in enumerate(translated, start=1):  # the conditions' reads, by their place in the key
        reads += [dataclasses.replace(read, owner=owner) for read in c.constant_reads]
    reads += [] if rho is None else rho.constant_reads
    return Program(executable, tuple(reads), meta, traces=g.n_traces)


def _affect_program(prob, affect, example: tuple):
    """The compiled ``affect(u, p, t) -> u_new`` (``affect``: the in-place function translated)."""
    from ._backend_jax import structure
    from .sensitivity._compiled import lookup

    def build():
        from .sensitivity._compiled import Program, compile_function
        from .sensitivity.translate import to_jax

        a = to_jax(affect, prob.u0, prob.p)
        executable, meta = compile_function(a, *example)
        return Program(executable, tuple(a.constant_reads), meta, traces=a.n_traces)

    static = ("affect", structure(prob.u0), structure(example[1]))
    return lookup("event affect", static, (affect,), build)


def integrate_jax_events(prob, method, events: tuple, *, rtol, atol, dt, adaptive, saveat, dense,
                         max_steps, progress) -> RawSolution:
    """Solve ``prob`` with ``events`` on the JAX backend (see the module docstring)."""
    from ._events_jax_doses import fast_path_applies, solve_time_events

    if adaptive and not dense and fast_path_applies(events, saveat, progress, method):  # dosing: one call
        raw = solve_time_events(prob, method, events, rtol=rtol, atol=atol, dt=dt, saveat=saveat,
                                max_steps=max_steps)
        if raw is not None:
            return raw
    with progress_bar(progress, prob.tspan) as bar:
        return _Solve(prob, method, events, rtol, atol, dt, saveat, max_steps, bar, dense, not adaptive).run()


class _Solve:
    """The host loop: chunks, event location, jumps, saving."""

    def __init__(self, prob, method, events, rtol, atol, dt, saveat, max_steps, bar, dense=False, fixed=False):
        from ._backend_jax import as_numpy, per_attempt
        from ._events_jax_doses import wrapped_affects

        self.t0, self.t1 = prob.tspan
        self.continuous, self.times = schedule(events, prob.p, prob.tspan)
        f64 = np.float64
        self.p = as_numpy(prob.p)
        self.method, self.user_p = method, prob.p
        self.tolerances = (f64(rtol), np.asarray(atol, f64))
        self.no_saves = np.zeros(1 if saveat is None else min(SAVE_WINDOW, len(saveat)), f64)
        example = (f64(self.t0), f64(self.t1), prob.u0, self.p, f64(1.0), np.zeros(len(self.continuous), f64),
                   self.no_saves) + self.tolerances + (np.zeros(2, f64),)
        self.chunk = _chunk_program(prob, method, events, self.continuous, saveat is None, example, dense, fixed)
        self.fixed = fixed
        self.dense = _ChunkedDense(self.t0, prob.u0, prob.u0.dtype) if dense else None
        self.affects = {i: _affect_program(prob, fn, (prob.u0, self.p, f64(self.t0)))
                        for i, fn in wrapped_affects(events).items()}
        self.events, self.shape = events, prob.u0.shape
        self.bar, self.saveat, self.max_steps = bar, saveat, max_steps
        self.direction = 1.0 if self.t1 > self.t0 else -1.0
        self.stabilized = method if isinstance(method, AbstractStabilized) else None
        # f evaluations per attempt: the chunks interpolate (event location, rows)
        self.per_step = None if self.stabilized is not None else per_attempt(method, interpolant=True)
        self.work = [0, 0, 0]  # its counters, summed over the chunks (the largest stage count: max)
        self.dt0 = dt
        self.inv = 1.0  # the step-size controller's 1 / e of the last step (1: none yet)
        self.u = np.array(prob.u0)
        self.t_events = [[] for _ in events]
        self.u_events = [[] for _ in events]
        self.counts = [0] * len(events)
        self.next_time = {i: 0 for i in self.times}
        self.recent = deque(maxlen=ZENO_COUNT + 1)
        self.probe = np.zeros(len(self.continuous))
        self.status, self.message = "success", ""
        if saveat is None:
            self.ts, self.us = [self.t0], [self.u.copy()]
        else:
            self.out, self.j = np.empty((len(saveat),) + self.shape, self.u.dtype), 0
            self._save_until(self.t0, lambda ts: np.broadcast_to(self.u, (len(ts),) + self.shape), True)

    def _failure(self, status: str, t: float, dt0) -> str:
        """The NumPy executor's message for a chunk that failed at ``t`` (the state
        ``self.u``), naming a user's ``eigen_est`` that gives no bound there instead of ``f``."""
        blamed = status == "nonfinite" and recheck_estimate(self.method, self.u, self.user_p, t)
        return blamed or failure_message(status, t, dt0, self.max_steps, self.t1)

    def _signed(self, step: float) -> float | None:
        """A proposed step size as the NumPy executor's messages name it (with the sign of
        the direction of time), or None when the chunk proposed none."""
        return self.direction * step if 0 < step < np.inf else None

    def _grid(self, t: float) -> np.ndarray:
        """``(origin, k)`` of the fixed grid ``t0 + j dt`` from ``t``: the next step ends at
        ``j = k``, one after the last grid point reached (within ``1e-12 dt``, the NumPy
        executor's rule; a step that an event or a ``TimeEvent`` cut short resumes it)."""
        if not self.fixed:
            return np.array([self.t1, self.inv], np.float64)
        dt = self.direction * abs(self.dt0)
        k = round((t - self.t0) / dt)
        if (self.t0 + k * dt - t) * self.direction > 1e-12 * abs(dt):
            k -= 1
        return np.array([self.t0, k + 1], np.float64)

    # -- bookkeeping shared with the NumPy locator's rules
    def _due(self, t: float) -> list[int]:
        return [i for i, ts in self.times.items() if self.next_time[i] < len(ts) and ts[self.next_time[i]] == t]

    def _clip(self) -> float:
        return next_clip(self.times, self.next_time, self.direction, self.t1)

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
        changed, stop, failed = False, None, None
        for i in group:
            event = self.events[i]
            self.t_events[i].append(t)
            self.u_events[i].append(self.u.copy())
            self.counts[i] += 1
            if event.affect is not None:
                u_new = np.array(self.affects[i](self.u, self.p, np.float64(t)))
                if not np.all(np.isfinite(u_new)):
                    failed = event
                    break
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
        self.probe = np.array([float(i in group) for i in self.continuous])
        self.recent.append(t)
        if failed is not None:
            self.status, self.message = "nonfinite", nonfinite_affect_message(failed, t)
        elif stop is not None:
            self.status = "event"
            self.message = f"terminal {stop._label()} fired at t={t:.10g} (occurrence {self.counts[self.events.index(stop)]})"
        elif is_zeno(self.recent, abs(self.t1 - self.t0)):
            self.status = "dt_min"
            self.message = zeno_message(self.recent, t)

    def run(self) -> RawSolution:
        t, steps, naccept, nreject, chunks = self.t0, 0, 0, 0, 0
        due = self._due(t)
        if due:
            self._fire(t, due)
        dt0 = self.dt0 if self.dt0 is not None else 0.0  # 0: the chunk chooses (Hairer & Wanner)
        m, f64 = len(self.continuous), np.float64
        while self.status == "success" and (self.t1 - t) * self.direction > 0:
            if steps >= self.max_steps:
                self.status = "max_steps"
                self.message = failure_message("max_steps", t, self._signed(abs(dt0)), self.max_steps, self.t1)
                break
            t_clip, save_ts = self._clip(), self.no_saves
            if self.saveat is not None and self.j < len(self.saveat):
                save_ts = self.saveat[self.j: self.j + len(save_ts)]
                last = save_ts[-1]
                if len(self.saveat) - self.j > len(save_ts) and 0 < (last - t) * self.direction \
                        < (t_clip - t) * self.direction:
                    t_clip = last  # a chunk returns at most SAVE_WINDOW rows
                save_ts = np.concatenate([save_ts, np.full(len(self.no_saves) - len(save_ts), last)])
            chunks += 1  # each evaluates f at its start (FSAL methods)
            summary, states, *interpolation = self.chunk(
                f64(t), f64(t_clip), self.u, self.p, f64(self.direction * abs(dt0)), self.probe, save_ts,
                *self.tolerances, self._grid(t))
            code, n_steps, accepted, rejected, ts_size, found, t_event = summary[:7]
            work = summary[7:10]  # a stabilized method's f evaluations, largest stage count, estimates
            self.work = [self.work[0] + int(work[0]), max(self.work[1], int(work[1])), self.work[2] + int(work[2])]
            proposed, self.inv = float(summary[10]), float(summary[11])  # the controller's, to go on with
            fires, at_start = summary[12: 12 + m], summary[12 + m: 12 + 2 * m]
            step_ts = summary[12 + 2 * m: 12 + 2 * m + int(ts_size)]
            nan = np.flatnonzero(np.isnan(at_start)) if chunks == 1 else ()
            if len(nan):  # as the NumPy backend: the event could never fire, so stop at t0
                self.status = "nonfinite"
                self.message = nan_condition_message(self.events[self.continuous[nan[0]]], t)
                break
            u_reached, u_event, rows = states[0], states[1], states[2:]
            result = _RESULTS.get(int(code), "nonfinite")
            n_steps, accepted, rejected = int(n_steps), int(accepted), int(rejected)
            if steps + n_steps > self.max_steps:  # the chunk ran past max_steps: keep its first steps
                keep = max(0, min(accepted, self.max_steps - steps - rejected))
                if keep + 1 < len(step_ts):  # the step after the last kept: the one proposed there
                    proposed = abs(step_ts[keep + 1] - step_ts[keep])
                step_ts, result = step_ts[: keep + 1], "max_steps"
                n_steps, accepted, rejected = self.max_steps - steps, keep, self.max_steps - steps - keep
                u_reached = rows[keep - 1] if self.saveat is None and keep else self.u
                found = found and (t_event - step_ts[-1]) * self.direction <= 0
            steps += n_steps
            naccept += accepted
            nreject += rejected
            if len(step_ts) < 2:
                self.status = result if result in ("dt_min", "max_steps") else "nonfinite"
                self.message = self._failure(self.status, t, None if self.fixed else self._signed(proposed))
                break
            t_reached = float(step_ts[-1])
            if result == "sign change":  # stopped early for the location below
                result = "success" if t_reached == t_clip else "chunk"
            group = []
            if found:
                t_event = float(t_event)
                group = sorted({self.continuous[j] for j in np.flatnonzero(fires)} | set(self._due(t_event)))
            elif result == "success" and t_reached == t_clip:
                group = self._due(t_clip)
            t_event = t_event if found else (t_clip if group else None)
            t_end = t_reached if t_event is None else t_event
            u_end = u_event if found and t_end != t_reached else u_reached
            if self.saveat is None:
                inner = step_ts[1:][(step_ts[1:] - t_end) * self.direction < 0]
                self.ts += inner.tolist() + [t_end]
                self.us += list(rows[: len(inner)]) + [u_end]
            else:  # rows past the window repeat its last time (a repeated save time)
                self._save_until(t_end, lambda ts: rows[np.minimum(np.arange(len(ts)), len(rows) - 1)], True)
            self.u = np.array(u_end)
            if self.dense is not None and t_end != t:
                self.dense.append(t, t_end, interpolation[0], int(summary[4]))
            if self.bar is not None:
                self.bar.update(t_end - t)
            if not self.fixed:  # the next chunk goes on with the proposed step, as the NumPy executor
                last = abs(step_ts[-1] - step_ts[-2])
                dt0 = max(proposed if 0 < proposed < np.inf else last, 16 * _EPS * abs(t_end))
            t = t_end
            if group:
                self._fire(t, group)
            if result not in ("success", "chunk") and t_event is None:
                self.status = result
                self.message = self._failure(result, t, dt0 if self.fixed else self._signed(proposed))
                break
        dtype = self.out.dtype if self.saveat is not None else self.us[0].dtype  # the state's (diffrax promotes)
        t_out, u_out = ((np.array(self.ts), np.array(self.us, dtype)) if self.saveat is None
                        else (self.saveat[: self.j].copy(), self.out[: self.j]))
        if self.stabilized is None:
            chosen = 2 * (self.dt0 is None and chunks > 0)  # the first step's selection
            starts = chunks * int(self.method.tableau.fsal)  # an FSAL step's f(u) at each chunk's start
            stats = {"nfev": starts + chosen + self.per_step * steps, "naccept": naccept, "nreject": nreject}
        else:  # the counters hold the rejected attempts' work too (dxdt's controller counts it)
            from .solvers._stabilized_diffrax import solve_stats

            counted = solve_stats(self.stabilized, self.work, naccept, 0, self.stabilized.eigen_est is not None)
            stats = {"nfev": 1 + counted.pop("nfev"), "naccept": naccept, "nreject": nreject, **counted}
        t_events = [np.array(ts, dtype=np.float64) for ts in self.t_events]
        u_events = [np.array(us, dtype).reshape((len(us),) + self.shape) for us in self.u_events]
        dense = self.dense  # (with no segment: the start alone, see _ChunkedDense.evaluate)
        return RawSolution(t_out, u_out, stats, self.status, self.message, dense, t_events, u_events)


def _trimmed(interpolation, steps: int):
    """A diffrax ``DenseInterpolation`` (NumPy leaves) cut to its first ``steps`` steps, in
    arrays of its own (not views that keep the chunk's whole buffer alive), padded to a
    power of two of steps by repeating the last (``ts`` has one entry more than the steps),
    so that evaluating the pieces compiles a few sizes."""
    import equinox as eqx
    import jax

    pad = (1 << (steps - 1).bit_length()) - steps

    def resize(x, n):
        x = np.asarray(x)[:n]
        return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])  # a copy, also for pad == 0
    ts = resize(interpolation.ts, steps + 1)
    infos = jax.tree_util.tree_map(lambda x: resize(x, steps), interpolation.infos)
    return eqx.tree_at(lambda i: (i.ts, i.infos), interpolation, (ts, infos))


class _ChunkedDense:
    """``sol(t)`` of a JAX solve with events: one piece per chunk, each the chunk's own
    dense interpolation (diffrax's, the method's interpolant), valid from the chunk's start
    to where the host cut it (the event); at an event time the piece after it answers, so
    ``sol(t_event)`` is the post-affect state, as on the NumPy backend.

    Each piece keeps the steps it took (:func:`_trimmed`).
    """

    def __init__(self, t0: float, u0, dtype):
        self.t_first = self.t_last = t0
        self._u0, self._shape, self._dtype = np.array(u0), np.shape(u0), dtype
        self.segments: list = []  # (start, interpolation cut to its steps)
        self._evaluate = None

    def append(self, start: float, end: float, interpolation, ts_size: int) -> None:
        self.segments.append((start, _trimmed(interpolation, max(ts_size - 1, 1))))
        self.t_last = end

    def evaluate(self, t: np.ndarray) -> np.ndarray:
        from .sensitivity._jax import load_jax

        if not self.segments or self.t_last == self.t_first:  # no step: the start alone
            return np.broadcast_to(self._u0, (len(t),) + self._shape).astype(self._dtype)
        jax, _ = load_jax()
        if self._evaluate is None:
            self._evaluate = jax.jit(jax.vmap(lambda interp, s: interp.evaluate(s), in_axes=(None, 0)))
        starts = np.array([start for start, _ in self.segments])
        direction = 1.0 if self.t_last >= self.t_first else -1.0
        index = np.clip(np.searchsorted(direction * starts, direction * t, side="right") - 1,
                        0, len(self.segments) - 1)
        out = np.empty((len(t),) + self._shape, self._dtype)
        for i in np.unique(index):
            chosen = index == i
            values = self._evaluate(self.segments[i][1], np.asarray(t[chosen], np.float64))
            out[chosen] = np.asarray(values, self._dtype).reshape((-1,) + self._shape)
        return out
