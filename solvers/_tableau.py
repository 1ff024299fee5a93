"""Butcher tableaus of explicit Runge-Kutta methods, shared by every backend.

A tableau stores the classical coefficients ``(c, a, b)``, the error weights
``b_err = b - b_hat`` of an embedded pair, and a continuous extension
(dense output)

.. math::

    u(t_n + \\theta h) = u_n + h \\sum_i b_i(\\theta) k_i,
    \\qquad b_i(\\theta) = \\sum_{j=1}^{d} P_{ij} \\theta^j ,

where ``P = interp`` may involve extra stages (rows ``extra_a``, ``extra_c``)
that are evaluated only for steps that need dense output (Verner's
interpolants). The tableau validates itself on construction: row sums equal
``c``, ``sum(b) == 1``, ``sum(b_err) == 0`` and ``b_i(1) == b_i``.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*,
2nd ed., Springer (1993), Sections II.1 (order conditions) and II.6 (dense output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from fractions import Fraction
from typing import Sequence

import numpy as np

_TOL = 1e-13  # coefficients are given to ~17 digits; identities must hold to rounding


def _as_float_array(values, ndim: int) -> np.ndarray:
    """Convert nested sequences of numbers or ``Fraction`` to a read-only float64 array."""
    array = np.array(
        [[float(v) for v in row] for row in values] if ndim == 2 else [float(v) for v in values],
        dtype=np.float64,
    )
    if array.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D coefficient array, got shape {array.shape}")
    array.setflags(write=False)
    return array


def lower_triangular(rows: Sequence[Sequence]) -> list[list]:
    """Pad the rows ``a[1], a[2], ...`` of a strictly lower triangular matrix to a square.

    ``rows[i]`` holds the ``i + 1`` nonzero coefficients of stage ``i + 1``; stage 0
    has none.
    """
    s = len(rows) + 1
    return [[0] * s] + [list(row) + [0] * (s - len(row)) for row in rows]


def polynomial_rows(polys: Sequence[Sequence]) -> list[list]:
    """Expand each ``b_i(theta)`` given as coefficients of ``theta**1 .. theta**d``.

    Accepts rows of unequal length and zero-pads them to a common degree.
    """
    d = max(len(p) for p in polys)
    return [list(p) + [0] * (d - len(p)) for p in polys]


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """Coefficients of an explicit Runge-Kutta method with optional embedded pair.

    Parameters
    ----------
    a, b, c
        Classical coefficients; ``a`` is ``(s, s)`` strictly lower triangular.
    order
        Order of the propagating solution ``b``.
    b_err
        Error weights ``b - b_hat`` (``None`` for a method without error estimate).
    error_order
        Order of the embedded solution ``b_hat``.
    interp
        ``(s + n_extra, d)`` coefficients of the dense-output polynomials.
    interp_order
        Order of the continuous extension.
    extra_a, extra_c
        ``(n_extra, s + n_extra)`` and ``(n_extra,)`` coefficients of stages used only
        by the interpolant.
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    order: int
    interp: np.ndarray
    interp_order: int
    b_err: np.ndarray | None = None
    error_order: int | None = None
    extra_a: np.ndarray | None = None
    extra_c: np.ndarray | None = None
    stages: int = field(init=False)
    fsal: bool = field(init=False)

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("a", _as_float_array(self.a, 2))
        put("b", _as_float_array(self.b, 1))
        put("c", _as_float_array(self.c, 1))
        put("interp", _as_float_array(self.interp, 2))
        if self.b_err is not None:
            put("b_err", _as_float_array(self.b_err, 1))
        n_extra = 0
        if self.extra_a is not None:
            put("extra_a", _as_float_array(self.extra_a, 2))
            put("extra_c", _as_float_array(self.extra_c, 1))
            n_extra = len(self.extra_c)
        s = len(self.b)
        put("stages", s)
        put("fsal", bool(s > 1 and self.c[-1] == 1.0 and np.array_equal(self.a[-1], self.b)))
        self._validate(s, n_extra)

    def _validate(self, s: int, n_extra: int) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"inconsistent Butcher tableau: {what}")

        check(self.a.shape == (s, s) and self.c.shape == (s,), "a must be (s, s), c (s,)")
        check(not np.any(np.triu(self.a)), "a must be strictly lower triangular (explicit)")
        check(np.allclose(self.a.sum(axis=1), self.c, rtol=0, atol=_TOL), "row sums of a != c")
        check(abs(self.b.sum() - 1.0) < _TOL, "sum(b) != 1")
        if self.b_err is not None:
            check(self.b_err.shape == (s,), "b_err must have one weight per stage")
            check(abs(self.b_err.sum()) < _TOL, "sum(b_err) != 0")
        if n_extra:
            check(self.extra_a.shape == (n_extra, s + n_extra), "extra_a must be (n_extra, s + n_extra)")
            check(not np.any(np.triu(self.extra_a[:, s:])), "extra stages must be explicit")
            check(
                np.allclose(self.extra_a.sum(axis=1), self.extra_c, rtol=0, atol=_TOL),
                "row sums of extra_a != extra_c",
            )
        check(self.interp.shape[0] == s + n_extra, "interp needs one row per stage (extras included)")
        at_one = self.interp.sum(axis=1)
        check(np.allclose(at_one[:s], self.b, rtol=0, atol=1e-12), "interpolant b_i(1) != b_i")
        check(np.allclose(at_one[s:], 0.0, rtol=0, atol=1e-12), "interpolant extra b_i(1) != 0")

    @property
    def adaptive(self) -> bool:
        """Whether the method has an embedded error estimate."""
        return self.b_err is not None

    @property
    def total_stages(self) -> int:
        """Stages including those evaluated only for dense output."""
        return self.interp.shape[0]

    @cached_property
    def real_stability_boundary(self) -> float:
        """Largest ``x`` with ``|R(-y)| <= 1`` for all ``0 <= y <= x``, where
        ``R(z) = 1 + z b^T (I - z A)^{-1} 1`` is the stability function (Hairer & Wanner II,
        IV.2); a step ``h`` is stable for a real eigenvalue ``lambda < 0`` iff
        ``h |lambda|`` is below it (Tsit5 ~3.5, DP5 ~3.3)."""
        s = self.stages
        eye, ones = np.eye(s), np.ones(s)
        previous = 0.0
        for x in np.arange(1e-3, 50.0, 1e-3):
            z = -x
            if abs(1 + z * self.b @ np.linalg.solve(eye - z * self.a, ones)) > 1 + 1e-12:
                return previous
            previous = x
        return previous

    def interp_weights(self, theta: float) -> np.ndarray:
        """``b_i(theta)`` for every stage (extras included)."""
        powers = theta ** np.arange(1, self.interp.shape[1] + 1)
        return self.interp @ powers


def hermite_interp(b: Sequence, last_stage_is_f1: bool = True) -> list[list]:
    """Cubic Hermite dense output in the form ``b_i(theta)`` for an FSAL method.

    ``u(theta) = u0 + h[h10(theta) f0 + h01(theta) sum_i b_i k_i + h11(theta) f1]`` with
    ``f0 = k_0``, ``f1 = k_{s-1}`` and the Hermite basis ``h10 = theta - 2 theta^2 +
    theta^3``, ``h01 = 3 theta^2 - 2 theta^3``, ``h11 = -theta^2 + theta^3``
    (Hairer, Norsett & Wanner I, II.6). Interpolant order 3.
    """
    if not last_stage_is_f1:
        raise ValueError("cubic Hermite needs f(u1) as the last (FSAL) stage")
    rows = [[Fraction(0)] * 3 for _ in b]
    for i, bi in enumerate(b):
        bi = Fraction(bi)
        rows[i] = [Fraction(0), 3 * bi, -2 * bi]
    rows[0] = [rows[0][0] + 1, rows[0][1] - 2, rows[0][2] + 1]
    rows[-1] = [rows[-1][0], rows[-1][1] - 1, rows[-1][2] + 1]
    return rows
