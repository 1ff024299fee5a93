"""Pure JAX functions of the target for each strategy: the value and gradient, the
trajectory Jacobian, and their forward derivatives (second order).

Every function returns ``(result, aux)`` where ``aux`` holds the solves' status codes
and diagnostics, checked on the host after the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ._jax import load_jax

jax, jnp = load_jax()  # first: JAX is imported once, under its lock
from jax.flatten_util import ravel_pytree  # noqa: E402

from ._adjoint import adjoint_pass
from ._forward import contract, trajectory_tangents
from ._ode import SolveOptions, odeint
from ._options import LOSS_DERIVATIVE_NONFINITE, LOSS_NONFINITE


@dataclass(frozen=True, eq=False)
class Setup:
    """Everything fixed at preparation: the translated ``f`` and loss, data, options."""

    g: Callable  # g(u, p, t) -> du, pure JAX
    loss: Callable | None  # loss(U, p) -> scalar, pure JAX
    target: Any  # _target.Target
    u0: Any
    p: Any
    t0: float
    t1: float
    saveat: Any  # jnp array (n_save,)
    options: SolveOptions
    dense_steps: int  # step buffer of dense forward solves (diffrax sizes it statically)

    def rhs(self, t, u, p):
        return self.g(u, p, t)


def _tree_add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _loss_cotangents(setup: Setup, U, theta):
    """``L(U, p)``, ``dL/dU``, the direct ``dL/dtheta`` (through ``p`` in the loss) and a
    status code: ``LOSS_NONFINITE`` where the states are finite but ``L`` is not (the loss
    is at fault, not the solve), else 0."""
    def value(U, theta):
        return setup.loss(U, setup.target.merge(theta, setup.u0, setup.p)[1])

    L, vjp = jax.vjp(value, U, theta)
    dU, dtheta = vjp(jnp.ones_like(L))
    return L, dU, dtheta, loss_code(U, L, (dU, dtheta))


def loss_code(U, L, derivatives=()):
    """``LOSS_NONFINITE`` where the states ``U`` are finite and the loss ``L`` is not; else
    ``LOSS_DERIVATIVE_NONFINITE`` where its ``derivatives`` (a pytree) are not; else 0."""
    def finite(tree):
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)] or
                                 [jnp.asarray(True)]))
    states_ok = finite(U)
    return jnp.where(states_ok & ~jnp.isfinite(L), LOSS_NONFINITE,
                     jnp.where(states_ok & ~finite(derivatives), LOSS_DERIVATIVE_NONFINITE, 0))


def _first_failure(state_code, later_code):
    """The state solve's status where it failed (an adjoint over its unfilled rows fails
    too, as "nonfinite", which would hide a "max_steps"), else the later passes'."""
    return jnp.where(state_code != 0, state_code, later_code)


def _from_adjoint(setup: Setup, lam, mu):
    """The target's part of ``(dL/du0, dL/dp) = (lambda(t0), mu(t0))``."""
    wrt = setup.target.wrt
    return lam if wrt == "u0" else mu if wrt == "p" else (lam, mu)


def _no_aux():
    return {"code": jnp.asarray(0), "mismatch": jnp.asarray(0.0), "dense_overflow": jnp.asarray(False),
            "naccept": jnp.asarray(0), "nreject": jnp.asarray(0), "stiffness": jnp.asarray(0.0)}


def _state_solve(setup: Setup, u0, p, kind: str):
    """Forward solve saving at ``saveat`` (and ``t1``); dense output for ``"interpolating"``.

    Returns the solution, its status code and whether the dense step buffer overflowed
    (then the operator is rebuilt with a larger buffer).
    """
    dense = kind == "interpolating"
    steps = min(setup.dense_steps, setup.options.max_steps) if dense else None
    fwd, code = odeint(setup.rhs, u0, p, setup.t0, setup.t1, setup.options,
                       ts=setup.saveat, dense=dense, max_steps=steps,
                       spectral_radius=setup.options.spectral_radius())
    overflow = jnp.asarray(dense and setup.dense_steps < setup.options.max_steps) & (code == 1)
    return fwd, jnp.where(overflow, 0, code), overflow


def value_and_gradient_forward(setup: Setup, theta):
    U, S, code = trajectory_tangents(setup.g, setup.target, theta, setup.u0, setup.p,
                                     setup.t0, setup.t1, setup.saveat, setup.options)
    L, dU, dtheta, bad_loss = _loss_cotangents(setup, U, theta)
    unravel = ravel_pytree(theta)[1]
    return (L, _tree_add(unravel(contract(dU, S)), dtheta)), {**_no_aux(), "code": jnp.maximum(code, bad_loss)}


def value_and_gradient_adjoint(setup: Setup, theta, kind: str):
    """``kind``: ``"interpolating"`` or ``"backsolve"`` (continuous adjoints)."""
    u0, p = setup.target.merge(theta, setup.u0, setup.p)
    fwd, code, overflow = _state_solve(setup, u0, p, kind)
    U = fwd.ys[:-1]
    L, dU, dtheta, bad_loss = _loss_cotangents(setup, U, theta)
    lam, mu, code_adj, mismatch = adjoint_pass(
        setup.g, dU, fwd, u0, p, setup.t0, setup.t1, setup.saveat, setup.options,
        kind=kind, need_mu=setup.target.wrt != "u0")
    grad = _tree_add(_from_adjoint(setup, lam, mu), dtheta)
    aux = {**_no_aux(), "code": _first_failure(code, jnp.maximum(code_adj, bad_loss)), "mismatch": mismatch,
           "dense_overflow": overflow}
    return (L, grad), aux


POWER_ITERATIONS = 20  # for the spectral radius of df/du (a lower estimate is enough)


def spectral_radius(g, u, p, t):
    """Estimate ``rho(df/du)`` by power iteration with Jacobian-vector products."""
    v = jax.random.normal(jax.random.PRNGKey(0), u.shape, dtype=u.dtype)
    push = jax.linearize(lambda uu: g(uu, p, t), u)[1]

    def step(_, v):
        w = push(v / jnp.linalg.norm(v))
        return jnp.where(jnp.all(jnp.isfinite(w)) & (jnp.linalg.norm(w) > 0), w, v)

    w = jax.lax.fori_loop(0, POWER_ITERATIONS, step, v)
    return jnp.linalg.norm(push(w / jnp.linalg.norm(w)))


def value_and_gradient_checkpoint(setup: Setup, theta):
    """Discrete adjoint: reverse-mode AD of the forward steps, with checkpointing.

    ``aux["stiffness"]`` is ``h_mean rho(J) / boundary``: near 1 the step size was set by
    stability rather than accuracy, where the discrete derivative is unreliable.
    """
    def value(theta):
        U, stats = _discrete_states(setup, theta)
        L = setup.loss(U, setup.target.merge(theta, setup.u0, setup.p)[1])
        return L, {**stats, "code": jnp.maximum(stats["code"], loss_code(U, L))}

    (L, stats), grad = jax.value_and_grad(value, has_aux=True)(theta)
    return (L, grad), _discrete_aux(setup, theta, stats)


def _discrete_states(setup: Setup, theta):
    """``(U, stats)``: the states at ``saveat`` by a forward solve that reverse-mode AD
    differentiates step by step (the discrete adjoint), with its status and step counts."""
    u0, p = setup.target.merge(theta, setup.u0, setup.p)
    fwd, code = odeint(setup.rhs, u0, p, setup.t0, setup.t1, setup.options,
                       ts=setup.saveat, differentiable="reverse",
                       spectral_radius=setup.options.spectral_radius())
    stats = {"code": code, "naccept": fwd.stats["num_accepted_steps"],
             "nreject": fwd.stats["num_rejected_steps"], "u1": fwd.ys[-1]}
    return fwd.ys[:-1], stats


def _discrete_aux(setup: Setup, theta, stats):
    """The discrete adjoint's diagnostics, with its stiffness (see :func:`checkpoint_stiffness`)."""
    u0, p = setup.target.merge(theta, setup.u0, setup.p)
    stats = dict(stats)
    stiffness = checkpoint_stiffness(setup.g, p, (u0, setup.t0), (stats.pop("u1"), setup.t1),
                                     stats["naccept"], setup.options.method)
    return {**_no_aux(), **stats, "stiffness": stiffness}


def checkpoint_stiffness(g, p, start, end, naccept, method):
    """``h_mean rho(J) / boundary`` of a discrete adjoint's forward solve from ``start`` to
    ``end`` (each ``(u, t)``; ``rho`` the larger at the two): near 1 the step size was set by
    stability rather than accuracy, where the derivative of the steps is unreliable."""
    (u0, t0), (u1, t1) = jax.lax.stop_gradient((start, end))
    p = jax.lax.stop_gradient(p)
    rho = jnp.maximum(spectral_radius(g, u0, p, t0), spectral_radius(g, u1, p, t1))
    h_mean = abs(t1 - t0) / jnp.maximum(naccept, 1)
    return h_mean * rho / method.tableau.real_stability_boundary


def value_and_gradient(setup: Setup, mode: str, adjoint: str) -> Callable:
    """The first-order function ``theta -> ((L, grad), aux)`` for a strategy."""
    if mode == "forward":
        return lambda theta: value_and_gradient_forward(setup, theta)
    if adjoint == "checkpoint":
        return lambda theta: value_and_gradient_checkpoint(setup, theta)
    return lambda theta: value_and_gradient_adjoint(setup, theta, adjoint)


def hvp(first_order: Callable) -> Callable:
    """``(theta, v) -> ((grad, H v), aux)``: the tangent pushed through the gradient."""
    def run(theta, v):
        def grad_only(th):
            (_, grad), aux = first_order(th)
            return grad, aux

        grad, hv, aux = jax.jvp(grad_only, (theta,), (v,), has_aux=True)
        return (grad, hv), aux
    return run


def hessian(first_order: Callable) -> Callable:
    """``theta -> (H, aux)`` with ``H`` the ``(m, m)`` matrix of the flattened target."""
    def run(theta):
        flat, unravel = ravel_pytree(theta)

        def flat_grad(x):
            (_, grad), aux = first_order(unravel(x))
            return ravel_pytree(grad)[0], aux

        basis = jnp.eye(flat.size, dtype=flat.dtype)
        push = lambda e: jax.jvp(flat_grad, (flat,), (e,), has_aux=True)  # noqa: E731
        _, columns, aux = jax.vmap(push)(basis)
        aux = jax.tree_util.tree_map(jnp.max, aux)
        return 0.5 * (columns + columns.T), aux
    return run


def jacobian_forward(setup: Setup, theta):
    U, S, code = trajectory_tangents(setup.g, setup.target, theta, setup.u0, setup.p,
                                     setup.t0, setup.t1, setup.saveat, setup.options)
    return _columns_to_target(S, theta), {**_no_aux(), "code": code}


def jacobian_checkpoint(setup: Setup, theta):
    """The discrete adjoint's Jacobian: one pullback of the steps per output entry, vmapped
    over a shared forward solve."""
    U, pullback, stats = jax.vjp(lambda th: _discrete_states(setup, th), theta, has_aux=True)
    seeds = jnp.eye(U.size, dtype=U.dtype).reshape((U.size,) + U.shape)
    (rows,) = jax.vmap(pullback)(seeds)  # per target leaf: (n_out, *leaf.shape)
    J = jax.tree_util.tree_map(lambda r: r.reshape(U.shape + r.shape[1:]), rows)
    return J, _discrete_aux(setup, theta, stats)


def jacobian_reverse(setup: Setup, theta, kind: str):
    """One adjoint per output entry, vmapped; the forward solve is shared."""
    if kind == "checkpoint":
        return jacobian_checkpoint(setup, theta)
    u0, p = setup.target.merge(theta, setup.u0, setup.p)
    fwd, code, overflow = _state_solve(setup, u0, p, kind)
    U = fwd.ys[:-1]
    seeds = jnp.eye(U.size, dtype=U.dtype).reshape((U.size,) + U.shape)

    def row(seed):
        lam, mu, c, mismatch = adjoint_pass(
            setup.g, seed, fwd, u0, p, setup.t0, setup.t1, setup.saveat, setup.options,
            kind=kind, need_mu=setup.target.wrt != "u0")
        return ravel_pytree(_from_adjoint(setup, lam, mu))[0], c, mismatch

    rows, codes, mismatch = jax.vmap(row)(seeds)  # (n_out, m)
    S = rows.reshape(U.shape + (-1,))  # (n_save, *u, m)
    S = jnp.moveaxis(S, -1, 1)  # (n_save, m, *u) as from the forward pass
    aux = {**_no_aux(), "code": _first_failure(code, codes.max()), "mismatch": mismatch.max(),
           "dense_overflow": overflow}
    return _columns_to_target(S, theta), aux


def _columns_to_target(S, theta):
    """``(n_save, m, *u)`` sensitivities as ``(n_save, *u, *leaf.shape)`` per target leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(theta)
    n_save, u_shape = S.shape[0], S.shape[2:]
    moved = jnp.moveaxis(S, 1, -1)  # (n_save, *u, m)
    out, start = [], 0
    for leaf in leaves:
        size = int(jnp.size(leaf))
        block = moved[..., start:start + size]
        out.append(block.reshape((n_save,) + u_shape + jnp.shape(leaf)))
        start += size
    return jax.tree_util.tree_unflatten(treedef, out)
