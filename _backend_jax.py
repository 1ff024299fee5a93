"""``solve(..., backend="jax")``: translate ``f`` to JAX and integrate with diffrax.

The compiled solve is a :class:`dxdt.sensitivity._compiled.Program`, found again for the
same code of ``f``, shapes, method and options (in memory, or on disk in a later
process): a new ``u0``, ``p``, ``tspan``, ``dt``, ``rtol``/``atol`` or ``saveat`` of the same
shapes reuses it without tracing or compiling, and a closure array that ``f`` reads and
the user changed in place is traced again (never a stale constant). Results map to
dxdt's statuses and keep the partial data of a failed solve, like the NumPy backend.

diffrax sizes its per-step output buffers by ``max_steps``; when saving every step (or
keeping dense output) those buffers would be large, a first solve counts the steps and
a second fills a buffer rounded up to a power of two (so at most a few compilations).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable

import numpy as np

from ._backend_numpy import RawSolution
from ._problem import ODEProblem
from .sensitivity._compiled import lookup
from .sensitivity._estimate import with_estimate
from .sensitivity._jax import load_jax
from .sensitivity._options import STATUS_CODES
from .sensitivity.translate._closure import same_sequence
from .solvers import AbstractRungeKutta, AbstractStabilized
from .solvers._numpy_executor import failure_message
from .solvers._stabilized_executor import recheck_estimate, recorded_warnings

BUFFER_BUDGET_BYTES = 256 * 2**20  # above this, count the steps first (two passes)


def structure(p: Any):
    """Shapes and container structure of ``p`` (the part of ``p`` a compilation depends on),
    with a dict's keys in their order: ``f`` is traced with ``p`` as given (a dict's values
    may be read by position), so another order is another program."""
    if type(p) is np.ndarray:  # the common case first: a call of solve() computes two
        return (p.shape, p.dtype.str)
    if isinstance(p, dict):
        return ("dict", tuple((k, structure(v)) for k, v in p.items()))
    if isinstance(p, (tuple, list)):
        return (type(p).__name__, tuple(structure(v) for v in p))
    if p is None:
        return None
    array = p if type(p) is np.ndarray else np.asarray(p)
    return (array.shape, array.dtype.str)


def as_numpy(p: Any):
    """``p`` with NumPy leaves (strongly typed, so every call has the same signature)."""
    if isinstance(p, dict):
        return {k: as_numpy(v) for k, v in p.items()}
    if isinstance(p, (tuple, list)):
        return same_sequence(p, [as_numpy(v) for v in p])
    return None if p is None else np.asarray(p)


def _build(prob: ODEProblem, method, static: dict, args: dict, check: Callable | None):
    """Trace and compile the solve for ``static`` options; a :class:`Program`."""
    from .sensitivity._compiled import Program, compile_function
    from .sensitivity._estimate import translate_eigen_est
    from .sensitivity._jax import load_diffrax, load_jax
    from .sensitivity._ode import odeint
    from .sensitivity._options import SolveOptions
    from .solvers._stabilized_diffrax import warning_record

    if check is not None:
        check()  # the input checks of solve() that call f (see integrate_jax)
    jax, jnp = load_jax()
    load_diffrax()

    from .sensitivity import to_jax

    # a fresh translation: JAX caches traces per function object, and a rebuild after a
    # closure array changed must trace f again, not reuse the old trace's constants
    g = to_jax(prob.f, prob.u0, prob.p)
    rho = translate_eigen_est(method)  # None: the power iteration of a stabilized method
    meter = _progress_meter() if static["progress"] else None

    g_once = jax.jit(g)  # diffrax evaluates the field at several places: trace f once

    def run(u0, p, t0, t1, dt0, rtol, atol, ts):
        options = SolveOptions(method, rtol, atol, static["max_steps"])
        save = static["save"]
        sol, code = odeint(
            lambda t, y, a: g_once(y, a, t), u0, p, t0, t1, options,
            ts=ts if save == "ts" else None, save_steps=save == "steps", dense=static["dense"],
            dt0=None if static["auto_dt"] else dt0, adaptive=static["adaptive"],
            progress_meter=meter, spectral_radius=rho,
        )
        counts = jnp.stack([sol.stats["num_steps"], sol.stats["num_accepted_steps"],
                            sol.stats["num_rejected_steps"]])
        if isinstance(method, AbstractStabilized):
            from .solvers._stabilized_diffrax import stabilized_counters

            counts = jnp.concatenate([counts, stabilized_counters(sol.sol).astype(counts.dtype)])
        # the step the controller proposed last: the dt a failure's message names
        outputs = (sol.ts, sol.ys, code, counts, warning_record(method, sol.sol), sol.next_step)
        return outputs + ((sol,) if static["dense"] else ())

    executable, meta = compile_function(run, *args.values(), flat=not static["dense"])
    reads = tuple(g.constant_reads) + (() if rho is None else tuple(rho.constant_reads))
    return Program(executable, reads, meta, traces=g.n_traces)


@functools.lru_cache(maxsize=None)
def _progress_meter():
    """diffrax's tqdm bar (percent of the span), closed where the solve stopped: diffrax's
    own sets it to 100% when it closes, also after a failure midway (the NumPy backend's
    bar stops where its solve did). diffrax's bar is kept where its internals differ."""
    from .sensitivity._jax import load_diffrax

    jax, jnp = load_jax()
    diffrax = load_diffrax()
    import equinox as eqx
    import equinox.internal as eqxi

    try:
        from diffrax._progress_meter import _progress_meter_manager as manager

        manager.bars, manager.lock  # noqa: B018  (the two internals used below)
    except (ImportError, AttributeError):
        return diffrax.TqdmProgressMeter(refresh_steps=50)

    class _State(eqx.Module):
        inner: Any
        progress: Any

    def close_at(index, progress):
        with manager.lock:
            bar = manager.bars.pop(int(np.max(index)), None)
        if bar is not None:
            bar.n = round(100 * float(np.min(progress)), 2)
            bar.update(n=0)
            bar.close()

    class StoppedWhereSolveStopped(diffrax.TqdmProgressMeter):
        def init(self):
            return _State(super().init(), jnp.asarray(0.0))

        def step(self, state, progress):
            return _State(super().step(state.inner, progress), jnp.asarray(progress, jnp.result_type(float)))

        def close(self, state):
            jax.experimental.io_callback(close_at, None, eqxi.unvmap_max(state.inner.meter_idx),
                                         -eqxi.unvmap_max(-state.progress))  # the slowest member

    return StoppedWhereSolveStopped(refresh_steps=50)


def _program(prob: ODEProblem, method, static: dict, args: dict, check: Callable | None = None):
    key = (structure(prob.u0), structure(args["p"]), np.shape(args["atol"]), repr(method), tuple(static.items()))
    callables, constant_arrays = with_estimate(method, (prob.f,), (False,))
    return lookup("solve", key, callables, constant_arrays=constant_arrays,
                  build=lambda: _build(prob, method, static, args, check),
                  disk=not (static["dense"] or static["progress"]))


def integrate_jax(
    prob: ODEProblem, method: AbstractRungeKutta, *, rtol: float, atol, dt: float | None,
    adaptive: bool, saveat: np.ndarray | None, dense: bool, max_steps: int, progress: bool,
    check: Callable | None = None,
) -> RawSolution:
    """Solve ``prob`` with diffrax on the translated right-hand side.

    ``check`` runs before a program is built (the input checks that evaluate ``f``): a
    program found in the cache was built for the same code of ``f`` and the same shapes.
    """
    load_jax()  # float64 on before the cache key is computed (it records the x64 flag)
    u0, (t0, t1) = prob.u0, prob.tspan
    bytes_per_step = u0.nbytes * (1 + (method.dense_vectors if dense else 0))  # the saved state, dense data
    if saveat is not None:
        save = "ts"
    elif (max_steps + 1) * bytes_per_step <= BUFFER_BUDGET_BYTES:
        save = "steps"
    else:
        save = "count"
    f64 = np.float64
    args = dict(  # NumPy values of fixed dtypes: every call has the compiled signature
        u0=u0, p=as_numpy(prob.p), t0=f64(t0), t1=f64(t1),
        dt0=f64(t1 - t0 if dt is None else math.copysign(dt, t1 - t0)),
        rtol=f64(rtol), atol=np.asarray(atol, f64),
        ts=np.asarray(saveat if saveat is not None else [t1], f64),
    )
    static = dict(save=save, n_save=0 if saveat is None else len(saveat), dense=dense,
                  adaptive=adaptive, auto_dt=dt is None and adaptive, max_steps=max_steps, progress=progress)
    counted = None
    if save == "count":  # the solve itself; then the same solve again, saving its steps
        counted = _program(prob, method, dict(static, save="t1", dense=False), args, check)(*args.values())
        static.update(save="steps", max_steps=min(max_steps, steps_buffer(int(counted[3][0]))))
    ts, ys, code, counts, record, next_dt, *sol = _program(prob, method, static, args, check)(*args.values())
    if counted is not None:  # the rows of the second pass, the outcome of the first
        code, counts, record, next_dt = counted[2], counted[3], counted[4], counted[5]
    for message in recorded_warnings(method, record, t0, t1):  # as the NumPy executor warns
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return _to_numpy(prob, method, saveat, dense, ts, ys, int(code), counts, sol, dt is None, max_steps,
                     None if adaptive else float(args["dt0"]), math.copysign(float(next_dt), t1 - t0))


def steps_buffer(steps: int) -> int:
    """Steps allowed to a second pass that saves the steps a first pass counted (``steps``,
    the rejected ones included), capped by the caller at ``max_steps`` (so that a solve
    that ran out of steps stops at the same step): a power of two (a few compilations at
    most) with room for the rounding of a program compiled differently, which the
    step-size control can amplify."""
    return 1 << max(4, steps + steps // 8).bit_length()


def _to_numpy(prob, method, saveat, dense, ts, ys, code, counts, sol, auto_dt, max_steps,
              fixed_dt: float | None = None, next_dt: float | None = None) -> RawSolution:
    if code == 0 and saveat is not None:  # every row filled
        t, u = ts, ys
    else:
        filled = np.isfinite(ts)
        t, u = ts[filled], ys[filled]
    # diffrax promotes a float32 state against float64 times; return the problem's dtype, in
    # a writable array of its own (not a view of the read-only transfer buffer)
    u = np.array(u.reshape((-1,) + prob.u0.shape), dtype=prob.u0.dtype)
    t_end, u_end = float(t[-1]), u[-1]
    if saveat is not None:  # the t1 row (the time reached) follows the saveat rows filled
        t, u = saveat[: len(t) - 1], u[:-1]
        if not len(t):  # no step was accepted
            t, u = rows_at_t0(saveat, prob.tspan[0], prob.u0)
    elif code == 0:
        t[-1] = prob.tspan[1]  # t0 + 1 * (t1 - t0) may round
    status = STATUS_CODES[code]
    stats = stats_rule(method, auto_dt, fixed=fixed_dt is not None,
                       interpolant=saveat is not None or dense)(*counts.astype(np.int64).tolist())
    message = "" if status == "success" else jax_failure_message(status, t_end, fixed_dt, max_steps, prob.tspan[1],
                                                                 method, u_end, prob.p, next_dt)
    dense_out = _DiffraxDense(sol[0], prob.tspan[0], t_end, prob.u0, prob.u0.dtype) if dense else None
    return RawSolution(t, u, stats, status, message, dense_out)


def rows_at_t0(saveat: np.ndarray, t0: float, u0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t, u)``: the ``saveat`` rows at ``t0``, holding ``u0``, which a solve that accepted no
    step keeps (the NumPy backend saves them before its first step)."""
    t = saveat[: int(np.sum(saveat == t0))]
    return t, np.array(np.broadcast_to(u0, (len(t),) + np.shape(u0)))


def jax_failure_message(status: str, t_end: float, fixed_dt: float | None, max_steps: int, t1: float,
                        method=None, u_end=None, p=None, next_dt: float | None = None) -> str:
    """The NumPy executor's message for a JAX solve that stopped at ``t_end``, naming the
    step the controller proposed last (``next_dt``, signed), or with fixed steps
    (``fixed_dt``) reporting a non-finite state for the step from ``t_end``; a
    user's ``eigen_est`` that gives no bound at ``(u_end, p, t_end)`` is named instead of
    ``f`` (:func:`~dxdt.solvers._stabilized_executor.recheck_estimate`)."""
    if status == "nonfinite" and u_end is not None:
        blamed = recheck_estimate(method, u_end, p, t_end)
        if blamed:
            return blamed
    if status == "nonfinite" and fixed_dt is not None:
        return failure_message("nonfinite_fixed", t_end, fixed_dt, max_steps, t1)
    proposed = next_dt or None  # (0: the step underflowed to nothing, as after f NaN at t0)
    return failure_message(status, t_end, fixed_dt if fixed_dt is not None else proposed, max_steps, t1)


def stats_rule(method, auto_dt: bool, fixed: bool = False, interpolant: bool = False):
    """``stats(steps, accepted, rejected, *counters)`` of a JAX solve (see :func:`_stats_rule`),
    made once per method."""
    try:
        return _cached_stats_rule(method, auto_dt, fixed, interpolant)
    except TypeError:  # a method with an unhashable option
        return _stats_rule(method, auto_dt, fixed, interpolant)


def per_attempt(method, interpolant: bool) -> int:
    """``f`` evaluations of one step attempt of a Runge-Kutta ``method`` in a compiled solve:
    its stages (one fewer if FSAL), plus the interpolation-only stages (Vern7's six), which
    the compiled step evaluates on every step when the solve interpolates (``saveat``,
    dense output, event location)."""
    tab = method.tableau
    extra = len(tab.extra_c) if interpolant and tab.extra_a is not None else 0
    return (tab.stages - 1 if tab.fsal else tab.stages) + extra


def _stats_rule(method, auto_dt: bool, fixed: bool = False, interpolant: bool = False):
    """``stats(steps, accepted, rejected, *counters)`` of a JAX solve, solo
    (:func:`integrate_jax`) or one ensemble lane: a Runge-Kutta method's ``nfev`` from its
    step count; a stabilized method's from the ``counters`` its solver state kept
    (:func:`~dxdt.solvers._stabilized_diffrax.solve_stats`, which adds ``max_stages_used`` and
    ``n_eigen_est``). Either way plus diffrax's initial step selection (two evaluations) when
    no ``dt`` is given. With ``fixed`` steps no step is rejected: the one attempt not accepted
    is the non-finite step that ended the solve (:class:`~dxdt.solvers._diffrax_controller.FixedGrid`),
    as the NumPy executor counts it."""
    selection = 2 * auto_dt
    counted_rejects = 0 if fixed else 1
    if isinstance(method, AbstractStabilized):
        from .solvers._stabilized_diffrax import solve_stats

        given = method.eigen_est is not None

        def stabilized(steps, accepted, rejected, *counters):
            # the counters hold the rejected attempts' work too (dxdt's controller counts it)
            counted = solve_stats(method, counters, accepted, 0, given)
            return {"nfev": counted.pop("nfev") + selection, "naccept": accepted,
                    "nreject": rejected * counted_rejects, **counted}
        return stabilized
    tab = method.tableau
    per_step = per_attempt(method, interpolant)
    start = int(tab.fsal)  # f(u0), which an FSAL method's first step reuses; the others evaluate it in the step

    def runge_kutta(steps, accepted, rejected, *_):
        return {"nfev": start + selection + steps * per_step, "naccept": accepted,
                "nreject": rejected * counted_rejects}
    return runge_kutta


_cached_stats_rule = functools.lru_cache(maxsize=64)(_stats_rule)


class _DiffraxDense:
    """``sol(t)`` for the JAX backend: diffrax's dense interpolation, jitted and vmapped."""

    def __init__(self, sol, t_first: float, t_last: float, u0, dtype):
        from .sensitivity._jax import load_jax

        jax, _ = load_jax()
        self._sol, self._u0, self._shape, self._dtype = sol, np.array(u0), np.shape(u0), dtype
        self.t_first, self.t_last = t_first, t_last
        self._evaluate = jax.jit(jax.vmap(lambda s, t: s.evaluate(t), in_axes=(None, 0)))

    def evaluate(self, t: np.ndarray) -> np.ndarray:
        if self.t_last == self.t_first:  # no step taken (a zero span, or a failure at once)
            return np.broadcast_to(self._u0, (len(t),) + self._shape).astype(self._dtype)
        values = np.array(self._evaluate(self._sol, t), dtype=self._dtype)  # writable, as NumPy's
        return values.reshape((len(t),) + self._shape)
