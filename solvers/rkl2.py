"""RKL2: the second-order Runge-Kutta-Legendre super-time-stepping method of Meyer et al."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._stabilized import AbstractStabilized, Recurrence, recurrence_from


@lru_cache(maxsize=None)
def rkl2_recurrence(s: int) -> Recurrence:
    """The ``s``-stage recurrence (Meyer, Balsara & Aslam 2014, eqs. (16)-(17)).

    ``b_j = (j^2 + j - 2) / (2 j (j + 1))`` (``b_0 = b_1 = b_2 = 1/3``), ``a_j = 1 - b_j``,
    ``w1 = 4 / (s^2 + s - 2)``, ``mu~_1 = b_1 w1`` and for ``j >= 2``
    ``mu_j = (2j - 1)/j b_j/b_{j-1}``, ``nu_j = -(j - 1)/j b_j/b_{j-2}``,
    ``mu~_j = mu_j w1``, ``gamma~_j = -a_{j-1} mu~_j``.
    """
    j_all = np.arange(s + 1, dtype=float)
    b = np.full(s + 1, 1.0 / 3.0)
    b[3:] = (j_all[3:] ** 2 + j_all[3:] - 2) / (2 * j_all[3:] * (j_all[3:] + 1))
    a = 1.0 - b
    w1 = 4.0 / (s * s + s - 2)
    j = np.arange(2, s + 1)
    mu = (2 * j - 1) / j * b[j] / b[j - 1]
    nu = -(j - 1) / j * b[j] / b[j - 2]
    mu_tilde = mu * w1
    return recurrence_from(b[1] * w1, mu, nu, mu_tilde, -a[j - 1] * mu_tilde)


@dataclass(frozen=True, kw_only=True)
class RKL2(AbstractStabilized):
    """Runge-Kutta-Legendre, order 2, odd ``s >= 3`` only.

    Stability polynomial ``R_s(z) = a_s + b_s P_s(1 + w1 z)`` (``P_s`` Legendre), stable on
    ``[-beta(s), 0]`` with ``beta(s) = (s^2 + s - 2)/2``; odd ``s`` keeps
    ``|R_s(-beta)| = 1 - 2 b_s < 1`` (even ``s`` would not damp there). Error estimate:
    that of RKC (Sommeijer et al. 1997), valid for any second-order one-step method.
    Dense output: cubic Hermite. ``s`` supported: odd, 3 to 999.

    References
    ----------
    C. D. Meyer, D. S. Balsara, T. D. Aslam, "A stabilized Runge-Kutta-Legendre method for
    explicit super-time-stepping of parabolic and mixed equations", J. Comput. Phys. 257
    (2014) 594-626.
    """

    fewest_stages = 3
    most_stages = 999
    supported_stages = "odd s, 3 <= s <= 999"

    def supports(self, s: int) -> bool:
        return 3 <= s <= 999 and s % 2 == 1

    def recurrence(self, s: int) -> Recurrence:
        return rkl2_recurrence(s)

    def stability_boundary(self, s: int) -> float:
        return (s * s + s - 2) / 2.0
