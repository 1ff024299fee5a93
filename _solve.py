"""``dxdt.solve``: validate, pick the backend, run it, wrap the result."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from . import _checks
from ._problem import ODEProblem
from ._solution import Solution, SolverError
from .solvers import Tsit5
from .solvers._numpy_executor import integrate

BACKENDS = ("numpy", "jax")
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


def solve(
    prob: ODEProblem, method: Any = None, *, rtol: float = 1e-6, atol: float = 1e-8,
    dt: float | None = None, adaptive: bool = True, saveat: Any = None, dense: bool = False,
    max_steps: int = 100_000, backend: str = "numpy", progress: bool = False,
    throw: bool = False,
) -> Solution:
    """Solve an :class:`ODEProblem` with an explicit Runge-Kutta method.

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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not method.adaptive:
        if dt is None:
            raise ValueError(
                f"{method!r} has no error estimate and needs a fixed step: pass dt=..."
            )
        adaptive = False
    elif not adaptive and dt is None:
        raise ValueError("adaptive=False needs a fixed step size: pass dt=...")

    f = _checks.inplace_rhs(prob)
    k0 = _checks.first_derivative(f, prob)  # same input checks on both backends
    if backend == "jax":
        from ._jax_solve import integrate_jax

        raw = integrate_jax(prob, method, rtol=rtol, atol=atol, dt=dt, adaptive=adaptive,
                            saveat=saveat, dense=dense, max_steps=max_steps, progress=progress)
        return _finish(Solution(raw.t, raw.u, raw.stats, raw.status, raw.message or
                                _success_message(prob, raw.stats), raw.dense), throw)
    t0, t1 = prob.tspan
    with progress_bar(progress, prob.tspan) as bar:
        raw = integrate(
            f, prob.u0, prob.p, t0, t1, method.tableau, rtol=rtol, atol=atol, dt=dt,
            adaptive=adaptive, saveat=saveat, dense=dense, max_steps=max_steps,
            progress=bar, k0=k0,
        )
    stats = {"nfev": raw.nfev, "naccept": raw.naccept, "nreject": raw.nreject}
    message = raw.message or _success_message(prob, stats)
    return _finish(Solution(raw.t, raw.u, stats, raw.status, message, raw.dense), throw)


def _success_message(prob: ODEProblem, stats: dict) -> str:
    t0, t1 = prob.tspan
    return f"solved t={t0:g}..{t1:g} in {stats['naccept']} steps ({stats['nfev']} f evaluations)"


def _finish(sol: Solution, throw: bool) -> Solution:
    if throw and not sol.success:
        raise SolverError(sol.message, sol)
    return sol
