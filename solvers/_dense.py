"""Continuous output of a NumPy solve: the per-step interpolation polynomials."""

from __future__ import annotations

import numpy as np


class DenseOutput:
    """Piecewise polynomial ``u(t_n + theta h_n) = u_n + sum_j theta^j r_{n,j}``.

    ``r_{n,j} = h_n sum_i P_ij k_{n,i}`` is stored per accepted step (``P`` is the
    tableau's ``interp``), so evaluation costs one small contraction per point.
    """

    def __init__(self, shape: tuple[int, ...], dtype, degree: int, start: tuple | None = None):
        """``start = (t0, u0)``: the solve's first state, what ``sol(t0)`` returns while no
        step has been accepted (a solve that failed at once)."""
        self._start = None if start is None else (float(start[0]), np.array(start[1]))
        self._shape = shape
        self._dtype = dtype
        self._degree = degree
        self._t: list[float] = []
        self._h: list[float] = []
        self._u: list[np.ndarray] = []
        self._r: list[np.ndarray] = []
        self._arrays = None

    def append(self, t: float, h: float, u: np.ndarray, interp_t: np.ndarray, k: np.ndarray) -> None:
        """Record the step from ``t`` of size ``h`` starting at ``u`` with stages ``k``."""
        self._t.append(t)
        self._h.append(h)
        self._u.append(u.copy())
        self._r.append((h * interp_t) @ k)  # h first: stages near 1e307 sum to inf, times h near 1e304 do not
        self._arrays = None

    def truncate_last(self, t_end: float) -> None:
        """End the last step at ``t_end`` (an event cut it short).

        Its polynomial is rescaled to ``theta' = (t - t_n) / (t_end - t_n)``:
        ``r'_j = r_j (h' / h)^j``, so ``t_last`` is the event time.
        """
        h_new = t_end - self._t[-1]
        ratio = h_new / self._h[-1]
        self._r[-1] = self._r[-1] * (ratio ** np.arange(1, self._degree + 1))[:, None]
        self._h[-1] = h_new
        self._arrays = None

    @property
    def t_first(self) -> float:
        return self._t[0] if self._t else self._start_time()

    @property
    def t_last(self) -> float:
        return self._t[-1] + self._h[-1] if self._t else self._start_time()

    def _start_time(self) -> float:
        return np.nan if self._start is None else self._start[0]

    def evaluate(self, t: np.ndarray) -> np.ndarray:
        """States at the times ``t`` (1-D, inside the solved interval)."""
        if not self._t:  # no step accepted: the interval is the start alone
            return np.broadcast_to(self._start[1].reshape(self._shape), (len(t),) + self._shape).astype(self._dtype)
        if self._arrays is None:
            self._arrays = (np.array(self._t), np.array(self._h), np.stack(self._u), np.stack(self._r))
        ts, hs, us, rs = self._arrays
        direction = 1.0 if hs[0] > 0 else -1.0
        idx = np.searchsorted(direction * ts, direction * t, side="right") - 1
        idx = np.clip(idx, 0, len(ts) - 1)
        theta = (t - ts[idx]) / hs[idx]
        powers = theta[:, None] ** np.arange(1, self._degree + 1)
        out = us[idx] + np.einsum("md,mdn->mn", powers.astype(rs.dtype), rs[idx])
        return out.reshape((len(t),) + self._shape)
