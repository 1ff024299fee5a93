"""Event location inside a compiled chunk: the rules of :mod:`._events_numpy`, in JAX.

Given a diffrax solution with dense output over the steps ``t_0 < ... < t_s`` of a
chunk, :func:`locate` returns the earliest event in it, as the NumPy backend's locator
would find it step by step:

* every condition is evaluated at ``INTERIOR_POINTS`` interior points and the end of
  each step, a ``lax.while_loop`` over the steps stopping at the first step in which
  some condition changes sign in its event's direction (a zero at the left end gives
  no sign, a zero at the right end is the root), or at the vertex of a parabola through
  three neighbouring values that dips through zero between two of them
  (:func:`._events_numpy.hidden_vertex`: the condition is evaluated at the vertex only in
  a step that has one);
* in that step each crossing condition's first sign change is refined by Illinois
  regula falsi with a bisection every ``BISECT_EVERY`` iterations (vmapped over the
  conditions), to a bracket of a few epsilons in ``t``; the end of the bracket past the
  crossing is the root;
* the earliest root wins; conditions whose roots lie within ``SIMULTANEOUS`` epsilons
  of it fire with it;
* right after an event, the sign of a condition that fired is read ``PROBE`` epsilons
  into the first step (a zero at the event gives no sign).

The chunk itself stops early (diffrax's ``Event`` without a root finder) at the first
step end where a condition has changed sign; that only saves steps, the location is
this module's, over every step of the chunk.

Reference: M. Dowell, P. Jarratt, BIT 11 (1971) 168-174 (Illinois); L. F. Shampine,
S. Thompson, Comput. Math. Appl. 39 (2000) 43-54 (event location).
"""

from __future__ import annotations

from ._events_numpy import BISECT_EVERY, INTERIOR_POINTS, PROBE, ROOT_MAX_ITER, SIMULTANEOUS, parabola_vertices
from .solvers._controller import EPS as _EPS


def locate(sol, values, p, g_left, probe, directions, direction):
    """``(found, t_event, fires)`` for the chunk ``sol`` (see the module docstring).

    ``values(u, p, t)`` gives all conditions (a vector), ``g_left`` their values at the
    chunk's start, ``probe`` (bool per condition) marks those that fired there,
    ``directions`` (a NumPy vector of -1, 0, 1) the events' directions and ``direction``
    (traced, +-1) that of the integration; ``fires`` marks the conditions firing at
    ``t_event``.
    """
    from .sensitivity._jax import load_jax

    jax, jnp = load_jax()
    lax = jax.lax
    n = INTERIOR_POINTS + 1
    theta = jnp.arange(1, n + 1, dtype=jnp.float64) / n  # interior points, then the step end
    ts = sol.interpolation.ts * direction  # diffrax steps in -t backwards
    n_steps = sol.interpolation.ts_size - 1
    dirs = jnp.asarray(directions)

    def on_dense(t):
        return values(sol.evaluate(t), p, t)

    def step(k):
        return ts[k], ts[k + 1] - ts[k]

    # after an event, the conditions that fired are read PROBE epsilons into the first step
    start, width = step(0)
    width = jnp.where(n_steps > 0, width, 1.0)
    probe_theta = PROBE * _EPS * jnp.maximum(jnp.abs(start), jnp.abs(width)) / jnp.abs(width)
    probing = probe & (probe_theta < theta[0])  # else the sign is read at the first interior point
    points = jnp.concatenate([probe_theta[None], theta])

    def in_step(k):
        """The conditions at the probe point (used in step 0), then at step ``k``'s
        interior points and end: ``(n + 1, conditions)``. (This and the root finder are
        the program's only evaluation sites: each one costs compile time.)"""
        start, width = step(k)
        times = (start + points * width).at[-1].set(ts[k + 1])
        return jax.vmap(on_dense)(times)

    def signs_cross(before, after):
        return ((before < 0) & (after >= 0) & (dirs >= 0)) | ((before > 0) & (after <= 0) & (dirs <= 0))

    def crossings(left, grid):
        return signs_cross(jnp.concatenate([left[None], grid[:-1]]), grid)

    left_theta = jnp.where(probing, probe_theta, 0.0)
    conditions = jnp.arange(len(directions))

    def step_nodes(k, shape):
        return jnp.concatenate([jnp.where(k == 0, left_theta, 0.0)[None], jnp.broadcast_to(theta[:, None], shape)])

    def hidden_vertices(k, left, grid):
        """``_events_numpy.hidden_vertex`` per condition: ``(theta, interval, g there,
        found)``, the condition evaluated at the vertex only in a step that has one."""
        samples, nodes = jnp.concatenate([left[None], grid]), step_nodes(k, grid.shape)
        vertex, interval, ok = parabola_vertices(jnp, samples, nodes)
        ok = ok & jnp.isfinite(samples).all(axis=0)
        pick = jnp.argmin(jnp.where(ok, vertex, jnp.inf), axis=0)
        vertex, interval, ok = vertex[pick, conditions], interval[pick, conditions], ok.any(axis=0)
        start, width = step(k)

        def at_vertices():
            return jax.vmap(lambda c, j: on_dense(start + c * width)[j])(jnp.where(ok, vertex, 0.5), conditions)
        g_vertex = lax.cond(ok.any(), at_vertices, lambda: jnp.zeros(len(directions), samples.dtype))
        ga, gb = samples[interval, conditions], samples[interval + 1, conditions]
        found = ok & (signs_cross(ga, g_vertex) | signs_cross(g_vertex, gb))
        return vertex, interval, g_vertex, found

    def unseen(carry):
        k, _, hit = carry[:3]
        return (k < n_steps) & ~hit

    def scan_step(carry):
        k, left = carry[:2]
        values = in_step(k)
        left = jnp.where((k == 0) & probe, jnp.where(probing, values[0], 0.0), left)
        grid = values[1:]
        vertices = hidden_vertices(k, left, grid)
        hit = crossings(left, grid).any() | vertices[3].any()
        return (jnp.where(hit, k, k + 1), jnp.where(hit, left, grid[-1]), hit, grid) + vertices

    c = len(directions)
    start_carry = (jnp.asarray(0, n_steps.dtype), g_left, jnp.asarray(False), jnp.zeros((n, c)),
                   jnp.zeros(c), jnp.zeros(c, jnp.result_type(int)), jnp.zeros(c), jnp.zeros(c, bool))
    # grid, vertices: step k's (where hit)
    k, left, hit, grid, vertex, interval, g_vertex, hidden = lax.while_loop(unseen, scan_step, start_carry)
    k = jnp.minimum(k, jnp.maximum(n_steps - 1, 0))
    crossing = crossings(left, grid)  # (n, conditions)
    ordinary = crossing.any(axis=0)
    first = jnp.argmax(crossing, axis=0)
    samples = jnp.concatenate([left[None], grid])  # (n + 1, conditions)
    nodes = step_nodes(k, grid.shape)
    t_k, h_k = step(k)
    tol = 2 * _EPS * jnp.maximum(jnp.maximum(jnp.abs(t_k), jnp.abs(t_k + h_k)), jnp.abs(h_k)) / jnp.abs(h_k)
    # a hidden double crossing before the first sign change: bracketed by its vertex
    use_vertex = hidden & (~ordinary | (interval < first))
    crosses = (ordinary | hidden) & hit
    m = jnp.where(use_vertex, interval, first)
    a, b = nodes[m, conditions], nodes[m + 1, conditions]
    ga, gb = samples[m, conditions], samples[m + 1, conditions]
    before_vertex = signs_cross(ga, g_vertex)
    a, ga = jnp.where(use_vertex & ~before_vertex, vertex, a), jnp.where(use_vertex & ~before_vertex, g_vertex, ga)
    b, gb = jnp.where(use_vertex & before_vertex, vertex, b), jnp.where(use_vertex & before_vertex, g_vertex, gb)

    def root(j, a, b, ga, gb):
        def h(c):
            return on_dense(t_k + c * h_k)[j]
        return jnp.where(gb == 0, b, _illinois(jax, h, a, b, ga, gb, tol))

    roots = jax.vmap(root)(conditions, a, b, ga, gb)
    candidates = jnp.where(roots == 1.0, ts[k + 1], t_k + roots * h_k)
    t_first = jnp.min(jnp.where(crosses, candidates * direction, jnp.inf)) * direction
    span = jnp.abs(ts[jnp.maximum(n_steps, 0)] - ts[0]) / jnp.maximum(n_steps, 1)
    window = SIMULTANEOUS * _EPS * jnp.maximum(jnp.abs(t_first), span)
    fires = crosses & (jnp.abs(candidates - t_first) <= window)
    return hit, jnp.where(hit, t_first, ts[0]), fires


def _illinois(jax, h, a, b, ha, hb, tol):
    """Root of ``h`` in ``[a, b]`` (``h(a)``, ``h(b)`` of opposite signs): the bracket end
    past it; :func:`._events_numpy._illinois` as a ``lax.while_loop``."""
    jnp = jax.numpy

    def going(state):
        k, a, b, _, _, _, done = state[:7]
        return ~done & (k < ROOT_MAX_ITER) & (b - a > tol)

    def iterate(state):
        k, a, b, ha, hb, side, _, _ = state
        secant = (a * hb - b * ha) / (hb - ha)
        secant = jnp.where((a < secant) & (secant < b), secant, 0.5 * (a + b))
        c = jnp.where(k % BISECT_EVERY == BISECT_EVERY - 1, 0.5 * (a + b), secant)
        hc = h(c)
        done = (hc == 0) | ~jnp.isfinite(hc)
        same = (hc > 0) == (hb > 0)  # the root lies left of c
        a, ha = jnp.where(same, a, c), jnp.where(same, jnp.where(side == -1, 0.5 * ha, ha), hc)
        b, hb = jnp.where(same, c, b), jnp.where(same, hc, jnp.where(side == 1, 0.5 * hb, hb))
        return k + 1, a, b, ha, hb, jnp.where(same, jnp.int32(-1), jnp.int32(1)), done, c

    zero = jnp.zeros_like(a)
    start = (jnp.int32(0), a, b, ha, hb, jnp.int32(0), jnp.asarray(False), zero)
    state = jax.lax.while_loop(going, iterate, start)
    return jnp.where(state[6], state[7], state[2])
