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
RKC        2      s>=2    yes   2 (1)        cubic Hermite (3)
RKL2       2      odd s   yes   2 (1)        cubic Hermite (3)
ROCK2      2      3..45   yes   1            cubic Hermite (3)
ROCK4      4      5..22   yes   3            cubic Hermite (3)
=========  =====  ======  ====  ===========  ===============================

RKC, RKL2, ROCK2 and ROCK4 are stabilized explicit methods for diffusion-dominated problems: the
stage count s is chosen per step from the spectral radius of df/du (see
:class:`AbstractStabilized`). (1): the error estimate of Sommeijer et al. (1997).
"""

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau
from .bs3 import BS3
from .dp5 import DP5
from .euler import Euler
from ._stabilized import AbstractStabilized
from .heun import Heun
from .rk4 import RK4
from .rkc import RKC
from .rkl2 import RKL2
from .rock2 import ROCK2
from .rock4 import ROCK4
from .tsit5 import Tsit5
from .vern7 import Vern7

__all__ = ["AbstractRungeKutta", "AbstractStabilized", "ButcherTableau", "BS3", "DP5", "Euler", "Heun",
           "RK4", "RKC", "RKL2", "ROCK2", "ROCK4", "Tsit5", "Vern7"]
