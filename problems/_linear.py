"""Linear systems ``du/dt = A u`` with their exact solution and sensitivities."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .._problem import _UNSET, ODEProblem
from ._checks import as_float_array, check_time


def expm(matrix):
    """``scipy.linalg.expm``, imported on first use (``import dxdt.problems`` stays light)."""
    from scipy.linalg import expm as scipy_expm

    return scipy_expm(matrix)


def expm_frechet(matrix, direction, compute_expm=True):
    """``scipy.linalg.expm_frechet``, imported on first use."""
    from scipy.linalg import expm_frechet as scipy_expm_frechet

    return scipy_expm_frechet(matrix, direction, compute_expm=compute_expm)


def linear_rhs(du: np.ndarray, u: np.ndarray, p: np.ndarray, t: float) -> None:
    """``du = A u`` with ``A = p``."""
    np.matmul(p, u, out=du)


def _over_times(fn: Callable[[float], np.ndarray], t: Any) -> np.ndarray:
    """``fn(t)`` for a scalar ``t``; ``fn`` stacked over a 1-D array of times otherwise."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim == 0:
        return fn(float(t))
    if t.ndim != 1:
        raise ValueError(f"t must be a scalar or a 1-D array of times, got shape {t.shape}")
    return np.stack([fn(float(ti)) for ti in t])


class LinearExact:
    """Exact solution of ``du/dt = A u``, ``u(t0) = u0``, and its derivatives.

    With ``tau = t - t0``, ``u(t) = expm(A tau) u0``. Derivatives with respect to ``A``
    use the Frechet derivative ``L(X, E)`` of the matrix exponential
    (:func:`scipy.linalg.expm_frechet`) and its adjoint ``L(X^T, .)``.
    """

    __slots__ = ("A", "u0", "t0")

    def __init__(self, A: np.ndarray, u0: np.ndarray, t0: float):
        self.A, self.u0, self.t0 = A, u0, t0

    def solution(self, t: Any) -> np.ndarray:
        """``u(t)``: shape ``(m,)`` for a scalar ``t``, ``(len(t), m)`` for an array."""
        return _over_times(lambda s: expm(self.A * (s - self.t0)) @ self.u0, t)

    def jacobian_u0(self, t: Any) -> np.ndarray:
        """``du(t)/du0 = expm(A (t - t0))``: shape ``(m, m)``, or ``(len(t), m, m)``."""
        return _over_times(lambda s: expm(self.A * (s - self.t0)), t)

    def jacobian_A(self, t: Any) -> np.ndarray:
        """``J[i, j, k] = du_i(t)/dA_jk``: shape ``(m, m, m)``, or ``(len(t), m, m, m)``."""
        return _over_times(self._jacobian_A, t)

    def _jacobian_A(self, t: float) -> np.ndarray:
        # du_i[H] = e_i^T L(A tau, tau H) u0 = tau <L(A^T tau, e_i u0^T), H>.
        tau = t - self.t0
        At = self.A.T * tau
        rows = np.eye(len(self.u0))
        return np.stack(
            [tau * expm_frechet(At, np.outer(e, self.u0), compute_expm=False) for e in rows]
        )

    def gradient_sq_norm(self, T: float) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of ``||u(T)||^2``: the tuple ``(d/dA, d/du0)`` of shapes ``(m, m)``, ``(m,)``."""
        tau = check_time("T", T) - self.t0
        E = expm(self.A * tau)
        u = E @ self.u0
        grad_A = tau * expm_frechet(self.A.T * tau, 2.0 * np.outer(u, self.u0), compute_expm=False)
        return grad_A, 2.0 * E.T @ u


class LinearProblem(ODEProblem):
    """``du/dt = A u`` with ``p = A`` (read-only) and the exact solution in :attr:`exact`.

    Parameters
    ----------
    A : array_like, shape (m, m)
        The system matrix; stored as a read-only float64 copy and given to ``f`` as ``p``.
    u0 : array_like, shape (m,)
        Initial state.
    tspan : (float, float)
        ``(t0, t1)``; the exact solution is ``expm(A (t - t0)) u0``.
    """

    __slots__ = ("_exact",)

    def __init__(self, A: Any, u0: Any, tspan: tuple[float, float]):
        A = as_float_array("A", A, None, "the system matrix")
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.size == 0:
            raise ValueError(f"A must be a non-empty square matrix, got shape {A.shape}")
        u0 = as_float_array("u0", u0, (A.shape[0],), "the initial state (one entry per row of A)")
        A.setflags(write=False)
        super().__init__(linear_rhs, u0, tspan, A)
        self._exact = LinearExact(A, self.u0, self.tspan[0])

    exact = property(lambda self: self._exact, doc="Exact solution and sensitivities, a :class:`LinearExact`.")

    def remake(
        self, *, u0: Any = _UNSET, p: Any = _UNSET, tspan: Any = _UNSET, f: Any = _UNSET
    ) -> ODEProblem:
        """A new problem with some fields replaced.

        Replacing ``u0``, ``p`` (the matrix ``A``) or ``tspan`` gives a
        :class:`LinearProblem` with a recomputed :attr:`exact`. Replacing ``f`` gives a
        plain :class:`~dxdt.ODEProblem`, since the exact solution no longer applies.
        """
        if f is not _UNSET:
            return ODEProblem(
                f,
                self.u0 if u0 is _UNSET else u0,
                self.tspan if tspan is _UNSET else tspan,
                self.p if p is _UNSET else p,
            )
        return LinearProblem(
            self.p if p is _UNSET else p,
            self.u0 if u0 is _UNSET else u0,
            self.tspan if tspan is _UNSET else tspan,
        )


def linear(A: Any, u0: Any, T: float) -> LinearProblem:
    r"""The linear system :math:`\dot u = A u` on :math:`[0, T]`, with its exact solution.

    Parameters
    ----------
    A : array_like, shape (m, m)
        System matrix, given to the problem as the parameter ``p`` (a read-only float64
        array); the right-hand side is ``np.matmul(p, u, out=du)``.
    u0 : array_like, shape (m,)
        Initial state.
    T : float
        Final time, finite and nonzero (``T < 0`` integrates backwards).

    Returns
    -------
    LinearProblem
        An :class:`~dxdt.ODEProblem` whose ``.exact`` (a :class:`LinearExact`) gives
        ``solution(t) = expm(A t) u0``, ``jacobian_u0(t) = expm(A t)``,
        ``jacobian_A(t)[i, j, k] = du_i(t)/dA_jk`` and ``gradient_sq_norm(T)``, the
        gradient of ``||u(T)||^2`` as ``(d/dA, d/du0)``.

    Raises
    ------
    ValueError
        ``A`` not a finite non-empty square matrix, ``u0`` not a finite vector with one
        entry per row of ``A``, ``T`` not finite or zero.

    References
    ----------
    A. H. Al-Mohy and N. J. Higham, "Computing the Frechet derivative of the matrix
    exponential, with an application to condition number estimation", SIAM J. Matrix
    Anal. Appl. 30 (2009) 1639-1657 (the algorithm of :func:`scipy.linalg.expm_frechet`).
    """
    T = check_time("T", T)
    if T == 0.0:
        raise ValueError("T must be nonzero: the problem is solved on [0, T]")
    return LinearProblem(A, u0, (0.0, T))
