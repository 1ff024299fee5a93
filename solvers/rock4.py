"""ROCK4: the fourth-order orthogonal-Runge-Kutta-Chebyshev method of Abdulle."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._rock_tables import (ROCK4_DEGREES, ROCK4_FINISH_A, ROCK4_FINISH_B, ROCK4_FINISH_B_EMBEDDED,
                           ROCK4_RECURRENCE)
from ._stabilized import AbstractStabilized, Recurrence, describe_counts, recurrence_from

DEGREES = ROCK4_DEGREES  # the orthogonal part's degree m; the method has s = m + 4 stages
# The published members with s = 133 and 152 are not stable on an interval: |R_s(z)| reaches
# 1.0059 and 1.0077 at z = -8.4 (computed exactly in rational arithmetic from the table;
# test_stabilized.py), so a mode there would grow by up to 0.8% per step. Not used.
UNSTABLE = (133, 152)
STAGE_COUNTS = tuple(m + 4 for m in DEGREES if m + 4 not in UNSTABLE)
_SUPPORTED = frozenset(STAGE_COUNTS)


@lru_cache(maxsize=None)
def rock4_recurrence(s: int) -> Recurrence:
    """The recurrence of the ``s``-stage method; ``finish`` holds the 15 finishing
    coefficients ``(a21, a31, a32, a41, a42, a43, b1..b4, b^1..b^5)``."""
    i = DEGREES.index(s - 4)
    coefficients = np.array(ROCK4_RECURRENCE[i])
    mu, kappa = coefficients[1::2], coefficients[2::2]
    finish = ROCK4_FINISH_A[i] + ROCK4_FINISH_B[i] + ROCK4_FINISH_B_EMBEDDED[i]
    return recurrence_from(coefficients[0], 1.0 + kappa, -kappa, mu, np.zeros_like(mu),
                           finish=finish)


def finish_arrays(f, y, t_m: float, t1: float, h, finish):
    """``(u_{n+1}, error, f(u_{n+1}))`` from the recurrence's last stage ``y`` at ``t_m``,
    with array arithmetic only (NumPy or JAX values)."""
    a21, a31, a32, a41, a42, a43, b1, b2, b3, b4, e1, e2, e3, e4, e5 = (h * c for c in finish)
    k1 = f(t_m, y)
    k2 = f(t_m + a21, y + a21 * k1)
    k3 = f(t_m + a31 + a32, y + a31 * k1 + a32 * k2)
    k4 = f(t_m + a41 + a42 + a43, y + a41 * k1 + a42 * k2 + a43 * k3)
    u1 = y + b1 * k1 + b2 * k2 + b3 * k3 + b4 * k4
    k5 = f(t1, u1)
    error = (e1 - b1) * k1 + (e2 - b2) * k2 + (e3 - b3) * k3 + (e4 - b4) * k4 + e5 * k5
    return u1, error, k5


@dataclass(frozen=True, kw_only=True)
class ROCK4(AbstractStabilized):
    """ROCK4, order 4, with ``s = m + 4`` stages for 48 of the 50 tabulated degrees ``m``:
    ``s`` in 5..24, 26, 28, ..., 42, 45, 48, 51, 54, 57, 60, 63, 67, 71, 75, 80, 85, 90, 96,
    102, 109, 116, 124, 142 (:data:`STAGE_COUNTS`; the table's ``s = 133`` and ``152`` are
    not stable on an interval, see :data:`UNSTABLE`).

    ``s - 4`` stages of a recurrence of orthogonal polynomials, then a four-stage explicit
    Runge-Kutta finishing procedure (coefficients per ``s``) that makes the method fourth
    order; stability interval about ``0.35 s^2`` (computed from the stability polynomial).
    A step uses the fewest tabulated stages whose interval covers ``h rho``. Embedded
    third-order error estimate using ``f(u_{n+1})`` (reused as the next step's ``F_0``).
    Dense output: cubic Hermite (order 3).

    References
    ----------
    A. Abdulle, "Fourth order Chebyshev methods with recurrence relation", SIAM J. Sci.
    Comput. 23 (2002) 2041-2054 (coefficients: :mod:`._rock_tables`).
    """

    min_stages: int = STAGE_COUNTS[0]
    max_stages: int = DEGREES[-1] + 4  # the table's range; the largest count used is 142

    order = 4
    error_order = 3
    fewest_stages = STAGE_COUNTS[0]
    most_stages = DEGREES[-1] + 4
    own_error = True
    finish_evaluates_f_new = True
    supported_stages = (f"s in {describe_counts(STAGE_COUNTS)}; the published s = 133 and 152 "
                        "are not stable on an interval")

    def supports(self, s: int) -> bool:
        return s in _SUPPORTED

    def recurrence(self, s: int) -> Recurrence:
        return rock4_recurrence(s)

    def finish_polynomial(self, s: int, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return finish_arrays(lambda t, v: z * v, y, 0.0, 1.0, 1.0, self.recurrence(s).finish)[0]

    def finish_jax(self, f, y, t_m, t1, h, finish):
        return finish_arrays(f, y, t_m, t1, h, finish)

    def finish(self, ws, f, p, t: float, h: float, s: int, last: int) -> int:
        """The four finishing stages and ``f(u_{n+1})`` (into ``ws.f_new``), in the
        workspace's buffers; ``ws.err`` gets the embedded error."""
        rec = self.recurrence(s)
        a21, a31, a32, a41, a42, a43, b1, b2, b3, b4, e1, e2, e3, e4, e5 = (
            h * c for c in rec.finish)
        t_m = t + rec.c[-1] * h
        y, k, u1, u2, u3 = ws.rows[last], ws.rows[3], ws.scratch, ws.rows[4 - last], ws.f_new
        tmp, u_new, err = ws.scratch, ws.u_new, ws.err
        f(ws.views[3], ws.views[last], p, t_m)
        _set(u2, y, a31, k)
        _set(u3, y, a41, k)
        _set(u_new, y, b1, k)
        np.multiply(k, e1 - b1, out=err)
        _set(u1, y, a21, k)
        f(ws.views[last], ws.scratch_view, p, t_m + a21)  # k2 where y was
        k = y
        for out, a in ((u2, a32), (u3, a42), (u_new, b2), (err, e2 - b2)):
            _add(out, a, k, tmp)
        f(ws.views[last], ws.views[4 - last], p, t_m + a31 + a32)  # k3
        for out, a in ((u3, a43), (u_new, b3), (err, e3 - b3)):
            _add(out, a, k, tmp)
        f(ws.views[last], ws.f_new_view, p, t_m + a41 + a42 + a43)  # k4
        for out, a in ((u_new, b4), (err, e4 - b4)):
            _add(out, a, k, tmp)
        f(ws.f_new_view, ws.u_new_view, p, t + h)  # k5 = f(u_{n+1})
        _add(err, e5, ws.f_new, tmp)
        return 5


def _set(out, y, a, k):
    """``out = y + a k``."""
    np.multiply(k, a, out=out)
    np.add(out, y, out=out)


def _add(out, a, k, tmp):
    """``out += a k`` through ``tmp``."""
    np.multiply(k, a, out=tmp)
    np.add(out, tmp, out=out)
