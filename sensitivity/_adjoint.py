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

import functools

from ._jax import load_jax
from ._ode import odeint
from ._options import BACKSOLVE_MISMATCH  # noqa: F401  (re-exported)

jax, jnp = load_jax()



def _zeros(tree, anchor=None):
    """Zeros shaped like ``tree``; plus ``anchor`` (see :func:`_tangent_anchor`) if given."""
    def zero(x):  # in the solves' dtype: a float32 p's adjoint is integrated in float64
        dtype = jnp.promote_types(jnp.result_type(x), jnp.result_type(float))
        z = jnp.zeros(jnp.shape(x), dtype)
        return z if anchor is None else z + anchor.astype(dtype)
    return jax.tree_util.tree_map(zero, tree)


def _tangent_anchor(*trees):
    """``0.0`` that carries a tangent wherever a leaf of ``trees`` does (under ``jax.jvp``).

    JAX differentiates a loop forward by iterating to a fixed point of which carries have
    nonzero tangents: a carry starting at zeros (the adjoint) whose tangent becomes
    nonzero costs a second pass over the loop body (and, for a loop nested in a loop, a
    pass of the inner loop per outer pass). Adding this anchor to such a carry's start
    makes its tangent nonzero from the start: one pass. ``where``, not ``0 * x``, so that
    an infinite ``x`` gives 0, not NaN.
    """
    leaves = [jnp.real(jnp.ravel(x)[0]) for x in jax.tree_util.tree_leaves(trees)
              if jnp.size(x) and jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return None
    return jnp.where(False, sum(leaves), 0.0)


def _unit_cotangents(cotangents):
    """``(cotangents / s, s)``: the cotangents scaled to a largest magnitude of 1.

    The adjoint is linear in the cotangents ``w``: ``(lambda, mu)`` for ``w`` are ``s``
    times those for ``w / s``. Solving for ``w / s`` makes the error control's ``atol``
    relative to the loss's own scale: otherwise a loss ``c L`` with a small ``c`` (a
    least-squares loss near its optimum, data in small units) would have its adjoint,
    all below ``atol``, solved to no relative accuracy at all (a gradient of
    ``1e-8 L`` came out 4.5e-3 off with ``rtol=1e-8``), and a large ``c`` would pay steps
    for digits nobody asked for. Stacked cotangents (:class:`StackedAdjointSystem`) share
    one ``s``: they obey one linear equation with shared steps, so each keeps about the
    relative accuracy of the largest. ``s`` carries no derivative (the scaling is exact:
    ``s A(w / s) = A(w)`` for linear ``A``); it is 1 where the cotangents are all zero or
    not finite.
    """
    peaks = [jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(cotangents) if jnp.size(x)]
    if not peaks:
        return cotangents, None
    s = jax.lax.stop_gradient(functools.reduce(jnp.maximum, peaks))
    s = jnp.where(jnp.isfinite(s) & (s > 0), s, 1.0)  # divided, not times 1/s: a subnormal s
    return jax.tree_util.tree_map(lambda x: x / s.astype(jnp.result_type(x)), cotangents), s


def _times(tree, s):
    """Every leaf of ``tree`` times the scalar ``s``, in the leaf's dtype (``s=None``: 1)."""
    if s is None:
        return tree
    return jax.tree_util.tree_map(lambda x: x * s.astype(jnp.result_type(x)), tree)


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
    Tried again on small states (diffrax's ``ClipStepSizeController`` with the save times
    as ``jump_ts``): a 2-state model with 241 save times gained 20%, but with 21 (the
    common case) Lotka-Volterra and Lorenz lost 4-9% and ``heat_1d(128)`` 30%: the
    selection and the clipping cost every step, a solve per save time only its start.
    """
    unit, scale = _unit_cotangents(state_cotangents)
    lam, mu, _, code, mismatch = _backward(g, unit, forward, u0, p, t0, t1, saveat, options,
                                           kind=kind, need_mu=need_mu)
    return _times(lam, scale), _times(mu, scale), code, mismatch


def _backward(g, state_cotangents, forward, u0, p, t0, t1, saveat, options, *, kind: str, need_mu: bool,
              window=None, start=None, system=None):
    """:func:`adjoint_pass`, also returning the step proposed last.

    ``window=(direction, first)``: ``[t0, t1]`` is one chunk of a longer solve (see
    :func:`chunked_interpolating_adjoint`) whose direction of time is ``direction`` (+1
    or -1): the save times beyond it are not crossed, and their cotangents are added only
    in the chunk that owns them, ``(t0, t1]`` (``[t0, t1]`` for the ``first`` chunk).
    ``start=(lambda, mu, h)``: the adjoint at ``t1`` and the step to start with (a ``h``
    that is not a positive number: the forward solve's last).
    ``system``: an augmented system (:class:`SecondOrderSystem`,
    :class:`StackedAdjointSystem`; interpolating only) whose ``parts`` replace
    :func:`_field_parts`; the save-time cotangents are pytrees shaped like its adjoint.
    """
    backsolve = kind == "backsolve"
    u_states, dense = forward.ys, forward
    parts = system.parts if system is not None else lambda *a: _field_parts(g, *a, need_mu)
    if backsolve:
        estimate = options.spectral_radius(lambda t, y, a: (t, y[0], a))
    else:
        project = (lambda u, a: (u, a)) if system is None else system.project
        estimate = options.spectral_radius(lambda t, y, a: (t, *project(dense.evaluate(t), a)))

    # a small state's dense output is read at all stages of a backward step at once
    stages = None if backsolve or not dense.small_state else dense.evaluate_stages

    def field(t, a, p_arg, u=None):  # (u: the dense output at t, given by odeint with `stages`)
        if backsolve:
            u, lam, mu = a
        else:
            lam, mu = a
            u = dense.evaluate(t) if u is None else u
        du, d_lam, d_mu = parts(u, lam, p_arg, t)
        return (du, d_lam, d_mu) if backsolve else (d_lam, d_mu)

    def scaled_error(u, reference):
        scale = options.atol + options.rtol * jnp.abs(reference)
        return jnp.max(jnp.abs(u - reference) / scale)

    def solve(state, h, start, stop):
        """``(state at stop, next step, code)``; unchanged if the interval is empty."""
        def run(state):
            # an empty interval runs too where the test is batched (vmap turns the cond into a
            # select): one whole step then ends it, not max_steps steps of size 0
            sol, code = odeint(field, state, p, start, stop, options, spectral_radius=estimate,
                               dt0=jnp.where(start == stop, 1.0, jnp.sign(stop - start) * h),
                               stage_input=stages)
            h_next = jax.lax.stop_gradient(sol.next_step)
            h_next = jnp.where(jnp.isfinite(h_next) & (h_next > 0), h_next, h)
            return jax.tree_util.tree_map(lambda y: y[-1], sol.ys), h_next, code

        return jax.lax.cond(start == stop, lambda s: (s, h, jnp.asarray(0)), run, state)

    def segment(carry, k):
        lam, mu, u, h, tau, code, mismatch = carry
        s_k, w_k = saveat[k], jax.tree_util.tree_map(lambda w: w[k], state_cotangents)
        if window is not None:  # stop at the chunk's end; add only the chunk's own cotangents
            direction, first = window
            x, lo, hi = direction * s_k, direction * t0, direction * t1
            owned = (x <= hi) & ((x > lo) | first)
            s_k = direction * jnp.clip(x, lo, hi)
            w_k = jax.tree_util.tree_map(lambda w: jnp.where(owned, w, jnp.zeros_like(w)), w_k)
        end, h, c = solve((u, lam, mu) if backsolve else (lam, mu), h, tau, s_k)
        if backsolve:
            u, lam, mu = end
            mismatch = jnp.maximum(mismatch, scaled_error(u, u_states[k]))
            u = u_states[k]  # restart from the forward state: errors do not accumulate
        else:
            lam, mu = end
        lam = jax.tree_util.tree_map(jnp.add, lam, w_k)
        return (lam, mu, u, h, s_k, jnp.maximum(code, c), mismatch), None

    dtype = jnp.result_type(float)
    if start is None:
        anchor = _tangent_anchor(u0, p)
        start = (_zeros(u0, anchor), _zeros(p, anchor) if need_mu else None, jnp.nan)
    lam0, mu0, h0 = start
    u_end = u_states[-1] if backsolve else lam0
    # a failed forward solve may leave no usable step: then a thousandth of the span
    span = jnp.abs(jnp.asarray(t1 - t0, dtype))
    h_fwd = jax.lax.stop_gradient(jnp.asarray(forward.next_step, dtype))
    h0 = jnp.asarray(h0, dtype)
    h0 = jnp.where(jnp.isfinite(h0) & (h0 > 0), h0, h_fwd)
    h0 = jnp.where(jnp.isfinite(h0) & (h0 > 0), h0, jnp.where(span > 0, 1e-3 * span, 1.0))
    init = (lam0, mu0, u_end, h0, jnp.asarray(t1, dtype), jnp.asarray(0), jnp.asarray(0.0, dtype))
    n_save = saveat.shape[0]
    (lam, mu, u, h, tau, code, mismatch), _ = jax.lax.scan(segment, init, jnp.arange(n_save - 1, -1, -1))
    end, h, c = solve((u, lam, mu) if backsolve else (lam, mu), h, tau, jnp.asarray(t0, dtype))
    if backsolve:
        u, lam, mu = end
        mismatch = jnp.maximum(mismatch, scaled_error(u, u0))
    else:
        lam, mu = end
    return lam, mu, h, jnp.maximum(code, c), mismatch


# checkpoints of the chunked forward sweep (one state each): at least MIN_CHECKPOINTS, more
# while they fit in CHECKPOINT_BYTES, never more than max_steps can use
CHECKPOINT_BYTES = 4 * 2**20
MIN_CHECKPOINTS = 64


def _sweep_start(g, u0, p, t0, t1, options, system=None):
    """What every chunk of the dense sweep of :func:`chunked_interpolating_adjoint` starts
    from: ``(rhs, t0, t1, direction, spectral-radius bound, u0 in the solves' dtype, the
    first step odeint would choose)``."""
    from ._ode import initial_step

    forward_field = g if system is None else system.forward

    def rhs(t, u, q):
        return forward_field(u, q, t)

    dtype = jnp.result_type(float)
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    direction = jnp.where(t1 >= t0, 1.0, -1.0)
    estimate = options.spectral_radius(None if system is None else lambda t, y, a: (t, *system.project(y, a)))
    start = jax.tree_util.tree_map(lambda x: x.astype(jnp.promote_types(jnp.result_type(x), dtype)), u0)
    first_step = jax.lax.stop_gradient(initial_step(rhs, u0, p, t0, t1, options))
    return rhs, t0, t1, direction, estimate, start, first_step


def first_dense_chunk(g, u0, p, t0, t1, options, *, chunk_steps: int):
    """``(Solved, code)``: the first chunk of :func:`chunked_interpolating_adjoint`'s dense
    sweep, from ``(t0, u0)`` towards ``t1`` with a buffer of ``chunk_steps`` steps (code 1
    where it did not reach ``t1``), bitwise what the sweep would solve first.

    A differentiated solve computes it as its primal (its rows read from the dense output)
    and hands it to the adjoint as ``first_chunk``, which then does not solve it again:
    a reverse derivative then solves the state forward once, not twice.
    """
    rhs, t0, t1, direction, estimate, start, first_step = _sweep_start(g, u0, p, t0, t1, options)
    return odeint(rhs, start, p, t0, t1, options, dense=True, max_steps=chunk_steps, dt0=direction * first_step,
                  spectral_radius=estimate)


def chunked_interpolating_adjoint(g, state_cotangents, u0, p, t0, t1, saveat, options, *,
                                  chunk_steps: int, max_chunks: int, need_mu: bool = True, system=None,
                                  first_chunk=None):
    """``(lambda(t0), mu(t0), code)``: the interpolating adjoint, its dense forward solve
    in chunks of at most ``chunk_steps`` steps when one buffer of that size does not hold
    it (checkpointing).

    A dense step buffer has a static size, which a traced ``(u0, p)`` needing more steps
    than planned would overflow. Here the forward sweep solves from the last checkpoint
    towards ``t1`` with a buffer of ``chunk_steps``; when the buffer fills, it sets a
    checkpoint ``(t, u, h)`` three quarters of the way through the chunk's accepted steps
    (so that solving that chunk again cannot overflow) and goes on from there. The chunk
    that reaches ``t1`` is followed at once by the adjoint over it; every earlier chunk is
    solved again, densely, from its checkpoint, last first, each followed by the adjoint
    over it (:func:`_backward`, with ``lambda``, ``mu`` and the step carried across
    chunks). With one chunk this is the dense forward solve and :func:`adjoint_pass`
    (the first chunk starts with the step :func:`odeint` would choose); every further
    chunk costs one more forward solve of its steps. At most ``max_chunks`` checkpoints
    are held (one state each): :data:`MIN_CHECKPOINTS`, or more while they fit in
    :data:`CHECKPOINT_BYTES`. More chunks than that, or more steps than
    ``options.max_steps`` in the sweep, give code 1 (``"max_steps"``). With ``system`` (a
    :class:`SecondOrderSystem` or :class:`StackedAdjointSystem`) the same sweep solves
    that system instead. ``first_chunk``: :func:`first_dense_chunk` at these ``(u0, p)``
    (the field's own sweep, not an augmented system's) when the primal has solved it:
    the loop's first pass takes it instead of solving it.

    One loop with one dense solve and one adjoint in its body: a first pass outside the
    loop (so that the common case runs without it) made the first call 45% slower to
    compile (the solves compiled twice).

    References: Y. Cao, S. Li, L. Petzold, R. Serban (2003), cited above; A. C.
    Hindmarsh et al., "SUNDIALS", ACM TOMS 31 (2005), section 4 (CVODES's checkpointed
    adjoint).
    """
    state_cotangents, scale = _unit_cotangents(state_cotangents)
    rhs, t0, t1, direction, estimate, start, first_step = _sweep_start(g, u0, p, t0, t1, options, system)
    dtype = jnp.result_type(float)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(u0))
    n = min(max_chunks, max(MIN_CHECKPOINTS, CHECKPOINT_BYTES // max(state_bytes, 1))) + 1
    anchor = _tangent_anchor(u0, p)
    marks_t = jnp.full((n,), t0)
    marks_u = jax.tree_util.tree_map(lambda x: _zeros(jnp.zeros((n,) + jnp.shape(x), x.dtype), anchor).at[0].set(x),
                                     start)
    marks_h = jnp.zeros((n,), dtype).at[0].set(first_step)

    def body(carry):
        c, back, marks_t, marks_u, marks_h, lam, mu, h, code, steps = carry
        start_t = marks_t[c]
        start_u = jax.tree_util.tree_map(lambda m: m[c], marks_u)
        stop = jnp.where(back, marks_t[jnp.minimum(c + 1, n - 1)], t1)

        def solve_chunk():
            return odeint(rhs, start_u, p, start_t, stop, options, dense=True, max_steps=chunk_steps,
                          dt0=direction * marks_h[c], spectral_radius=estimate)

        if first_chunk is None:
            fwd, fcode = solve_chunk()
        else:  # the first chunk, solved by the primal, is not solved again (not handed over
            # under a vmap over members, where this test is batched: see _jax_solve_passes)
            fwd, fcode = jax.lax.cond((c == 0) & ~back, lambda: first_chunk, solve_chunk)
        interp = fwd.sol.interpolation
        naccept = interp.ts_size - 1
        steps = steps + jnp.where(back, 0, fwd.stats["num_steps"])
        split = ~back & (fcode == 1) & (c + 1 < n) & (naccept >= 2) & (steps < options.max_steps)
        # the checkpoint (t, u, h) at 3/4 of the chunk's accepted steps, set at c + 1 on a split
        k = jnp.clip((3 * naccept) // 4, 1, jnp.maximum(naccept - 1, 1))
        t_k = jax.lax.stop_gradient(fwd.t0 + interp.ts[k] * fwd.span)
        h_k = jax.lax.stop_gradient(jnp.abs((interp.ts[k + 1] - interp.ts[k]) * fwd.span))
        at = jnp.minimum(c + 1, n - 1)
        marks_t = jnp.where(split, marks_t.at[at].set(t_k), marks_t)
        marks_u = jax.tree_util.tree_map(lambda m, x: jnp.where(split, m.at[at].set(x), m), marks_u,
                                         fwd.evaluate(t_k))
        marks_h = jnp.where(split, marks_h.at[at].set(h_k), marks_h)

        def adjoin(lam, mu, h):
            lam, mu, h, code, _ = _backward(g, state_cotangents, fwd, start_u, p, start_t, stop, saveat,
                                            options, kind="interpolating", need_mu=need_mu,
                                            window=(direction, c == 0), start=(lam, mu, h), system=system)
            return lam, mu, h, code

        reached = fcode == 0
        lam, mu, h, code_adj = jax.lax.cond(reached, adjoin, lambda lam, mu, h: (lam, mu, h, 0), lam, mu, h)
        code = jnp.maximum(code, jnp.where(reached, code_adj, jnp.where(split, 0, jnp.maximum(fcode, 1))))
        c = jnp.where(split, c + 1, jnp.where(reached, c - 1, -1))
        return c, back | reached, marks_t, marks_u, marks_h, lam, mu, h, code, steps

    lam_like, mu_like = (u0, p) if system is None else system.adjoint_like(u0, p)
    init = (jnp.asarray(0), jnp.asarray(False), marks_t, marks_u, marks_h, _zeros(lam_like, anchor),
            _zeros(mu_like, anchor) if need_mu else None, jnp.asarray(jnp.nan, dtype), jnp.asarray(0), jnp.asarray(0))
    out = jax.lax.while_loop(lambda carry: carry[0] >= 0, body, init)
    return _times(out[5], scale), _times(out[6], scale), out[8]


class SecondOrderSystem:
    r"""Forward-over-reverse of the interpolating adjoint, ``m`` directions in one system.

    For ``F(x) = u(saveat)``, ``x = (u0, p)``, a cotangent ``w`` (independent of ``x``)
    and directions ``d_j = (d0_j, dp_j)``, the second adjoint
    ``C_j = (d/dx F'(x)^T w) d_j = (Lambda_j(t0), M_j(t0))`` follows from the tangents
    ``S_j = (du/dx) d_j`` and the forward derivatives of ``(lambda, mu)`` along them:

    .. math::

        S_j' = J S_j + f_p\, dp_j, \qquad S_j(t_0) = d0_j,

        \Lambda_j' = -\big(J^T \Lambda_j + \partial_u(J^T\lambda) S_j
                      + \partial_p(J^T\lambda)\, dp_j\big),

        M_j' = -\big(f_p^T \Lambda_j + \partial_u(f_p^T\lambda) S_j
                      + \partial_p(f_p^T\lambda)\, dp_j\big),

    with ``Lambda_j = M_j = 0`` at ``t1``. Where the cotangent moves too (``w + e dw_j``:
    ``jax.hessian``, ``jvp`` of a gradient), ``Lambda_j`` jumps by ``dw_j`` at the save
    times: its equation being the adjoint equation plus sources, it then also carries
    ``F'(x)^T dw_j``, in the same solve.
    Written as an augmented system: state ``z = (u, S)``, parameters ``q = (p, Dp)``,
    adjoint ``(lambda, Lambda)`` shaped like ``z`` and parameter integral ``(mu, M)``
    shaped like ``q``, so that :func:`chunked_interpolating_adjoint` solves it
    unchanged: one dense sweep of the state and every tangent, one backward solve of the
    adjoint and every second adjoint, all inside the error norms (accurate to the
    tolerances, not the derivative of the steps taken). Per stage ``f`` is linearised
    once and pushed along every direction: ``vmap`` acts on the field, not on the solve.

    Reference: Z. Wang, I. M. Navon, F. X. Le Dimet, X. Zou, "The second order adjoint
    analysis: theory and applications", Meteorol. Atmos. Phys. 50 (1992) 3-20.
    """

    def __init__(self, g):
        self.g = g

    def forward(self, z, q, t):
        (u, S), (p, Dp) = z, q
        du, push = jax.linearize(lambda uu, pp: self.g(uu, pp, t), u, p)
        return du, jax.vmap(push)(S, Dp)

    def parts(self, z, adjoint, q, t):
        """``(None, -(d_lambda, d_Lambda), -(d_mu, d_M))``: the backward field (no state
        derivative: the interpolating adjoint reads ``z`` from the dense sweep)."""
        (u, S), (lam, Lam), (p, Dp) = z, adjoint, q

        def pullback(uu, pp, ll):
            return jax.vjp(lambda a, b: self.g(a, b, t), uu, pp)[1](ll)

        (d_lam, d_mu), push = jax.linearize(pullback, u, p, lam)
        d_Lam, d_M = jax.vmap(push)(S, Dp, Lam)
        return None, (-d_lam, -d_Lam), jax.tree_util.tree_map(jnp.negative, (d_mu, d_M))

    @staticmethod
    def project(z, q):
        """The model's ``(u, p)`` in the augmented ``(z, q)`` (for an ``eigen_est``)."""
        return z[0], q[0]

    @staticmethod
    def adjoint_like(z0, q):
        """Templates of the adjoint and the parameter integral: shaped like ``z`` and ``q``."""
        return z0, q


class StackedAdjointSystem:
    """The interpolating adjoint for ``m`` cotangents at once (``jax.jacrev``, the
    derivative of a gradient along ``m`` directions): one dense forward solve of ``u``,
    one backward solve of ``lambda_j, mu_j`` (leading axis ``m``, all inside the error
    norm), ``f`` pulled back once per stage and applied to every ``lambda_j``.
    The save-time cotangents are ``(n_save, m, *u.shape)``.
    """

    def __init__(self, g, m: int):
        self.g, self.m = g, m

    def forward(self, u, p, t):
        return self.g(u, p, t)

    def parts(self, u, lam, p, t):
        du, pullback = jax.vjp(lambda a, b: self.g(a, b, t), u, p)
        d_lam, d_mu = jax.vmap(pullback)(lam)
        return du, -d_lam, jax.tree_util.tree_map(jnp.negative, d_mu)

    @staticmethod
    def project(u, p):
        return u, p

    def adjoint_like(self, u0, p):
        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (self.m,) + jnp.shape(x)), (u0, p))


def _field_parts(g, u, lam, p, t, need_mu):
    """``(f(u), -J^T lambda, -(df/dp)^T lambda)`` (the last ``None`` without ``need_mu``)."""
    if need_mu:
        du, vjp = jax.vjp(lambda uu, pp: g(uu, pp, t), u, p)
        d_lam, d_mu = vjp(lam)
        return du, -d_lam, jax.tree_util.tree_map(jnp.negative, d_mu)
    du, vjp = jax.vjp(lambda uu: g(uu, p, t), u)
    return du, -vjp(lam)[0], None
