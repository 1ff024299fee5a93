"""The NumPy in-place executor: one tableau-driven Runge-Kutta loop, no allocation per step.

Roles as in OrdinaryDiffEq.jl: the method (a :class:`ButcherTableau`), the cache
(:class:`_Workspace`, every buffer allocated once per solve) and the step (writes only
into the cache). Stage ``i`` is

.. math:: U_i = u_n + h \\sum_{j<i} a_{ij} k_j, \\qquad k_i = f(U_i, p, t_n + c_i h).

The state ``u_n`` is row 0 of the matrix ``[u_n; k_0; k_1; ...]``, so each stage state
is a single BLAS ``gemv`` with the coefficients ``[1, h a_i0, ..., h a_i,i-1]`` written
into a preallocated buffer, and the user's ``f(du, u, p, t)`` writes ``k_i`` straight
into its row. Failures are result codes; nothing raises inside the loop.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._controller import STEP_FLOOR
from ._controller import PIController, initial_step
from ._dense import DenseOutput
from ._tableau import ButcherTableau

# np.dot without the __array_function__ dispatch (NEP 18): every operand is a plain
# ndarray of the workspace, and the dispatch is a third of the cost on small states
_dot = getattr(np.dot, "_implementation", np.dot)


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
    t_events: list | None = None
    u_events: list | None = None


def _augmented(coefficients: np.ndarray, dtype) -> np.ndarray:
    """``[1, coefficients...]`` rows: the leading 1 multiplies ``u_n`` (row 0 of ``uk``)."""
    coefficients = np.atleast_2d(coefficients)
    out = np.ones((coefficients.shape[0], coefficients.shape[1] + 1), dtype)
    out[:, 1:] = coefficients
    return out


class _Workspace:
    """Every buffer a solve needs, allocated once: states, stages, error, scale."""

    def __init__(self, tableau: ButcherTableau, u0: np.ndarray):
        dtype, n, shape = u0.dtype, u0.size, u0.shape
        real = np.abs(u0.reshape(-1)[:1]).dtype
        s = tableau.stages
        self.uk = np.zeros((tableau.total_stages + 1, n), dtype)
        self.u = self.uk[0]
        self.u[:] = u0.reshape(n)
        self.k = self.uk[1:]
        self.k_views = [row.reshape(shape) for row in self.k]
        self.u_new = np.empty(n, dtype)
        self.u_stage = np.empty(n, dtype)
        self.err = np.empty(n, dtype)
        self.abs_u = np.abs(self.u)
        self.abs_new = np.empty(n, real)
        self.scale = np.empty(n, real)
        # per-step coefficient rows [1, h a_ij]; column 0 stays 1
        self.a = tableau.a.astype(dtype)
        self.dt_a = _augmented(self.a, dtype)
        self.stage_coefs = [self.dt_a[i, : i + 1] for i in range(s)]
        self.stage_heads = [self.uk[: i + 1] for i in range(s)]
        self.b = tableau.b.astype(dtype)
        self.dt_b = _augmented(self.b, dtype)[0]
        self.main_head = self.uk[: s + 1]
        self.k_main = self.k[:s]
        self.b_err = None if tableau.b_err is None else tableau.b_err.astype(dtype)
        # the last FSAL stage is evaluated at u_new itself
        fsal_last = s - 1 if tableau.fsal else -1
        self.stage_out = [self.u_new if i == fsal_last else self.u_stage for i in range(s)]
        self.stage_out_views = [buf.reshape(shape) for buf in self.stage_out]
        # dense output: weights [1, h b_i(theta)]
        self.interp = tableau.interp.astype(dtype)
        self.interp_t = np.ascontiguousarray(self.interp.T)
        self.exponents = np.arange(1, self.interp.shape[1] + 1, dtype=dtype)
        self.powers = np.empty_like(self.exponents)
        self.weights = np.ones(tableau.total_stages + 1, dtype)
        if tableau.extra_a is not None:
            self.extra_a = tableau.extra_a.astype(dtype)
            self.dt_extra = _augmented(self.extra_a, dtype)


def failure_message(status: str, t: float, dt: float | None, max_steps: int, t1: float) -> str:
    """What happened, at which t (with which dt, when known), and what to try."""
    at = f"t={t:.6g}" + ("" if dt is None or not math.isfinite(dt) else f" (dt={dt:.3g})")
    return {
        "max_steps": f"reached max_steps={max_steps} at {at} before t1={t1:.6g}. Increase "
        "max_steps, or if the step size collapsed the problem may be stiff or blow up: "
        "check f, loosen rtol/atol, or shorten tspan.",
        "dt_min": f"step size underflow at {at}: the step fell below 16 eps |t|, so the "
        "solution may have a singularity there, or the problem is too stiff for an "
        "explicit method. Check f near this time, or loosen rtol/atol.",
        "nonfinite": f"f returned non-finite values (nan/inf) at {at}; the solution "
        "probably blows up here. Check f and p near this state, or shorten tspan.",
        "nonfinite_fixed": f"the solution became non-finite (nan/inf) in the step from "
        f"{at}; reduce dt (explicit methods are unstable for large dt on stiff problems) "
        "or check f.",
    }[status]


def integrate(
    f: Callable, u0: np.ndarray, p, t0: float, t1: float, tableau: ButcherTableau, *,
    rtol: float, atol, dt: float | None, adaptive: bool, saveat: np.ndarray | None,
    dense: bool, max_steps: int, progress=None, k0: np.ndarray | None = None,
    controller: PIController = PIController(), events=None,
) -> RawSolution:
    """Integrate ``du/dt = f(u, p, t)`` from ``t0`` to ``t1`` with an explicit RK method.

    ``f`` is in place, ``f(du, u, p, t)``. ``k0``, if given, is ``f(u0, p, t0)`` already
    evaluated (by input validation). ``progress`` is an object with ``update(dt)`` or
    None. ``events`` (an ``EventSet`` of :mod:`dxdt._events_numpy`, or None) locates
    events after each accepted step, cuts the step there and applies the affects; without
    events the loop is unchanged. Returns a :class:`RawSolution` holding everything
    computed, also on failure.
    """
    ws = _Workspace(tableau, u0)
    shape, n = u0.shape, u0.size
    s, fsal = tableau.stages, tableau.fsal
    c = [float(ci) for ci in tableau.c]
    direction = 1.0 if t1 > t0 else -1.0
    k, kv, u, u_new, err = ws.k, ws.k_views, ws.u, ws.u_new, ws.err
    u_view = u.reshape(shape)
    stage_coefs, stage_heads = ws.stage_coefs, ws.stage_heads
    stage_out, stage_out_views = ws.stage_out, ws.stage_out_views
    atol_flat = atol if np.ndim(atol) == 0 else np.broadcast_to(atol, shape).reshape(n)
    is_finite = cmath.isfinite if u0.dtype.kind == "c" else math.isfinite
    sum_squares = (lambda x: np.vdot(x, x)) if u0.dtype.kind == "c" else (lambda x: x.dot(x))
    atol_over_rtol = atol_flat / rtol

    saver = _Saver(ws, tableau, shape, t0, saveat, dense)
    # interpolation-only stages, evaluated before a step is accepted where it needs them
    has_extra = tableau.extra_a is not None
    t_clip = t1  # the next time to step to exactly: t1, or a TimeEvent's time
    if events is not None:
        from .._events_numpy import StageInterpolant, interior_thetas

        events = events.start(ws, saver, f, p, t0, t1, StageInterpolant(ws, saver, tableau, interior_thetas()))
        saver.always_interpolates = dense or bool(events.spec.continuous)
        t_clip = events.t_clip
        k0 = None if events.restart else k0
    nfev = 1  # k[0] = f(u0): evaluated here or by input validation
    if k0 is None:
        f(kv[0], u_view, p, t0)
    else:
        np.copyto(kv[0], k0)
    k0_valid = True
    if dt is None:
        dt, spent = initial_step(f, u, k[0], p, t0, t1, tableau.order, rtol, atol_flat, shape)
        nfev += spent
    else:
        dt = direction * abs(dt)
    dt_fixed = dt
    beta1, beta2, inv_k = controller.exponents(tableau.error_order or tableau.order)
    safety, factor_min, factor_max = controller.safety, controller.factor_min, controller.factor_max

    next_save = saver.next_time
    t, steps, naccept, nreject, fixed_count = t0, 0, 0, 0, 0
    # nonfinite_seen: f gave non-finite values since the step last grew (a step-size
    # underflow then is "nonfinite", as on the JAX backend: GuardedController)
    err_prev, rejected_last, nonfinite_seen = 1.0, False, False
    status = "success" if events is None else events.status  # an affect at t0 can fail

    while status == "success" and (t1 - t) * direction > 0:
        if steps >= max_steps:
            status = "max_steps"
            break
        if abs(dt) < STEP_FLOOR * max(abs(t), 1e-300):
            status = "nonfinite" if nonfinite_seen else "dt_min"
            break
        if adaptive:
            if (t + dt - t_clip) * direction > 0:
                dt = t_clip - t
            else:  # the step t takes in floating point: the state advances by as much as t
                dt = (t + dt) - t
        else:
            t_next = t0 + (fixed_count + 1) * dt_fixed
            dt = (t_clip if (t_next - t_clip) * direction >= -1e-12 * abs(dt_fixed) else t_next) - t
        steps += 1
        saver.extra_ready = False
        if not k0_valid:
            f(kv[0], u_view, p, t)
            nfev += 1
            k0_valid = True

        np.multiply(ws.a, dt, out=ws.dt_a[:, 1:])
        for i in range(1, s):
            out = stage_out[i]
            _dot(stage_coefs[i], stage_heads[i], out=out)
            f(kv[i], stage_out_views[i], p, t + c[i] * dt)
        nfev += s - 1
        if not fsal:
            np.multiply(ws.b, dt, out=ws.dt_b[1:])
            _dot(ws.dt_b, ws.main_head, out=u_new)

        if adaptive:
            # ||err / (atol + rtol m)|| = ||err / (atol/rtol + m)|| / rtol, m = max(|u|, |u_new|)
            _dot(ws.b_err, ws.k_main, out=err)
            np.abs(u_new, out=ws.abs_new)
            np.maximum(ws.abs_u, ws.abs_new, out=ws.scale)
            np.add(ws.scale, atol_over_rtol, out=ws.scale)
            np.divide(err, ws.scale, out=err)
            err_norm = abs(dt) / rtol * math.sqrt(abs(sum_squares(err)) / n)
            # a u_new that overflowed from finite stages has an infinite scale, so a zero scaled
            # error (the step was accepted, and inf rows returned): (err / scale) . scale is NaN
            # there (0 * inf), else the sum of the unscaled errors; one dot, no vector more
            finite = math.isfinite(err_norm) and is_finite(err.dot(ws.scale))
            if finite and err_norm <= 1.0 and has_extra and saver.needs_extra_stages(t + dt, direction):
                # interpolation-only stages (Verner) enter the saved rows: a non-finite one
                # fails the step as a non-finite stage would (on the JAX backend they are
                # stages of the step itself), never NaN rows after a "success"
                nfev += saver._extra_stages(t, dt, f, p)
                finite = is_finite(k[s:].sum())
            if not finite or err_norm > 1.0:
                nreject += 1
                rejected_last = True
                if finite:
                    dt *= max(factor_min, safety * err_norm ** -inv_k)
                    continue
                nonfinite_seen = True
                if not is_finite(k[0].sum()):  # f(u) itself is non-finite: no dt helps
                    status = "nonfinite"
                    break
                dt *= factor_min
                continue
            if err_norm == 0.0:
                factor = factor_max
            else:
                factor = min(factor_max, max(factor_min, safety * err_norm ** -beta1 * err_prev ** beta2))
            if rejected_last:
                factor = min(factor, 1.0)
            err_prev = max(err_norm, controller.min_previous_error)
            rejected_last = False
            nonfinite_seen = nonfinite_seen and factor <= 1.0
            dt_next = dt * factor
            ws.abs_u, ws.abs_new = ws.abs_new, ws.abs_u
        else:
            if has_extra and saver.needs_extra_stages(t + dt, direction):
                nfev += saver._extra_stages(t, dt, f, p)
                if not is_finite(k[s:].sum()):
                    status = "nonfinite_fixed"
                    break
            if not is_finite(u_new.sum()):
                status = "nonfinite_fixed"
                break
            fixed_count += 1
            dt_next = dt

        naccept += 1
        t_new = t_clip if (adaptive and t + dt == t_clip) else t + dt
        if events is not None:
            t_new, spent = events.locate(t, dt, t_new)
            nfev += spent
            if not adaptive and (t_next - t_new) * direction > 1e-12 * abs(dt_fixed):
                fixed_count -= 1  # cut short by an event: the fixed grid resumes after it
        if saver.every_step or (next_save - t_new) * direction <= 0:
            nfev += saver.after_step(t, dt, t_new, f, p)
            next_save = saver.next_time
        u[:] = u_new
        if events is not None and events.firing:
            status, t_clip = events.fire(t_new)  # affects change u; f(u) is recomputed
            k0_valid = False
            if status != "success":  # a terminal event, or a Zeno accumulation
                if progress is not None:
                    progress.update(t_new - t)
                t = t_new
                break
        elif fsal:
            k[0] = k[s - 1]
        else:
            k0_valid = False
        if progress is not None:
            progress.update(t_new - t)
        t, dt = t_new, dt_next

    if status == "success" and not is_finite(u.sum()):
        status = "nonfinite"
    if events is not None and events.message:
        message = events.message
    else:
        message = "" if status == "success" else failure_message(status, t, dt, max_steps, t1)
    t_out, u_out = saver.result()
    raw = RawSolution(t_out, u_out, nfev, naccept, nreject, status.replace("_fixed", ""), message,
                      saver.dense)
    if events is not None:
        raw.t_events, raw.u_events = events.result()
    return raw


class _Saver:
    """Fills the output: every step (``saveat=None``) or the ``saveat`` times by interpolation."""

    def __init__(self, ws: _Workspace, tableau: ButcherTableau, shape, t0, saveat, dense):
        self.ws, self.tableau, self.shape, self.saveat = ws, tableau, shape, saveat
        self.extra_ready = False
        # dense output, or continuous events (located on the interpolant): every step
        self.always_interpolates = dense
        self.dense = DenseOutput(shape, ws.u.dtype, tableau.interp.shape[1], (t0, ws.u)) if dense else None
        self.every_step = saveat is None or dense
        if saveat is None:
            self.ts, self.us = [t0], [ws.u.copy()]
            self.next_time = math.inf
            return
        self.out = np.empty((len(saveat), ws.u.size), ws.u.dtype)
        self.j = 0
        while self.j < len(saveat) and saveat[self.j] == t0:
            self.out[self.j] = ws.u
            self.j += 1
        self._update_next()

    def _update_next(self) -> None:
        self.next_time = self.saveat[self.j] if self.j < len(self.saveat) else math.nan

    def needs_extra_stages(self, t_end: float, direction: float) -> bool:
        """Whether the step ending at ``t_end`` reads its interpolant (dense output, or a
        save time inside it) and so needs the interpolation-only stages."""
        return self.always_interpolates or (self.next_time - t_end) * direction < 0

    def _extra_stages(self, t, dt, f, p) -> int:
        """Evaluate the interpolation-only stages (Verner) for this step, unless done
        already (``extra_ready``, which the executor clears at every attempt); returns nfev."""
        tab, ws = self.tableau, self.ws
        if tab.extra_a is None or self.extra_ready:
            return 0
        self.extra_ready = True
        s = tab.stages
        for r, c_r in enumerate(tab.extra_c):
            width = s + r
            coefs = ws.dt_extra[r, : width + 1]
            np.multiply(ws.extra_a[r, :width], dt, out=coefs[1:])
            np.dot(coefs, ws.uk[: width + 1], out=ws.u_stage)
            f(ws.k_views[width], ws.u_stage.reshape(self.shape), p, t + c_r * dt)
        return len(tab.extra_c)

    def after_step(self, t, dt, t_new, f, p) -> int:
        """Record the accepted step from ``t`` (state ``ws.u``) to ``t_new`` (``ws.u_new``).

        Returns the number of extra ``f`` evaluations (interpolation-only stages).
        """
        ws, saveat = self.ws, self.saveat
        if saveat is None:
            self.ts.append(t_new)
            self.us.append(ws.u_new.copy())
            j_end = 0
            needs_interp = False
        else:
            direction = 1.0 if dt > 0 else -1.0
            j_end = self.j
            while j_end < len(saveat) and (saveat[j_end] - t_new) * direction <= 0:
                j_end += 1
            needs_interp = any(saveat[j] != t_new for j in range(self.j, j_end))
        nfev = self._extra_stages(t, dt, f, p) if (needs_interp or self.dense is not None) else 0
        for j in range(self.j if saveat is not None else 0, j_end):
            row = self.out[j]
            if saveat[j] == t_new:
                row[...] = ws.u_new
                continue
            np.power((saveat[j] - t) / dt, ws.exponents, out=ws.powers)
            np.dot(ws.interp, ws.powers, out=ws.weights[1:])
            np.multiply(ws.weights[1:], dt, out=ws.weights[1:])
            np.dot(ws.weights, ws.uk, out=row)
        if saveat is not None:
            self.j = j_end
            self._update_next()
        if self.dense is not None:
            self.dense.append(t, dt, ws.u, ws.interp_t, ws.k)
        return nfev

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.saveat is None:
            return np.array(self.ts), np.stack(self.us).reshape((len(self.ts),) + self.shape)
        return self.saveat[: self.j].copy(), self.out[: self.j].reshape((self.j,) + self.shape)
