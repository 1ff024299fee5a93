"""Lotka-Volterra predator-prey equations."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array


def lotka_volterra_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
    """``du = [a x - b x y, -c y + d x y]`` with ``u = [x, y]``, ``p = [a, b, c, d]``."""
    a, b, c, d = p
    du[0] = a * u[0] - b * u[0] * u[1]
    du[1] = -c * u[1] + d * u[0] * u[1]


def lotka_volterra(
    u0: Any = (1.0, 1.0),
    tspan: tuple[float, float] = (0.0, 10.0),
    p: Any = (1.5, 1.0, 3.0, 1.0),
) -> ODEProblem:
    r"""Lotka-Volterra predator-prey model.

    .. math::

        \dot x = a x - b x y, \qquad \dot y = -c y + d x y,

    with prey ``x = u[0]`` and predators ``y = u[1]``.

    Parameters
    ----------
    u0 : array_like, shape (2,)
        Initial populations ``[x, y]``; default ``[1, 1]``.
    tspan : (float, float)
        Default ``(0, 10)``: about three and a half periods of the default orbit.
    p : array_like, shape (4,)
        ``[a, b, c, d]``, given to the problem as a float64 array; default
        ``[1.5, 1, 3, 1]``.

    Returns
    -------
    ODEProblem
        In-place right-hand side :func:`lotka_volterra_rhs`.

    Raises
    ------
    ValueError
        ``u0`` or ``p`` of the wrong shape or not finite; a bad ``tspan``.

    References
    ----------
    The defaults (``u0``, ``tspan``, ``p``) are those of the Lotka-Volterra examples of
    the DifferentialEquations.jl / SciMLSensitivity.jl tutorials,
    https://docs.sciml.ai/SciMLSensitivity/stable/getting_started/.
    """
    u0 = as_float_array("u0", u0, (2,), "the initial populations [x, y]")
    p = as_float_array("p", p, (4,), "the rates [a, b, c, d]")
    return ODEProblem(lotka_volterra_rhs, u0, tspan, p)
