"""Gierer-Meinhardt activator-inhibitor model, in the matrix-Laplacian form."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array, check_nonnegative, check_size

NOISE = 0.1  # amplitude of the uniform perturbation of u, "uss .+ 0.1 .* rand.()" (SciML tutorial)


def second_difference_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Ax, Ay)``: dense ``n`` x ``n`` second-difference matrices with reflecting ends.

    ``u @ Ax`` differences along axis 1 and ``Ay @ u`` along axis 0 (unit spacing). The
    ``2`` next to the corner of each (``Ax[1, 0]``, ``Ax[-2, -1]``, ``Ay[0, 1]``,
    ``Ay[-1, -2]``) is the mirrored ghost point ``u[-1] = u[1]`` of a zero-flux
    (homogeneous Neumann) boundary; ``Ay`` is the transpose of ``Ax``.
    """
    Ax = np.zeros((n, n))
    np.fill_diagonal(Ax, -2.0)
    np.fill_diagonal(Ax[1:], 1.0)
    np.fill_diagonal(Ax[:, 1:], 1.0)
    Ay = Ax.copy()
    Ax[1, 0] = Ax[-2, -1] = 2.0
    Ay[0, 1] = Ay[-1, -2] = 2.0
    return Ax, Ay


def make_gierer_meinhardt_rhs(n: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]:
    """The in-place right-hand side ``gm3!`` of the tutorial, its six work buffers in the closure."""
    Ax, Ay = second_difference_matrices(n)
    Ayu = np.zeros((n, n))
    uAx = np.zeros((n, n))
    Du = np.zeros((n, n))
    Ayv = np.zeros((n, n))
    vAx = np.zeros((n, n))
    Dv = np.zeros((n, n))

    def gierer_meinhardt_rhs(dr: np.ndarray, r: np.ndarray, p: np.ndarray, t: float) -> None:
        a, alpha, ubar, beta, D1, D2 = p
        u, v = r[0], r[1]
        du, dv = dr[0], dr[1]
        np.matmul(Ay, u, out=Ayu)
        np.matmul(u, Ax, out=uAx)
        np.matmul(Ay, v, out=Ayv)
        np.matmul(v, Ax, out=vAx)
        np.add(Ayu, uAx, out=Du)
        np.multiply(Du, D1, out=Du)
        np.add(Ayv, vAx, out=Dv)
        np.multiply(Dv, D2, out=Dv)
        np.divide(u, v, out=du)  # du = (a u / v - alpha) u + ubar + Du
        du *= a
        du -= alpha
        du *= u
        du += ubar
        du += Du
        np.divide(u, v, out=dv)  # dv = (a u^2 / v - beta) v + Dv
        dv *= u
        dv *= a
        dv -= beta
        dv *= v
        dv += Dv

    return gierer_meinhardt_rhs


def gierer_meinhardt_initial_state(n: int, p: np.ndarray, seed: Any = 0) -> np.ndarray:
    """The tutorial's state: ``u = uss + 0.1 r`` (``r`` uniform in ``[0, 1)``), ``v = vss``."""
    a, alpha, ubar, beta = p[:4]
    uss = (ubar + beta) / alpha
    vss = (a / beta) * uss**2
    r0 = np.empty((2, n, n))
    r0[0] = uss + NOISE * np.random.default_rng(seed).uniform(0.0, 1.0, (n, n))
    r0[1] = vss
    return r0


def gierer_meinhardt(
    n: int = 64,
    p: Any = (1.0, 1.0, 1.0, 10.0, 0.001, 100.0),
    tspan: tuple[float, float] = (0.0, 0.1),
    seed: Any = 0,
) -> ODEProblem:
    r"""Two-dimensional Gierer-Meinhardt activator-inhibitor model, matrix-Laplacian form.

    .. math::

        \partial_t u = D_1 (A_y u + u A_x) + \frac{a u^2}{v} + \bar u - \alpha u,
        \qquad
        \partial_t v = D_2 (A_y v + v A_x) + a u^2 - \beta v,

    on an ``n`` x ``n`` grid of unit spacing, where ``u`` and ``v`` are ``n`` x ``n``
    matrices and ``A_x``, ``A_y`` are the dense 1-D second-difference matrices of
    :func:`second_difference_matrices`: zero-flux (homogeneous Neumann) boundaries on
    all four sides, by a mirrored ghost point. The state has shape ``(2, n, n)``:
    ``u[0]`` is the activator ``u``, ``u[1]`` the inhibitor ``v``.

    The right-hand side is the tutorial's fastest dense version ``gm3!``: six
    preallocated ``(n, n)`` work buffers ``Ayu, uAx, Du, Ayv, vAx, Dv`` in the
    closure, the products written with ``np.matmul(..., out=...)`` (the tutorial's
    ``mul!``) and every elementwise step in place. It is the model of the discussion
    about differentiating closures that hold caches (DifferentiationInterface.jl
    issue "Make Enzyme dispatches compatible with closures"): derivatives must flow
    through the buffers.

    Initial state (as in the tutorial): the homogeneous steady state
    ``uss = (ubar + beta) / alpha``, ``vss = (a / beta) uss**2`` (11 and 12.1 with the
    defaults), with ``0.1 r`` added to ``u``, ``r`` uniform in ``[0, 1)`` drawn from
    ``np.random.default_rng(seed)``. The fastest diffusive eigenvalue is about
    ``-8 D2 = -800``, so explicit methods take steps of a few ``1e-3``: ``Tsit5`` at
    ``rtol=1e-6`` covers the default ``tspan`` in about 25 steps.

    Parameters
    ----------
    n : int
        Grid points per side, ``>= 3``; default 64 (the tutorial uses 100).
    p : array_like, shape (6,)
        ``[a, alpha, ubar, beta, D1, D2]``, given to the problem as a float64 array and
        read by the right-hand side at every call; default
        ``[1, 1, 1, 10, 0.001, 100]``.
    tspan : (float, float)
        Default ``(0, 0.1)``, as in the tutorial.
    seed : int, optional
        Seed of the initial perturbation; default 0.

    Returns
    -------
    ODEProblem
        In-place right-hand side holding the two constant matrices and six ``(n, n)``
        work buffers; it allocates no arrays per call.

    Raises
    ------
    ValueError
        ``n`` not an integer ``>= 3``; ``p`` not six finite numbers, a negative
        diffusivity, or ``alpha`` or ``beta`` zero (the initial state divides by
        them); a bad ``tspan``.

    References
    ----------
    A. Gierer and H. Meinhardt, "A theory of biological pattern formation",
    Kybernetik 12 (1972) 30-39 (the model). Discretisation, parameters, initial state
    and ``tspan``: DifferentialEquations.jl tutorial "Code Optimization for
    Differential Equations", section "Example Accelerating Linear Algebra PDE
    Semi-Discretization",
    https://docs.sciml.ai/DiffEqDocs/stable/tutorials/faster_ode_example/.
    """
    n = check_size("n", n)
    p = as_float_array("p", p, (6,), "[a, alpha, ubar, beta, D1, D2]")
    check_nonnegative("p", p[4:], "the diffusivities D1, D2")
    if p[1] == 0 or p[3] == 0:
        raise ValueError(f"p: alpha and beta must be nonzero, got alpha={p[1]}, beta={p[3]}")
    return ODEProblem(make_gierer_meinhardt_rhs(n), gierer_meinhardt_initial_state(n, p, seed), tspan, p)
