"""The options and the result codes of a compiled solve, without importing diffrax.

Code that only looks programs up (the warm path of the compiled-code cache) and checks
their results needs these, not the solver: diffrax is imported when a program is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._solution import SolverError
from ..solvers import AbstractRungeKutta

STATUS_CODES = {0: "success", 1: "max_steps", 2: "dt_min", 3: "nonfinite"}
BACKSOLVE_MISMATCH = 1e3  # reconstructed-state error, in units of atol + rtol|u|, deemed ill-posed
BACKSOLVE_DOUBTFUL = 1e2  # ... above which the gradient may be far less accurate than asked: a warning


@dataclass(frozen=True)
class SolveOptions:
    """Static options of every ODE solve inside a sensitivity computation."""

    method: AbstractRungeKutta
    rtol: float
    atol: float
    max_steps: int
    estimate: Any = None  # rho(t, u, p) from a stabilized method's eigen_est, or None

    def spectral_radius(self, read: Callable | None = None) -> Callable | None:
        """The user's ``eigen_est`` as :func:`._ode.odeint`'s ``spectral_radius(t, y,
        args)``, ``read(t, y, args) -> (t, u, p)`` finding the physical time, the state
        and the parameters in a pass's augmented system (default: ``y`` is ``u``). An
        augmented system (tangents, adjoints) has the spectrum of ``df/du`` (its
        Jacobian is block-triangular with ``df/du`` or ``-(df/du)^T`` on the diagonal),
        so the same bound serves every pass. None without an ``eigen_est``.
        """
        if self.estimate is None:
            return None
        if read is None:
            return self.estimate
        return lambda t, y, a: self.estimate(*read(t, y, a))


SEQUENCE_CHANGED = 4  # a chain through TimeEvent(times(p)) whose planned event sequence moved
LOSS_NONFINITE = 5  # the solve succeeded but the loss of its states is not finite
LOSS_DERIVATIVE_NONFINITE = 6  # ... the loss is finite, its derivative is not
DERIVATIVE_NONFINITE = 7  # every solve and the loss succeeded, the operator's result is not finite


class EventSequenceChanged(SolverError):
    """``times(p)`` moved the event sequence a compiled chain was planned for (a dose time
    crossed a save time, another event or an end of ``tspan``): plan and build again."""


def raise_on_failure(codes, what: str, hint: str = "") -> None:
    """Raise ``SolverError`` if any solve of a sensitivity computation failed."""
    codes = np.asarray(codes)
    if not codes.any():  # the common case, checked on every call of a prepared operator
        return
    codes = np.atleast_1d(codes)
    bad = codes[codes != 0]
    if bad.size and int(bad[0]) == SEQUENCE_CHANGED:
        raise EventSequenceChanged(f"{what}: times(p) moved the planned event sequence")
    # reverse mode multiplies a NaN of a branch that np.where does not select by its zero cotangent
    unselected = ("; in reverse mode a NaN or inf in a branch that np.where does not select also makes the "
                  "derivative NaN (np.where(u > 0, p[0] * u ** 1.5, 0) at u < 0: 0 * NaN): compute that branch "
                  "on a safe value (np.maximum(u, 0) ** 1.5) or use mode='forward'") if "reverse" in what else ""
    if bad.size and int(bad.max()) == DERIVATIVE_NONFINITE:
        raise SolverError(f"{what}: the solves succeeded but the derivative is not finite: f or the loss is "
                          "not differentiable at this point (e.g. sqrt(x) at x = 0, a 0 ** y, arctan2(0, 0)); "
                          f"move the target off that point or rewrite the expression{unselected}")
    if bad.size and int(bad.max()) == LOSS_DERIVATIVE_NONFINITE:
        raise SolverError(f"{what}: the solve succeeded but the derivative is not finite: the loss is "
                          "not differentiable at these states (e.g. sqrt(x) or x ** 0 at x = 0, abs at 0), or "
                          "it drops NaNs after arithmetic on them: np.nansum(r * r) with r = u - data and missing "
                          "data is finite but its derivative is 0 * NaN (r ** 2 is spared); "
                          "drop them first, "
                          "np.sum(np.where(np.isnan(data), 0.0, u - np.nan_to_num(data)) ** 2)")
    if bad.size and int(bad.max()) == LOSS_NONFINITE:
        raise SolverError(f"{what}: the loss returned a non-finite value (nan or inf) although the solve "
                          "succeeded and its states are finite: check the loss at these parameters (e.g. the "
                          "log or the inverse of a state that reaches 0)")
    if bad.size:
        status = STATUS_CODES.get(int(bad[0]), "nonfinite")
        hints = {
            "max_steps": "increase max_steps, or loosen rtol/atol",
            "dt_min": "the step size underflowed: the problem may be singular or too stiff",
            "nonfinite": "non-finite values appeared: check f, p and the time span (a derivative can be NaN "
                         "where f is finite: 0 * inf from an inf that f uses as a mask, as in "
                         "np.fill_diagonal(r, np.inf) then 1 / r ** 3, or sqrt at 0)",
        }
        raise SolverError(f"{what} failed with status {status!r}: {hints[status]}{hint}"
                          f"{unselected if status == 'nonfinite' else ''}.")
