"""RKC: the damped second-order Runge-Kutta-Chebyshev method of Sommeijer, Shampine & Verwer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._stabilized import AbstractStabilized, Recurrence, recurrence_from

DAMPING = 2.0 / 13.0  # epsilon of w0 = 1 + epsilon / s^2 (Sommeijer et al. 1997, Sec. 2)


def _chebyshev(s: int, w0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``T_j(w0)``, ``T_j'(w0)``, ``T_j''(w0)`` for ``j = 0..s`` by the three-term recurrence."""
    T, dT, ddT = np.zeros(s + 1), np.zeros(s + 1), np.zeros(s + 1)
    T[0], T[1], dT[1] = 1.0, w0, 1.0
    for j in range(2, s + 1):
        T[j] = 2 * w0 * T[j - 1] - T[j - 2]
        dT[j] = 2 * T[j - 1] + 2 * w0 * dT[j - 1] - dT[j - 2]
        ddT[j] = 4 * dT[j - 1] + 2 * w0 * ddT[j - 1] - ddT[j - 2]
    return T, dT, ddT


@lru_cache(maxsize=None)
def rkc_parameters(s: int) -> tuple[float, float]:
    """``(w0, w1)`` of the ``s``-stage method."""
    w0 = 1.0 + DAMPING / (s * s)
    _, dT, ddT = _chebyshev(s, w0)
    return w0, dT[s] / ddT[s]


@lru_cache(maxsize=None)
def rkc_recurrence(s: int) -> tuple[Recurrence, float, float]:
    """``(recurrence, w0, w1)`` of the ``s``-stage method (Sommeijer et al. 1997, eq. (2.9)).

    ``w0 = 1 + eps/s^2``, ``w1 = T_s'(w0)/T_s''(w0)``, ``b_j = T_j''(w0)/T_j'(w0)^2``
    (``b_0 = b_1 = b_2``), ``a_j = 1 - b_j T_j(w0)``, ``mu~_1 = b_1 w1`` and for ``j >= 2``
    ``mu_j = 2 w0 b_j/b_{j-1}``, ``nu_j = -b_j/b_{j-2}``, ``mu~_j = 2 w1 b_j/b_{j-1}``,
    ``gamma~_j = -a_{j-1} mu~_j``.
    """
    w0 = 1.0 + DAMPING / (s * s)
    T, dT, ddT = _chebyshev(s, w0)
    w1 = dT[s] / ddT[s]
    b = np.empty(s + 1)
    b[2:] = ddT[2:] / dT[2:] ** 2
    b[:2] = b[2]
    a = 1.0 - b * T
    j = np.arange(2, s + 1)
    mu = 2 * w0 * b[j] / b[j - 1]
    nu = -b[j] / b[j - 2]
    mu_tilde = 2 * w1 * b[j] / b[j - 1]
    return recurrence_from(b[1] * w1, mu, nu, mu_tilde, -a[j - 1] * mu_tilde), w0, w1


@dataclass(frozen=True, kw_only=True)
class RKC(AbstractStabilized):
    """Runge-Kutta-Chebyshev, order 2, damped (``eps = 2/13``), any ``s >= 2``.

    Stability polynomial ``R_s(z) = a_s + b_s T_s(w0 + w1 z)``, stable on
    ``[-beta(s), 0]`` with ``beta(s) = (1 + w0)/w1 ~ 0.653 s^2``. Error estimate
    ``(12 (u_n - u_{n+1}) + 6 h (F_n + F_{n+1})) / 15`` (one extra ``f`` per step, reused as
    the next step's ``F_0``). Dense output: cubic Hermite. ``s`` supported: 2 to 1000.

    References
    ----------
    B. P. Sommeijer, L. F. Shampine, J. G. Verwer, "RKC: an explicit solver for parabolic
    PDEs", J. Comput. Appl. Math. 88 (1997) 315-326.
    """

    fewest_stages = 2
    most_stages = 1000
    supported_stages = "2 <= s <= 1000"

    def recurrence(self, s: int) -> Recurrence:
        return rkc_recurrence(s)[0]

    def stability_boundary(self, s: int) -> float:
        w0, w1 = rkc_parameters(s)
        return (1.0 + w0) / w1
