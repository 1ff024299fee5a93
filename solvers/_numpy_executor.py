"""The NumPy in-place executor: one tableau-driven Runge-Kutta loop, no allocation per step.

Roles as in OrdinaryDiffEq.jl: the method (a :class:`ButcherTableau`), the cache
(:class:`_Workspace`, every buffer allocated once per solve) and the step (writes only
into the cache). Stage ``i`` is

.. math:: U_i = u_n + h \\sum_{j<i} a_{ij} k_j, \\qquad k_i = f(U_i, p, t_n + c_i h),

computed as one BLAS ``gemv`` into a preallocated buffer with ``out=``; the user's
``f(du, u, p, t)`` writes ``k_i`` straight into row ``i`` of the stage matrix.
Failures are result codes; nothing raises inside the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._controller import PIController, initial_step, rms_norm
from ._dense import DenseOutput
from ._tableau import ButcherTableau

_EPS = np.finfo(np.float64).eps


@dataclass
class RawSolution:
    """What the executor hands back to :func:`dxdt.solve` (flat, no validation)."""

    t: np.ndarray
    u: np.ndarray
    nfev: int
    naccept: int
    nreject: int
    status: str
    message: str
    dense: DenseOutput | None


class _Workspace:
    """Every buffer a solve needs, allocated once: stages, stage state, error, scale."""

    def __init__(self, tableau: ButcherTableau, u0: np.ndarray):
        dtype, n = u0.dtype, u0.size
        real = np.abs(u0[:1]).dtype
        s = tableau.stages
        self.k = np.zeros((tableau.total_stages, n), dtype)
        self.k_views = [row.reshape(u0.shape) for row in self.k]
        self.u = u0.reshape(n).copy()
        self.u_new = np.empty(n, dtype)
        self.u_stage = np.empty(n, dtype)
        self.err = np.empty(n, dtype)
        self.scale = np.empty(n, real)
        self.scratch = np.empty(n, real)
        self.a = tableau.a.astype(dtype)
        self.dt_a = np.empty_like(self.a)
        self.a_rows = [self.dt_a[i, :i] for i in range(s)]
        self.k_heads = [self.k[:i] for i in range(s)]
        self.k_main = self.k[:s]
        self.b = tableau.b.astype(dtype)
        self.dt_b = np.empty_like(self.b)
        self.b_err = None if tableau.b_err is None else tableau.b_err.astype(dtype)
        self.dt_b_err = None if tableau.b_err is None else np.empty_like(self.b_err)
        self.interp = tableau.interp.astype(dtype)
        self.interp_t = np.ascontiguousarray(self.interp.T)
        self.exponents = np.arange(1, self.interp.shape[1] + 1, dtype=dtype)
        self.powers = np.empty_like(self.exponents)
        self.weights = np.empty(tableau.total_stages, dtype)
        # the last FSAL stage is evaluated at u_new itself
        last = s - 1
        self.stage_out = [self.u_new if (tableau.fsal and i == last) else self.u_stage for i in range(s)]
        self.stage_out_views = [buf.reshape(u0.shape) for buf in self.stage_out]
        if tableau.extra_a is not None:
            self.extra_a = tableau.extra_a.astype(dtype)
            self.extra_rows = [np.empty(s + r, dtype) for r in range(len(tableau.extra_c))]


def integrate(
    f: Callable, u0: np.ndarray, p, t0: float, t1: float, tableau: ButcherTableau, *,
    rtol: float, atol, dt: float | None, adaptive: bool, saveat: np.ndarray | None,
    dense: bool, max_steps: int, progress=None, k0: np.ndarray | None = None,
    controller: PIController = PIController(),
) -> RawSolution:
    """Integrate ``du/dt = f(u, p, t)`` from ``t0`` to ``t1`` with an explicit RK method.

    ``f`` is in place, ``f(du, u, p, t)``. ``k0``, if given, is ``f(u0, p, t0)`` already
    evaluated (by input validation). ``progress`` is an object with ``update(dt)`` or
    None. Returns a :class:`RawSolution` holding everything computed, also on failure.
    """
    ws = _Workspace(tableau, u0)
    shape, n = u0.shape, u0.size
    s, c, fsal = tableau.stages, tableau.c, tableau.fsal
    direction = 1.0 if t1 > t0 else -1.0
    k, kv, u, u_new = ws.k, ws.k_views, ws.u, ws.u_new
    u_view = u.reshape(shape)
    atol_flat = atol if np.ndim(atol) == 0 else np.broadcast_to(atol, shape).reshape(n)

    nfev = 1  # k[0] = f(u0): evaluated here or by input validation
    if k0 is None:
        f(kv[0], u_view, p, t0)
    else:
        np.copyto(kv[0], k0)
    k0_valid = True
    if dt is None:
        dt, spent = initial_step(f, u, k[0], p, t0, t1, tableau.order, rtol, atol_flat)
        nfev += spent
    else:
        dt = direction * abs(dt)
    dt_fixed = dt
    beta1, beta2, inv_k = controller.exponents(tableau.error_order or tableau.order)

    saver = _Saver(ws, tableau, shape, t0, saveat, dense)
    t, steps, naccept, nreject = t0, 0, 0, 0
    err_prev, rejected_last, nonfinite_streak = 1.0, False, 0
    status, message = "success", ""
    fixed_step_count = 0

    while (t1 - t) * direction > 0:
        if steps >= max_steps:
            status, message = "max_steps", (
                f"reached max_steps={max_steps} at t={t:.6g} (dt={dt:.3g}) before t1={t1:.6g}. "
                "Increase max_steps, or if the step size collapsed the problem may be stiff "
                "or blow up: check f, loosen rtol/atol, or shorten tspan."
            )
            break
        if abs(dt) < 16 * _EPS * max(abs(t), 1e-300):
            status = "nonfinite" if nonfinite_streak else "dt_min"
            message = (
                f"f returned non-finite values (nan/inf) at t={t:.6g} even with dt={dt:.3g}; "
                "the solution probably blows up here. Check f and p, or shorten tspan."
                if nonfinite_streak else
                f"step size underflow at t={t:.6g} (dt={dt:.3g} is below 16 eps |t|): the solution "
                "may have a singularity there, or the problem is too stiff for an explicit "
                "method. Check f near this time, or loosen rtol/atol."
            )
            break
        if adaptive:
            if (t + dt - t1) * direction > 0:
                dt = t1 - t
        else:
            t_next = t0 + (fixed_step_count + 1) * dt_fixed
            dt = (t1 if (t_next - t1) * direction >= -1e-12 * abs(dt_fixed) else t_next) - t
        steps += 1
        if not k0_valid:
            f(kv[0], u_view, p, t)
            nfev += 1
            k0_valid = True

        # stages 1..s-1 (stage 0 is f(u), in k[0])
        np.multiply(ws.a, dt, out=ws.dt_a)
        for i in range(1, s):
            out = ws.stage_out[i]
            np.dot(ws.a_rows[i], ws.k_heads[i], out=out)
            np.add(out, u, out=out)
            f(kv[i], ws.stage_out_views[i], p, t + c[i] * dt)
        nfev += s - 1
        if not fsal:
            np.multiply(ws.b, dt, out=ws.dt_b)
            np.dot(ws.dt_b, ws.k_main, out=u_new)
            np.add(u_new, u, out=u_new)

        if adaptive:
            np.multiply(ws.b_err, dt, out=ws.dt_b_err)
            np.dot(ws.dt_b_err, ws.k_main, out=ws.err)
            np.abs(u, out=ws.scale)
            np.abs(u_new, out=ws.scratch)
            np.maximum(ws.scale, ws.scratch, out=ws.scale)
            np.multiply(ws.scale, rtol, out=ws.scale)
            np.add(ws.scale, atol_flat, out=ws.scale)
            np.divide(ws.err, ws.scale, out=ws.err)
            err_norm = rms_norm(ws.err)
            finite = math.isfinite(err_norm) and np.isfinite(u_new.sum())
            if not finite or err_norm > 1.0:
                nreject += 1
                rejected_last = True
                if not finite:
                    nonfinite_streak += 1
                    if not np.isfinite(k[0].sum()):  # f(u) itself is non-finite: no dt helps
                        status, message = "nonfinite", (
                            f"f returned non-finite values (nan/inf) at t={t:.6g} (dt={dt:.3g}); "
                            "check f and p near this state, or shorten tspan."
                        )
                        break
                    dt *= controller.factor_min
                else:
                    dt *= max(controller.factor_min, controller.safety * err_norm ** -inv_k)
                continue
            nonfinite_streak = 0
            if err_norm == 0.0:
                factor = controller.factor_max
            else:
                factor = controller.safety * err_norm ** -beta1 * err_prev ** beta2
                factor = min(controller.factor_max, max(controller.factor_min, factor))
            if rejected_last:
                factor = min(factor, 1.0)
            err_prev = max(err_norm, controller.min_previous_error)
            rejected_last = False
            dt_next = dt * factor
        else:
            if not np.isfinite(u_new.sum()):
                status, message = "nonfinite", (
                    f"the solution became non-finite (nan/inf) in the step from t={t:.6g} with "
                    f"dt={dt:.3g}; reduce dt (explicit methods are unstable for large dt on "
                    "stiff problems) or check f."
                )
                break
            fixed_step_count += 1
            dt_next = dt

        # accept
        naccept += 1
        t_new = t1 if (adaptive and t + dt == t1) else t + dt
        nfev += saver.after_step(t, dt, t_new, u, u_new, f, p)
        np.copyto(u, u_new)
        if fsal:
            np.copyto(k[0], k[s - 1])
        else:
            k0_valid = False
        if progress is not None:
            progress.update(t_new - t)
        t, dt = t_new, dt_next

    t_out, u_out = saver.result()
    return RawSolution(t_out, u_out, nfev, naccept, nreject, status, message, saver.dense)


class _Saver:
    """Fills the output: every step (``saveat=None``) or the ``saveat`` times by interpolation."""

    def __init__(self, ws: _Workspace, tableau: ButcherTableau, shape, t0, saveat, dense):
        self.ws, self.tableau, self.shape = ws, tableau, shape
        self.direction = None
        self.saveat = saveat
        n = ws.u.size
        if saveat is None:
            self.ts, self.us = [t0], [ws.u.copy()]
        else:
            self.out = np.empty((len(saveat), n), ws.u.dtype)
            self.j = 0
            while self.j < len(saveat) and saveat[self.j] == t0:
                self.out[self.j] = ws.u
                self.j += 1
        self.dense = DenseOutput(shape, ws.u.dtype, tableau.interp.shape[1]) if dense else None

    def _extra_stages(self, t, dt, u, f, p) -> int:
        """Evaluate the interpolation-only stages (Verner) for this step; returns nfev."""
        tab, ws = self.tableau, self.ws
        if tab.extra_a is None:
            return 0
        s = tab.stages
        for r, c_r in enumerate(tab.extra_c):
            width = s + r
            np.multiply(ws.extra_a[r, :width], dt, out=ws.extra_rows[r])
            np.dot(ws.extra_rows[r], ws.k[:width], out=ws.u_stage)
            np.add(ws.u_stage, u, out=ws.u_stage)
            f(ws.k_views[width], ws.u_stage.reshape(self.shape), p, t + c_r * dt)
        return len(tab.extra_c)

    def after_step(self, t, dt, t_new, u, u_new, f, p) -> int:
        """Record an accepted step from ``t`` to ``t_new``; returns extra ``f`` evaluations."""
        nfev = 0
        saveat = self.saveat
        if saveat is None:
            self.ts.append(t_new)
            self.us.append(u_new.copy())
            needs_interp = False
        else:
            direction = 1.0 if dt > 0 else -1.0
            j_end = self.j
            while j_end < len(saveat) and (saveat[j_end] - t_new) * direction <= 0:
                j_end += 1
            needs_interp = any(saveat[j] != t_new for j in range(self.j, j_end))
        if needs_interp or self.dense is not None:
            nfev += self._extra_stages(t, dt, u, f, p)
        if saveat is not None:
            ws = self.ws
            for j in range(self.j, j_end):
                row = self.out[j]
                if saveat[j] == t_new:
                    row[...] = u_new
                    continue
                theta = (saveat[j] - t) / dt
                np.power(theta, ws.exponents, out=ws.powers)
                np.dot(ws.interp, ws.powers, out=ws.weights)
                np.multiply(ws.weights, dt, out=ws.weights)
                np.dot(ws.weights, ws.k, out=row)
                np.add(row, u, out=row)
            self.j = j_end
        if self.dense is not None:
            self.dense.append(t, dt, u, self.ws.interp_t, self.ws.k)
        return nfev

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.saveat is None:
            return np.array(self.ts), np.stack(self.us).reshape((len(self.ts),) + self.shape)
        return self.saveat[: self.j].copy(), self.out[: self.j].reshape((self.j,) + self.shape)
