"""Stabilized explicit Runge-Kutta methods: the shared part.

A stabilized method advances one step of size ``h`` with ``s`` stages built by a
three-term recurrence,

.. math::

    Y_0 = u_n, \\qquad Y_1 = u_n + \\tilde\\mu_1 h F_0, \\qquad
    Y_j = \\mu_j Y_{j-1} + \\nu_j Y_{j-2} + (1 - \\mu_j - \\nu_j) u_n
          + \\tilde\\mu_j h f(Y_{j-1}) + \\tilde\\gamma_j h F_0 ,

(``F_0 = f(u_n)``), followed by a method-specific finishing procedure. Its stability
polynomial ``R_s`` satisfies ``|R_s(z)| <= 1`` on ``[-beta(s), 0]`` with ``beta(s)``
growing like ``s**2``, so ``s`` is chosen every step as the smallest supported count
with ``beta(s) >= h rho``, ``rho`` an upper bound of the spectral radius of ``df/du``
(power iteration, :mod:`._stabilized_executor`). Each method module gives the recurrence coefficients
(:class:`Recurrence`); everything else (stage choice, the executor, the Hermite dense
output) is shared.

References
----------
B. P. Sommeijer, L. F. Shampine, J. G. Verwer, "RKC: an explicit solver for parabolic
PDEs", J. Comput. Appl. Math. 88 (1997) 315-326.
E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer
(1996), Sec. IV.2 (stabilized explicit methods).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

SAFETY = 1.2  # margin on every spectral-radius estimate (Sommeijer et al. 1997, rkc.f)


@dataclass(frozen=True)
class Recurrence:
    """Coefficients of one stage count ``s``.

    ``mu1`` is ``tilde mu_1``; row ``j - 2`` of ``rows`` holds, for stage ``j >= 2``,
    the weights of ``(Y_{j-1}, u_n, h F_0, h f(Y_{j-1}), Y_{j-2})``; ``c`` the stage
    times ``c_0 .. c_m`` (fractions of ``h``) of the recurrence's ``m = len(c) - 1``
    stages. The finishing procedure (``finish``, method-specific) follows them.
    """

    mu1: float
    rows: np.ndarray
    c: np.ndarray
    finish: tuple = ()


def recurrence_from(mu1: float, mu, nu, mu_tilde, gamma_tilde, finish: tuple = ()) -> Recurrence:
    """A :class:`Recurrence` from the classical coefficients ``mu_j, nu_j, ...`` (j >= 2)."""
    mu, nu = np.asarray(mu, float), np.asarray(nu, float)
    rows = np.stack([mu, 1.0 - mu - nu, np.asarray(gamma_tilde, float),
                     np.asarray(mu_tilde, float), nu], axis=1).reshape(-1, 5)
    c = [0.0, mu1]
    for a, _, d, e, b in rows:  # t itself solves t' = 1: the same recurrence with f = 1
        c.append(a * c[-1] + b * c[-2] + d + e)
    rows.setflags(write=False)
    return Recurrence(mu1, rows, np.array(c), tuple(finish))


@dataclass(frozen=True)
class StageSummary:
    """See :attr:`AbstractStabilized.tableau`."""

    stages: int
    total_stages: int
    fsal: bool
    order: int
    error_order: int
    real_stability_boundary: float


@dataclass(frozen=True, kw_only=True)
class AbstractStabilized:
    """A stabilized explicit Runge-Kutta method (RKC, RKL2, ROCK2).

    Parameters
    ----------
    min_stages, max_stages : int
        Range of the stage count ``s`` chosen per step; equal values force ``s``. Each
        method documents the counts it supports and rejects others with ``ValueError``.
    eigen_est : None, float or callable
        Upper bound of the spectral radius of ``df/du``: ``None`` (nonlinear power
        iteration on ``f``, refreshed as the solve goes), a positive float, or
        ``eigen_est(u, p, t) -> float``. Every estimate gets the safety factor 1.2.

    Notes
    -----
    Contract for a new method (one small module per method): set ``order``,
    ``error_order``, ``fewest_stages``, ``most_stages`` and ``supported_stages``; implement
    :meth:`recurrence` (cached per ``s``) and, if it has its own finishing stages or
    error estimate, :meth:`finish`, :meth:`finish_polynomial` and :meth:`finish_jax`.
    """

    min_stages: int = 2
    max_stages: int = 200
    eigen_est: Any = None

    order: ClassVar[int] = 2
    error_order: ClassVar[int] = 2
    fewest_stages: ClassVar[int]
    most_stages: ClassVar[int]
    own_error: ClassVar[bool] = False  # False: the error estimate of Sommeijer et al.
    finish_evaluates_f_new: ClassVar[bool] = False  # the finish computes f(u_{n+1}) itself
    supported_stages: ClassVar[str]  # in words, for messages

    def __post_init__(self):
        name = type(self).__name__
        for arg in ("min_stages", "max_stages"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name}: {arg} must be an integer, got {value!r}")
            object.__setattr__(self, arg, int(value))
        hi = self.max_stages
        if self.min_stages < 1:
            raise ValueError(f"{name}: min_stages must be >= 1, got {self.min_stages}")
        if hi > self.most_stages:
            raise ValueError(f"{name}: max_stages={hi} exceeds {self.most_stages}, the most "
                             f"stages it has ({self.supported_stages})")
        if self.min_stages > hi:
            raise ValueError(f"{name}: min_stages={self.min_stages} exceeds max_stages={hi}")
        if self.min_stages == hi and not self.supports(hi):
            raise ValueError(f"{name}: min_stages == max_stages == {hi} forces a stage count "
                             f"it does not support ({self.supported_stages})")
        if not self.stage_counts():
            raise ValueError(f"{name}: no supported stage count between min_stages="
                             f"{self.min_stages} and max_stages={hi} ({self.supported_stages})")
        est = self.eigen_est
        if callable(est):
            from .._problem import check_positional

            check_positional(est, 3, f"{name}: eigen_est must take 3 positional parameters eigen_est(u, p, t)")
        if est is None or callable(est):
            return
        if isinstance(est, bool) or not isinstance(est, numbers.Real):
            raise TypeError(f"{name}: eigen_est must be None, a positive float or a callable "
                            f"eigen_est(u, p, t), got {type(est).__name__}")
        if not (math.isfinite(est) and est > 0):
            raise ValueError(f"{name}: eigen_est must be finite and > 0, got {est}")
        object.__setattr__(self, "eigen_est", float(est))

    def supports(self, s: int) -> bool:
        """Whether the method has coefficients for ``s`` stages."""
        return self.fewest_stages <= s <= self.most_stages

    @property
    def adaptive(self) -> bool:
        """Every stabilized method carries an error estimate."""
        return True

    @property
    def dense_vectors(self) -> int:
        """State-sized vectors a step of the JAX dense output keeps: the cubic Hermite data
        ``y0, y1, k0, k1``, whatever the stage count (not ``tableau.total_stages``)."""
        return 4

    @property
    def forced(self) -> bool:
        """Whether the stage count is fixed (``min_stages == max_stages``)."""
        return self.min_stages == self.max_stages

    @property
    def tableau(self) -> "StageSummary":
        """The part of a Butcher tableau that code written for Runge-Kutta methods reads
        (the JAX backend's buffer sizes and ``nfev``): the largest stage count, so its
        ``nfev`` is an upper bound, and ``beta(max_stages)``."""
        s = self.stage_counts()[-1]
        return StageSummary(s + 1, s + 1, True, self.order, self.error_order,
                            self.stability_boundary(s))

    def stage_counts(self) -> tuple[int, ...]:
        """Supported stage counts in ``[min_stages, max_stages]``, increasing."""
        return tuple(s for s in range(self.min_stages, self.max_stages + 1) if self.supports(s))

    def recurrence(self, s: int) -> Recurrence:
        raise NotImplementedError

    def stability_polynomial(self, s: int, z: np.ndarray) -> np.ndarray:
        """``R_s(z)``: one step of ``u' = lambda u`` multiplies ``u`` by ``R_s(h lambda)``."""
        z = np.asarray(z, dtype=complex if np.iscomplexobj(z) else float)
        rec = self.recurrence(s)
        y_prev, y = np.ones_like(z), 1.0 + rec.mu1 * z
        for a, c, d, e, b in rec.rows:
            y_prev, y = y, a * y + b * y_prev + c + d * z + e * z * y
        return self.finish_polynomial(s, y, z)

    def finish_polynomial(self, s: int, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The finishing procedure applied to ``u' = lambda u`` (none by default)."""
        return y

    def finish_jax(self, f, y, t_m, t1, h, finish):
        """The finishing procedure on JAX arrays: ``(u_{n+1}, error or None, f(u_{n+1}) or
        None)`` from the recurrence's last stage ``y`` at time ``t_m``; ``f(t, y)``."""
        return y, None, None

    def stability_boundary(self, s: int) -> float:
        """``beta(s)``: ``|R_s(z)| <= 1`` for ``-beta(s) <= z <= 0``, computed from ``R_s``."""
        return _stability_boundary(self, s)

    def finish(self, ws, f, p, t: float, h: float, s: int, last: int) -> int:
        """Write ``u_{n+1}`` into ``ws.u_new`` from the recurrence's last stage (in row
        ``last`` of ``ws.rows``; also ``ws.err`` if ``own_error``); returns the nfev spent."""
        np.copyto(ws.u_new, ws.rows[last])
        return 0


NEAR_ORIGIN = 40.0  # [-NEAR_ORIGIN, 0] gets a grid of spacing 0.01 (finishing-stage bumps)
GRID_PER_STAGE = 100  # points per stage on the rest of [-(1.2 s^2 + 4), 0]
REFINEMENTS = 5  # rounds of 64 subintervals: the grid spacing shrinks 64**5 ~ 1e9 times


def _stability_boundary(method: AbstractStabilized, s: int) -> float:
    """First ``z < 0`` where ``|R_s(z)|`` exceeds 1, located on a grid then refined.

    ``R_s`` depends on the method's class and ``s`` only, so the result is cached per class.
    """
    return _boundary(type(method), s)


@lru_cache(maxsize=None)
def _boundary(method_type: type, s: int) -> float:
    method = method_type(min_stages=s, max_stages=s)
    reach = 1.2 * s * s + 4.0
    z = -np.concatenate([np.linspace(0.0, min(NEAR_ORIGIN, reach), 4001),
                         np.linspace(min(NEAR_ORIGIN, reach), reach, GRID_PER_STAGE * s + 2)[1:]])

    def first_outside(z):
        bad = np.abs(method.stability_polynomial(s, z)) > 1.0 + 1e-12
        bad[0] = False
        return int(np.argmax(bad)) if bad.any() else None

    i = first_outside(z)
    if i is None:
        return reach
    lo, hi = z[i - 1], z[i]  # |R(lo)| <= 1 < |R(hi)|
    for _ in range(REFINEMENTS):
        z = np.linspace(lo, hi, 65)
        i = first_outside(z)
        lo, hi = z[i - 1], z[i]
    return float(-lo)


def describe_counts(counts) -> str:
    """``(3, 4, 5, 7, 9)`` as ``"3..5, 7, 9"`` (for messages and docstrings)."""
    parts, i = [], 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1] == counts[j] + 1:
            j += 1
        parts.append(f"{counts[i]}..{counts[j]}" if j - i >= 2 else
                     ", ".join(str(c) for c in counts[i: j + 1]))
        i = j + 1
    return ", ".join(parts)


def stage_table(method: AbstractStabilized) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, beta)``: supported stage counts in range and their stability boundaries."""
    counts = np.array(method.stage_counts())
    return counts, np.array([method.stability_boundary(int(s)) for s in counts])


def choose_stages(counts: np.ndarray, beta: np.ndarray, h_rho: float) -> tuple[int, bool]:
    """The fewest stages whose interval covers ``h rho``; ``(s, covered)``."""
    i = int(np.searchsorted(beta, h_rho))
    if i >= len(counts):
        return int(counts[-1]), False
    return int(counts[i]), True


def check_estimate(value: Any, where: str) -> float:
    """A user's ``eigen_est(u, p, t)`` must return a finite number >= 0."""
    try:
        rho = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"eigen_est(u, p, t) must return a float, got {type(value).__name__} "
                        f"at {where}") from None
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"eigen_est(u, p, t) returned {rho} at {where}; it must be a finite "
                         "upper bound >= 0 of the spectral radius of df/du")
    return rho


# Hermite dense output on [t_n, t_n + h] from u_n, u_{n+1}, F_0 = f(u_n), F_1 = f(u_{n+1}):
# u(theta) = u_n + h sum_i b_i(theta) k_i with k = (F_0, F_1, (u_{n+1} - u_n) / h),
# b_i(theta) = sum_j HERMITE[i, j] theta^(j+1) (cubic, order 3; Hairer & Wanner I, II.6).
HERMITE = np.array([[1.0, -2.0, 1.0], [0.0, -1.0, 1.0], [0.0, 3.0, -2.0]])
HERMITE.setflags(write=False)


def hermite_weights(theta: float, h: float, out: np.ndarray) -> np.ndarray:
    """``[1, h b_0(theta), h b_1(theta), h b_2(theta)]`` into ``out`` (length 4)."""
    out[0] = 1.0
    t2 = theta * theta
    out[1] = h * (theta - 2.0 * t2 + t2 * theta)
    out[2] = h * (t2 * theta - t2)
    out[3] = h * (3.0 * t2 - 2.0 * t2 * theta)
    return out
