"""Continuous adjoints: the gradient at a cost independent of the target size.

With ``L`` depending on the states ``U_k = u(s_k)`` at the save times, the adjoint
``lambda`` and the parameter integral ``mu`` obey, backwards from ``t1``,

.. math:: \\lambda' = -J^T \\lambda, \\qquad \\mu' = -(\\partial f/\\partial p)^T \\lambda,

with jumps ``lambda += dL/dU_k`` at each save time; then ``dL/du0 = lambda(t0)`` and
``dL/dp = mu(t0) + dL/dp|_direct``. Both are solved with their own error control (the
adjoint's accuracy follows the tolerances, unlike the derivative of the forward steps).

``"interpolating"`` reads ``u(t)`` from the forward solve's dense output (memory grows
with the number of steps; stable on dissipative PDEs). ``"backsolve"`` integrates ``u``
backwards alongside ``lambda`` (memory independent of the steps) and checks, at every
save time and at ``t0``, that the reconstructed state matches the forward one: an
ill-posed backward problem (diffusion run backwards) is reported, never returned.

References
----------
Y. Cao, S. Li, L. Petzold, R. Serban, "Adjoint sensitivity analysis for differential-
algebraic equations", SIAM J. Sci. Comput. 24 (2003) 1076-1089; R. T. Q. Chen et al.,
"Neural ordinary differential equations", NeurIPS (2018) (backsolve).
"""

from __future__ import annotations

from ._jax import load_jax
from ._ode import odeint
from ._options import BACKSOLVE_MISMATCH  # noqa: F401  (re-exported)

jax, jnp = load_jax()



def _zeros(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def adjoint_pass(g, state_cotangents, u_states, u0, p, t0, t1, saveat, options, *,
                 kind: str, dense=None, need_mu: bool = True):
    """``(lambda(t0), mu(t0), codes, mismatch)`` for cotangents ``dL/dU`` at ``saveat``.

    ``kind="interpolating"`` needs ``dense`` (the forward diffrax solution with dense
    output); ``"backsolve"`` needs the forward states ``u_states`` at ``saveat`` and
    ``u_end = u(t1)`` (last row of ``u_states``: pass ``U`` with ``u(t1)`` appended).
    ``mismatch`` is the largest scaled error of the backwards-reconstructed state
    (0 for ``"interpolating"``).
    """
    if kind == "backsolve":
        return _backsolve_pass(g, state_cotangents, u_states, u0, p, t0, t1, saveat, options,
                               need_mu=need_mu)
    return _interpolating_pass(g, state_cotangents, u0, p, t0, t1, saveat, options,
                               dense=dense, need_mu=need_mu)


def _field_parts(g, u, lam, p, t, need_mu):
    """``(f(u), -J^T lambda, -(df/dp)^T lambda)`` (the last ``None`` without ``need_mu``)."""
    if need_mu:
        du, vjp = jax.vjp(lambda uu, pp: g(uu, pp, t), u, p)
        d_lam, d_mu = vjp(lam)
        return du, -d_lam, jax.tree_util.tree_map(jnp.negative, d_mu)
    du, vjp = jax.vjp(lambda uu: g(uu, p, t), u)
    return du, -vjp(lam)[0], None


def _interpolating_pass(g, state_cotangents, u0, p, t0, t1, saveat, options, *, dense, need_mu):
    """One backward solve from ``t1`` to ``t0`` reading ``u(t)`` from ``dense``.

    The jumps of ``lambda`` are moved into the field: with ``C(t)`` the sum of the
    cotangents ``dL/dU_k`` of the save times passed so far (between ``t`` and ``t1``),
    ``Lambda = lambda - C`` is continuous and obeys
    ``Lambda' = -J^T (Lambda + C(t))``, ``mu' = -(df/dp)^T (Lambda + C(t))``; steps land
    on the save times (``odeint(jumps=...)``), so the step size carries across them
    instead of restarting at each, and ``lambda(t0) = Lambda(t0) + sum_k dL/dU_k``.
    """
    dtype = jnp.result_type(float)
    span = jnp.asarray(t0 - t1, dtype)
    sigma = (jnp.asarray(saveat, dtype) - t1) / jnp.where(span == 0, 1, span)  # as odeint's jumps
    interior = (sigma > 0) & (sigma < 1)
    order = jnp.argsort(jnp.where(interior, sigma, 2.0))  # the order odeint passes them

    def levels_of(ct):
        at_t1 = jnp.sum(jnp.where(_column(sigma <= 0, ct), ct, 0), axis=0)
        passed = jnp.where(_column(interior, ct), ct, 0)[order]
        steps = jnp.concatenate([jnp.zeros_like(ct[:1]), jnp.cumsum(passed, axis=0)])
        return at_t1 + steps  # levels[i]: C(t) after i interior save times

    levels = jax.tree_util.tree_map(levels_of, state_cotangents)

    def field(t, a, p_arg, i):
        lam_tilde, mu = a
        lam = jax.tree_util.tree_map(lambda lt, c: lt + c[i], lam_tilde, levels)
        _, d_lam, d_mu = _field_parts(g, dense.evaluate(t), lam, p_arg, t, need_mu)
        return d_lam, d_mu

    start = (_zeros(u0), _zeros(p) if need_mu else None)
    estimate = options.spectral_radius(lambda t, y, a: (t, dense.evaluate(t), a))
    sol, code = odeint(field, start, p, t1, t0, options, jumps=saveat, spectral_radius=estimate)
    lam_tilde, mu = jax.tree_util.tree_map(lambda y: y[-1], sol.ys)
    total = jax.tree_util.tree_map(lambda ct: jnp.sum(ct, axis=0), state_cotangents)
    lam = jax.tree_util.tree_map(jnp.add, lam_tilde, total)
    return lam, mu, code, jnp.asarray(0.0, dtype)


def _column(mask, array):
    """``mask`` (over the leading axis) broadcast against ``array``."""
    return mask.reshape(mask.shape + (1,) * (array.ndim - 1))


def _backsolve_pass(g, state_cotangents, u_states, u0, p, t0, t1, saveat, options, *, need_mu):
    """Integrates ``u`` backwards with ``lambda``, one solve per save interval, restarting
    ``u`` from the forward state at each save time (errors do not accumulate) and
    recording the largest scaled mismatch of the reconstruction."""
    def field(t, a, p_arg):
        u, lam, mu = a
        return _field_parts(g, u, lam, p_arg, t, need_mu)

    estimate = options.spectral_radius(lambda t, y, a: (t, y[0], a))

    def scaled_error(u, reference):
        scale = options.atol + options.rtol * jnp.abs(reference)
        return jnp.max(jnp.abs(u - reference) / scale)

    def segment(carry, k):
        lam, mu, u, tau, code, mismatch = carry
        s_k = saveat[k]
        sol, c = odeint(field, (u, lam, mu), p, tau, s_k, options, spectral_radius=estimate)
        u, lam, mu = jax.tree_util.tree_map(lambda y: y[-1], sol.ys)
        mismatch = jnp.maximum(mismatch, scaled_error(u, u_states[k]))
        u = u_states[k]  # restart from the forward state: errors do not accumulate
        lam = lam + state_cotangents[k]
        return (lam, mu, u, s_k, jnp.maximum(code, c), mismatch), None

    lam0 = _zeros(u0)
    mu0 = _zeros(p) if need_mu else None
    init = (lam0, mu0, u_states[-1], jnp.asarray(t1, dtype=jnp.result_type(float)), jnp.asarray(0), jnp.asarray(0.0))
    n_save = saveat.shape[0]
    (lam, mu, u, tau, code, mismatch), _ = jax.lax.scan(segment, init, jnp.arange(n_save - 1, -1, -1))
    sol, c = odeint(field, (u, lam, mu), p, tau, t0, options, spectral_radius=estimate)
    u, lam, mu = jax.tree_util.tree_map(lambda y: y[-1], sol.ys)
    mismatch = jnp.maximum(mismatch, scaled_error(u, u0))
    return lam, mu, jnp.maximum(code, c), mismatch
