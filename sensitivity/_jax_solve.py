"""``jax_solve``: a dxdt solve as a JAX function that composes with every transformation.

``F = jax_solve(prob, ...)`` is ``F(u0, p) -> u(saveat)``, built from the unchanged
in-place NumPy ``f`` (translated by :func:`to_jax`). ``F`` is a ``jax.custom_jvp``
function whose tangent is the linear primitive ``F'(x) v`` of :mod:`._jax_solve_rules`:

- ``jax.jvp``/``jax.jacfwd`` evaluate it by forward sensitivities;
- ``jax.grad``/``jax.vjp``/``jax.jacrev`` transpose it into the chosen adjoint solve;
- second and nested derivatives differentiate the tangent or adjoint solve forward
  (forward-over-reverse), never reverse-over-reverse through a solve;
- ``jax.vmap`` vmaps the solves (each member keeps its own step control).

References
----------
A. Pal et al., "Lux.jl: nested automatic differentiation" (forward-over-reverse in place
of reverse-over-reverse); M. Blondel et al., "Efficient and modular implicit
differentiation", NeurIPS (2022) (custom JVPs with transposable tangents).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from .. import _checks
from .._events import Event
from .._problem import ODEProblem
from .._solution import SolverError
from ._jax import load_jax
from ._jax_solve_events import SEQUENCE_CHANGED, HostPlanner, build_chain, check_jax_solve_events, run_chain
from ._jax_solve_passes import SolveSpec, SolveStatic, dense_primal_with_code, jit_pass, nan_unless, primal_with_code
from ._jax_solve_rules import apply_tangent
from ._ode import STATUS_CODES
from ._operators import ADJOINTS, _dense_steps, _options, state_solution
from ._target import as_jax_tree, describe, to_numpy

jax, jnp = load_jax()


_HINTS = {
    "max_steps": "increase max_steps, or loosen rtol/atol",
    "dt_min": "the step size underflowed: the problem may be singular or too stiff",
    "nonfinite": "non-finite values appeared: check f, u0, p and the time span",
}


def _is_traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _instantiate(tree):
    return jax.tree_util.tree_map(lambda t: jnp.zeros(t.aval.shape, t.aval.dtype) if _is_zero(t) else t, tree,
                                  is_leaf=_is_zero)


def _differentiable(static: SolveStatic, segments: int = 1, share_forward: bool = False) -> Callable:
    """``(times, u0, p) -> (u(saveat), status code)`` for the solve ``SolveSpec(static,
    *times)``, ``times = (t0, t1, saveat)``, as a ``jax.custom_jvp``.

    Its tangent in ``(u0, p)`` is the linear primitive of :mod:`._jax_solve_rules`
    (forward sensitivities, transposed into the adjoint, differentiated forward for second
    order). The times are fixed: chains through ``TimeEvent(times(p))`` solve between the
    planned times and move their joints instead (:func:`._jax_solve_events.run_chain`).
    The code has no tangent.

    ``share_forward`` (with the interpolating adjoint): the differentiated primal is the
    first chunk of the adjoint's dense sweep
    (:func:`._jax_solve_passes.dense_primal_with_code`, itself a ``custom_jvp`` so that
    an outer derivative also takes these rules), held in the tangent's spec, so that a
    reverse derivative solves the state forward once, not twice; not where the chunks of
    ``segments`` solves (a chain's, all held until its reverse pass) would take more than
    :data:`SHARED_FORWARD_BYTES`. Only for callers that know the derivative is reverse
    (the operators' event chains): a forward derivative or a ``vmap`` over members
    does not use the chunk but pays for tracing and compiling it (Lotka-Volterra
    ``jax.jit`` first calls: ``jacfwd`` 2.2 against 1.3-1.6 s, ``grad`` 5.5-5.9 against
    4.3-4.4 s; ``vmap(grad)`` 25-27 against 19-22 ms a call, against ``grad`` 0.27
    against 0.33 ms), so ``jax_solve`` itself does not.
    """
    compiled_primal = jit_pass(primal_with_code)
    compiled_dense = jit_pass(dense_primal_with_code)

    @jax.custom_jvp
    def solve(times, u0, p):
        return compiled_primal(SolveSpec(static, *times), u0, p)

    @jax.custom_jvp
    def dense_solve(times, u0, p):
        return compiled_dense(SolveSpec(static, *times), u0, p)

    def shares_forward(u0) -> bool:
        if (not share_forward or static.adjoint != "interpolating" or not static.dense_steps
                or jnp.iscomplexobj(u0)):
            return False
        state_bytes = jnp.size(u0) * jnp.dtype(jnp.result_type(float)).itemsize
        return segments * static.dense_steps * _CHUNK_VECTORS_PER_STEP * state_bytes <= SHARED_FORWARD_BYTES

    def tangent_of(primals, tangents):
        """``(rows, code, first chunk or None, tangent of the rows)``."""
        times, u0, p = primals
        t_times, tu0, tp = tangents
        if not all(_is_zero(t) for t in t_times):
            raise NotImplementedError("jax_solve: a segment's start, end and save times are fixed; "
                                      "derivatives through moving times are not provided")
        chunk = None
        if shares_forward(u0):
            rows, code, chunk = dense_solve(*primals)
        else:
            rows, code = solve(*primals)
        spec = SolveSpec(static, *times, jax.lax.stop_gradient(chunk))
        return rows, code, chunk, apply_tangent(spec, u0, p, _instantiate(tu0), _instantiate(tp))

    def solve_jvp(primals, tangents):
        rows, code, _, tangent = tangent_of(primals, tangents)
        return (rows, code), (tangent, _no_tangent(code))

    def dense_solve_jvp(primals, tangents):
        rows, code, chunk, tangent = tangent_of(primals, tangents)
        return (rows, code, chunk), (tangent, _no_tangent(code), jax.tree_util.tree_map(_no_tangent, chunk))

    solve.defjvp(solve_jvp, symbolic_zeros=True)
    dense_solve.defjvp(dense_solve_jvp, symbolic_zeros=True)
    return solve


# memory that the first chunks held for the adjoint (SolveSpec.first_chunk) may take: the
# dense output of a chunk holds about this many vectors of the state per step (Tsit5: the
# step's start and 4 coefficients; Vern7: 7; the step times and a few more)
SHARED_FORWARD_BYTES = 16 * 2**20
_CHUNK_VECTORS_PER_STEP = 10


def _no_tangent(x):
    """The zero tangent of ``x`` (float0 for an integer)."""
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros(jnp.shape(x), jnp.result_type(x))
    return np.zeros(np.shape(x), jax.dtypes.float0)


def solve_static(g, options, adjoint: str, dense_steps: int, n_x: int) -> SolveStatic:
    """The static part of ``jax_solve``'s solves.

    The interpolating adjoint's dense-output buffer is static (it cannot grow inside a
    trace): ``dense_steps``, the steps of a NumPy solve at the problem's ``(u0, p)`` with
    margin (see ``_operators._dense_steps``). Every call pays for the buffer's size, not
    for the steps it holds (three times that size made ``jax.grad`` 45% slower on
    Gray-Scott 32). An ``(u0, p)`` that needs more steps is solved in chunks of that many
    (``chunked_interpolating_adjoint``), at the cost of solving the chunks but the last
    twice, up to ``max_steps``; past that, NaN. The checkpoints it may need for
    ``max_steps`` are bounded by their memory in ``chunked_interpolating_adjoint`` (it
    knows the state's size): a cap of 64 had given a NaN gradient, silently, to a
    target 3 times from where ``F`` was built (an oscillator at 100 times its frequency).
    """
    max_chunks = -(-options.max_steps // max(1, (3 * dense_steps) // 4)) if dense_steps else 0
    return SolveStatic(g=g, options=options, adjoint=adjoint, dense_steps=dense_steps, n_x=n_x,
                       max_chunks=max_chunks)


def chain_function(chain, static: SolveStatic, share_forward: bool = False) -> Callable:
    """``run(u0, p) -> (rows, code)`` of a :class:`._jax_solve_events.Chain` whose segments
    share ``static``: differentiable in ``(u0, p)`` under every transformation, with the
    first failing segment's status code (rows NaN from there on)."""
    segment = _differentiable(static, segments=len(chain.starts), share_forward=share_forward)
    return lambda u0, p: run_chain(chain, u0, p, segment, static.g)


def _joined_function(prob, g, events: tuple, saveat: np.ndarray, options, adjoint: str, duplicate_closure: bool,
                     n_x: int) -> "_SolveFunction":
    """``F`` through state events: the chain of :func:`._events.joined_trajectory` (one
    ``jax_solve`` segment per event between the planned times, joined at the event times
    by the implicit function theorem), planned again on the host at every call
    (:class:`._jax_solve_events.HostPlanner`)."""
    from ._events import EventSetup, joined_trajectory, segment_steps, translate_events

    planner = HostPlanner(prob, events, options, saveat)
    boundaries, t_end, n_rows = planner.planned
    if n_rows < len(saveat):
        raise ValueError(f"saveat: a terminal event ends the solve at t={t_end:.10g}, before the save times "
                         f"{saveat[n_rows:].tolist()}; F returns u at every save time: save up to the stop")
    steps = segment_steps(prob, events, options, boundaries, t_end) if adjoint == "interpolating" else 0
    conditions, affects = translate_events(events, prob.u0, prob.p, duplicate_closure)
    setup = EventSetup(g=g, loss=None, target=None, u0=None, p=None, t0=prob.tspan[0], saveat=saveat,
                       options=options, events=events, conditions=conditions, affects=affects,
                       boundaries=boundaries, t_end=t_end, dense_steps=steps)
    segment = _differentiable(solve_static(g, options, adjoint, steps, n_x))

    def run(u0, p):
        planned, plan_code = planner.traced(u0, p)
        rows, _, code = joined_trajectory(setup, segment, u0, p, planned)
        code = jnp.where(plan_code != 0, plan_code, code)
        return nan_unless(code == 0, rows), code

    description = (f"{len(saveat)} save times, {len(events)} events, {planner.n_events} planned event times, "
                   f"adjoint={adjoint!r}")
    F = _SolveFunction(lambda u0, p: run(u0, p)[0], jax.jit(run), jnp.asarray(prob.u0),
                       as_jax_tree(prob.p, prob.u0.dtype), description)
    F.planner = planner
    F.changed = ("the event sequence at these (u0, p) differs from the one F was built for (an event more or "
                 "less, another order, or a save time on the other side of an event)")
    return F


def _wider(built, x):
    """The dtype a leaf ``x`` of ``p`` runs in: the one ``F`` was built with, widened to
    ``x``'s own floating dtype (a float64 ``p`` is never rounded to a float32 problem's)."""
    given = jnp.result_type(x)
    return jnp.promote_types(built, given) if jnp.issubdtype(given, jnp.inexact) else built


class _SolveFunction:
    """``F(u0, p) -> u(saveat)``: see :func:`jax_solve`.

    ``solve(u0, p)`` is the differentiable function used inside a trace; ``eager(u0, p)``
    gives ``(u, status code)`` for an eager call, which raises on a failure.
    """

    spec = None  # a single solve's SolveSpec (None for a chain of solves through events)

    # why a call's event sequence was refused (SEQUENCE_CHANGED)
    changed = ("times(p) moved the event sequence planned when F was built (a dose time crossed a save time, "
               "another event or an end of tspan)")
    planner = None  # through state events: the HostPlanner, whose last failure message an eager call reports

    def __init__(self, solve: Callable, eager: Callable, u0, p, description: str):
        # jitted also for traced calls: under an eager jax.grad or jax.jvp (not inside a jit)
        # a chain of solves through events ran op by op, its scan compiled again at every
        # call (2-3 s each); a jitted function's derivatives are traced and compiled once
        self._solve, self._eager, self._description = jax.jit(solve), eager, description
        self._u0_shape, self._dtype = u0.shape, u0.dtype
        self._p_signature = describe(p)
        self._p_tree = jax.tree_util.tree_structure(p)
        self._p_dtypes = [leaf.dtype for leaf in jax.tree_util.tree_leaves(p)]

    def _inputs(self, u0, p):
        if tuple(jnp.shape(u0)) != tuple(self._u0_shape):
            raise ValueError(f"u0 has shape {tuple(jnp.shape(u0))} but F was built for shape "
                             f"{tuple(self._u0_shape)}")
        if jax.tree_util.tree_structure(p) != self._p_tree or describe(p) != self._p_signature:
            if describe(p) == self._p_signature:  # the same leaves in other containers (a list for a tuple)
                raise ValueError(f"p has the pytree structure {jax.tree_util.tree_structure(p)} but F was built "
                                 f"for {self._p_tree}: pass p in the containers F was built with")
            raise ValueError(f"p has structure/shapes {describe(p)} but F was built for "
                             f"{self._p_signature}")
        complex_for_real = [jnp.iscomplexobj(x) and not jnp.issubdtype(d, jnp.complexfloating)
                            for x, d in zip(jax.tree_util.tree_leaves(p), self._p_dtypes)]
        if any(complex_for_real) or (jnp.iscomplexobj(u0) and not jnp.issubdtype(self._dtype, jnp.complexfloating)):
            raise TypeError(f"{'p' if any(complex_for_real) else 'u0'} is complex but F was built for a real one (its "
                            "imaginary part would be dropped): give real values, or build F from a problem "
                            "with a complex u0 (or p)")
        leaves = [jnp.asarray(x, dtype=_wider(d, x)) for x, d in zip(jax.tree_util.tree_leaves(p), self._p_dtypes)]
        # the solves run in float64 (diffrax promotes a float32 state): promoted here, so that
        # the cast's own derivative returns float32 cotangents for a float32 u0 (and the rows
        # are cast back to the problem's dtype, as solve(backend="jax") returns them)
        u0 = jnp.asarray(u0, dtype=self._dtype).astype(jnp.promote_types(self._dtype, jnp.result_type(float)))
        return u0, jax.tree_util.tree_unflatten(self._p_tree, leaves)

    def __call__(self, u0, p):
        u0, p = self._inputs(u0, p)
        if _is_traced((u0, p)):
            return self._solve(u0, p).astype(self._dtype)  # a float32 problem's rows stay float32
        U, code = self._eager(u0, p)
        code = int(code)
        if code:
            if code == SEQUENCE_CHANGED:
                raise SolverError(f"jax_solve: {self.changed}: build F again at these values "
                                  "(inside a trace the rows are NaN)")
            status = STATUS_CODES.get(code, "nonfinite")
            why = self.planner.message.rstrip(".") if self.planner is not None and self.planner.message \
                else _HINTS[status]
            sol = None if self.diagnose is None else self.diagnose(np.asarray(u0, self._dtype), to_numpy(p))
            if sol is not None and not sol.success:
                why = sol.message.rstrip(".")
            raise SolverError(f"jax_solve: the solve failed with status {status!r}: {why}.", sol)
        return U.astype(self._dtype)

    # diagnose(u0, p): for an eager failure, the same solve by solve(backend="jax"), whose
    # message gives the time and whose solution keeps the partial data (None if unavailable)
    diagnose = None

    def __repr__(self) -> str:
        return f"jax_solve(F(u0, p) -> u, u0 shape {tuple(self._u0_shape)}, {self._description})"


def jax_solve(prob: ODEProblem, method=None, *, saveat=None, rtol: float = 1e-6, atol: float = 1e-8,
              max_steps: int = 100_000, adjoint: str = "interpolating", events=None,
              duplicate_closure: bool = True) -> Callable[[Any, Any], Any]:
    """A dxdt solve as a JAX function ``F(u0, p) -> u(saveat)``.

    ``F`` composes with ``jax.jit``, ``jax.vmap``, ``jax.grad``/``jax.vjp``/``jax.jacrev``
    (the chosen adjoint), ``jax.jvp``/``jax.jacfwd`` (forward sensitivities with the tangents
    inside the error norm), and second and nested derivatives (``jax.hessian``,
    ``jacrev(jacfwd)``, ``grad`` of a function calling ``grad`` of ``F``), which are all
    computed forward-over-reverse: the tangent or adjoint solve is differentiated forward,
    never in reverse.

    Parameters
    ----------
    prob : ODEProblem
        The problem; ``f`` is translated to JAX (never modified). Its ``u0`` and ``p``
        give the shapes and structure ``F`` accepts. ``F`` uses ``f`` (and the events'
        functions) with the arrays they read as they are when ``F`` is built: an array
        changed in place afterwards is not seen (build ``F`` again).
    method : AbstractRungeKutta, optional
        An adaptive method from :mod:`dxdt.solvers`; default ``Tsit5()``.
    saveat : array_like, optional
        Save times (default ``[t1]``).
    rtol, atol : float
        Tolerances of every solve (forward, tangent and adjoint); ``atol`` scalar, the
        adjoint's relative to the largest cotangent (a loss's scale does not change its accuracy).
    max_steps : int
        Step budget of every solve.
    adjoint : {"interpolating", "checkpoint", "backsolve"}
        The reverse strategy of ``jax.grad``/``jax.vjp`` (see :mod:`dxdt.sensitivity`).
        ``"checkpoint"`` supports first derivatives only.
    events : list of TimeEvent and Event, optional
        Dosing events: ``F`` chains the solves between them and the affects at them
        (translated like ``f``; they may depend on ``p``), and every transformation
        differentiates through the jumps (see "dxdt inside JAX"). With ``times(p)`` the
        derivatives include the motion of the dose times. State events (``Event``): ``F``
        is built for the event sequence of a NumPy solve at ``prob``; every call plans
        again on the host (``jax.pure_callback``) and differentiates the event times by
        the implicit function theorem; a call whose sequence differs gives NaN in a trace
        and raises ``SolverError`` eagerly.
    duplicate_closure : bool
        Give work buffers reachable from ``f`` private traced copies.

    Returns
    -------
    F : callable
        ``F(u0, p)`` with ``u0`` shaped like ``prob.u0`` and ``p`` a pytree shaped like
        ``prob.p``; returns ``u`` of shape ``(len(saveat), *u0.shape)`` as a JAX array.
        Inside a trace a failed solve gives NaN; called eagerly ``F`` raises ``SolverError``.

    Raises
    ------
    ValueError, TypeError
        Bad arguments (each names the argument); ``adjoint="backsolve"`` with an event
        that changes the state; a terminal event before the last save time.
    SolverError
        The NumPy solve with the events that plans ``F`` failed.

    Examples
    --------
    >>> F = sens.jax_solve(prob, Tsit5(), saveat=ts)            # doctest: +SKIP
    >>> loss = lambda p: jnp.sum((F(u0, p)[:, 0] - data) ** 2)  # doctest: +SKIP
    >>> jax.jit(jax.grad(loss))(p), jax.hessian(loss)(p)        # doctest: +SKIP
    """
    prob = _checks.check_problem(prob)
    _checks.check_jax_dtype(prob.u0, "sens.jax_solve")
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}")
    options = _options(method, rtol, atol, max_steps, prob.u0.shape)
    saveat = _checks.check_saveat([prob.tspan[1]] if saveat is None else saveat, prob.tspan)
    duplicate_closure = _checks.check_flag("duplicate_closure", duplicate_closure)
    events = check_jax_solve_events(events, adjoint)

    from ._estimate import translate_eigen_est
    from ._events import private_events
    from .translate import duplicate, to_jax

    # F is built from f and the events' functions as they are now: private copies of
    # every array they reach, so what F computes does not depend on when it is first
    # traced, and the event planning of each call agrees with the compiled model
    prob = prob.remake(f=duplicate(prob.f))
    events = tuple(private_events(events))

    g = to_jax(prob.f, prob.u0, prob.p, duplicate_closure=duplicate_closure)
    options = replace(options, estimate=translate_eigen_est(options.method))
    p = as_jax_tree(prob.p, prob.u0.dtype)
    u0 = jnp.asarray(prob.u0)

    n_x = 1 + len(jax.tree_util.tree_leaves(p))
    if any(isinstance(event, Event) for event in events):
        return _joined_function(prob, g, events, saveat, options, adjoint, duplicate_closure, n_x)
    if events:
        chain, steps = build_chain(prob, events, saveat, options, adjoint, duplicate_closure)
        run = chain_function(chain, solve_static(g, options, adjoint, steps, n_x))
        description = (f"{len(saveat)} save times, {len(events)} events, {len(chain.starts)} segment solves, "
                       f"adjoint={adjoint!r}")
        return _SolveFunction(lambda u0, p: run(u0, p)[0], jax.jit(run), u0, p, description)

    spec = SolveSpec.of(solve_static(g, options, adjoint, _dense_steps(prob, options) if adjoint == "interpolating"
                                     else 0, n_x), prob.tspan[0], prob.tspan[1], saveat)
    solve, eager = _differentiable(spec.static), jit_pass(primal_with_code)
    F = _SolveFunction(lambda u0, p: solve(spec.times, u0, p)[0], lambda u0, p: eager(spec, u0, p), u0, p,
                       f"{spec.n_save} save times, adjoint={adjoint!r}")
    F.spec = spec  # the single solve's (tests and benchmarks bind its passes directly)
    F.diagnose = lambda u0, p: state_solution(prob, u0, p, options, saveat)
    return F
