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


def adjoint_pass(g, state_cotangents, forward, u0, p, t0, t1, saveat, options, *,
                 kind: str, need_mu: bool = True):
    """``(lambda(t0), mu(t0), codes, mismatch)`` for cotangents ``dL/dU`` at ``saveat``.

    ``forward`` is the forward solve (:class:`._ode.Solved`) saving at ``saveat`` and
    then at ``t1``, with dense output for ``kind="interpolating"``, which reads ``u(t)``
    from it; ``"backsolve"`` integrates ``u`` backwards from its last row and restarts it
    from the saved states at each save time (errors do not accumulate).

    One backward solve per save interval, from ``t1`` to the last save time, then to the
    one before, ..., then to ``t0``, adding ``dL/dU_k`` to ``lambda`` between them; an
    interval of zero length (a save time at ``t1`` or repeated) is skipped, not solved.
    The first solve starts with the step the forward solve proposed last
    (:attr:`._ode.Solved.next_step`), each next one with the step its predecessor
    proposed, so that the controller's state carries across the save times.
    ``mismatch`` is the largest scaled error of the backwards-reconstructed state (0 for
    ``"interpolating"``).

    A single solve stepping onto the save times, with the jumps moved into a
    piecewise-constant input of the field, was tried: it saved steps with many save
    times but the field's per-stage selection of that input made every stage of a large
    state slower (Gray-Scott 64: adjoint pass 41 ms against 33 ms with one save time).
    """
    backsolve = kind == "backsolve"
    u_states, dense = forward.ys, forward
    if backsolve:
        estimate = options.spectral_radius(lambda t, y, a: (t, y[0], a))
    else:
        estimate = options.spectral_radius(lambda t, y, a: (t, dense.evaluate(t), a))

    def field(t, a, p_arg):
        if backsolve:
            u, lam, mu = a
        else:
            (lam, mu), u = a, dense.evaluate(t)
        du, d_lam, d_mu = _field_parts(g, u, lam, p_arg, t, need_mu)
        return (du, d_lam, d_mu) if backsolve else (d_lam, d_mu)

    def scaled_error(u, reference):
        scale = options.atol + options.rtol * jnp.abs(reference)
        return jnp.max(jnp.abs(u - reference) / scale)

    def solve(state, h, start, stop):
        """``(state at stop, next step, code)``; unchanged if the interval is empty."""
        def run(state):
            sol, code = odeint(field, state, p, start, stop, options, spectral_radius=estimate,
                               dt0=jnp.sign(stop - start) * h)
            h_next = jax.lax.stop_gradient(sol.next_step)
            h_next = jnp.where(jnp.isfinite(h_next) & (h_next > 0), h_next, h)
            return jax.tree_util.tree_map(lambda y: y[-1], sol.ys), h_next, code

        return jax.lax.cond(start == stop, lambda s: (s, h, jnp.asarray(0)), run, state)

    def segment(carry, k):
        lam, mu, u, h, tau, code, mismatch = carry
        s_k = saveat[k]
        end, h, c = solve((u, lam, mu) if backsolve else (lam, mu), h, tau, s_k)
        if backsolve:
            u, lam, mu = end
            mismatch = jnp.maximum(mismatch, scaled_error(u, u_states[k]))
            u = u_states[k]  # restart from the forward state: errors do not accumulate
        else:
            lam, mu = end
        lam = lam + state_cotangents[k]
        return (lam, mu, u, h, s_k, jnp.maximum(code, c), mismatch), None

    dtype = jnp.result_type(float)
    lam0 = _zeros(u0)
    mu0 = _zeros(p) if need_mu else None
    u_end = u_states[-1] if backsolve else lam0
    # a failed forward solve may leave no usable step: then a thousandth of the span
    span = jnp.abs(jnp.asarray(t1 - t0, dtype))
    h0 = jax.lax.stop_gradient(jnp.asarray(forward.next_step, dtype))
    h0 = jnp.where(jnp.isfinite(h0) & (h0 > 0), h0, jnp.where(span > 0, 1e-3 * span, 1.0))
    init = (lam0, mu0, u_end, h0, jnp.asarray(t1, dtype), jnp.asarray(0), jnp.asarray(0.0, dtype))
    n_save = saveat.shape[0]
    (lam, mu, u, h, tau, code, mismatch), _ = jax.lax.scan(segment, init, jnp.arange(n_save - 1, -1, -1))
    end, _, c = solve((u, lam, mu) if backsolve else (lam, mu), h, tau, jnp.asarray(t0, dtype))
    if backsolve:
        u, lam, mu = end
        mismatch = jnp.maximum(mismatch, scaled_error(u, u0))
    else:
        lam, mu = end
    return lam, mu, jnp.maximum(code, c), mismatch


def _field_parts(g, u, lam, p, t, need_mu):
    """``(f(u), -J^T lambda, -(df/dp)^T lambda)`` (the last ``None`` without ``need_mu``)."""
    if need_mu:
        du, vjp = jax.vjp(lambda uu, pp: g(uu, pp, t), u, p)
        d_lam, d_mu = vjp(lam)
        return du, -d_lam, jax.tree_util.tree_map(jnp.negative, d_mu)
    du, vjp = jax.vjp(lambda uu: g(uu, p, t), u)
    return du, -vjp(lam)[0], None
