"""Dormand-Prince 5(4), FSAL, with Dormand & Prince's 4th-order dense output."""

from dataclasses import dataclass
from fractions import Fraction as F

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau, lower_triangular

_B = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
_B_HAT = [F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)]
# Dense output of DOPRI5 (Hairer, Norsett & Wanner I, II.6, and the code dopri5.f):
# u(theta) = u0 + theta(r2 + (1 - theta)(r3 + theta(r4 + (1 - theta) r5))) with
# r2 = h b.k, r3 = h k1 - r2, r4 = r2 - h k7 - r3, r5 = h d.k.
_D = [
    F(-12715105075, 11282082432), 0, F(87487479700, 32700410799), F(-10690763975, 1880347072),
    F(701980252875, 199316789632), F(-1453857185, 822651844), F(69997945, 29380423),
]


def _dense_rows():
    """Expand the nested form above into ``b_i(theta) = sum_j P_ij theta^j``."""
    rows = []
    for i, (b, d) in enumerate(zip(_B, _D)):
        e1, e7 = int(i == 0), int(i == 6)
        r3 = e1 - b
        r4 = 2 * b - e1 - e7
        rows.append([b + r3, -r3 + r4 + d, -r4 - 2 * d, d])
    return rows


DP5_TABLEAU = ButcherTableau(
    a=lower_triangular([
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        _B[:6],
    ]),
    b=_B,
    c=[0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1],
    order=5,
    b_err=[b - bh for b, bh in zip(_B, _B_HAT)],
    error_order=4,
    interp=_dense_rows(),
    interp_order=4,
)


@dataclass(frozen=True)
class DP5(AbstractRungeKutta):
    """Dormand-Prince 5(4) pair (DOPRI5), 7 stages with FSAL.

    Dense output: the 4th-order continuous extension of Dormand & Prince.

    References
    ----------
    J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae",
    J. Comput. Appl. Math. 6 (1980) 19-26; dense output: Hairer, Norsett & Wanner I,
    II.6 and the code DOPRI5.
    """

    tableau = DP5_TABLEAU
