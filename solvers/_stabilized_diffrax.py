"""The stabilized methods (RKC, RKL2, ROCK2, ROCK4) as a diffrax solver, for every JAX path.

The same recurrence coefficients as the NumPy executor (the method modules' cached
:class:`~dxdt.solvers._stabilized.Recurrence` per stage count), stacked for all stage
counts in ``[min_stages, max_stages]`` and zero-padded, so the stage count is a traced
index chosen inside the step: ``s`` = the fewest stages with ``beta(s) >= h rho``. The
recurrence runs as a ``lax.scan`` over the longest recurrence whose body evaluates ``f``
under ``lax.cond`` only for the stages of the chosen ``s``: it costs ``s`` evaluations and
stays differentiable in forward and reverse mode (the checkpoint adjoint differentiates
it). The spectral radius comes from the nonlinear power iteration of the NumPy side,
carried in the solver state: ``INIT_ITERATIONS`` at the start, ``STEP_ITERATIONS``
warm-started ones per step; or, when the caller passes ``spectral_radius`` (the JAX
backend does for a user's ``eigen_est``, see :mod:`dxdt.sensitivity._estimate`), from
that function, every step; a value that is not finite and >= 0 takes the most stages. Either way outside the derivative (``stop_gradient``: the stage
count is not differentiated). The error estimate and the cubic Hermite dense output are
those of the NumPy executor.

The solver state also counts, over the accepted steps, the ``f`` evaluations (power
iterations included), the largest stage count and the spectral-radius estimates
(:data:`COUNTERS`); diffrax discards a rejected step's solver state, so
:func:`solve_stats` adds the rejected steps: exactly for their power iterations, finishing
stages and estimates, and at the largest stage count used for their recurrence stages.

Imported only on a JAX path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._stabilized import SAFETY, AbstractStabilized, stage_table

INIT_ITERATIONS = 20  # power iterations before the first step
STEP_ITERATIONS = 2  # per step, from the previous step's direction
POWER_SEED = 20260101
COUNTERS = ("nfev", "max_stages_used", "n_eigen_est")  # the last entry of the solver state
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


def _power_iteration(f, t, y, fy, v, iterations: int):
    """``(sigma, v)``: ``|J v|`` for the unit ``v`` after ``iterations`` steps of rkc.f's
    nonlinear power iteration ``J v ~ (f(y + d v) - f(y)) / d``, ``d = sqrt(eps) ||y||``."""
    eps = jnp.finfo(y.dtype).eps
    y_norm = jnp.linalg.norm(y)
    d = jnp.sqrt(eps) * jnp.where(y_norm > 0, y_norm, 1.0)

    def body(_, carry):
        v, sigma = carry
        v_norm = jnp.linalg.norm(v)
        unit = jnp.where(v_norm > 0, v / jnp.where(v_norm > 0, v_norm, 1.0), 1.0 / jnp.sqrt(v.size))
        jv = (f(t, y + d * unit) - fy) / d
        finite = jnp.all(jnp.isfinite(jv))
        return jnp.where(finite, jv, unit), jnp.where(finite, jnp.linalg.norm(jv), jnp.inf)

    v, sigma = jax.lax.fori_loop(0, iterations, body, (v, jnp.zeros((), y.dtype)))
    return sigma, v


class StabilizedSolver(diffrax.AbstractAdaptiveSolver):
    """diffrax solver running a :class:`~dxdt.solvers.AbstractStabilized` method.

    ``spectral_radius(t, y, args)``, when given, is an upper bound of the spectral radius
    of the vector field's Jacobian at ``(t, y)`` in the solve's own time unit (before the
    safety factor); otherwise (and unless the stage count is forced) the power iteration
    estimates it. State: ``(F_0, v, counters)``, the derivative at the step's start
    (FSAL), the last power-iteration direction and the integer :data:`COUNTERS` of the
    accepted steps.
    """

    method: Any = eqx.field(static=True)
    spectral_radius: Callable | None = eqx.field(static=True, default=None)
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
        v = jax.random.normal(jax.random.PRNGKey(POWER_SEED), flat.shape, flat.dtype)
        nfev = 1
        if self._estimating == "power":
            _, v = _power_iteration(f, t0, flat, f0, v, INIT_ITERATIONS)
            nfev += INIT_ITERATIONS
        return f0, v, jnp.array([nfev, 0, 0])

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        flat, unravel = ravel_pytree(y0)
        f = _flat_field(terms, args, unravel)
        f0, v, counters = solver_state
        f0 = jax.lax.cond(made_jump, lambda: f(t0, flat), lambda: f0)
        h = t1 - t0
        tables = {k: jnp.asarray(a, flat.dtype if a.dtype.kind == "f" else a.dtype)
                  for k, a in coefficient_tables(self.method).items()}
        estimating = self._estimating
        if estimating is None:
            index = jnp.asarray(0)
        else:
            if estimating == "power":
                sigma, v = _power_iteration(f, t0, jax.lax.stop_gradient(flat),
                                            jax.lax.stop_gradient(f0), jax.lax.stop_gradient(v),
                                            STEP_ITERATIONS)
            else:
                sigma = jax.lax.stop_gradient(
                    self.spectral_radius(t0, jax.lax.stop_gradient(y0), args))
                sigma = jnp.where(jnp.isfinite(sigma) & (sigma >= 0), sigma, jnp.inf)
            h_rho = jax.lax.stop_gradient(jnp.abs(h) * SAFETY * sigma)
            index = jnp.minimum(jnp.searchsorted(tables["beta"], h_rho), len(tables["beta"]) - 1)
        y_last, length = _recurrence(f, tables, index, t0, h, flat, f0)
        t_m = t0 + tables["c"][index, length] * h
        calls = []  # the finishing stages' f evaluations, counted while tracing

        def f_counted(t, y):
            calls.append(None)
            return f(t, y)

        y1, err, f1 = self.method.finish_jax(f_counted, y_last, t_m, t1, h, tables["finish"][index])
        if f1 is None:
            f1 = f_counted(t1, y1)
        if err is None:  # (12 (u_n - u_{n+1}) + 6 h (F_0 + F_1)) / 15, rkc.f
            err = 0.8 * (flat - y1) + 0.4 * h * (f0 + f1)
        spent = (per_attempt_calls(estimating, len(calls)) + (length - 1)
                 + jnp.asarray(made_jump, counters.dtype))
        counters = jnp.stack([counters[0] + spent,
                              jnp.maximum(counters[1], tables["counts"][index]),
                              counters[2] + (estimating is not None)])
        dense_info = dict(y0=y0, y1=unravel(y1), k0=unravel(h * f0), k1=unravel(h * f1))
        return unravel(y1), unravel(err), dense_info, (f1, v, counters), diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def per_attempt_calls(estimating: str | None, finishing: int) -> int:
    """``f`` evaluations of every step attempt besides the recurrence's ``m - 1``: the power
    iteration's and the ``finishing`` ones (``f(u_{n+1})`` included)."""
    return (STEP_ITERATIONS if estimating == "power" else 0) + finishing


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


def stabilized_counters(solution) -> jax.Array:
    """The :data:`COUNTERS` of a diffrax solution saved with ``SaveAt(solver_state=True)``."""
    return solution.solver_state[2]


def solve_stats(method: AbstractStabilized, counters, accepted: int, rejected: int,
                given_estimate: bool) -> dict:
    """``nfev``, ``max_stages_used`` and ``n_eigen_est`` of a solve, from the accepted
    steps' ``counters`` and the number of ``rejected`` steps (see the module docstring).

    ``given_estimate``: the solve used a ``spectral_radius`` (a callable ``eigen_est``
    counts as an estimate per step, a float does not).
    """
    nfev, largest, estimates = (int(c) for c in counters)
    if method.forced:
        estimating = None
    elif given_estimate:
        estimating = "given"
    else:
        estimating = "power"
    if rejected:
        recurrence = method.recurrence(max(largest, method.stage_counts()[0]))
        nfev += rejected * (per_attempt_calls(estimating, finishing_calls(method))
                            + len(recurrence.rows))
        estimates += rejected * (estimating is not None)
    if estimating == "power":
        estimates += 1  # the power iteration before the first step
    elif not callable(method.eigen_est):
        estimates = 0  # a float eigen_est is not an estimate
    return {"nfev": nfev, "max_stages_used": largest, "n_eigen_est": estimates}


def _flat_field(terms, args, unravel):
    def f(t, y):
        return ravel_pytree(terms.vf(t, unravel(y), args))[0]
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
    (_, y_last), _ = jax.lax.scan(chunk, (y, y1), jnp.arange(0, rows.shape[0], CHUNK))
    return y_last, length
