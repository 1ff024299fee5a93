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
    backsolve = kind == "backsolve"

    def field(t, a, p_arg):
        if backsolve:
            u, lam, mu = a
        else:
            lam, mu = a
            u = dense.evaluate(t)
        if need_mu:
            du, vjp = jax.vjp(lambda uu, pp: g(uu, pp, t), u, p_arg)
            d_lam, d_mu = vjp(lam)
            d_mu = jax.tree_util.tree_map(jnp.negative, d_mu)
        else:
            du, vjp = jax.vjp(lambda uu: g(uu, p_arg, t), u)
            (d_lam,), d_mu = vjp(lam), None
        out = (-d_lam, d_mu)
        return (du,) + out if backsolve else out

    def scaled_error(u, reference):
        scale = options.atol + options.rtol * jnp.abs(reference)
        return jnp.max(jnp.abs(u - reference) / scale)

    def segment(carry, k):
        lam, mu, u, tau, code, mismatch = carry
        s_k = saveat[k]
        state = (u, lam, mu) if backsolve else (lam, mu)
        sol, c = odeint(field, state, p, tau, s_k, options)
        end = jax.tree_util.tree_map(lambda y: y[-1], sol.ys)
        if backsolve:
            u, lam, mu = end
            mismatch = jnp.maximum(mismatch, scaled_error(u, u_states[k]))
            u = u_states[k]  # restart from the forward state: errors do not accumulate
        else:
            lam, mu = end
        lam = lam + state_cotangents[k]
        return (lam, mu, u, s_k, jnp.maximum(code, c), mismatch), None

    lam0 = _zeros(u0)
    mu0 = _zeros(p) if need_mu else None
    u_end = u_states[-1] if backsolve else lam0
    init = (lam0, mu0, u_end, jnp.asarray(t1, dtype=jnp.result_type(float)), jnp.asarray(0), jnp.asarray(0.0))
    n_save = saveat.shape[0]
    (lam, mu, u, tau, code, mismatch), _ = jax.lax.scan(segment, init, jnp.arange(n_save - 1, -1, -1))
    state = (u, lam, mu) if backsolve else (lam, mu)
    sol, c = odeint(field, state, p, tau, t0, options)
    end = jax.tree_util.tree_map(lambda y: y[-1], sol.ys)
    if backsolve:
        u, lam, mu = end
        mismatch = jnp.maximum(mismatch, scaled_error(u, u0))
    else:
        lam, mu = end
    return lam, mu, jnp.maximum(code, c), mismatch
