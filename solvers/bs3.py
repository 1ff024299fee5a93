"""Bogacki-Shampine 3(2), FSAL, cubic Hermite dense output."""

from dataclasses import dataclass
from fractions import Fraction as F

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau, hermite_interp, lower_triangular

_B = [F(2, 9), F(1, 3), F(4, 9), 0]
_B_HAT = [F(7, 24), F(1, 4), F(1, 3), F(1, 8)]

BS3_TABLEAU = ButcherTableau(
    a=lower_triangular([[F(1, 2)], [0, F(3, 4)], _B[:3]]),
    b=_B,
    c=[0, F(1, 2), F(3, 4), 1],
    order=3,
    b_err=[b - bh for b, bh in zip(_B, _B_HAT)],
    error_order=2,
    interp=hermite_interp(_B),
    interp_order=3,
)


@dataclass(frozen=True)
class BS3(AbstractRungeKutta):
    """Bogacki-Shampine 3(2) pair, 4 stages with FSAL.

    Dense output: cubic Hermite interpolation (order 3).

    References
    ----------
    P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
    Appl. Math. Lett. 2 (1989) 321-325.
    """

    tableau = BS3_TABLEAU
