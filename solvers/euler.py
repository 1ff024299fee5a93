"""Forward Euler, order 1, no error estimate (fixed step only)."""

from dataclasses import dataclass

from ._base import AbstractRungeKutta
from ._tableau import ButcherTableau

EULER_TABLEAU = ButcherTableau(
    a=[[0]], b=[1], c=[0], order=1,
    interp=[[1]], interp_order=1,  # linear interpolation between u_n and u_{n+1}
)


@dataclass(frozen=True)
class Euler(AbstractRungeKutta):
    """Explicit Euler method: ``u_{n+1} = u_n + h f(t_n, u_n)``. Needs ``dt``.

    References
    ----------
    L. Euler, *Institutionum calculi integralis* (1768); Hairer, Norsett & Wanner I, I.7.
    """

    tableau = EULER_TABLEAU
