"""Heun's method 2(1): explicit trapezoidal rule with embedded Euler."""

from dataclasses import dataclass
from fractions import Fraction as F

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau

HEUN_TABLEAU = ButcherTableau(
    a=[[0, 0], [1, 0]],
    b=[F(1, 2), F(1, 2)],
    c=[0, 1],
    order=2,
    b_err=[F(1, 2) - 1, F(1, 2)],  # b - b_hat with b_hat = (1, 0), explicit Euler
    error_order=1,
    # free quadratic interpolant u0 + h[theta f0 + theta^2 (b.k - f0)], order 2
    interp=[[1, -F(1, 2)], [0, F(1, 2)]],
    interp_order=2,
)


@dataclass(frozen=True)
class Heun(AbstractRungeKutta):
    """Heun's method, order 2 with an embedded Euler error estimate.

    Dense output: the free quadratic interpolant through ``u_n``, ``f(u_n)`` and
    ``u_{n+1}`` (order 2).

    References
    ----------
    K. Heun, Z. Math. Phys. 45 (1900) 23-38; Hairer, Norsett & Wanner I, II.1.
    """

    tableau = HEUN_TABLEAU
