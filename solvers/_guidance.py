"""A note for explicit Runge-Kutta solves whose step size was set by stability.

When Tsit5/DP5 run at their stability limit on a diffusion-dominated problem, the mean
step times the spectral radius of ``df/du`` sits near the method's real stability
boundary, whatever the tolerance. After a long successful NumPy solve dxdt measures this
ratio (the same ``h rho / beta`` as the checkpoint adjoint's stiffness diagnostic) with
the power iteration of the stabilized methods and, when the dominant eigenvalue is near
the negative real axis, suggests ``ROCK2()`` or ``RKC()`` in the solution's message.
"""

from __future__ import annotations

import math

import numpy as np

from ._base import AbstractRungeKutta
from ._stabilized_executor import OSCILLATORY_COSINE, _power_iteration, _Workspace

MIN_STEPS = 500  # shorter solves are cheap anyway; the check costs a few f evaluations
STABILITY_BOUND = 0.5  # mean h rho / beta above this: steps limited by stability


def stability_note(f, u: np.ndarray, p, t: float, tspan, stats: dict, method) -> str:
    """``""``, or a sentence for the message when the solve was stability-bound.

    ``u`` is a state of the solution at time ``t`` (its last saved row). The power
    iteration's ``f`` evaluations (at most 51) are added to ``stats["nfev"]``, which counts
    every call of ``f``. Only float64 and complex128 states are checked: ``f`` sees no other
    dtype than its problem's, and a float32 difference quotient would be rounding.
    """
    if not isinstance(method, AbstractRungeKutta) or stats["naccept"] < MIN_STEPS:
        return ""
    boundary = method.tableau.real_stability_boundary
    u = np.asarray(u)
    if u.dtype not in (np.float64, np.complex128) or not (
            math.isfinite(boundary) and boundary > 0 and np.all(np.isfinite(u))):
        return ""
    sigma, cosine, converged, spent = _spectral_radius(f, u.copy(), p, t)
    stats["nfev"] += spent
    ratio = abs(tspan[1] - tspan[0]) / stats["naccept"] * sigma / boundary
    if not converged or cosine > OSCILLATORY_COSINE or not ratio > STABILITY_BOUND:
        return ""
    return (f"; the step size was limited by stability, not accuracy (mean step x spectral "
            f"radius = {ratio:.2f} x {method!r}'s stability boundary, with the dominant "
            "eigenvalue on the negative real axis): a stabilized explicit method such as "
            "ROCK2() or RKC() (dxdt.solvers) may need far fewer f evaluations")


UNDERESTIMATE = 1.5  # a given spectral radius this many times below the power iteration's


def underestimate_message(f, u0: np.ndarray, p, t0: float, method, given) -> str:
    """``""``, or why a fixed-step solve with ``method`` and its ``eigen_est`` ``given`` (a
    float or a callable) may be unstable.

    With adaptive steps an estimate that is too small shows as rejected steps; with fixed
    steps nothing does (the solve "succeeds" with a blown-up state). So the given estimate
    is compared at ``t0`` with the power iteration of the adaptive solves (at most 50
    ``f`` evaluations, not counted in the stats).
    """
    rho = float(given(u0.copy(), p, t0)) if callable(given) else float(given)
    sigma, _, converged, _ = _spectral_radius(f, np.asarray(u0), p, t0)
    if not (converged and math.isfinite(sigma) and sigma > UNDERESTIMATE * rho):
        return ""
    return (f"{method!r}: eigen_est gives {rho:.4g} at t0={t0:.6g} but a power iteration on df/du "
            f"finds a spectral radius of {sigma:.4g}; with fixed steps (adaptive=False) the stage "
            "count chosen from the smaller value can be unstable, and a fixed-step solve cannot "
            "detect it. Raise eigen_est (an upper bound), or use adaptive steps.")


def _spectral_radius(f, u: np.ndarray, p, t: float) -> tuple[float, float, bool, int]:
    """``(sigma, cosine, converged, nfev)`` of the stabilized methods' power iteration on
    ``df/du`` at ``(u, t)`` (``converged`` False where ``f(u)`` is not finite).

    The iteration calls ``f`` at states near ``u`` that the solve never visits (an entry
    held at 0 pushed below it): what ``f`` says there is no business of the user's solve,
    so NumPy's warnings are off and an exception of ``f``'s gives no estimate (a solve
    that succeeded raised, losing its data, or warned from ``sqrt`` of a negative entry).
    """
    ws = _Workspace(u.reshape(-1), power=True, hermite=False)
    calls = [0]

    def counted(du, u, p, t):
        calls[0] += 1
        return f(du, u, p, t)

    with np.errstate(all="ignore"):
        try:
            counted(ws.views[2].reshape(u.shape), ws.views[1].reshape(u.shape), p, t)
            if not np.all(np.isfinite(ws.f0)):
                return math.nan, -1.0, False, calls[0]
            sigma, cosine, converged, _ = _power_iteration(counted, ws, p, t, u.shape)
        except Exception:  # noqa: BLE001  (f's own error at a state it never sees in the solve)
            return math.nan, -1.0, False, calls[0]
    return sigma, cosine, converged, calls[0]
