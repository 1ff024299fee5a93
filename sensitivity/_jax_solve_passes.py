"""The solves behind :func:`dxdt.sensitivity.jax_solve`, as pure JAX functions of ``(u0, p)``.

``primal`` is ``F(x) = u(saveat)``, ``x = (u0, p)``; ``tangent`` its forward sensitivity
``F'(x) v`` (state and tangent solved together, the tangent inside the error norm, as in
:mod:`._forward`); ``adjoint`` its transpose ``F'(x)^T w`` by the chosen adjoint (the
continuous adjoints of :mod:`._adjoint`, or the discrete one by reverse-mode AD of the
steps); ``second_tangent`` and ``second_adjoint`` are the forward derivatives in ``x`` of
the last two (forward mode through plain diffrax solves). Each returns NaN where one of its
solves failed, so a failure inside a trace never gives a finite wrong value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._adjoint import BACKSOLVE_MISMATCH, adjoint_pass, chunked_interpolating_adjoint
from ._jax import load_jax
from ._ode import SolveOptions, odeint

jax, jnp = load_jax()


@dataclass(frozen=True, eq=False)
class SolveSpec:
    """Everything fixed when ``jax_solve`` builds ``F`` (hashed by identity: a static argument)."""

    g: Callable  # g(u, p, t) -> du, pure JAX
    t0: float
    t1: float
    saveat: np.ndarray  # (n_save,)
    options: SolveOptions
    adjoint: str  # "interpolating", "checkpoint" or "backsolve"
    dense_steps: int  # step buffer of the interpolating adjoint's dense forward solve (a chunk)
    n_x: int  # leaves of x = (u0, p): the leading arguments of every linear map
    max_chunks: int = 1  # checkpoints of the interpolating adjoint's chunked forward sweep

    @property
    def n_save(self) -> int:
        return self.saveat.shape[0]

    def rhs(self, t, u, p):
        return self.g(u, p, t)


def _nan_unless(ok, tree):
    return jax.tree_util.tree_map(lambda x: jnp.where(ok, x, jnp.nan), tree)


def primal_with_code(spec: SolveSpec, u0, p):
    """``(u(saveat), status code)``; the states are NaN unless the code is 0."""
    sol, code = odeint(spec.rhs, u0, p, spec.t0, spec.t1, spec.options, ts=jnp.asarray(spec.saveat),
                       spectral_radius=spec.options.spectral_radius())
    return _nan_unless(code == 0, sol.ys[:-1]), code


def primal(spec: SolveSpec, u0, p):
    return primal_with_code(spec, u0, p)[0]


def _tangent_with_code(spec: SolveSpec, u0, p, v0, vp):
    def field(t, z, args):
        u, s = z
        q, dq = args
        return jax.jvp(lambda uu, qq: spec.g(uu, qq, t), (u, q), (s, dq))

    sol, code = odeint(field, (u0, v0), (p, vp), spec.t0, spec.t1, spec.options,
                       ts=jnp.asarray(spec.saveat),
                       spectral_radius=spec.options.spectral_radius(lambda t, z, a: (t, z[0], a[0])))
    return sol.ys[1][:-1], code


def _stacked_tangents(spec: SolveSpec, u0, p, V0, Vp):
    """``F'(x) v_j`` for the ``m`` directions stacked on the leading axis of ``(V0, Vp)``.

    One solve of the state and all ``m`` tangents (the state shared, ``f`` linearised once
    per stage and pushed along every direction, all tangents inside the error norm, as in
    :mod:`._forward`); shape ``(m, n_save, *u0.shape)``, NaN where the solve failed.
    """
    def field(t, z, q):
        u, S = z
        du, push = jax.linearize(lambda uu, qq: spec.g(uu, qq, t), u, q)
        return du, jax.vmap(push)(S, Vp)

    sol, code = odeint(field, (u0, V0), p, spec.t0, spec.t1, spec.options, ts=jnp.asarray(spec.saveat),
                       spectral_radius=spec.options.spectral_radius(lambda t, z, a: (t, z[0], a)))
    return _nan_unless(code == 0, jnp.swapaxes(sol.ys[1][:-1], 0, 1))


def _tangents(spec: SolveSpec, u0, p, V0, Vp):
    """:func:`_stacked_tangents` whose ``vmap`` over directions only (``jax.jacfwd``: ``x``
    unbatched) stacks the mapped directions into the same solve, instead of one solve per
    direction run in lockstep (each repeating the state, with its own step sequence);
    a ``vmap`` that maps ``x`` too maps the stacked solve (one solve per member).
    """
    @jax.custom_batching.custom_vmap
    def stacked(u0, p, V0, Vp):
        return _stacked_tangents(spec, u0, p, V0, Vp)

    @stacked.def_vmap
    def rule(axis_size, in_batched, u0, p, V0, Vp):
        x_batched, v_batched = in_batched[:2], in_batched[2:]
        if any(jax.tree_util.tree_leaves(x_batched)):
            in_axes = jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(in_batched))
            return jax.vmap(lambda *a: _stacked_tangents(spec, *a), in_axes=in_axes)(u0, p, V0, Vp), True

        def merge(x, b):  # (axis_size, m, ...) -> (axis_size * m, ...)
            x = x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
            return x.reshape((-1,) + x.shape[2:])

        V0, Vp = jax.tree_util.tree_map(merge, (V0, Vp), tuple(v_batched))
        S = _tangents(spec, u0, p, V0, Vp)
        return S.reshape((axis_size, -1) + S.shape[1:]), True

    return stacked(u0, p, V0, Vp)


def tangent(spec: SolveSpec, u0, p, v0, vp):
    """``F'(x) v``, shape ``(n_save, *u0.shape)``; under ``jax.jacfwd`` one solve carries
    every direction (see :func:`_tangents`)."""
    V0, Vp = jax.tree_util.tree_map(lambda a: a[None], (v0, vp))
    return _tangents(spec, u0, p, V0, Vp)[0]


def _adjoint_with_code(spec: SolveSpec, u0, p, w):
    """``((dL/du0, dL/dp), ok)`` for the cotangent ``w = dL/du(saveat)``."""
    saveat = jnp.asarray(spec.saveat)
    if spec.adjoint == "checkpoint":
        def states(a, b):
            sol, code = odeint(spec.rhs, a, b, spec.t0, spec.t1, spec.options, ts=saveat,
                               differentiable="reverse", spectral_radius=spec.options.spectral_radius())
            return sol.ys[:-1], code

        _, vjp, code = jax.vjp(states, u0, p, has_aux=True)
        return vjp(w), code == 0
    if spec.adjoint == "interpolating":  # the dense forward solve in chunks of spec.dense_steps
        lam, mu, code = chunked_interpolating_adjoint(spec.g, w, u0, p, spec.t0, spec.t1, saveat, spec.options,
                                                      chunk_steps=spec.dense_steps, max_chunks=spec.max_chunks)
        return (lam, mu), code == 0
    fwd, code = odeint(spec.rhs, u0, p, spec.t0, spec.t1, spec.options, ts=saveat,
                       spectral_radius=spec.options.spectral_radius())
    lam, mu, code_adj, mismatch = adjoint_pass(spec.g, w, fwd, u0, p, spec.t0, spec.t1, saveat,
                                               spec.options, kind=spec.adjoint)
    return (lam, mu), (code == 0) & (code_adj == 0) & (mismatch <= BACKSOLVE_MISMATCH)


def adjoint(spec: SolveSpec, u0, p, w):
    """``F'(x)^T w`` as ``(cotangent of u0, cotangent of p)``."""
    grads, ok = _adjoint_with_code(spec, u0, p, w)
    return _nan_unless(ok, grads)


def second_tangent(spec: SolveSpec, u0, p, v0, vp, d0, dp):
    """``F''(x)[v, d]``: the tangent solve differentiated forward in ``x`` along ``d``."""
    _, dS, code = jax.jvp(lambda a, b: _tangent_with_code(spec, a, b, v0, vp), (u0, p), (d0, dp),
                          has_aux=True)
    return _nan_unless(code == 0, dS)


def second_adjoint(spec: SolveSpec, u0, p, w, d0, dp):
    """``(d/dx F'(x)^T w) d``: the adjoint solve differentiated forward in ``x`` along ``d``."""
    _, d_grads, ok = jax.jvp(lambda a, b: _adjoint_with_code(spec, a, b, w), (u0, p), (d0, dp),
                             has_aux=True)
    return _nan_unless(ok, d_grads)
