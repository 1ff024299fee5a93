"""``Solution`` (what a solve returns) and ``SolverError`` (a failed solve with ``throw=True``)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ._problem import real_times

STATUSES = ("success", "event", "max_steps", "dt_min", "nonfinite")
SUCCESS_STATUSES = ("success", "event")  # "event": a terminal event ended the solve, as asked


class ContinuousOutput(Protocol):
    """What ``Solution.__call__`` needs from a backend's dense output."""

    t_first: float
    t_last: float

    def evaluate(self, t: np.ndarray) -> np.ndarray: ...


class Solution:
    """The result of :func:`dxdt.solve`.

    Attributes
    ----------
    t : ndarray, shape (n,)
        Output times (every accepted step, or the ``saveat`` times reached).
    u : ndarray, shape (n, *u0.shape)
        States at ``t``.
    stats : dict
        ``nfev`` (right-hand side evaluations), ``naccept``, ``nreject`` (steps).
    status : str
        ``"success"``, ``"event"`` (a terminal event stopped the solve; a success too),
        ``"max_steps"``, ``"dt_min"`` or ``"nonfinite"``.
    message : str
        What happened; on failure: where, with which step size, and what to try.
    t_events, u_events : list of ndarray or None
        With ``events=``: per event in the order given, the times it fired and the
        states just before its affect (``(n_fired,)`` and ``(n_fired, *u0.shape)``).

    A failed solve keeps everything computed before the failure.
    """

    def __init__(self, t, u, stats: dict, status: str, message: str,
                 dense: ContinuousOutput | None = None, *, t_events=None, u_events=None):
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.t = t
        self.u = u
        self.stats = stats
        self.status = status
        self.message = message
        self._dense = dense
        self.t_events = t_events
        self.u_events = u_events

    @property
    def success(self) -> bool:
        return self.status in SUCCESS_STATUSES

    def __call__(self, t: Any) -> np.ndarray:
        """Evaluate the continuous solution at ``t`` (scalar or 1-D array); needs ``dense=True``."""
        if self._dense is None:
            raise ValueError(
                "this solution has no dense output; solve with dense=True to evaluate sol(t)"
            )
        tt = real_times(t, "t")
        if tt.ndim > 1:
            raise ValueError(f"t must be a scalar or a 1-D array, got shape {tt.shape}")
        lo, hi = sorted((self._dense.t_first, self._dense.t_last))
        span = hi - lo
        slack = 1e-12 * max(abs(lo), abs(hi), span)
        outside = (tt < lo - slack) | (tt > hi + slack) | ~np.isfinite(tt)
        if np.any(outside):
            bad = np.atleast_1d(tt)[np.atleast_1d(outside)][0]
            raise ValueError(f"t={bad} is outside the solved interval [{lo}, {hi}]")
        out = self._dense.evaluate(np.atleast_1d(np.clip(tt, lo, hi)))
        return out[0] if tt.ndim == 0 else out

    def __repr__(self) -> str:
        return (
            f"Solution(status={self.status!r}, t: {np.shape(self.t)}, u: {np.shape(self.u)}, "
            f"stats={self.stats})"
        )


class SolverError(RuntimeError):
    """A solve (or a sensitivity computation) failed; ``.solution`` holds the partial result."""

    def __init__(self, message: str, solution: Solution | None = None):
        super().__init__(message)
        self.solution = solution
