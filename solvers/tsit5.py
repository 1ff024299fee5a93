"""Tsitouras 5(4), FSAL, with its free 4th-order interpolant. The default method."""

from dataclasses import dataclass

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau, lower_triangular

# Ch. Tsitouras, Comput. Math. Appl. 62 (2011) 770-775, Table 1 (17 significant digits).
_B = [
    0.096460766818065230, 0.01, 0.47988965041449957, 1.3790085741037419,
    -3.2900695154360807, 2.3247105240997740, 0.0,
]
_B_HAT = [
    0.094680755765839458, 0.0091835655403432531, 0.48777052842476157, 1.2342975669304790,
    -2.7077123499835255, 1.8666284181705870, 1 / 66,
]

TSIT5_TABLEAU = ButcherTableau(
    a=lower_triangular([
        [0.161],
        [-0.0084806554923569886, 0.33548065549235699],
        [2.8971530571054935, -6.3594484899750748, 4.3622954328695814],
        [5.3258648284392566, -11.748883564062828, 7.4955393428898365, -0.092495066361755253],
        [5.8614554429464200, -12.920969317847110, 8.1593678985761586, -0.071584973281400997,
         -0.028269050394068383],
        _B[:6],
    ]),
    b=_B,
    c=[0, 0.161, 0.327, 0.9, 0.98002554090450969, 1, 1],
    order=5,
    b_err=[b - bh for b, bh in zip(_B, _B_HAT)],
    error_order=4,
    # free interpolant b_i(theta), coefficients of theta^1..theta^4 (Tsitouras 2011, Sec. 4;
    # the same values as OrdinaryDiffEq's r11..r74)
    interp=[
        [1.0, -2.7637061972748260, 2.9132554618219126, -1.0530884977290216],
        [0.0, 0.13169999999999998, -0.2234, 0.1017],
        [0.0, 3.9302962368947516, -5.9410338721315050, 2.4906272856512530],
        [0.0, -12.411077166933676, 30.338188630282320, -16.548102889244902],
        [0.0, 37.509313416511040, -88.178904894766400, 47.379521962819280],
        [0.0, -27.896526289197286, 65.091894674793660, -34.870657861496610],
        [0.0, 1.5, -4.0, 2.5],
    ],
    interp_order=4,
)


@dataclass(frozen=True)
class Tsit5(AbstractRungeKutta):
    """Tsitouras 5(4) pair, 7 stages with FSAL; dxdt's default method.

    Dense output: Tsitouras' free interpolant (order 4).

    References
    ----------
    Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first column
    simplifying assumption", Comput. Math. Appl. 62 (2011) 770-775.
    """

    tableau = TSIT5_TABLEAU
