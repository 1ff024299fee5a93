"""``solve(..., backend="numpy")``: run ``f`` as written with the allocation-free executor.

The JAX backend (:mod:`._backend_jax`) sits beside this one; both return a raw
solution with ``t``, ``u``, ``stats``, ``status``, ``message`` and ``dense``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ._problem import ODEProblem
from ._solution import ContinuousOutput
from .solvers import AbstractRungeKutta, AbstractStabilized
from .solvers._numpy_executor import integrate

PROGRESS_REFRESH_S = 0.1  # at most ~10 redraws a second


@contextmanager
def progress_bar(enabled: bool, tspan: tuple[float, float]):
    """A tqdm bar over ``t`` (``update(dt)`` advances it); ``None`` when disabled."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    t0, t1 = tspan
    bar = tqdm(total=abs(t1 - t0), mininterval=PROGRESS_REFRESH_S, unit="t", unit_scale=True,
               desc=f"solve t={t0:g}..{t1:g}",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
    try:
        yield _AbsUpdate(bar)
    finally:
        bar.close()


class _AbsUpdate:
    """Advance a tqdm bar by ``|dt|`` so backward solves fill it too."""

    __slots__ = ("update",)

    def __init__(self, bar):
        self.update = lambda dt: bar.update(abs(dt))



@dataclass
class RawSolution:
    """What a backend returns; :func:`dxdt.solve` wraps it in a :class:`Solution`."""

    t: np.ndarray
    u: np.ndarray
    stats: dict
    status: str
    message: str
    dense: ContinuousOutput | None
    t_events: list | None = None
    u_events: list | None = None


def integrate_numpy(
    prob: ODEProblem, method: AbstractRungeKutta, f, *, rtol: float, atol, dt: float | None,
    adaptive: bool, saveat: np.ndarray | None, dense: bool, max_steps: int, progress: bool,
    k0: np.ndarray, events=None,
) -> RawSolution:
    """Solve ``prob`` with the in-place right-hand side ``f`` (``k0 = f(u0)`` given).

    ``events``: a checked tuple of ``Event``/``TimeEvent`` (empty or None: none).

    NumPy's overflow, invalid-value and divide warnings are off while the steps run: a
    non-finite value (from ``f`` or from a step too long) is the solver's to handle (it
    rejects the step, and a solve that cannot recover ends ``"nonfinite"`` with its
    partial data, as on the JAX backend). They had shown dxdt's own arithmetic on the
    overflowed stages, and under ``-W error`` crashed the solve instead of returning it.
    """
    if events:
        from ._events_numpy import EventSet

        events = EventSet(events, prob.u0, prob.p, prob.tspan)
    else:
        events = None
    t0, t1 = prob.tspan
    with progress_bar(progress, prob.tspan) as bar, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if isinstance(method, AbstractStabilized):
            raw = _integrate_stabilized(f, prob, method, events, rtol=rtol, atol=atol, dt=dt,
                                        adaptive=adaptive, saveat=saveat, dense=dense,
                                        max_steps=max_steps, progress=bar, k0=k0)
        else:
            raw = integrate(
                f, prob.u0, prob.p, t0, t1, method.tableau, rtol=rtol, atol=atol, dt=dt,
                adaptive=adaptive, saveat=saveat, dense=dense, max_steps=max_steps,
                progress=bar, k0=k0, events=events,
            )
    stats = {"nfev": raw.nfev, "naccept": raw.naccept, "nreject": raw.nreject,
             **getattr(raw, "extra_stats", {})}
    return RawSolution(raw.t, raw.u, stats, raw.status, raw.message, raw.dense, raw.t_events, raw.u_events)


def _integrate_stabilized(f, prob: ODEProblem, method: AbstractStabilized, events, **options):
    """RKC, RKL2, ROCK2: their own executor (:mod:`.solvers._stabilized_executor`)."""
    from .solvers._stabilized_executor import integrate as integrate_stabilized

    return integrate_stabilized(f, prob.u0, prob.p, *prob.tspan, method, events=events, **options)
