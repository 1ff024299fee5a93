"""``dxdt.solve``: validate, pick the backend, run it, wrap the result."""

from __future__ import annotations

import functools
from typing import Any

from . import _checks
from ._ensemble import EnsembleProblem
from ._events import check_events
from ._problem import ODEProblem
from ._solution import Solution, SolverError
from .solvers import AbstractStabilized, Tsit5

BACKENDS = ("numpy", "jax")  # _backend_numpy.py, _backend_jax.py

def solve(
    prob: ODEProblem, method: Any = None, *, rtol: float = 1e-6, atol: float = 1e-8,
    dt: float | None = None, adaptive: bool = True, saveat: Any = None, dense: bool = False,
    max_steps: int = 100_000, backend: str = "numpy", progress: bool = False,
    throw: bool = False, events: Any = None, **ensemble: Any,
) -> Solution:
    """Solve an :class:`ODEProblem` with an explicit Runge-Kutta method.

    An :class:`EnsembleProblem` is solved member by member and gives an
    :class:`EnsembleSolution`; it takes the further keywords ``executor``,
    ``max_workers``, ``batch_size`` and ``reduction`` (see "Ensembles and clusters").

    Parameters
    ----------
    prob : ODEProblem
    method : AbstractRungeKutta, default ``Tsit5()``
        A method from :mod:`dxdt.solvers`. ``Euler`` and ``RK4`` have no error
        estimate and need ``dt``.
    rtol, atol : float
        Tolerances of the error norm ``||err / (atol + rtol max(|u_n|, |u_{n+1}|))||_RMS <= 1``;
        ``atol`` may be an array broadcastable to ``u0``.
    dt : float, optional
        Initial step (adaptive) or the fixed step (``adaptive=False`` or a method without
        error estimate). Default: chosen automatically (Hairer & Wanner).
    adaptive : bool
        Use error control (needs a method with an embedded pair).
    saveat : array_like, optional
        Times at which to save, inside ``tspan`` and ordered in the direction of
        integration; filled with the method's dense output. Default: every step.
    dense : bool
        Keep the continuous solution so that ``sol(t)`` works anywhere in ``tspan``.
    max_steps : int
        Maximum number of steps (accepted and rejected).
    backend : {"numpy", "jax"}
        ``"numpy"`` runs ``f`` as written, allocation-free; ``"jax"`` translates ``f``
        to JAX and runs compiled code, compiled once per ``f``, shapes and options
        (arrays ``f`` reads from its closure are captured when it is traced: vary
        quantities through ``p``).
    progress : bool
        Show a progress bar over ``t``.
    throw : bool
        Raise :class:`SolverError` (with the partial solution) instead of returning a
        failed solution.
    events : list of Event or TimeEvent, optional
        Events located during the solve (see :class:`dxdt.Event`); their times and
        states are in ``sol.t_events``, ``sol.u_events``.

    Returns
    -------
    Solution
        ``t``, ``u`` of shape ``(len(t), *u0.shape)``, ``stats``, ``status``, ``message``.

    Raises
    ------
    TypeError, ValueError
        Bad input, naming the argument.
    SolverError
        Only with ``throw=True``, when the solve fails.
    """
    if isinstance(prob, EnsembleProblem):
        options = {k: v for k, v in locals().items() if k not in ("prob", "method", "ensemble", "events")}
        options.update({} if events is None else {"events": events})
        from ._ensemble import solve_ensemble

        return solve_ensemble(prob, method, **options, **ensemble)
    if ensemble:
        raise TypeError(f"solve() got unexpected keyword argument(s) {sorted(ensemble)} "
                        "(executor, max_workers, batch_size, reduction are for an EnsembleProblem)")
    prob = _checks.check_problem(prob)
    method = Tsit5() if method is None else _checks.check_method(method)
    rtol, atol = _checks.check_tolerances(rtol, atol, prob.u0.shape)
    dt = _checks.check_dt(dt, prob.tspan)
    adaptive = _checks.check_flag("adaptive", adaptive)
    dense = _checks.check_flag("dense", dense)
    progress = _checks.check_flag("progress", progress)
    throw = _checks.check_flag("throw", throw)
    saveat = _checks.check_saveat(saveat, prob.tspan)
    max_steps = _checks.check_max_steps(max_steps)
    events = check_events(events)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "jax":
        _checks.check_jax_dtype(prob.u0, "backend='jax'")
    if not method.adaptive:
        if dt is None:
            raise ValueError(
                f"{method!r} has no error estimate and needs a fixed step: pass dt=..."
            )
        adaptive = False
    elif not adaptive and dt is None:
        raise ValueError("adaptive=False needs a fixed step size: pass dt=...")

    f = _checks.inplace_rhs(prob)
    # the same input checks on both backends. The JAX backend runs them on a duplicate of f
    # (never writing the user's closure buffers, which a NumPy solve in another thread may be
    # using), when it builds a program (a cached one was built for this code of f and these
    # shapes), or before the event loop
    k0 = None if backend == "jax" else _checks.first_derivative(f, prob)
    if backend == "jax":
        def check() -> None:
            _checks.first_derivative_on_duplicate(f, prob)
        if events:
            check()
        _check_estimate_at_t0(method, prob)
    if not adaptive and isinstance(method, AbstractStabilized) and method.eigen_est is not None:
        _warn_if_underestimated(f, prob, method)
    options = dict(rtol=rtol, atol=atol, dt=dt, adaptive=adaptive, saveat=saveat, dense=dense,
                   max_steps=max_steps, progress=progress)
    if events:
        raw = _solve_with_events(prob, method, f, k0, backend, events, options)
    elif backend == "jax":
        raw = _jax_backend().integrate_jax(prob, method, check=check, **options)
    else:
        from ._backend_numpy import integrate_numpy

        raw = integrate_numpy(prob, method, f, k0=k0, **options)
    note = ""
    if backend == "numpy" and raw.status == "success" and not events:
        from .solvers._guidance import stability_note

        note = stability_note(f, raw.u[-1], prob.p, raw.t[-1], prob.tspan, raw.stats, method)  # (counts its f calls)
    message = (raw.message or _success_message(prob, raw.stats)) + note
    events_out = dict(t_events=raw.t_events, u_events=raw.u_events) if events else {}
    return _finish(Solution(raw.t, raw.u, raw.stats, raw.status, message, raw.dense, **events_out), throw)


@functools.cache
def _jax_backend():
    """:mod:`._backend_jax`, imported on first use (it imports JAX's helpers; an import
    statement in ``solve`` costs 2 us a call)."""
    from . import _backend_jax

    return _backend_jax


def _warn_if_underestimated(f, prob: ODEProblem, method) -> None:
    """A fixed-step stabilized solve whose given ``eigen_est`` is well below the spectral
    radius at ``t0`` warns (on duplicates: never the user's buffers)."""
    import warnings

    from .sensitivity.translate import duplicate
    from .solvers._guidance import underestimate_message

    given = duplicate(method.eigen_est) if callable(method.eigen_est) else method.eigen_est
    message = underestimate_message(duplicate(f), prob.u0, prob.p, prob.tspan[0], method, given)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _check_estimate_at_t0(method, prob: ODEProblem) -> None:
    """A callable ``eigen_est`` of a stabilized method is checked at ``(u0, p, t0)`` before
    a JAX solve, as the NumPy executor checks its first call: the compiled solver cannot
    raise, and would take its largest stage count on every step instead (on a duplicate,
    like ``f``'s checks)."""
    estimate = getattr(method, "eigen_est", None)
    if not callable(estimate):
        return
    from .sensitivity.translate import duplicate
    from .solvers._stabilized import check_estimate

    t0 = prob.tspan[0]
    check_estimate(duplicate(estimate)(prob.u0.copy(), prob.p, t0), f"t={t0:.6g}")


def _solve_with_events(prob, method, f, k0, backend, events, options):
    """Solve with events: the NumPy executor, or compiled JAX chunks (:mod:`._events_jax`)."""
    if backend == "jax":
        from ._events_jax import integrate_jax_events

        return integrate_jax_events(prob, method, events, **options)
    from ._backend_numpy import integrate_numpy

    return integrate_numpy(prob, method, f, k0=k0, events=events, **options)


def _success_message(prob: ODEProblem, stats: dict) -> str:
    t0, t1 = prob.tspan
    return f"solved t={t0:g}..{t1:g} in {stats['naccept']} steps ({stats['nfev']} f evaluations)"


def _finish(sol: Solution, throw: bool) -> Solution:
    if throw and not sol.success:
        raise SolverError(sol.message, sol)
    return sol
