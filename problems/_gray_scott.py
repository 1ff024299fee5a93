"""Gray-Scott reaction-diffusion on a periodic square grid."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._problem import ODEProblem
from ._checks import as_float_array, check_nonnegative, check_size

NOISE = 0.01  # relative amplitude of the initial perturbation, "±1% random noise" (Pearson 1993)


def laplacian_periodic(a: np.ndarray, out: np.ndarray, work: np.ndarray) -> None:
    """Five-point Laplacian of the 2-D array ``a`` (unit spacing, periodic), written into ``out``.

    ``work`` is a scratch array shaped like ``a``. Every ufunc runs on contiguous
    operands: NumPy iterates a strided 2-D view such as ``a[:, 1:]`` with a buffered
    iterator that allocates its buffers on every call, so the neighbours along axis 1
    are first copied (rolled) into ``work``.
    """
    np.multiply(a, -4.0, out=out)
    np.add(out[1:], a[:-1], out=out[1:])
    np.add(out[:1], a[-1:], out=out[:1])
    np.add(out[:-1], a[1:], out=out[:-1])
    np.add(out[-1:], a[:1], out=out[-1:])
    work[:, 1:] = a[:, :-1]
    work[:, 0] = a[:, -1]
    np.add(out, work, out=out)
    work[:, :-1] = a[:, 1:]
    work[:, -1] = a[:, 0]
    np.add(out, work, out=out)


def make_gray_scott_rhs(n: int) -> Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]:
    """The in-place right-hand side for an ``n`` x ``n`` grid, with its work buffers in the closure."""
    lap_u = np.empty((n, n))
    lap_v = np.empty((n, n))
    uvv = np.empty((n, n))
    work = np.empty((n, n))

    def gray_scott_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
        Du, Dv, F, k = p
        U, V = u[0], u[1]
        dU, dV = du[0], du[1]
        laplacian_periodic(U, lap_u, work)
        laplacian_periodic(V, lap_v, work)
        np.multiply(V, V, out=uvv)
        np.multiply(uvv, U, out=uvv)
        np.subtract(1.0, U, out=dU)
        dU *= F
        dU -= uvv
        np.multiply(lap_u, Du, out=lap_u)
        dU += lap_u
        np.multiply(V, -(F + k), out=dV)
        dV += uvv
        np.multiply(lap_v, Dv, out=lap_v)
        dV += lap_v

    return gray_scott_rhs


def gray_scott_initial_state(n: int, seed: Any = 0) -> np.ndarray:
    """Pearson's initial state: ``(u, v) = (1, 0)``, a centred square at ``(1/2, 1/4)``, ±1% noise."""
    u0 = np.empty((2, n, n))
    u0[0] = 1.0
    u0[1] = 0.0
    side = max(1, n // 8)
    square = slice((n - side) // 2, (n - side) // 2 + side)
    u0[0, square, square] = 0.5
    u0[1, square, square] = 0.25
    u0 *= 1.0 + NOISE * np.random.default_rng(seed).uniform(-1.0, 1.0, u0.shape)
    return u0


def gray_scott(
    n: int = 128,
    p: Any = (0.16, 0.08, 0.035, 0.065),
    tspan: tuple[float, float] = (0.0, 1000.0),
    seed: Any = 0,
) -> ODEProblem:
    r"""Two-dimensional Gray-Scott reaction-diffusion with periodic boundaries.

    .. math::

        \partial_t u = D_u \nabla^2 u - u v^2 + F (1 - u), \qquad
        \partial_t v = D_v \nabla^2 v + u v^2 - (F + k) v,

    on an ``n`` x ``n`` grid of unit spacing (domain ``[0, n)^2``, periodic), with the
    five-point Laplacian. The state has shape ``(2, n, n)``: ``u[0]`` is the u-field,
    ``u[1]`` the v-field.

    Initial state (after Pearson 1993): ``(u, v) = (1, 0)`` everywhere except a centred
    square of side ``max(1, n // 8)`` cells at ``(1/2, 1/4)``; every value is then
    multiplied by ``1 + 0.01 r`` with ``r`` uniform in ``[-1, 1)`` drawn from
    ``np.random.default_rng(seed)``.

    With the defaults the square splits into four spots by ``t = 200``; the spots then
    keep replicating (at ``n = 128``: eight by ``t = 2250``, sixteen by ``t = 3750``)
    without blowing up. The fastest diffusive eigenvalue is ``-8 Du = -1.28``, so
    explicit methods are stable with ``dt`` of order 1 (``Tsit5`` at ``rtol=1e-6`` takes
    about 400 steps over the default ``tspan``).

    Parameters
    ----------
    n : int
        Grid points per side, ``>= 3``; default 128.
    p : array_like, shape (4,)
        ``[Du, Dv, F, k]``, given to the problem as a float64 array and read by the
        right-hand side at every call. Default ``[0.16, 0.08, 0.035, 0.065]``, the
        spot-forming "Bacteria 1" set.
    tspan : (float, float)
        Default ``(0, 1000)``.
    seed : int, optional
        Seed of the initial noise; default 0.

    Returns
    -------
    ODEProblem
        In-place right-hand side holding four ``(n, n)`` work buffers; it allocates no
        arrays per call.

    Raises
    ------
    ValueError
        ``n`` not an integer ``>= 3``; ``p`` not four finite numbers or with a negative
        diffusivity; a bad ``tspan``.

    References
    ----------
    J. E. Pearson, "Complex patterns in a simple system", Science 261 (1993) 189-192
    (model, initial state and noise). The parameter set in unit grid spacing is
    "Bacteria 1" of N. P. Rougier, "From Python to Numpy" (2017), section "Reaction
    diffusion", https://www.labri.fr/perso/nrougier/from-python-to-numpy/.
    """
    n = check_size("n", n)
    p = as_float_array("p", p, (4,), "[Du, Dv, F, k]")
    check_nonnegative("p", p[:2], "the diffusivities Du, Dv")
    return ODEProblem(make_gray_scott_rhs(n), gray_scott_initial_state(n, seed), tspan, p)
