"""Forward sensitivities: the state and its tangents solved as one error-controlled system.

For a target ``theta`` with ``m`` entries, ``S = du/dtheta`` obeys

.. math:: S' = J S + \\partial f / \\partial \\theta, \\qquad S(t_0) = \\partial u_0 / \\partial \\theta,

with ``J = df/du``. All ``m`` columns are pushed through one linearisation of ``f`` per
stage (``jax.linearize`` + ``vmap``) and the tangents sit inside the error norm, so the
sensitivities are as accurate as the tolerances ask (not merely the derivative of the
steps taken). Cost grows with ``m``.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, I.14
(variational equations).
"""

from __future__ import annotations

from ._jax import load_jax

jax, jnp = load_jax()  # first: JAX is imported once, under its lock
from jax.flatten_util import ravel_pytree  # noqa: E402


from ._ode import odeint



def trajectory_tangents(g, target, theta, u0, p, t0, t1, saveat, options):
    """``(U, S, code)``: states at ``saveat`` and their derivatives w.r.t. ``theta``.

    ``U`` has shape ``(n_save, *u0.shape)``; ``S`` has shape ``(n_save, m, *u0.shape)``
    with ``m`` the size of the flattened target.
    """
    flat, unravel = ravel_pytree(theta)
    u0_, p_ = target.merge(theta, u0, p)
    basis = jnp.eye(flat.size, dtype=flat.dtype)
    u0_dots, p_dots = jax.vmap(lambda e: target.tangent_parts(unravel(e), u0_, p_))(basis)

    def field(t, z, p_arg):
        u, S = z
        du, push = jax.linearize(lambda uu, pp: g(uu, pp, t), u, p_arg)
        return du, jax.vmap(push)(S, p_dots)

    sol, code = odeint(field, (u0_, u0_dots), p_, t0, t1, options, ts=saveat,
                       spectral_radius=options.spectral_radius(lambda t, y, a: (t, y[0], a)))
    U, S = sol.ys
    return U[:-1], S[:-1], code


def contract(cotangent, S):
    """``sum_k <dL/dU_k, S_k>`` over saves and state entries: the flat gradient (m,)."""
    n_save = S.shape[0]
    m = S.shape[1]
    return jnp.einsum("kn,kmn->m", cotangent.reshape(n_save, -1), S.reshape(n_save, m, -1))
