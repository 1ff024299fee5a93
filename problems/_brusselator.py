"""The two-dimensional Brusselator reaction-diffusion benchmark, periodic."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array, check_nonnegative, check_size
from ._gray_scott import laplacian_periodic

FORCING = 5.0  # source strength, switched on at FORCING_TIME inside the disc below
FORCING_TIME = 1.1
FORCING_CENTRE = (0.3, 0.6)
FORCING_RADIUS = 0.1


def grid(n: int) -> np.ndarray:
    """The benchmark's nodes ``x_i = i / (n - 1)``, ``i = 0..n-1`` (both ends of ``[0, 1]``)."""
    return np.linspace(0.0, 1.0, n)


def forcing_field(n: int) -> np.ndarray:
    """``FORCING`` at the nodes of the disc of radius 0.1 around ``(0.3, 0.6)``, 0 elsewhere."""
    x = grid(n)
    X, Y = x[:, None], x[None, :]
    disc = (X - FORCING_CENTRE[0]) ** 2 + (Y - FORCING_CENTRE[1]) ** 2 <= FORCING_RADIUS**2
    return np.where(disc, FORCING, 0.0)


def make_brusselator_rhs(n: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]:
    """The in-place right-hand side for an ``n`` x ``n`` grid, with its work buffers in the closure."""
    inv_dx2 = (n - 1) ** 2.0  # 1 / dx^2 with dx = 1 / (n - 1)
    forcing = forcing_field(n)
    lap_u = np.empty((n, n))
    lap_v = np.empty((n, n))
    uuv = np.empty((n, n))
    work = np.empty((n, n))

    def brusselator_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
        A, B, alpha = p
        U, V = u[0], u[1]
        dU, dV = du[0], du[1]
        laplacian_periodic(U, lap_u, work)
        laplacian_periodic(V, lap_v, work)
        np.multiply(U, U, out=uuv)
        np.multiply(uuv, V, out=uuv)
        np.multiply(U, -(A + 1.0), out=dU)
        dU += uuv
        dU += B
        np.multiply(lap_u, alpha * inv_dx2, out=lap_u)
        dU += lap_u
        np.multiply(forcing, t >= FORCING_TIME, out=work)
        dU += work
        np.multiply(U, A, out=dV)
        dV -= uuv
        np.multiply(lap_v, alpha * inv_dx2, out=lap_v)
        dV += lap_v

    return brusselator_rhs


def brusselator_initial_state(n: int) -> np.ndarray:
    """``u = 22 (y (1 - y))^(3/2)``, ``v = 27 (x (1 - x))^(3/2)`` at the nodes (``x`` along axis 0)."""
    x = grid(n)
    r0 = np.empty((2, n, n))
    r0[0] = 22.0 * (x * (1.0 - x))[None, :] ** 1.5
    r0[1] = 27.0 * (x * (1.0 - x))[:, None] ** 1.5
    return r0


def brusselator(
    n: int = 32,
    p: Any = (3.4, 1.0, 10.0),
    tspan: tuple[float, float] = (0.0, 11.5),
) -> ODEProblem:
    r"""The 2-D Brusselator reaction-diffusion benchmark of DifferentialEquations.jl.

    .. math::

        \partial_t u = \alpha \nabla^2 u + B + u^2 v - (A + 1) u + f(x, y, t),
        \qquad
        \partial_t v = \alpha \nabla^2 v + A u - u^2 v,

    with the source ``f = 5`` inside the disc ``(x - 0.3)^2 + (y - 0.6)^2 <= 0.1^2``
    for ``t >= 1.1`` and 0 otherwise. (The benchmark names the constants so that the
    reaction is the classical Brusselator with feed ``B`` and ``A`` in the role of
    the usual ``B``.) The state has shape ``(2, n, n)``: ``u[0]`` is ``u``, ``u[1]``
    is ``v``; axis 0 is ``x``, axis 1 is ``y``.

    Grid, as in the benchmark: the ``n`` nodes ``x_i = i / (n - 1)`` of ``[0, 1]``
    (``dx = 1 / (n - 1)``) with periodic wrap-around of the five-point Laplacian
    (``alpha / dx^2`` times unit-spacing differences), so the nodes at ``x = 0`` and
    ``x = 1`` are neighbours and the period is ``n dx``, slightly more than 1.
    Initial state: ``u = 22 (y (1 - y))^{3/2}``, ``v = 27 (x (1 - x))^{3/2}``.

    The problem is stiff: the fastest diffusive eigenvalue is ``-8 alpha / dx^2``
    (``-7.7e4`` with the defaults), so explicit methods are limited to steps of about
    ``4.6e-5`` and the default ``tspan`` needs some ``2.5e5`` of them, more than the
    default ``max_steps``. The benchmark uses implicit methods; with the explicit
    methods of :mod:`dxdt.solvers` use a small ``n`` or a short ``tspan`` (``n = 8``:
    about 1 100 ``Tsit5`` steps per unit of time). The time switch of the source makes
    the right-hand side discontinuous at ``t = 1.1``; adaptive steppers pass it with a
    few rejected steps.

    Parameters
    ----------
    n : int
        Grid points per side, ``>= 3``; default 32, as in the benchmark.
    p : array_like, shape (3,)
        ``[A, B, alpha]``, given to the problem as a float64 array and read by the
        right-hand side at every call; default ``[3.4, 1, 10]``.
    tspan : (float, float)
        Default ``(0, 11.5)``, as in the benchmark.

    Returns
    -------
    ODEProblem
        In-place right-hand side holding the constant source pattern and four
        ``(n, n)`` work buffers; it allocates no arrays per call.

    Raises
    ------
    ValueError
        ``n`` not an integer ``>= 3``; ``p`` not three finite numbers or with a
        negative diffusivity ``alpha``; a bad ``tspan``.

    References
    ----------
    I. Prigogine and R. Lefever, "Symmetry breaking instabilities in dissipative
    systems. II", J. Chem. Phys. 48 (1968) 1695-1700 (the model). Equations, source,
    grid, boundary conditions, parameters, initial state and ``tspan``: the "Brusselator
    2D" problem of SciMLBenchmarks.jl (``prob_ode_brusselator_2d``) and of the
    DifferentialEquations.jl tutorial "Solving Large Stiff Equations",
    https://docs.sciml.ai/DiffEqDocs/stable/tutorials/advanced_ode_example/.
    """
    n = check_size("n", n)
    p = as_float_array("p", p, (3,), "[A, B, alpha]")
    check_nonnegative("p", p[2:], "the diffusivity alpha")
    return ODEProblem(make_brusselator_rhs(n), brusselator_initial_state(n), tspan, p)
