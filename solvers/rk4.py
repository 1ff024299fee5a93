"""The classical fourth-order Runge-Kutta method (fixed step only)."""

from dataclasses import dataclass
from fractions import Fraction as F

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau, lower_triangular

RK4_TABLEAU = ButcherTableau(
    a=lower_triangular([[F(1, 2)], [0, F(1, 2)], [0, 0, 1]]),
    b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
    c=[0, F(1, 2), F(1, 2), 1],
    order=4,
    # free cubic dense output, Hairer, Norsett & Wanner I, II.6, eq. (6.2); order 3
    interp=[
        [1, -F(3, 2), F(2, 3)],
        [0, 1, -F(2, 3)],
        [0, 1, -F(2, 3)],
        [0, -F(1, 2), F(2, 3)],
    ],
    interp_order=3,
)


@dataclass(frozen=True)
class RK4(AbstractRungeKutta):
    """Kutta's classical 4th-order method. No error estimate: needs ``dt``.

    Dense output: the free cubic continuous extension (order 3).

    References
    ----------
    W. Kutta, Z. Math. Phys. 46 (1901) 435-453; Hairer, Norsett & Wanner I, II.1 and II.6.
    """

    tableau = RK4_TABLEAU
