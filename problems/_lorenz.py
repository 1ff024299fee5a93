"""The Lorenz (1963) system."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array


def lorenz_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
    """``du = [sigma (y - x), x (rho - z) - y, x y - beta z]`` with ``p = [sigma, rho, beta]``."""
    sigma, rho, beta = p
    du[0] = sigma * (u[1] - u[0])
    du[1] = u[0] * (rho - u[2]) - u[1]
    du[2] = u[0] * u[1] - beta * u[2]


def lorenz(
    u0: Any = (1.0, 0.0, 0.0),
    tspan: tuple[float, float] = (0.0, 10.0),
    p: Any = (10.0, 28.0, 8.0 / 3.0),
) -> ODEProblem:
    r"""The Lorenz system.

    .. math::

        \dot x = \sigma (y - x), \qquad \dot y = x (\rho - z) - y, \qquad
        \dot z = x y - \beta z.

    Parameters
    ----------
    u0 : array_like, shape (3,)
        Initial state ``[x, y, z]``; default ``[1, 0, 0]``.
    tspan : (float, float)
        Default ``(0, 10)``. The largest Lyapunov exponent at the default parameters is
        about 0.91, so over ``t = 10`` perturbations grow by about ``e**9``: long enough
        to reach the attractor, short enough for meaningful sensitivities.
        (DifferentialEquations.jl plots the attractor over ``(0, 100)``.)
    p : array_like, shape (3,)
        ``[sigma, rho, beta]``, given to the problem as a float64 array; default the
        classic chaotic values ``[10, 28, 8/3]``.

    Returns
    -------
    ODEProblem
        In-place right-hand side :func:`lorenz_rhs`.

    Raises
    ------
    ValueError
        ``u0`` or ``p`` of the wrong shape or not finite; a bad ``tspan``.

    References
    ----------
    E. N. Lorenz, "Deterministic nonperiodic flow", J. Atmos. Sci. 20 (1963) 130-141
    (parameters ``sigma = 10``, ``rho = 28``, ``beta = 8/3``). ``u0`` as in the
    DifferentialEquations.jl "Getting Started" tutorial,
    https://docs.sciml.ai/DiffEqDocs/stable/getting_started/.
    """
    u0 = as_float_array("u0", u0, (3,), "the initial state [x, y, z]")
    p = as_float_array("p", p, (3,), "the parameters [sigma, rho, beta]")
    return ODEProblem(lorenz_rhs, u0, tspan, p)
