"""The FitzHugh-Nagumo model of an excitable neuron."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array


def fitzhugh_nagumo_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
    """``du = [v - v^3/3 - w + I, (v + a - b w) / tau]`` with ``u = [v, w]``, ``p = [a, b, tau, I]``."""
    a, b, tau, I = p
    v, w = u[0], u[1]
    du[0] = v - v**3 / 3.0 - w + I
    du[1] = (v + a - b * w) / tau


def fitzhugh_nagumo(
    u0: Any = (1.0, 1.0),
    tspan: tuple[float, float] = (0.0, 100.0),
    p: Any = (0.7, 0.8, 12.5, 0.5),
) -> ODEProblem:
    r"""The FitzHugh-Nagumo model.

    .. math::

        \dot v = v - \frac{v^3}{3} - w + I, \qquad \tau \dot w = v + a - b w,

    with the membrane potential ``v = u[0]`` and the recovery variable ``w = u[1]``.
    With the default parameters the only equilibrium is unstable and the solution
    approaches a relaxation limit cycle of period about 39.5.

    Parameters
    ----------
    u0 : array_like, shape (2,)
        Initial state ``[v, w]``; default ``[1, 1]``.
    tspan : (float, float)
        Default ``(0, 100)``: two and a half periods of the limit cycle. (The
        SciMLBenchmarks problem integrates over ``(0, 10)``, less than one spike.)
    p : array_like, shape (4,)
        ``[a, b, tau, I]``, given to the problem as a float64 array; default the classic
        ``[0.7, 0.8, 12.5, 0.5]``. ``tau`` must be nonzero.

    Returns
    -------
    ODEProblem
        In-place right-hand side :func:`fitzhugh_nagumo_rhs`.

    Raises
    ------
    ValueError
        ``u0`` or ``p`` of the wrong shape or not finite; ``tau == 0``; a bad ``tspan``.

    References
    ----------
    R. FitzHugh, "Impulses and physiological states in theoretical models of nerve
    membrane", Biophys. J. 1 (1961) 445-466 (``a = 0.7``, ``b = 0.8``, time scale
    ratio 12.5); E. M. Izhikevich and R. FitzHugh, "FitzHugh-Nagumo model",
    Scholarpedia 1(9) (2006) 1349 (this form of the equations). ``u0`` and ``p``
    (with ``1 / tau = 0.08``) as in SciMLBenchmarks.jl, NonStiffODE
    "FitzhughNagumo_wpd".
    """
    u0 = as_float_array("u0", u0, (2,), "the initial state [v, w]")
    p = as_float_array("p", p, (4,), "the parameters [a, b, tau, I]")
    if p[2] == 0:
        raise ValueError("p: the time scale tau = p[2] must be nonzero")
    return ODEProblem(fitzhugh_nagumo_rhs, u0, tspan, p)
