"""The NumPy executor of the stabilized methods: a few state-sized buffers whatever ``s``.

The recurrence reads ``(Y_{j-1}, u_n, F_0, f(Y_{j-1}), Y_{j-2})``; they are the rows of
one ``(5, n)`` matrix ``[A, u, F_0, K, B]`` whose outer rows ``A``, ``B`` alternate as
``Y_{j-1}`` and ``Y_{j-2}``, so each stage is one BLAS ``gemv`` into a scratch vector,
copied over the row of ``Y_{j-2}``. Step-size control, failure statuses and messages are
those of :mod:`._numpy_executor` (its PI controller, ``initial_step`` and
``failure_message``); the spectral radius comes from a nonlinear power iteration on ``f``
(as ``rkcrho`` in rkc.f) or the user's ``eigen_est``, refreshed every
``REFRESH_STEPS`` accepted steps and after every rejected step.

References
----------
B. P. Sommeijer, L. F. Shampine, J. G. Verwer, "RKC: an explicit solver for parabolic
PDEs", J. Comput. Appl. Math. 88 (1997) 315-326 (rkc.f: power iteration, error estimate).
"""

from __future__ import annotations

import cmath
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._controller import EPS as _EPS
from ._controller import STEP_FLOOR, PIController, initial_step
from ._dense import DenseOutput
from ._numpy_executor import RawSolution, failure_message
from ._stabilized import (HERMITE, SAFETY, AbstractStabilized, check_estimate, choose_stages,
                          hermite_weights, stage_table)

_dot = getattr(np.dot, "_implementation", np.dot)
REFRESH_STEPS = 25  # accepted steps between spectral-radius estimates (rkc.f)
POWER_ITERATIONS = 50  # at most, per estimate (rkc.f)
POWER_TOLERANCE = 0.01  # relative change of the estimate that ends the iteration (rkc.f)
POWER_SEED = 20260101  # the first start vector: reproducible
OSCILLATORY_COSINE = -0.5  # cos(v, Jv) above this: dominant eigenvalue far from the negative axis
OSCILLATORY_SPAN = 100.0  # ... and rho |t1 - t0| above this: fast on the scale of the solve
STIFF_MARGIN = 1.05  # h rho above this times beta(max_stages) warns (below: rounding of rho)


@dataclass
class StabilizedRaw(RawSolution):
    """:class:`RawSolution` plus the stabilized methods' statistics."""

    extra_stats: dict = field(default_factory=dict)


class _Workspace:
    """Every buffer of a solve, allocated once."""

    def __init__(self, u0: np.ndarray, power: bool, hermite: bool):
        n, shape, dtype = u0.size, u0.shape, u0.dtype
        self.rows = np.zeros((5, n), dtype)  # [A, u, F0, K, B]
        self.views = [row.reshape(shape) for row in self.rows]
        self.u, self.f0, self.k = self.rows[1], self.rows[2], self.rows[3]
        self.u[:] = u0.reshape(n)
        self.scratch = np.empty(n, dtype)
        self.scratch_view = self.scratch.reshape(shape)
        self.u_new = np.empty(n, dtype)
        self.f_new = np.empty(n, dtype)
        self.u_new_view, self.f_new_view = self.u_new.reshape(shape), self.f_new.reshape(shape)
        self.err = np.empty(n, dtype)
        self.abs_u = np.abs(self.u)
        self.abs_new = np.empty(n, self.abs_u.dtype)
        self.scale = np.empty(n, self.abs_u.dtype)
        self.coef = np.empty(5, dtype)
        self.h_mask = np.ones(5, dtype)
        if power:  # perturbed state, its derivative, the last eigenvector direction
            self.pert, self.f_pert = np.empty(n, dtype), np.empty(n, dtype)
            # a start with a component along every eigenvector (F_0 may be an eigenvector
            # of the smallest eigenvalue, as for heat with u0 = sin(pi x))
            self.direction = start_direction(n, dtype)
        if hermite:  # [u_n, F_0, F_1, (u_{n+1} - u_n)/h] and the weights on them
            self.hermite = np.empty((4, n), dtype)
            self.weights = np.empty(4, dtype)


def start_direction(n: int, dtype) -> np.ndarray:
    """The power iteration's first start vector (both backends): standard normal entries
    from ``POWER_SEED``, reproducible and with a component along every eigenvector."""
    return np.random.default_rng(POWER_SEED).standard_normal(n).astype(dtype, copy=False)


def _power_iteration(f, ws: _Workspace, p, t: float, shape) -> tuple[float, float, bool, int]:
    """``(sigma, cosine, converged, nfev)``: |dominant eigenvalue| of ``df/du`` at ``ws.u``,
    the cosine between its direction ``v`` and ``J v`` (-1 on the negative real axis) and
    whether the estimate settled.

    Nonlinear power iteration of rkc.f: ``J v ~ (f(u + d v) - f(u)) / d`` with
    ``d = sqrt(eps) ||u||``, starting from the previous direction (first: a fixed random
    vector).
    """
    u, f0, pert, f_pert = ws.u, ws.f0, ws.pert, ws.f_pert
    start = ws.direction
    u_norm, v_norm = float(np.linalg.norm(u)), float(np.linalg.norm(start))
    d = math.sqrt(_EPS) * u_norm if u_norm > 0 else math.sqrt(_EPS)
    if v_norm > 0:
        np.multiply(start, d / v_norm, out=pert)
    else:
        pert.fill(d / math.sqrt(u.size))
    np.add(pert, u, out=pert)
    sigma, cosine, converged, nfev = 0.0, -1.0, False, 0
    pert_view, f_view = pert.reshape(shape), f_pert.reshape(shape)
    for iteration in range(POWER_ITERATIONS):
        f(f_view, pert_view, p, t)
        nfev += 1
        np.subtract(f_pert, f0, out=f_pert)  # ~ d J v
        df_norm = float(np.linalg.norm(f_pert))
        sigma_last, sigma = sigma, df_norm / d
        np.subtract(pert, u, out=ws.scratch)
        scale = d * df_norm  # (0 where both are tiny: a state near 0, a flat f)
        cosine = float(np.vdot(ws.scratch, f_pert).real) / scale if scale > 0 else -1.0
        if not math.isfinite(sigma) or df_norm == 0:
            break
        if iteration >= 1 and abs(sigma - sigma_last) <= POWER_TOLERANCE * sigma:
            converged = True
            break
        np.multiply(f_pert, d / df_norm, out=pert)
        np.add(pert, u, out=pert)
    if math.isfinite(sigma) and sigma > 0:
        np.subtract(pert, u, out=ws.direction)
    return sigma, cosine, converged, nfev


def integrate(
    f, u0: np.ndarray, p, t0: float, t1: float, method: AbstractStabilized, *, rtol: float,
    atol, dt: float | None, adaptive: bool, saveat: np.ndarray | None, dense: bool,
    max_steps: int, progress=None, k0: np.ndarray | None = None,
    controller: PIController = PIController(), events=None,
) -> StabilizedRaw:
    """Integrate ``du/dt = f(u, p, t)`` with a stabilized method (arguments as
    :func:`dxdt.solvers._numpy_executor.integrate`).

    ``events`` are located on each accepted step's cubic Hermite interpolant
    (:class:`dxdt._events_numpy.HermiteInterpolant`), as the Runge-Kutta executor locates
    them on its own dense output; after an event ``F_0 = f(u)`` is evaluated again and the
    spectral radius is estimated again (an affect may move the state anywhere)."""
    shape, n = u0.shape, u0.size
    if method.forced:
        estimate_by = None
    elif method.eigen_est is None or callable(method.eigen_est):
        estimate_by = "power" if method.eigen_est is None else "user"
    else:
        estimate_by = "constant"
    ws = _Workspace(u0, estimate_by == "power", saveat is not None or dense or events is not None)
    u, f0, u_new, f_new, err = ws.u, ws.f0, ws.u_new, ws.f_new, ws.err
    u_view, f0_view = ws.views[1], ws.views[2]
    u_new_view, f_new_view = u_new.reshape(shape), f_new.reshape(shape)
    counts, beta = stage_table(method)
    direction = 1.0 if t1 > t0 else -1.0
    atol_flat = atol if np.ndim(atol) == 0 else np.broadcast_to(atol, shape).reshape(n)
    atol_over_rtol = atol_flat / rtol
    span = abs(t1 - t0)
    is_finite = cmath.isfinite if u0.dtype.kind == "c" else math.isfinite

    saver = _Saver(ws, shape, t0, saveat, dense)
    t_clip = t1  # the next time to step to exactly: t1, or a TimeEvent's time
    if events is not None:
        from .._events_numpy import HermiteInterpolant, interior_thetas

        events = events.start(ws, saver, f, p, t0, t1, HermiteInterpolant(ws, interior_thetas()))
        t_clip = events.t_clip
        k0 = None if events.restart else k0
    nfev = 1
    if k0 is None:
        f(f0_view, u_view, p, t0)
    else:
        np.copyto(f0_view, k0)
    if dt is None:
        dt, spent = initial_step(f, u, f0, p, t0, t1, method.order, rtol, atol_flat, shape)
        nfev += spent
    else:
        dt = direction * abs(dt)
    dt_fixed = dt
    beta1, beta2, inv_k = controller.exponents(method.error_order)
    t, steps, naccept, nreject, fixed_count = t0, 0, 0, 0, 0
    # nonfinite_seen: f gave non-finite values since the step last grew (a step-size
    # underflow then is "nonfinite", as on the JAX backend: GuardedController)
    err_prev, rejected_last, nonfinite_seen = 1.0, False, False
    rho = SAFETY * method.eigen_est if estimate_by == "constant" else 0.0
    estimates, since_estimate, max_used = 0, REFRESH_STEPS, 0
    warned_stiff = warned_oscillatory = False
    oscillatory = set()  # times of the last consecutive estimates off the negative real axis
    status = "success" if events is None else events.status  # an affect at t0 can fail
    estimate_failure = ""  # why a user's eigen_est stopped the solve (after t0)

    while status == "success" and (t1 - t) * direction > 0:
        if steps >= max_steps:
            status = "max_steps"
            break
        if abs(dt) < STEP_FLOOR * max(abs(t), 1e-300):
            status = "nonfinite" if nonfinite_seen else "dt_min"
            break
        if estimate_by in ("power", "user") and (since_estimate >= REFRESH_STEPS or rejected_last):
            if estimate_by == "power":
                sigma, cosine, converged, spent = _power_iteration(f, ws, p, t, shape)
                nfev += spent
                # backwards in time, h lambda < 0 for lambda > 0: the axis flips
                if (converged and direction * cosine > OSCILLATORY_COSINE
                        and sigma * span > OSCILLATORY_SPAN):
                    oscillatory.add(t)
                else:
                    oscillatory.clear()
                if len(oscillatory) == 2 and not warned_oscillatory:  # at two times: not noise
                    warned_oscillatory = True
                    _warn(too_oscillatory_message(method, t, sigma))
            else:
                try:
                    sigma = check_estimate(method.eigen_est(u_view, p, t), f"t={t:.6g}")
                except (TypeError, ValueError) as err:
                    if not steps:  # before the first step: bad input
                        raise
                    status = "nonfinite"
                    estimate_failure = estimate_failure_message(err)
                    break
            rho = SAFETY * sigma if math.isfinite(sigma) else math.inf
            estimates += 1
            since_estimate = 0
        if adaptive:
            if (t + dt - t_clip) * direction > 0:
                dt = t_clip - t
            else:  # the step t takes in floating point: the state advances by as much as t
                dt = (t + dt) - t
        else:
            t_next = t0 + (fixed_count + 1) * dt_fixed
            dt = (t_clip if (t_next - t_clip) * direction >= -1e-12 * abs(dt_fixed) else t_next) - t
        if estimate_by is None:
            s = method.max_stages
        else:
            s, covered = choose_stages(counts, beta, abs(dt) * rho)
            if not covered:
                # (not for the first step's size: a guess, not the controller's choice)
                if (not warned_stiff and abs(dt) * rho > STIFF_MARGIN * beta[-1]
                        and (naccept > 0 or not adaptive)):
                    warned_stiff = True
                    _warn(too_stiff_message(method, t, abs(dt), abs(dt) * rho))
                if adaptive and rho > 0:
                    dt = direction * min(abs(dt), beta[-1] / rho)
        steps += 1
        max_used = max(max_used, s)
        nfev += _stages(method, ws, f, p, t, dt, s)
        if not method.finish_evaluates_f_new and (not method.own_error or not adaptive):
            f(f_new_view, u_new_view, p, t + dt)
            nfev += 1

        if adaptive:
            if not method.own_error:  # (12 (u_n - u_{n+1}) + 6 h (F_0 + F_1)) / 15, rkc.f
                np.subtract(u, u_new, out=err)
                np.add(f0, f_new, out=ws.scratch)
                np.multiply(ws.scratch, 0.5 * dt, out=ws.scratch)
                np.add(err, ws.scratch, out=err)
                np.multiply(err, 0.8, out=err)
            np.abs(u_new, out=ws.abs_new)
            np.maximum(ws.abs_u, ws.abs_new, out=ws.scale)
            np.add(ws.scale, atol_over_rtol, out=ws.scale)
            np.divide(err, ws.scale, out=err)
            err_norm = math.sqrt(abs(np.vdot(err, err)) / n) / rtol
            finite = math.isfinite(err_norm) and is_finite(u_new.sum())
            if finite and err_norm <= 1.0:
                if method.own_error and not method.finish_evaluates_f_new:
                    f(f_new_view, u_new_view, p, t + dt)
                    nfev += 1
                # a non-finite f(u_{n+1}) fails the step: the next one would start from it,
                # and the Hermite rows saved inside this one would be NaN
                finite = is_finite(f_new.sum())
            if not finite or err_norm > 1.0:
                nreject += 1
                rejected_last = True
                if finite:
                    dt *= max(controller.factor_min, controller.safety * err_norm ** -inv_k)
                    continue
                nonfinite_seen = True
                if not is_finite(f0.sum()):
                    status = "nonfinite"
                    break
                dt *= controller.factor_min
                continue
            if err_norm == 0.0:
                factor = controller.factor_max
            else:
                factor = min(controller.factor_max, max(controller.factor_min, controller.safety
                             * err_norm ** -beta1 * err_prev ** beta2))
            if rejected_last:
                factor = min(factor, 1.0)
            err_prev = max(err_norm, controller.min_previous_error)
            rejected_last = False
            nonfinite_seen = nonfinite_seen and factor <= 1.0
            dt_next = dt * factor
            ws.abs_u, ws.abs_new = ws.abs_new, ws.abs_u
        else:
            if not (is_finite(u_new.sum()) and is_finite(f_new.sum())):
                status = "nonfinite_fixed"
                break
            fixed_count += 1
            dt_next = dt

        naccept += 1
        since_estimate += 1
        t_new = t_clip if (adaptive and t + dt == t_clip) else t + dt
        if events is not None:
            hermite_rows(ws, dt)  # before an event overwrites u_new with the interpolant
            t_new, spent = events.locate(t, dt, t_new)
            nfev += spent
            if not adaptive and (t_next - t_new) * direction > 1e-12 * abs(dt_fixed):
                fixed_count -= 1  # cut short by an event: the fixed grid resumes after it
        saver.after_step(t, dt, t_new, rows_ready=events is not None)
        u[:] = u_new
        if events is not None and events.firing:
            status, t_clip = events.fire(t_new)  # affects change u: F_0 and rho again
            f(f0_view, u_view, p, t_new)
            nfev += 1
            since_estimate = REFRESH_STEPS
            if status != "success":  # a terminal event, or a Zeno accumulation
                if progress is not None:
                    progress.update(t_new - t)
                t = t_new
                break
        else:
            f0[:] = f_new
        if progress is not None:
            progress.update(t_new - t)
        t, dt = t_new, dt_next

    if status == "success" and not is_finite(u.sum()):
        status = "nonfinite"
    if events is not None and events.message:
        message = events.message
    elif estimate_failure:
        message = estimate_failure
    else:
        message = "" if status == "success" else failure_message(status, t, dt, max_steps, t1)
    t_out, u_out = saver.result()
    raw = StabilizedRaw(t_out, u_out, nfev, naccept, nreject, status.replace("_fixed", ""), message,
                        saver.dense, extra_stats={"max_stages_used": max_used, "n_eigen_est": estimates})
    if events is not None:
        raw.t_events, raw.u_events = events.result()
    return raw


def too_stiff_message(method: AbstractStabilized, t: float, dt: float, h_rho: float) -> str:
    """The warning for a step ``dt`` at ``t`` whose ``h rho`` exceeds ``beta(max_stages)``
    (both backends)."""
    more = ("raise max_stages" if method.max_stages < method.most_stages
            else "use RKC() or RKL2(), which take any number of stages")
    beta_max = method.stability_boundary(method.stage_counts()[-1])
    return (f"at t={t:.6g} the step {dt:.3g} needs h*rho={h_rho:.3g} but {method!r} reaches "
            f"only {beta_max:.3g} with max_stages={method.max_stages}: the problem is too stiff "
            f"for this stabilized explicit method here; steps are limited to the stability "
            f"interval ({more}, or use an implicit method such as scipy BDF/Radau)")


def recorded_too_stiff(method, record, t0: float, t1: float) -> str | None:
    """:func:`too_stiff_message` for a JAX solve of ``[t0, t1]`` from its controller's
    ``record`` ``[s, proposal, proposal / h_stable]`` in normalised time (see
    :func:`~dxdt.solvers._diffrax_controller.stiff_record`); None if it never was too stiff."""
    s, proposal, ratio = (float(x) for x in record)
    if not math.isfinite(s):
        return None
    beta_max = method.stability_boundary(method.stage_counts()[-1])
    return too_stiff_message(method, t0 + s * (t1 - t0), proposal * abs(t1 - t0), ratio * beta_max)


def too_oscillatory_message(method: AbstractStabilized, t: float, sigma: float) -> str:
    """The warning for power iterations that settled far from the negative real axis, the
    second in a row at ``t`` with modulus ``sigma`` (both backends)."""
    return (f"the dominant eigenvalue of df/du at t={t:.6g} (modulus {sigma:.3g}) "
            "lies far from the negative real axis: the problem is too oscillatory "
            f"(or, with a positive real part, growing) for a stabilized explicit method such as "
            f"{method!r}, which is made for decaying, diffusion-like modes; use Tsit5/DP5 "
            "for oscillatory or growing problems, or an implicit method (scipy BDF/Radau)")


def recorded_too_oscillatory(method, record, t0: float, t1: float) -> str | None:
    """:func:`too_oscillatory_message` for a JAX solve of ``[t0, t1]`` from its solver's
    ``record`` ``[run, s, sigma]`` in normalised time (see
    :func:`~dxdt.solvers._stabilized_diffrax.oscillatory_record`); None if no two
    estimates in a row were off the axis."""
    _, s, sigma = (float(x) for x in record)
    if not math.isfinite(s):
        return None
    span = abs(t1 - t0)
    return too_oscillatory_message(method, t0 + s * (t1 - t0), sigma / span if span else sigma)


def estimate_failure_message(err: Exception) -> str:
    """The message of a solve stopped by a user's ``eigen_est`` that gave no bound (``err``
    from :func:`~dxdt.solvers._stabilized.check_estimate`)."""
    return f"{err}. The solution stops there: check eigen_est near this state."


def recheck_estimate(method, u, p, t: float) -> str:
    """``""``, or :func:`estimate_failure_message` where a user's callable ``eigen_est``
    gives no finite bound ``>= 0`` at ``(u, p, t)``.

    A compiled solve cannot raise: a bad estimate fails its steps as a non-finite ``f``
    does, and the solve stops at the last accepted state, where the estimate was asked
    for again. This asks the user's NumPy ``eigen_est`` there (on a duplicate: never the
    user's buffers), so that the JAX backend blames the estimate as the NumPy executor
    does, not ``f``."""
    estimate = getattr(method, "eigen_est", None)
    if not callable(estimate):
        return ""
    from ..sensitivity.translate import duplicate

    try:
        check_estimate(duplicate(estimate)(np.array(u), p, t), f"t={t:.6g}")
    except (TypeError, ValueError) as err:
        return estimate_failure_message(err)
    except Exception:  # noqa: BLE001  (an estimate failing otherwise: the step's message stands)
        return ""
    return ""


def recorded_warnings(method, record, t0: float, t1: float) -> list[str]:
    """The NumPy executor's warnings ("too stiff", "too oscillatory") for a JAX solve of
    ``[t0, t1]`` from its :func:`~dxdt.solvers._stabilized_diffrax.warning_record`."""
    if not (math.isfinite(record[0]) or math.isfinite(record[4])):  # neither record fired (and
        return []  # a Runge-Kutta method's records never do): checked on every solve(backend="jax")
    messages = (recorded_too_stiff(method, record[:3], t0, t1),
                recorded_too_oscillatory(method, record[3:], t0, t1))
    return [m for m in messages if m is not None]


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=6)  # the caller of dxdt.solve


def _stages(method: AbstractStabilized, ws: _Workspace, f, p, t: float, h: float, s: int) -> int:
    """One step's recurrence and finishing procedure into ``ws.u_new``; returns nfev."""
    rec = method.recurrence(s)
    rows, coef, views = ws.rows, ws.coef, ws.views
    np.multiply(ws.f0, h * rec.mu1, out=rows[0])  # Y_1 in A
    np.add(rows[0], ws.u, out=rows[0])
    if len(rec.rows):
        np.copyto(rows[4], ws.u)  # Y_0 in B
    ws.h_mask[2] = ws.h_mask[3] = h
    last = 0
    for j, weights in enumerate(rec.rows, start=2):
        previous = 4 - last  # row index of Y_{j-2}
        f(views[3], views[last], p, t + rec.c[j - 1] * h)
        np.multiply(weights, ws.h_mask, out=coef)
        if last == 4:  # Y_{j-1} sits in B: swap the outer weights
            coef[0], coef[4] = coef[4], coef[0]
        _dot(coef, rows, out=ws.scratch)
        np.copyto(rows[previous], ws.scratch)
        last = previous
    return len(rec.rows) + method.finish(ws, f, p, t, h, s, last)


def hermite_rows(ws: _Workspace, h: float) -> None:
    """``ws.hermite = [u_n, F_0, F_1, (u_{n+1} - u_n) / h]``: the step's interpolation data."""
    hermite = ws.hermite
    np.copyto(hermite[0], ws.u)
    np.copyto(hermite[1], ws.f0)
    np.copyto(hermite[2], ws.f_new)
    np.subtract(ws.u_new, ws.u, out=hermite[3])
    np.divide(hermite[3], h, out=hermite[3])


class _Saver:
    """Every step (``saveat=None``) or the ``saveat`` times by cubic Hermite interpolation."""

    def __init__(self, ws: _Workspace, shape, t0: float, saveat, dense: bool):
        self.ws, self.shape, self.saveat = ws, shape, saveat
        self.dense = DenseOutput(shape, ws.u.dtype, 3, (t0, ws.u)) if dense else None
        self.interp_t = np.ascontiguousarray(HERMITE.T.astype(ws.u.dtype))
        if saveat is None:
            self.ts, self.us = [t0], [ws.u.copy()]
            return
        self.out = np.empty((len(saveat), ws.u.size), ws.u.dtype)
        self.j = 0
        while self.j < len(saveat) and saveat[self.j] == t0:
            self.out[self.j] = ws.u
            self.j += 1

    def after_step(self, t: float, h: float, t_new: float, rows_ready: bool = False) -> None:
        """Record the accepted step from ``t`` (state ``ws.u``) to ``t_new`` (``ws.u_new``);
        ``rows_ready``: ``ws.hermite`` already holds the step's interpolation data."""
        ws, saveat = self.ws, self.saveat
        if saveat is None:
            self.ts.append(t_new)
            self.us.append(ws.u_new.copy())
            j_end = 0
        else:
            direction = 1.0 if h > 0 else -1.0
            j_end = self.j
            while j_end < len(saveat) and (saveat[j_end] - t_new) * direction <= 0:
                j_end += 1
            if j_end == self.j and self.dense is None:
                return
        hermite = getattr(ws, "hermite", None)
        if hermite is not None and not rows_ready:
            hermite_rows(ws, h)
        for j in range(self.j if saveat is not None else 0, j_end):
            if saveat[j] == t_new:
                self.out[j] = ws.u_new
            else:
                _dot(hermite_weights((saveat[j] - t) / h, h, ws.weights), hermite, out=self.out[j])
        if saveat is not None:
            self.j = j_end
        if self.dense is not None:
            self.dense.append(t, h, ws.u, self.interp_t, hermite[1:])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.saveat is None:
            return np.array(self.ts), np.stack(self.us).reshape((len(self.ts),) + self.shape)
        return self.saveat[: self.j].copy(), self.out[: self.j].reshape((self.j,) + self.shape)
