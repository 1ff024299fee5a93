"""One-dimensional diffusion with a spatially varying diffusivity, finite volumes."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array, check_nonnegative, check_size


def cell_centres(n: int) -> np.ndarray:
    """Centres ``x_i = (i + 1/2) / n`` of the ``n`` cells of ``[0, 1]``."""
    return (np.arange(n) + 0.5) / n


def default_diffusivity(x: np.ndarray) -> np.ndarray:
    """``D(x) = 1e-3 (1 + 0.5 sin(2 pi x))``."""
    return 1e-3 * (1.0 + 0.5 * np.sin(2.0 * np.pi * x))


def default_initial_state(x: np.ndarray) -> np.ndarray:
    """Two Gaussian bumps on a cosine ripple (see :func:`heat_1d`)."""
    return (
        0.2
        + 0.1 * np.cos(8.0 * np.pi * x)
        + np.exp(-(((x - 0.3) / 0.05) ** 2))
        + 0.5 * np.exp(-(((x - 0.65) / 0.1) ** 2))
    )


def make_heat_1d_rhs(n: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]:
    """The in-place right-hand side for ``n`` cells, with its work buffers in the closure."""
    half_inv_dx2 = 0.5 * n * n  # 1 / (2 dx^2): the 1/2 averages the two cell diffusivities
    face = np.empty(n - 1)  # D_{i+1/2} / dx^2 at the interior faces
    flux = np.zeros(n + 1)  # D (du/dx) / dx at faces 0..n; the walls stay 0 (no flux)
    interior, right, left = flux[1:-1], flux[1:], flux[:-1]

    def heat_1d_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
        np.add(p[:-1], p[1:], out=face)
        np.multiply(face, half_inv_dx2, out=face)
        np.subtract(u[1:], u[:-1], out=interior)
        np.multiply(interior, face, out=interior)
        np.subtract(right, left, out=du)

    return heat_1d_rhs


def heat_1d(
    n: int = 256,
    p: Any = None,
    u0: Any = None,
    tspan: tuple[float, float] = (0.0, 1.0),
) -> ODEProblem:
    r"""Diffusion :math:`u_t = (D(x)\, u_x)_x` on :math:`[0, 1]` with no-flux walls.

    Cell-centred finite volumes: ``n`` cells of width ``dx = 1/n``, centres
    ``x_i = (i + 1/2) dx``, diffusivity ``D_i = p[i]`` per cell and
    ``D_{i+1/2} = (p[i] + p[i+1]) / 2`` on the faces between cells:

    .. math::

        \dot u_i = \frac{D_{i+1/2} (u_{i+1} - u_i) - D_{i-1/2} (u_i - u_{i-1})}{dx^2},

    with the wall fluxes ``D_{-1/2}`` and ``D_{n-1/2}`` terms set to zero, so that
    ``sum(u) dx`` is conserved.

    The diffusivity field is the parameter, so sensitivities with respect to ``p`` are
    derivatives with respect to ``D(x)`` cell by cell. The largest eigenvalue is about
    ``-4 max(D) / dx^2``, which makes the problem mildly stiff: explicit methods run at
    their stability limit (with the defaults, ``Tsit5`` at ``rtol=1e-6`` takes about
    110 steps of ``dt`` close to ``0.9 dx^2 / max(D)``, four times as many for each
    doubling of ``n``).

    Parameters
    ----------
    n : int
        Number of cells, ``>= 3``; default 256.
    p : array_like, shape (n,), optional
        Diffusivity at the cell centres, ``>= 0``; default
        ``D(x) = 1e-3 (1 + 0.5 sin(2 pi x))``.
    u0 : array_like, shape (n,), optional
        Initial state; default at the cell centres
        ``0.2 + 0.1 cos(8 pi x) + exp(-((x - 0.3) / 0.05)**2)
        + 0.5 exp(-((x - 0.65) / 0.1)**2)``.
    tspan : (float, float)
        Default ``(0, 1)``.

    Returns
    -------
    ODEProblem
        In-place right-hand side holding two work buffers (face diffusivities and
        fluxes); it allocates no arrays per call.

    Raises
    ------
    ValueError
        ``n`` not an integer ``>= 3``; ``p`` or ``u0`` not of shape ``(n,)`` or not
        finite; a negative diffusivity; a bad ``tspan``.

    References
    ----------
    S. V. Patankar, *Numerical Heat Transfer and Fluid Flow*, Hemisphere (1980),
    chapter 4 (control-volume discretisation of conduction, interface conductivity):
    the arithmetic face average used here is second-order accurate for smooth ``D``;
    Patankar's harmonic mean is the better choice for discontinuous ``D``. The
    defaults are this package's own test case.
    """
    n = check_size("n", n)
    x = cell_centres(n)
    if p is None:
        p = default_diffusivity(x)
    p = as_float_array("p", p, (n,), "the diffusivity at the n cell centres")
    check_nonnegative("p", p, "the diffusivity")
    if u0 is None:
        u0 = default_initial_state(x)
    u0 = as_float_array("u0", u0, (n,), "the initial state at the n cell centres")
    return ODEProblem(make_heat_1d_rhs(n), u0, tspan, p)
