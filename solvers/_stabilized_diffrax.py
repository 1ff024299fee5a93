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
warm-started ones per step, outside the derivative (``stop_gradient``: the stage count is
not differentiated). ``eigen_est`` is used by the NumPy backend only, because the JAX
paths integrate in rescaled time. The error estimate and the cubic Hermite dense output
are those of the NumPy executor.

Imported only on a JAX path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

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


@lru_cache(maxsize=None)
def coefficient_tables(method: AbstractStabilized) -> dict[str, np.ndarray]:
    """The recurrences of every stage count in range, zero-padded to the longest."""
    counts, beta = stage_table(method)
    recurrences = [method.recurrence(int(s)) for s in counts]
    lengths = np.array([len(r.c) - 1 for r in recurrences])
    longest = int(lengths.max())
    rows = np.zeros((len(counts), max(longest - 1, 0), 5))
    c = np.zeros((len(counts), longest + 1))
    finish = np.zeros((len(counts), max(len(r.finish) for r in recurrences)))
    for i, rec in enumerate(recurrences):
        rows[i, : len(rec.rows)] = rec.rows
        c[i, : len(rec.c)] = rec.c
        finish[i, : len(rec.finish)] = rec.finish
    return dict(beta=beta, lengths=lengths, mu1=np.array([r.mu1 for r in recurrences]),
                rows=rows, c=c, finish=finish)


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

    State: ``(F_0, v)``, the derivative at the step's start (FSAL) and the last
    power-iteration direction.
    """

    method: Any = eqx.field(static=True)
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation

    def order(self, terms):
        return self.method.order

    def error_order(self, terms):
        return self.method.error_order + 1

    def init(self, terms, t0, t1, y0, args):
        flat, unravel = ravel_pytree(y0)
        f = _flat_field(terms, args, unravel)
        f0 = f(t0, flat)
        v = jax.random.normal(jax.random.PRNGKey(POWER_SEED), flat.shape, flat.dtype)
        if not self.method.forced:
            _, v = _power_iteration(f, t0, flat, f0, v, INIT_ITERATIONS)
        return f0, v

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        flat, unravel = ravel_pytree(y0)
        f = _flat_field(terms, args, unravel)
        f0, v = solver_state
        f0 = jax.lax.cond(made_jump, lambda: f(t0, flat), lambda: f0)
        h = t1 - t0
        tables = {k: jnp.asarray(a, flat.dtype if a.dtype.kind == "f" else a.dtype)
                  for k, a in coefficient_tables(self.method).items()}
        if self.method.forced:
            index = jnp.asarray(0)
        else:
            sigma, v = _power_iteration(f, t0, jax.lax.stop_gradient(flat),
                                        jax.lax.stop_gradient(f0), jax.lax.stop_gradient(v),
                                        STEP_ITERATIONS)
            h_rho = jax.lax.stop_gradient(jnp.abs(h) * SAFETY * sigma)
            index = jnp.minimum(jnp.searchsorted(tables["beta"], h_rho), len(tables["beta"]) - 1)
        y_last, length = _recurrence(f, tables, index, t0, h, flat, f0)
        t_m = t0 + tables["c"][index, length] * h
        y1, err, f1 = self.method.finish_jax(f, y_last, t_m, t1, h, tables["finish"][index])
        if f1 is None:
            f1 = f(t1, y1)
        if err is None:  # (12 (u_n - u_{n+1}) + 6 h (F_0 + F_1)) / 15, rkc.f
            err = 0.8 * (flat - y1) + 0.4 * h * (f0 + f1)
        dense_info = dict(y0=y0, y1=unravel(y1), k0=unravel(h * f0), k1=unravel(h * f1))
        return unravel(y1), unravel(err), dense_info, (f1, v), diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def _flat_field(terms, args, unravel):
    def f(t, y):
        return ravel_pytree(terms.vf(t, unravel(y), args))[0]
    return f


def _recurrence(f, tables, index, t0, h, y, f0):
    """``(Y_m, m)``: the three-term recurrence of the chosen stage count."""
    length = tables["lengths"][index]
    rows, c = tables["rows"][index], tables["c"][index]

    def stage(carry, j):  # stage j + 2
        def run(carry):
            y_prev, y_cur = carry
            k = f(t0 + c[j + 1] * h, y_cur)
            w = rows[j]
            return y_cur, w[0] * y_cur + w[1] * y + (w[2] * h) * f0 + (w[3] * h) * k + w[4] * y_prev
        return jax.lax.cond(j + 2 <= length, run, lambda carry: carry, carry), None

    y1 = y + (h * tables["mu1"][index]) * f0
    (_, y_last), _ = jax.lax.scan(stage, (y, y1), jnp.arange(rows.shape[0]))
    return y_last, length
