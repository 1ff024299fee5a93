"""``solve(..., backend="jax")``: translate ``f`` to JAX and integrate with diffrax.

The compiled solve is cached per (right-hand side, shapes, method, options): a new
``u0``, ``p``, ``tspan``, ``rtol``/``atol`` or ``saveat`` of the same shapes reuses it
without tracing or compiling again. Results map to dxdt's statuses and keep the
partial data of a failed solve, like the NumPy backend.

diffrax sizes its per-step output buffers by ``max_steps``; when saving every step (or
keeping dense output) those buffers would be large, a first solve counts the steps and
a second fills a buffer rounded up to a power of two (so at most a few compilations).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import numpy as np

from ._backend_numpy import RawSolution
from ._problem import ODEProblem
from ._solution import ContinuousOutput
from .solvers import AbstractRungeKutta

BUFFER_BUDGET_BYTES = 256 * 2**20  # above this, count the steps first (two passes)
CACHE_SIZE = 32  # compiled solves kept (least recently used dropped first)
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class _Key:
    """Everything that, when changed, needs a new compilation."""

    f: Any
    shape: tuple
    dtype: str
    p_structure: Any
    method: AbstractRungeKutta
    save: str  # "ts", "steps" or "t1"
    n_save: int
    dense: bool
    adaptive: bool
    auto_dt: bool
    max_steps: int
    progress: bool


class _Cache(OrderedDict):
    def lookup(self, key, build: Callable):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = build()
        while len(self) > CACHE_SIZE:
            self.popitem(last=False)
        return value


_TRANSLATIONS = _Cache()
_COMPILED = _Cache()


def _callable_key(f: Callable):
    """Bound methods are new objects on every attribute access: key them by their parts."""
    if hasattr(f, "__self__") and hasattr(f, "__func__"):
        return ("method", id(f.__self__), f.__func__)
    return f


def _compile(key: _Key, g: Callable, jax, diffrax):
    """The jitted diffrax solve for one cache key."""
    from .solvers._diffrax import diffrax_solver, pid_coefficients

    solver = diffrax_solver(key.method, with_interpolant=key.save == "ts" or key.dense)
    pcoeff, icoeff = pid_coefficients(key.method)
    term = diffrax.ODETerm(lambda t, y, args: g(y, args, t))  # diffrax's (t, y, args) here only
    if key.save == "ts":  # the extra t1 row tells where a failed solve stopped
        saveat = lambda ts: diffrax.SaveAt(ts=ts, t1=True, dense=key.dense)  # noqa: E731
    elif key.save == "steps":
        saveat = lambda ts: diffrax.SaveAt(t0=True, steps=True, dense=key.dense)  # noqa: E731
    else:
        saveat = lambda ts: diffrax.SaveAt(t1=True, dense=key.dense)  # noqa: E731
    meter = diffrax.TqdmProgressMeter(refresh_steps=50) if key.progress else diffrax.NoProgressMeter()

    def run(u0, p, t0, t1, dt0, rtol, atol, dtmin, ts):
        if key.adaptive:
            controller = diffrax.PIDController(
                rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff, dtmin=dtmin, force_dtmin=False)
        else:
            controller = diffrax.ConstantStepSize()
        sol = diffrax.diffeqsolve(
            term, solver, t0, t1, None if key.auto_dt else dt0, u0, args=p, saveat=saveat(ts),
            stepsize_controller=controller, max_steps=key.max_steps, throw=False,
            progress_meter=meter,
        )
        # one small pytree to bring to the host in a single transfer
        counts = jnp.stack([sol.stats["num_steps"], sol.stats["num_accepted_steps"],
                            sol.stats["num_rejected_steps"]])
        return _Outcome(sol.ts, sol.ys, status_code(sol.result), counts, sol if key.dense else None)

    from .sensitivity._ode import status_code

    jnp = jax.numpy
    return jax.jit(run)


@dataclass
class _Outcome:
    """What a compiled solve returns: saved times and states, status code, step counts."""

    ts: Any
    ys: Any
    code: Any
    counts: Any  # (steps, accepted, rejected)
    dense: Any  # the diffrax solution, when dense output was asked for

    def host(self) -> "_Outcome":
        import jax

        ts, ys, code, counts = jax.device_get((self.ts, self.ys, self.code, self.counts))
        return _Outcome(ts, ys, int(code), counts, self.dense)


@cache
def _register_outcome() -> None:
    """Make :class:`_Outcome` a pytree (once, on the first JAX solve)."""
    import jax

    jax.tree_util.register_dataclass(_Outcome, data_fields=["ts", "ys", "code", "counts", "dense"],
                                     meta_fields=[])


class _DiffraxDense:
    """``sol(t)`` for the JAX backend: diffrax's dense interpolation, jitted and vmapped."""

    def __init__(self, sol, t_first: float, t_last: float, shape, dtype, jax):
        self._sol, self._shape, self._dtype = sol, shape, dtype
        self.t_first, self.t_last = t_first, t_last
        self._evaluate = jax.jit(jax.vmap(lambda s, t: s.evaluate(t), in_axes=(None, 0)))

    def evaluate(self, t: np.ndarray) -> np.ndarray:
        values = np.asarray(self._evaluate(self._sol, t), dtype=self._dtype)
        return values.reshape((len(t),) + self._shape)


def translate(prob: ODEProblem) -> Callable:
    """``g(u, p, t)`` for ``prob.f``, translated once per right-hand side and shapes."""
    from .sensitivity import to_jax

    key = (_callable_key(prob.f), prob.u0.shape, str(prob.u0.dtype), _structure(prob.p))
    return _TRANSLATIONS.lookup(key, lambda: to_jax(prob.f, prob.u0, prob.p))


def _structure(p: Any):
    """Shapes and container structure of ``p`` (the part of ``p`` a compilation depends on)."""
    if isinstance(p, dict):
        return ("dict", tuple((k, _structure(v)) for k, v in sorted(p.items(), key=lambda kv: str(kv[0]))))
    if isinstance(p, (tuple, list)):
        return (type(p).__name__, tuple(_structure(v) for v in p))
    if p is None:
        return None
    return (np.shape(p), str(np.asarray(p).dtype))


def _as_numpy(p: Any):
    """``p`` with NumPy leaves (strongly typed, so every call has the same signature)."""
    if isinstance(p, dict):
        return {k: _as_numpy(v) for k, v in p.items()}
    if isinstance(p, (tuple, list)):
        return type(p)(_as_numpy(v) for v in p)
    return None if p is None else np.asarray(p)


def integrate_jax(
    prob: ODEProblem, method: AbstractRungeKutta, *, rtol: float, atol, dt: float | None,
    adaptive: bool, saveat: np.ndarray | None, dense: bool, max_steps: int, progress: bool,
) -> RawSolution:
    """Solve ``prob`` with diffrax on the translated right-hand side."""
    from .sensitivity._jax import load_jax

    jax, jnp = load_jax()
    import diffrax

    _register_outcome()
    g = translate(prob)
    u0, (t0, t1) = prob.u0, prob.tspan
    n_stages = method.tableau.total_stages if dense else method.tableau.stages
    bytes_per_step = u0.nbytes * (1 + (n_stages if dense else 0))
    if saveat is not None:
        save = "ts"
    elif (max_steps + 1) * bytes_per_step <= BUFFER_BUDGET_BYTES:
        save = "steps"
    else:
        save = "count"
    args = dict(  # NumPy values: jit transfers them itself, cheaper than jnp.asarray
        u0=u0, p=_as_numpy(prob.p), t0=t0, t1=t1,
        dt0=(t1 - t0) if dt is None else math.copysign(dt, t1 - t0),
        rtol=rtol, atol=np.asarray(atol), dtmin=16 * _EPS * max(abs(t0), abs(t1)),
        ts=np.asarray(saveat if saveat is not None else [t1]),
    )

    def run(save_mode: str, steps: int, **overrides):
        key = _Key(
            _callable_key(prob.f), u0.shape, str(u0.dtype), _structure(prob.p), method,
            save_mode, 0 if saveat is None else len(saveat), dense and save_mode != "t1",
            adaptive, dt is None and adaptive, steps, progress,
        )
        compiled = _COMPILED.lookup(key, lambda: _compile(key, g, jax, diffrax))
        return compiled(**{**args, **overrides})

    if save == "count":
        first = run("t1", max_steps).host()
        reached = t1 if first.code == 0 else _last_finite(first.ts, t0)
        second = run("steps", 1 << max(4, int(first.counts[0])).bit_length(), t1=reached).host()
        outcome = _Outcome(second.ts, second.ys, first.code, first.counts, second.dense)
    else:
        outcome = run(save, max_steps).host()
    return _to_numpy(outcome, prob, method, saveat, dense, dt is None, max_steps, jax, g)


def _last_finite(ts, default: float) -> float:
    ts = np.asarray(ts)
    finite = ts[np.isfinite(ts)]
    return float(finite[-1]) if finite.size else default


def _to_numpy(out: _Outcome, prob, method, saveat, dense, auto_dt, max_steps, jax, g) -> RawSolution:
    ts = np.asarray(out.ts, dtype=np.float64)
    filled = np.isfinite(ts)
    # diffrax promotes a float32 state against float64 times; return the problem's dtype
    u = np.asarray(out.ys, dtype=prob.u0.dtype)[filled].reshape((-1,) + prob.u0.shape)
    t = ts[filled]
    t_end, u_end = float(t[-1]), u[-1]
    if saveat is not None:  # the t1 row (the time reached) follows the saveat rows filled
        t, u = t[:-1], u[:-1]
    from .sensitivity._ode import STATUS_CODES

    status = STATUS_CODES[out.code]
    tab = method.tableau
    per_step = tab.stages - 1 if tab.fsal else tab.stages
    steps, accepted, rejected = (int(c) for c in out.counts)
    stats = {"nfev": 1 + 2 * auto_dt + steps * per_step, "naccept": accepted, "nreject": rejected}
    message = ""
    if status != "success":
        if status == "dt_min":
            jnp = jax.numpy
            du = np.asarray(g(jnp.asarray(u_end), _as_numpy(prob.p), t_end))
            status = "dt_min" if np.all(np.isfinite(du)) else "nonfinite"
        from .solvers._numpy_executor import failure_message

        message = failure_message(status, t_end, None, max_steps, prob.tspan[1])
    dense_out = (_DiffraxDense(out.dense, prob.tspan[0], t_end, prob.u0.shape, prob.u0.dtype, jax)
                 if dense else None)
    return RawSolution(t, u, stats, status, message, dense_out)
