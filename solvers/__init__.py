"""Explicit Runge-Kutta methods (Butcher tableaus) and the NumPy in-place executor.

=========  =====  ======  ====  ===========  ===============================
method     order  stages  FSAL  error order  dense output (order)
=========  =====  ======  ====  ===========  ===============================
Euler      1      1       no    --           linear (1)
Heun       2      2       no    1            free quadratic (2)
RK4        4      4       no    --           free cubic (3)
BS3        3      4       yes   2            cubic Hermite (3)
DP5        5      7       yes   4            Dormand-Prince (4)
Tsit5      5      7       yes   4            Tsitouras free interpolant (4)
Vern7      7      10      no    6            Verner, 6 lazy extra stages (7)
=========  =====  ======  ====  ===========  ===============================
"""

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau
from .bs3 import BS3
from .dp5 import DP5
from .euler import Euler
from .heun import Heun
from .rk4 import RK4
from .tsit5 import Tsit5
from .vern7 import Vern7

__all__ = ["AbstractRungeKutta", "ButcherTableau", "BS3", "DP5", "Euler", "Heun", "RK4", "Tsit5", "Vern7"]
