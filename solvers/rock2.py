"""ROCK2: the second-order orthogonal-Runge-Kutta-Chebyshev method of Abdulle & Medovikov."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._rock_tables import ROCK2_DEGREES, ROCK2_FINISH, ROCK2_RECURRENCE
from ._stabilized import AbstractStabilized, Recurrence, describe_counts, recurrence_from

DEGREES = ROCK2_DEGREES  # the orthogonal part's degree m; the method has s = m + 2 stages
STAGE_COUNTS = tuple(m + 2 for m in DEGREES)
_SUPPORTED = frozenset(STAGE_COUNTS)


@lru_cache(maxsize=None)
def rock2_recurrence(s: int) -> Recurrence:
    """The recurrence of the ``s``-stage method, with ``finish = (sigma, tau)``."""
    i = DEGREES.index(s - 2)
    coefficients = np.array(ROCK2_RECURRENCE[i])
    mu, kappa = coefficients[1::2], coefficients[2::2]
    return recurrence_from(coefficients[0], 1.0 + kappa, -kappa, mu, np.zeros_like(mu),
                           finish=ROCK2_FINISH[i])


@dataclass(frozen=True, kw_only=True)
class ROCK2(AbstractStabilized):
    """ROCK2, order 2, with ``s = m + 2`` stages for the 46 tabulated degrees ``m``:
    ``s`` in 3..22, 24, 26, 28, 30, 32, 35, 38, 41, 45, 49, 53, 58, 63, 68, 74, 80, 87, 95,
    104, 114, 125, 137, 150, 165, 182, 200 (:data:`STAGE_COUNTS`).

    ``s - 2`` stages of a recurrence of orthogonal polynomials, then two finishing stages
    ``Y' = Y_m + sigma h f(Y_m)``, ``u_{n+1} = Y' + sigma h f(Y') + tau h (f(Y') - f(Y_m))``
    that make the method second order; the stability interval is about ``0.81 s^2``
    (computed from the stability polynomial by :meth:`stability_boundary`). A step uses the
    fewest tabulated stages whose interval covers ``h rho``. Embedded error estimate
    ``tau h (f(Y') - f(Y_m))`` (order 1, Abdulle & Medovikov 2001, Sec. 4). Dense output:
    cubic Hermite.

    References
    ----------
    A. Abdulle, A. A. Medovikov, "Second order Chebyshev methods based on orthogonal
    polynomials", Numer. Math. 90 (2001) 1-18 (coefficients: :mod:`._rock_tables`).
    """

    max_stages: int = STAGE_COUNTS[-1]

    order = 2
    error_order = 1
    fewest_stages = STAGE_COUNTS[0]
    most_stages = STAGE_COUNTS[-1]
    own_error = True
    supported_stages = f"s in {describe_counts(STAGE_COUNTS)}"

    def supports(self, s: int) -> bool:
        return s in _SUPPORTED

    def recurrence(self, s: int) -> Recurrence:
        return rock2_recurrence(s)

    def finish_polynomial(self, s: int, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        sigma, tau = self.recurrence(s).finish
        return y * (1.0 + 2.0 * sigma * z + (sigma * sigma + sigma * tau) * z * z)

    def finish_jax(self, f, y, t_m, t1, h, finish):
        sigma, tau = h * finish[0], h * finish[1]
        k = f(t_m, y)
        y_mid = y + sigma * k
        k2 = f(t_m + sigma, y_mid)
        err = tau * (k2 - k)
        return y_mid + sigma * k2 + err, err, None

    def finish(self, ws, f, p, t: float, h: float, s: int, last: int) -> int:
        """Two finishing stages into ``ws.u_new`` and the embedded error into ``ws.err``."""
        rec = self.recurrence(s)
        sigma, tau = h * rec.finish[0], h * rec.finish[1]
        t_m = t + rec.c[-1] * h
        k, k2, y_mid = ws.rows[3], ws.rows[4 - last], ws.scratch
        f(ws.views[3], ws.views[last], p, t_m)
        np.multiply(k, sigma, out=y_mid)
        np.add(y_mid, ws.rows[last], out=y_mid)
        f(ws.views[4 - last], ws.scratch_view, p, t_m + sigma)
        np.subtract(k2, k, out=ws.err)
        np.multiply(ws.err, tau, out=ws.err)
        np.multiply(k2, sigma, out=ws.u_new)
        np.add(ws.u_new, y_mid, out=ws.u_new)
        np.add(ws.u_new, ws.err, out=ws.u_new)
        return 2
