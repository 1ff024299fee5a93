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

import functools
from dataclasses import dataclass
from typing import Callable


from ._adjoint import (BACKSOLVE_MISMATCH, SecondOrderSystem, StackedAdjointSystem, adjoint_pass,
                       chunked_interpolating_adjoint, first_dense_chunk)
from ._jax import load_jax
from ._ode import SolveOptions, odeint

jax, jnp = load_jax()


@dataclass(frozen=True, eq=False)
class SolveStatic:
    """What ``jax_solve`` fixes when it builds ``F`` (hashed by identity: a static argument)."""

    g: Callable  # g(u, p, t) -> du, pure JAX
    options: SolveOptions
    adjoint: str  # "interpolating", "checkpoint" or "backsolve"
    dense_steps: int  # step buffer of the interpolating adjoint's dense forward solve (a chunk)
    n_x: int  # leaves of x = (u0, p): the leading arguments of every linear map
    max_chunks: int = 1  # checkpoints of the interpolating adjoint's chunked forward sweep


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True, eq=False)
class SolveSpec:
    """One solve of ``F``: its :class:`SolveStatic` and its times, ``t0``, ``t1`` and the
    save times, as arrays.

    A pytree whose leaves are the static part (a non-array leaf: static wherever a
    primitive is bound), the three time arrays and the ``first_chunk`` (operands, traced
    like any array): the solves of a chain of segments (:mod:`._jax_solve_events`) share
    one static part and so one trace and compilation of each pass, whatever their times.

    ``first_chunk``: where the solve is differentiated with the interpolating adjoint,
    the first chunk of its dense forward sweep (:func:`._adjoint.first_dense_chunk`),
    solved by the primal (:func:`dense_primal_with_code`) and held for the adjoint, so
    that a reverse derivative solves the state forward once; ``None`` elsewhere. A cache
    of what ``(u0, p)`` determine: it carries no derivative.
    """

    static: SolveStatic
    t0: jax.Array
    t1: jax.Array
    saveat: jax.Array  # (n_save,)
    first_chunk: object = None  # (Solved, code) or None

    @classmethod
    def of(cls, static: SolveStatic, t0, t1, saveat) -> SolveSpec:
        dtype = jnp.result_type(float)
        return cls(static, jnp.asarray(t0, dtype), jnp.asarray(t1, dtype), jnp.asarray(saveat, dtype))

    def tree_flatten(self):
        return (self.static, self.t0, self.t1, self.saveat, self.first_chunk), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    @property
    def times(self) -> tuple:
        return self.t0, self.t1, self.saveat

    @property
    def operands(self) -> tuple:
        """The traced part: the times and the first chunk."""
        return self.t0, self.t1, self.saveat, self.first_chunk

    def __getattr__(self, name):  # g, options, adjoint, dense_steps, n_x, max_chunks
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.static, name)

    @property
    def n_save(self) -> int:
        return self.saveat.shape[0]

    def rhs(self, t, u, p):
        return self.g(u, p, t)


@functools.cache
def jit_pass(pass_: Callable) -> Callable:
    """``pass_(spec, *args)`` jitted with ``spec.static`` static and its operands traced."""
    jitted = _traced_once(pass_)

    @functools.wraps(pass_)
    def run(spec, *args):
        return jitted(spec.static, spec.operands, *args)
    return run


def nan_unless(ok, tree):
    """``tree`` where ``ok``, NaN elsewhere, and so are its derivatives: ``x * (1 or NaN)``
    is linear in ``x``, so that a reverse pass sends NaN back where ``ok`` is false, not
    the zero cotangent of ``where(ok, x, nan)`` (a gradient of exactly 0 through a failed
    solve, which an optimiser takes for convergence)."""
    def leaf(x):
        return x * jnp.where(ok, 1.0, jnp.nan).astype(jnp.real(x).dtype)
    return jax.tree_util.tree_map(leaf, tree)


def primal_with_code(spec: SolveSpec, u0, p):
    """``(u(saveat), status code)``; the states are NaN unless the code is 0."""
    sol, code = odeint(spec.rhs, u0, p, spec.t0, spec.t1, spec.options, ts=jnp.asarray(spec.saveat),
                       spectral_radius=spec.options.spectral_radius())
    return nan_unless(code == 0, sol.ys[:-1]), code


def primal(spec: SolveSpec, u0, p):
    return primal_with_code(spec, u0, p)[0]


def dense_primal_with_code(spec: SolveSpec, u0, p):
    """``(u(saveat), status code, first chunk)``: :func:`primal_with_code` by the first
    chunk of the interpolating adjoint's dense sweep (:func:`._adjoint.first_dense_chunk`),
    the rows read from its dense output, for the adjoint to reuse (``SolveSpec.first_chunk``).
    Where that chunk's buffer of ``spec.dense_steps`` steps did not reach ``t1`` (code 1),
    the rows come from :func:`primal_with_code` (the adjoint then sweeps in chunks)."""
    chunk = first_dense_chunk(spec.g, u0, p, spec.t0, spec.t1, spec.options, chunk_steps=spec.dense_steps)
    fwd, code = chunk

    def from_chunk():
        rows = jax.vmap(fwd.evaluate)(jnp.asarray(spec.saveat))
        return nan_unless(code == 0, rows), code

    rows, code = jax.lax.cond(code == 1, lambda: primal_with_code(spec, u0, p), from_chunk)
    return rows, code, chunk


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
    return nan_unless(code == 0, jnp.swapaxes(sol.ys[1][:-1], 0, 1))


def _stacking(stacked_pass, spec: SolveSpec, n_shared: int):
    """``stacked_pass(spec, *shared, *directions)``, whose ``n_shared`` leading arguments
    after ``spec`` are shared and whose others carry ``m`` directions on a leading axis
    (the result too), with a ``vmap`` rule that keeps one solve for all of them.

    A ``vmap`` over directions only (``jax.jacfwd``, ``jax.jacrev``, ``jax.hessian``:
    the shared arguments unbatched) merges the mapped directions into the stacked axis:
    one solve carries them all, instead of one solve per direction run in lockstep (each
    repeating the shared parts, with its own step sequence, and slow to trace: ``vmap``
    of a whole solve). A ``vmap`` of size 1 (``jax.jacrev`` of a scalar) is removed. A
    ``vmap`` that maps a shared argument (or the solve's times) maps the stacked solve
    (one per member).
    """
    stacked = functools.partial(_traced_once(stacked_pass), spec.static)
    n_shared += 1  # the operands (times, first chunk) come first

    @jax.custom_batching.custom_vmap
    def run(*args):
        return stacked(*args)

    @run.def_vmap
    def rule(axis_size, in_batched, *args):
        batched = tuple(in_batched)
        if axis_size == 1:
            args = jax.tree_util.tree_map(lambda a, b: a[0] if b else a, args, batched)
            return _all_batched(jax.tree_util.tree_map(lambda a: a[None], run(*args)))
        if any(jax.tree_util.tree_leaves(batched[:n_shared])):
            if any(jax.tree_util.tree_leaves(batched[0][3])):  # see below
                args, batched = _without_first_chunk(args), _without_first_chunk(batched)
            in_axes = jax.tree_util.tree_map(lambda b: 0 if b else None, batched)
            return _all_batched(jax.vmap(stacked, in_axes=in_axes)(*args))

        def merge(x, b):  # (axis_size, m, ...) -> (axis_size * m, ...)
            x = x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
            return x.reshape((-1,) + x.shape[2:])

        directions = jax.tree_util.tree_map(merge, args[n_shared:], batched[n_shared:])
        out = run(*args[:n_shared], *directions)
        return _all_batched(jax.tree_util.tree_map(lambda c: c.reshape((axis_size, -1) + c.shape[1:]), out))

    return lambda *args: run(spec.operands, *args)


@functools.cache
def _traced_once(pass_):
    """``pass_(static, operands, *args)``, jitted with ``static`` static and the operands
    (times, first chunk) traced,
    one per pass: ``custom_vmap`` traces its function at every level of ``vmap`` it meets
    (``jax.hessian``: three), and a pass traced again for the same shapes is then found in
    JAX's cache instead (a chunked adjoint costs 1-3 s to trace); so is the pass of another
    solve with the same static part (a segment of a chain)."""
    return jax.jit(lambda static, operands, *args: pass_(SolveSpec(static, *operands), *args), static_argnums=0)


def _without_first_chunk(args):
    """A stacked pass's arguments without the primal's first chunk (``operands[3]``).

    Under a ``vmap`` over members the chunk is batched, and so is the interpolating
    adjoint's test of whether its loop is in its first pass (a batched loop batches every
    carry): its conditional would run both branches, saving no solve and copying the
    chunk for every member (Gray-Scott 32 ``vmap(grad)`` took 3.5x as long so)."""
    (t0, t1, saveat, _), *rest = args
    return ((t0, t1, saveat, None), *rest)


def _all_batched(tree):
    """A ``custom_vmap`` rule's result: ``tree`` and its batching spec (every leaf mapped)."""
    return tree, jax.tree_util.tree_map(lambda _: True, tree)


def _one_direction(stacked_pass, spec: SolveSpec, n_shared: int, *args):
    """``stacked_pass`` (see :func:`_stacking`) for a single direction, given without
    the stacked axis: a ``vmap`` over it stacks the mapped directions into one solve."""
    shared, direction = args[:n_shared], jax.tree_util.tree_map(lambda a: a[None], args[n_shared:])
    out = _stacking(stacked_pass, spec, n_shared)(*shared, *direction)
    return jax.tree_util.tree_map(lambda c: c[0], out)


def tangent(spec: SolveSpec, u0, p, v0, vp):
    """``F'(x) v``, shape ``(n_save, *u0.shape)``; under ``jax.jacfwd`` one solve carries
    every direction (:func:`_stacked_tangents`, see :func:`_stacking`)."""
    return _one_direction(_stacked_tangents, spec, 2, u0, p, v0, vp)


def _interpolating(spec: SolveSpec, w, u0, p, system=None):
    """``(lambda(t0), mu(t0), code)`` of the chunked interpolating adjoint of ``spec``'s
    solve (of an augmented ``system`` of it if given), starting from the primal's first
    chunk where the sweep is the field's own (``spec.first_chunk``)."""
    own_sweep = system is None or isinstance(system, StackedAdjointSystem)
    return chunked_interpolating_adjoint(spec.g, w, u0, p, spec.t0, spec.t1, jnp.asarray(spec.saveat),
                                         spec.options, chunk_steps=spec.dense_steps,
                                         max_chunks=spec.max_chunks, system=system,
                                         first_chunk=spec.first_chunk if own_sweep else None)


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
        lam, mu, code = _interpolating(spec, w, u0, p)
        return (lam, mu), code == 0
    fwd, code = odeint(spec.rhs, u0, p, spec.t0, spec.t1, spec.options, ts=saveat,
                       spectral_radius=spec.options.spectral_radius())
    lam, mu, code_adj, mismatch = adjoint_pass(spec.g, w, fwd, u0, p, spec.t0, spec.t1, saveat,
                                               spec.options, kind=spec.adjoint)
    return (lam, mu), (code == 0) & (code_adj == 0) & (mismatch <= BACKSOLVE_MISMATCH)


def _stacked_adjoints(spec: SolveSpec, u0, p, W):
    """``F'(x)^T w_j`` for the ``m`` cotangents stacked on the leading axis of ``W``; more
    than one by the interpolating adjoint of :class:`._adjoint.StackedAdjointSystem` (one
    forward and one backward solve for all)."""
    m = W.shape[0]
    if m == 1:  # the plain adjoint (jax.grad)
        grads, ok = _adjoint_with_code(spec, u0, p, W[0])
        return jax.tree_util.tree_map(lambda a: a[None], nan_unless(ok, grads))
    lam, mu, code = _interpolating(spec, jnp.swapaxes(W, 0, 1), u0, p, StackedAdjointSystem(spec.g, m))
    return nan_unless(code == 0, (lam, mu))


def _cast_like(tree, like):
    """``tree``'s leaves in the dtypes of ``like``'s: a cotangent of ``(u0, p)`` has their
    dtypes (the solves run in float64; a float32 ``p`` gets a float32 cotangent)."""
    return jax.tree_util.tree_map(lambda x, y: x.astype(jnp.result_type(y)), tree, like)


def adjoint(spec: SolveSpec, u0, p, w):
    """``F'(x)^T w`` as ``(cotangent of u0, cotangent of p)``; under ``jax.jacrev`` (or a
    forward derivative of a gradient) one interpolating adjoint solve carries every
    cotangent (:func:`_stacking`)."""
    if spec.adjoint != "checkpoint" and jnp.iscomplexobj(u0):
        raise ValueError(f"adjoint={spec.adjoint!r} supports real states only; for a complex state "
                         "use adjoint='checkpoint' (jax.grad) or forward mode (jax.jacfwd)")
    if spec.adjoint != "interpolating":
        grads, ok = _adjoint_with_code(spec, u0, p, w)
        return _cast_like(nan_unless(ok, grads), (u0, p))
    return _cast_like(_one_direction(_stacked_adjoints, spec, 2, u0, p, w), (u0, p))


def second_tangent(spec: SolveSpec, u0, p, v0, vp, d0, dp):
    """``F''(x)[v, d]``: the tangent solve differentiated forward in ``x`` along ``d``."""
    _, dS, code = jax.jvp(lambda a, b: _tangent_with_code(spec, a, b, v0, vp), (u0, p), (d0, dp),
                          has_aux=True)
    return nan_unless(code == 0, dS)


def _stacked_second_adjoints(spec: SolveSpec, u0, p, w, D0, Dp, DW):
    """``D(x; w, d_j, dw_j) = C(x; w, d_j) + F'(x)^T dw_j`` for the ``m`` directions stacked
    on the leading axis of ``(D0, Dp, DW)`` (the interpolating adjoint): one solve of
    :class:`._adjoint.SecondOrderSystem`, whose second adjoints ``Lambda_j`` jump by
    ``dw_j`` at the save times (``lambda`` by ``w``), so that the derivative of a gradient
    whose cotangent also moves (``jax.hessian``, ``jvp(grad)``) costs one solve, not a
    second adjoint and a separate first one. ``(dL/du0, dL/dp)``-shaped with a leading
    axis ``m``, NaN where a solve failed."""
    jumps = (w, jnp.swapaxes(DW, 0, 1))
    (_, Lam), (_, M), code = _interpolating(spec, jumps, (u0, D0), (p, Dp), SecondOrderSystem(spec.g))
    return nan_unless(code == 0, (Lam, M))


def second_adjoint(spec: SolveSpec, u0, p, w, d0, dp, dw=None):
    """``D(x; w, d, dw) = (d/dx F'(x)^T w) d + F'(x)^T dw``: the adjoint solve
    differentiated forward along ``x -> x + e d``, ``w -> w + e dw`` (``dw=None``: zero;
    the interpolating adjoint: :func:`_stacked_second_adjoints`, ``w`` shared, whose
    ``jax.hessian`` carries every direction in one solve; backsolve: forward mode through
    its solves)."""
    dw = jnp.zeros_like(w) if dw is None else dw
    if spec.adjoint == "interpolating":
        return _cast_like(_one_direction(_stacked_second_adjoints, spec, 3, u0, p, w, d0, dp, dw), (u0, p))
    _, d_grads, ok = jax.jvp(lambda a, b, c: _adjoint_with_code(spec, a, b, c), (u0, p, w),
                             (d0, dp, dw), has_aux=True)
    return _cast_like(nan_unless(ok, d_grads), (u0, p))
