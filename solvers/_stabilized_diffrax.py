"""The stabilized methods (RKC, RKL2, ROCK2, ROCK4) as a diffrax solver, for every JAX path.

The same recurrence coefficients as the NumPy executor (the method modules' cached
:class:`~dxdt.solvers._stabilized.Recurrence` per stage count), stacked for all stage
counts in ``[min_stages, max_stages]`` and zero-padded, so the stage count is a traced
index chosen inside the step: ``s`` = the fewest stages with ``beta(s) >= h rho``. The
recurrence runs as a ``lax.scan`` over the longest recurrence whose body evaluates ``f``
under ``lax.cond`` only for the stages of the chosen ``s``: it costs ``s`` evaluations and
stays differentiable in forward and reverse mode (the checkpoint adjoint differentiates
it). The spectral radius comes from the nonlinear power iteration of the NumPy side (the
same start vector, at most ``POWER_ITERATIONS`` iterations until the estimate changes by
less than ``POWER_TOLERANCE``, as a ``lax.while_loop``), or, when the caller passes
``spectral_radius`` (the JAX backend does for a user's ``eigen_est``, see
:mod:`dxdt.sensitivity._estimate`), from that function; a value that is not finite and
>= 0 takes the most stages. Either way outside the derivative (``stop_gradient``: the
stage count is not differentiated). The error estimate and the cubic Hermite dense output
are those of the NumPy executor.

The estimate follows the NumPy executor's refresh rule (rkc.f): one before the first step,
then again once ``REFRESH_STEPS`` steps were accepted since the last, or after a rejected
step. The solver state keeps the last estimate, its direction, the accepted steps since it
and the last accepted step size. diffrax drops a rejected step's solver state, so a retry
is recognised by its step: dxdt's controller (and diffrax's ``PIDController``) never
shrinks the step after an accepted one, so an attempt shorter than the last accepted step
follows a rejection (or is the last step, cut at ``t1``; it refreshes too). A retry that
is still longer than the last accepted step (the rejected step had grown by more than the
rejection shrank it) keeps the old estimate, where the NumPy executor refreshes.

Each power iteration also gives the cosine between its direction ``v`` and ``J v`` (-1 on
the negative real axis); two estimates in a row that settled off that axis on a fast
scale (the NumPy executor's test, in normalised time, where a backward solve's flipped
axis is part of the field) are recorded in the solver state: the JAX backend then warns
"too oscillatory" as the NumPy executor does (:func:`oscillatory_record`).

The solver state also counts, over the accepted steps, the ``f`` evaluations (power
iterations included), the largest stage count and the spectral-radius estimates
(:data:`COUNTERS`). Under dxdt's controller (``limited=True``, as every dxdt solve runs
it) the step's error is a :class:`~dxdt.solvers._diffrax_controller.StepReport`: the
controller then counts the rejected attempts' work exactly, never proposes a step beyond
the stability interval of ``max_stages`` (``h_stable = beta(max_stages) / (1.2 rho)``, the
NumPy executor's cut), and retries an attempt beyond it (the first step's guess, or a step
after an estimate grew) at ``h_stable``; such an attempt runs only the fewest stages and
counts as rejected. Under another controller, :func:`solve_stats` adds the rejected steps
approximately: exactly for their finishing stages, at the largest stage count used for
their recurrence stages, and without power iterations or estimates.

References
----------
B. P. Sommeijer, L. F. Shampine, J. G. Verwer, "RKC: an explicit solver for parabolic
PDEs", J. Comput. Appl. Math. 88 (1997) 315-326 (rkc.f: power iteration, refresh rule).

Imported only on a JAX path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, ClassVar

from ..sensitivity._jax import load_diffrax

load_diffrax()  # first: diffrax and JAX are imported once, under a lock
import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._diffrax_controller import NO_STIFF_RECORD, STIFF_MARGIN, GuardedState, StepReport, stiff_record
from ._stabilized import SAFETY, AbstractStabilized, stage_table
from ._stabilized_executor import (OSCILLATORY_COSINE, OSCILLATORY_SPAN, POWER_ITERATIONS,
                                   POWER_TOLERANCE, REFRESH_STEPS, start_direction)

RETRY_RATIO = 1 - 1e-6  # a step this much shorter than the last accepted one is a retry
COUNTERS = ("nfev", "max_stages_used", "n_eigen_est")  # the last entry of the solver state
NO_OSCILLATORY_RECORD = (0.0, float("inf"), 0.0)  # [off-axis estimates in a row, s, sigma]
CHUNK = 16  # recurrence stages per inner scan (see _recurrence)


@lru_cache(maxsize=None)
def coefficient_tables(method: AbstractStabilized) -> dict[str, np.ndarray]:
    """The recurrences of every stage count in range, zero-padded to the longest (rounded
    up to whole chunks of :data:`CHUNK` rows)."""
    counts, beta = stage_table(method)
    recurrences = [method.recurrence(int(s)) for s in counts]
    lengths = np.array([len(r.c) - 1 for r in recurrences])
    longest = int(lengths.max())
    padded = -(-max(longest - 1, 0) // CHUNK) * CHUNK  # rows, a whole number of chunks
    rows = np.zeros((len(counts), padded, 5))
    c = np.zeros((len(counts), padded + 2))
    finish = np.zeros((len(counts), max(len(r.finish) for r in recurrences)))
    for i, rec in enumerate(recurrences):
        rows[i, : len(rec.rows)] = rec.rows
        c[i, : len(rec.c)] = rec.c
        finish[i, : len(rec.finish)] = rec.finish
    return dict(beta=beta, counts=counts, lengths=lengths,
                mu1=np.array([r.mu1 for r in recurrences]), rows=rows, c=c, finish=finish)


def _power_iteration(f, t, y, fy, v, run):
    """``(sigma, v, iterations, cosine, settled)``: ``|J v|`` for the dominant direction ``v`` of
    ``J = df/du`` at ``y``, by rkc.f's nonlinear power iteration
    ``J v ~ (f(y + d v) - f(y)) / d``, ``d = sqrt(eps) ||y||``, from the direction ``v``,
    until the estimate changes by at most ``POWER_TOLERANCE`` (relative) or after
    ``POWER_ITERATIONS``; the operations of the NumPy executor's ``_power_iteration``.
    ``cosine`` is that between ``v`` and ``J v`` at the last iteration, ``settled`` whether
    the estimate met the tolerance. ``run`` false: no evaluation, ``(0, v, 0, -1, False)``.
    Not differentiated: ``f``'s values pass
    ``stop_gradient`` (a reverse-differentiated ``while_loop`` must carry no tangents).
    """
    eps = jnp.finfo(y.dtype).eps
    y_norm = jnp.linalg.norm(y)
    d = jnp.sqrt(eps) * jnp.where(y_norm > 0, y_norm, 1.0)
    v_norm = jnp.linalg.norm(v)
    pert = jnp.where(v_norm > 0, v * (d / jnp.where(v_norm > 0, v_norm, 1.0)),
                     d / np.sqrt(y.size)) + y

    def going(carry):
        i, _, _, stop, _, _ = carry
        return run & ~stop & (i < POWER_ITERATIONS)

    def body(carry):
        i, pert, sigma_last, _, _, _ = carry
        df = jax.lax.stop_gradient(f(t, pert)) - fy  # ~ d J v
        df_norm = jnp.linalg.norm(df)
        sigma = df_norm / d
        cosine = jnp.where(df_norm > 0, jnp.real(jnp.vdot(pert - y, df)) / (d * jnp.where(df_norm > 0, df_norm, 1.0)),
                           -1.0)
        settled = (i >= 1) & (jnp.abs(sigma - sigma_last) <= POWER_TOLERANCE * sigma)
        stop = ~jnp.isfinite(sigma) | (df_norm == 0) | settled
        pert = jnp.where(stop, pert, df * (d / jnp.where(df_norm > 0, df_norm, 1.0)) + y)
        return i + 1, pert, sigma, stop, cosine.astype(sigma.dtype), settled

    zero = jnp.zeros((), d.dtype)
    start = (jnp.asarray(0), pert, zero, jnp.asarray(False), zero - 1, jnp.asarray(False))
    iterations, pert, sigma, _, cosine, settled = jax.lax.while_loop(going, body, start)
    found = run & jnp.isfinite(sigma) & (sigma > 0)
    return sigma, jnp.where(found, pert - y, v), iterations, cosine, settled


class StabilizedSolver(diffrax.AbstractAdaptiveSolver):
    """diffrax solver running a :class:`~dxdt.solvers.AbstractStabilized` method.

    ``spectral_radius(t, y, args)``, when given, is an upper bound of the spectral radius
    of the vector field's Jacobian at ``(t, y)`` in the solve's own time unit (before the
    safety factor); otherwise (and unless the stage count is forced) the power iteration
    estimates it. State: ``(F_0, v, sigma, since, h, stiff, oscillatory, counters)``: the
    derivative at the step's start (FSAL), the last power-iteration direction, the last
    estimate, the accepted steps since it, the last accepted ``|h|``, the stiff record of
    fixed steps (the first step beyond the stability interval, as the controller's
    :func:`~dxdt.solvers._diffrax_controller.stiff_record`; read by :func:`warning_record`),
    the oscillatory record
    ``[off-axis estimates in a row, s, sigma]`` (:func:`oscillatory_record`) and the
    integer :data:`COUNTERS` of the accepted steps.
    """

    method: Any = eqx.field(static=True)
    spectral_radius: Callable | None = eqx.field(static=True, default=None)
    limited: bool = eqx.field(static=True, default=False)  # report a StepReport (see the module)
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation

    def order(self, terms):
        return self.method.order

    def error_order(self, terms):
        return self.method.error_order + 1

    @property
    def _estimating(self) -> str | None:
        """``"power"``, ``"given"`` or ``None`` (forced stage count)."""
        if self.method.forced:
            return None
        return "power" if self.spectral_radius is None else "given"

    def init(self, terms, t0, t1, y0, args):
        flat, unravel = ravel_pytree(y0)
        f = _flat_field(terms, args, unravel)
        f0 = f(t0, flat)
        v = jnp.asarray(start_direction(flat.size, flat.dtype))
        sigma, iterations = jnp.zeros((), _real(flat)), 0
        oscillatory = jnp.asarray(NO_OSCILLATORY_RECORD, sigma.dtype)
        if self._estimating is not None:  # the estimate before the first step
            sigma, v, iterations, oscillatory = self._estimate(f, t0, y0, f0, v, sigma, jnp.asarray(True),
                                                               args, oscillatory, _direction(terms))
        counters = jnp.stack([1 + jnp.asarray(iterations), 0, int(self._estimating is not None)])
        h = jax.lax.stop_gradient(jnp.abs(t1 - t0)).astype(sigma.dtype)  # the first attempt's
        stiff = jnp.asarray(NO_STIFF_RECORD, sigma.dtype)
        return f0, v, sigma, jnp.zeros((), counters.dtype), h, stiff, oscillatory, counters

    def _estimate(self, f, t, y, fy, v, sigma, refresh, args, oscillatory, direction):
        """``(sigma, v, power iterations, oscillatory)``: a new estimate where ``refresh``,
        else the given ``sigma`` and ``v``; outside the derivative. ``spectral_radius`` is
        asked at the physical time ``direction * t`` (diffrax runs a backward solve in
        ``-t``). A power iteration that settled off the negative real axis (``cosine >
        OSCILLATORY_COSINE``) on a fast scale (``sigma > OSCILLATORY_SPAN`` in normalised
        time) extends the record's run of such estimates; the second in a row records
        ``(s, sigma)``, once; any other resets the run."""
        stop = jax.lax.stop_gradient
        if self._estimating == "power":
            fresh, v, iterations, cosine, settled = _power_iteration(
                f, stop(t), stop(ravel_pytree(y)[0]), stop(fy), stop(v), refresh)
            off = settled & (cosine > OSCILLATORY_COSINE) & (fresh > OSCILLATORY_SPAN)
            run = jnp.where(refresh, jnp.where(off, oscillatory[0] + 1, 0.0), oscillatory[0])
            first = (run >= 2) & ~jnp.isfinite(oscillatory[1])
            at = jnp.stack([run, stop(jnp.asarray(t, run.dtype)), fresh.astype(run.dtype)])
            oscillatory = jnp.where(first, at, oscillatory.at[0].set(run))
        else:
            def given():
                rho = stop(self.spectral_radius(stop(direction * t), stop(y), stop(args)))
                return jnp.asarray(rho, sigma.dtype)
            fresh, iterations = jax.lax.cond(refresh, given, lambda: sigma), 0
        # a power iteration that gives no number keeps the most stages; a user's estimate
        # that is not a number >= 0 fails the step (NaN: see step), as the NumPy backend stops
        fresh = jnp.where(jnp.isfinite(fresh) & (fresh >= 0), fresh,
                          jnp.inf if self._estimating == "power" else jnp.nan)
        return jnp.where(refresh, fresh, sigma), v, iterations, oscillatory

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        flat, unravel = ravel_pytree(y0)
        f = _flat_field(terms, args, unravel)
        f0, v, sigma, since, h_last, stiff, oscillatory, counters = solver_state
        f0 = jax.lax.cond(made_jump, lambda: f(t0, flat), lambda: f0)
        h = t1 - t0
        h_abs = jax.lax.stop_gradient(jnp.abs(h)).astype(h_last.dtype)
        tables = {k: jnp.asarray(a, flat.dtype if a.dtype.kind == "f" else a.dtype)
                  for k, a in coefficient_tables(self.method).items()}
        estimating = self._estimating
        refresh, iterations = jnp.asarray(False), 0
        h_stable, covered = jnp.asarray(jnp.inf, h_abs.dtype), jnp.asarray(True)
        if estimating is None:
            index = jnp.asarray(0)
        else:
            refresh = (since >= REFRESH_STEPS) | (h_abs < RETRY_RATIO * h_last)
            sigma, v, iterations, oscillatory = self._estimate(f, t0, y0, f0, v, sigma, refresh, args,
                                                               oscillatory, _direction(terms))
            h_rho = h_abs * SAFETY * sigma
            beta = jnp.asarray(coefficient_tables(self.method)["beta"], h_rho.dtype)
            index = jnp.minimum(jnp.searchsorted(beta, h_rho), len(beta) - 1)
            index = jnp.where(jnp.isnan(h_rho), 0, index)  # a failed estimate fails the step: the fewest stages
            if self.limited:  # an infinite estimate keeps the most stages and error control
                bounded = jnp.isfinite(sigma) & (sigma > 0)
                h_stable = jnp.where(bounded, beta[-1] / (SAFETY * jnp.where(bounded, sigma, 1.0)), jnp.inf)
                covered = ~bounded | (h_rho <= beta[-1] * (1 + 1e-9))
                index = jnp.where(covered, index, 0)  # not taken: the fewest stages
            else:  # fixed steps: the first beyond the stability interval is recorded, to warn
                first = (h_rho > STIFF_MARGIN * beta[-1]) & ~jnp.isfinite(stiff[0])
                at = jnp.stack([jax.lax.stop_gradient(t0), h_abs, h_rho / beta[-1]]).astype(stiff.dtype)
                stiff = jnp.where(first, at, stiff)
        y_last, length = _recurrence(f, tables, index, t0, h, flat, f0)
        t_m = t0 + tables["c"][index, length] * h
        calls = []  # the finishing stages' f evaluations, counted while tracing

        def f_counted(t, y):
            calls.append(None)
            return f(t, y)

        y1, err, f1 = self.method.finish_jax(f_counted, y_last, t_m, t1, h, tables["finish"][index])
        if f1 is None:
            f1 = f_counted(t1, y1)
        # a non-finite f(u_{n+1}) fails the step, as on the NumPy backend: the next step and
        # the Hermite rows inside this one (k1) would be NaN although u_{n+1} is finite
        y1 = jnp.where(jnp.all(jnp.isfinite(f1)) & ~jnp.isnan(sigma), y1, jnp.nan)
        if err is None:  # (12 (u_n - u_{n+1}) + 6 h (F_0 + F_1)) / 15, rkc.f
            err = 0.8 * (flat - y1) + 0.4 * h * (f0 + f1)
        spent = (jnp.asarray(iterations, counters.dtype) + len(calls) + (length - 1)
                 + jnp.asarray(made_jump, counters.dtype))
        work = jnp.stack([spent, tables["counts"][index].astype(counters.dtype),
                          refresh.astype(counters.dtype)])
        counters = jnp.stack([counters[0] + work[0], jnp.maximum(counters[1], work[1]),
                              counters[2] + work[2]])
        since = jnp.where(refresh, 0, since) + 1  # kept only if this step is accepted
        dense_info = dict(y0=y0, y1=unravel(y1), k0=unravel(h * f0), k1=unravel(h * f1))
        state = (f1, v, sigma, since, h_abs, stiff, oscillatory, counters)
        error = unravel(err)
        if self.limited:
            error = StepReport(error, h_stable, covered, work)
        return unravel(y1), error, dense_info, state, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        direction = _direction(terms)
        return jax.tree_util.tree_map(lambda d: direction * d, terms.vf(t0, y0, args))


@lru_cache(maxsize=64)  # per method instance: ensembles ask once per member
def finishing_calls(method: AbstractStabilized) -> int:
    """``f`` evaluations of a step's finishing stages and ``f(u_{n+1})``, counted by running
    :meth:`~AbstractStabilized.finish_jax` once on NumPy values (it has no branches)."""
    calls = []

    def f(t, y):
        calls.append(None)
        return y

    finish = method.recurrence(method.stage_counts()[0]).finish
    _, _, f1 = method.finish_jax(f, np.zeros(1), 0.0, 1.0, 1.0, finish)
    return len(calls) + (f1 is None)


def oscillatory_record(solution) -> jax.Array:
    """``[off-axis estimates in a row, s, sigma]`` of a diffrax solution of
    :class:`StabilizedSolver` saved with ``SaveAt(solver_state=True)`` (``s`` the normalised
    time where a second power iteration in a row settled far from the negative real axis,
    ``inf`` if none did; see :func:`~dxdt.solvers._stabilized_executor.recorded_too_oscillatory`).
    Other solvers have none: :data:`NO_OSCILLATORY_RECORD` stands for it."""
    return solution.solver_state[-2]


def warning_record(method, solution) -> jax.Array:
    """``[stiff record, oscillatory record]`` (6 numbers) of a dxdt solve by ``method``: the
    controller's :func:`~dxdt.solvers._diffrax_controller.stiff_record` and the solver's
    :func:`oscillatory_record`, which the host turns into the NumPy executor's warnings
    (:func:`~dxdt.solvers._stabilized_executor.recorded_warnings`)."""
    stiff = stiff_record(solution)
    if isinstance(method, AbstractStabilized) and not isinstance(solution.controller_state, GuardedState):
        stiff = solution.solver_state[-3].astype(stiff.dtype)  # fixed steps: the solver's record
    if isinstance(method, AbstractStabilized):
        oscillatory = oscillatory_record(solution).astype(stiff.dtype)
    else:
        oscillatory = jnp.asarray(NO_OSCILLATORY_RECORD, stiff.dtype)
    return jnp.concatenate([stiff, oscillatory])


def stabilized_counters(solution) -> jax.Array:
    """The :data:`COUNTERS` of a diffrax solution saved with ``SaveAt(solver_state=True)``:
    the accepted steps', plus the rejected attempts' where dxdt's controller counted them
    (saved with ``controller_state=True``; then :func:`solve_stats` needs no ``rejected``)."""
    counters = solution.solver_state[-1]
    state = solution.controller_state
    if not isinstance(state, GuardedState):
        return counters
    rejected = state.rejected_work.astype(counters.dtype)
    return jnp.stack([counters[0] + rejected[0], jnp.maximum(counters[1], rejected[1]),
                      counters[2] + rejected[2]])


def solve_stats(method: AbstractStabilized, counters, accepted: int, rejected: int,
                given_estimate: bool) -> dict:
    """``nfev``, ``max_stages_used`` and ``n_eigen_est`` of a solve, from the accepted
    steps' ``counters`` and the number of ``rejected`` steps (see the module docstring).

    ``given_estimate``: the solve used a ``spectral_radius`` (a callable ``eigen_est``
    counts as an estimate, a float does not).
    """
    nfev, largest, estimates = (int(c) for c in counters)
    if rejected:
        recurrence = method.recurrence(max(largest, method.stage_counts()[0]))
        nfev += rejected * (finishing_calls(method) + len(recurrence.rows))
    if given_estimate and not callable(method.eigen_est):
        estimates = 0  # a float eigen_est is not an estimate
    return {"nfev": nfev, "max_stages_used": largest, "n_eigen_est": estimates}


def _real(y: jax.Array):
    """The real dtype of ``y``'s entries (``y`` may be complex)."""
    return jnp.finfo(y.dtype).dtype


def _direction(terms):
    """+1, or -1 where diffrax integrates a backward solve in ``-t`` (its ``WrapTerm``
    evaluates the field at ``-t`` and negates the control, not the field)."""
    return terms.contr(0.0, 1.0)


def _flat_field(terms, args, unravel):
    """The field in diffrax's time variable, flat: ``d vf(t, y)`` with ``d`` the direction,
    so that ``y + (t1 - t0) f`` steps the right way also backwards."""
    direction = _direction(terms)

    def f(t, y):
        return direction * ravel_pytree(terms.vf(t, unravel(y), args))[0]
    return f


def _recurrence(f, tables, index, t0, h, y, f0):
    """``(Y_m, m)``: the three-term recurrence of the chosen stage count.

    Stages run in chunks of ``CHUNK`` (an outer scan over chunks, each skipped with one
    test once past the chosen count, an inner scan over its stages), so a step with few
    stages does not pay a test per row of the longest recurrence.
    """
    length = tables["lengths"][index]
    rows, c = tables["rows"][index], tables["c"][index]

    def stage(carry, j):  # stage j + 2
        def run(carry):
            y_prev, y_cur = carry
            k = f(t0 + c[j + 1] * h, y_cur)
            w = rows[j]
            return y_cur, w[0] * y_cur + w[1] * y + (w[2] * h) * f0 + (w[3] * h) * k + w[4] * y_prev
        return jax.lax.cond(j + 2 <= length, run, lambda carry: carry, carry), None

    def chunk(carry, first):
        def run(carry):
            return jax.lax.scan(stage, carry, first + jnp.arange(CHUNK))[0]
        return jax.lax.cond(first + 2 <= length, run, lambda carry: carry, carry), None

    y1 = y + (h * tables["mu1"][index]) * f0
    if rows.shape[0] == 0:  # every stage count in range has one recurrence stage: no rows to trace
        return y1, length
    (_, y_last), _ = jax.lax.scan(chunk, (y, y1), jnp.arange(0, rows.shape[0], CHUNK))
    return y_last, length
