"""Step-size control: Hairer's error norm, the automatic initial step and a PI controller."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = float(np.finfo(np.float64).eps)  # float64's machine epsilon, as a Python float (fast in loops)
# the smallest step, relative to |t|: below it a step makes no progress in floating point
# (the executors report "dt_min"; ODEProblem refuses a shorter span)
STEP_FLOOR = 16 * EPS


@dataclass(frozen=True)
class PIController:
    """Proportional-integral step-size control (options only; the state lives in the loop).

    After an accepted step with scaled error ``e_n`` the next step is

    .. math:: h_{n+1} = h_n \\min(f_{max}, \\max(f_{min}, s\\, e_n^{-\\beta_1} e_{n-1}^{\\beta_2}))

    with ``beta1 = 0.7 / k``, ``beta2 = 0.4 / k`` and ``k = q + 1`` for an embedded pair
    of lower order ``q`` (Gustafsson's PI controller as recommended in Hairer & Wanner II,
    Sec. IV.2; for 5(4) pairs this is beta1 = 0.14, beta2 = 0.08, the values
    OrdinaryDiffEq.jl uses for Tsit5/DP5). A rejected step shrinks by
    ``max(f_min, s e_n^{-1/k})`` and the step after a rejection may not grow.
    Safety ``s = 0.9`` and the bounds ``f_min = 0.2``, ``f_max = 10`` are those of DOPRI5
    (Hairer, Norsett & Wanner I, II.4).
    """

    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    beta1_numerator: float = 0.7
    beta2_numerator: float = 0.4
    min_previous_error: float = 1e-4  # floor on e_{n-1}, as DOPRI5's facold

    def exponents(self, error_order: int) -> tuple[float, float, float]:
        """``(beta1, beta2, 1/k)`` for an embedded pair of lower order ``error_order``."""
        k = error_order + 1
        return self.beta1_numerator / k, self.beta2_numerator / k, 1.0 / k


def rms_norm(x: np.ndarray) -> float:
    """Root mean square of an already scaled vector (Hairer, Norsett & Wanner I, II.4)."""
    return math.sqrt(abs(np.vdot(x, x)) / x.size)


def initial_step(f, u0, k0, p, t0, t1, order, rtol, atol, shape) -> tuple[float, int]:
    """Starting step size by Hairer, Norsett & Wanner I, Sec. II.4 (p. 169).

    ``d0 = ||u0||``, ``d1 = ||f(u0)||`` scaled by ``atol + rtol |u0|``; a trial Euler
    step of ``h0 = 0.01 d0 / d1`` gives ``d2 = ||f(u1) - f(u0)|| / h0`` and
    ``h1 = (0.01 / max(d1, d2))^(1/(p+1))``; the result is ``min(100 h0, h1)``.
    ``u0`` and ``k0`` are flat; ``f`` is called with arrays of the state's ``shape``.
    Returns the signed step and the number of ``f`` evaluations spent (1; 0 where
    ``||f(u0)||`` overflows: then ``0.01 (t1 - t0)``, which the controller shrinks).
    """
    span = abs(t1 - t0)
    direction = 1.0 if t1 > t0 else -1.0
    scale = atol + rtol * np.abs(u0)
    d0 = rms_norm(u0 / scale)
    d1 = rms_norm(k0 / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, span)
    if h0 == 0:  # ||f(u0)|| overflowed (f near 1e300, or atol 0 on an entry at 0): as the JAX backend
        return direction * 0.01 * span, 0  # (a NaN f(u0) goes on to a NaN step: the solve fails at t0)
    u1 = u0 + (direction * h0) * k0
    k1 = np.empty_like(k0)
    f(k1.reshape(shape), u1.reshape(shape), p, t0 + direction * h0)
    d2 = rms_norm((k1 - k0) / scale) / h0
    big = max(d1, d2)
    if not math.isfinite(big):
        return direction * h0 * 1e-3, 1
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / (order + 1))
    return direction * min(100 * h0, h1, span), 1
