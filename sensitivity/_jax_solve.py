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
from .._problem import ODEProblem
from .._solution import SolverError
from ._jax import load_jax
from ._jax_solve_passes import SolveSpec, primal, primal_with_code
from ._jax_solve_rules import apply_tangent
from ._ode import STATUS_CODES
from ._operators import ADJOINTS, _dense_steps, _options
from ._target import as_jax_tree, describe

jax, jnp = load_jax()

_MAX_CHUNKS = 64  # checkpoints (one state each) of the interpolating adjoint's forward sweep

_HINTS = {
    "max_steps": "increase max_steps, or loosen rtol/atol",
    "dt_min": "the step size underflowed: the problem may be singular or too stiff",
    "nonfinite": "non-finite values appeared: check f, u0, p and the time span",
}


def _is_traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


class _SolveFunction:
    """``F(u0, p) -> u(saveat)``: see :func:`jax_solve`."""

    def __init__(self, spec: SolveSpec, u0, p):
        self.spec = spec
        self._u0_shape, self._dtype = u0.shape, u0.dtype
        self._p_signature = describe(p)
        self._p_tree = jax.tree_util.tree_structure(p)
        self._p_dtypes = [leaf.dtype for leaf in jax.tree_util.tree_leaves(p)]
        self._eager = jax.jit(primal_with_code, static_argnums=0)
        compiled_primal = jax.jit(primal, static_argnums=0)

        @jax.custom_jvp
        def solve(u0, p):
            return compiled_primal(spec, u0, p)

        @solve.defjvp
        def solve_jvp(primals, tangents):
            return solve(*primals), apply_tangent(spec, *primals, *tangents)

        self._solve = solve

    def _inputs(self, u0, p):
        if tuple(jnp.shape(u0)) != tuple(self._u0_shape):
            raise ValueError(f"u0 has shape {tuple(jnp.shape(u0))} but F was built for shape "
                             f"{tuple(self._u0_shape)}")
        if jax.tree_util.tree_structure(p) != self._p_tree or describe(p) != self._p_signature:
            raise ValueError(f"p has structure/shapes {describe(p)} but F was built for "
                             f"{self._p_signature}")
        leaves = [jnp.asarray(x, dtype=d) for x, d in zip(jax.tree_util.tree_leaves(p), self._p_dtypes)]
        return jnp.asarray(u0, dtype=self._dtype), jax.tree_util.tree_unflatten(self._p_tree, leaves)

    def __call__(self, u0, p):
        u0, p = self._inputs(u0, p)
        if _is_traced((u0, p)):
            return self._solve(u0, p)
        U, code = self._eager(self.spec, u0, p)
        code = int(code)
        if code:
            status = STATUS_CODES.get(code, "nonfinite")
            raise SolverError(f"jax_solve: the solve failed with status {status!r}: {_HINTS[status]}.")
        return U

    def __repr__(self) -> str:
        return (f"jax_solve(F(u0, p) -> u, u0 shape {tuple(self._u0_shape)}, "
                f"{self.spec.n_save} save times, adjoint={self.spec.adjoint!r})")


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
        give the shapes and structure ``F`` accepts.
    method : AbstractRungeKutta, optional
        An adaptive method from :mod:`dxdt.solvers`; default ``Tsit5()``.
    saveat : array_like, optional
        Save times (default ``[t1]``).
    rtol, atol : float
        Tolerances of every solve (forward, tangent and adjoint); ``atol`` scalar.
    max_steps : int
        Step budget of every solve.
    adjoint : {"interpolating", "checkpoint", "backsolve"}
        The reverse strategy of ``jax.grad``/``jax.vjp`` (see :mod:`dxdt.sensitivity`).
        ``"checkpoint"`` supports first derivatives only.
    events : None
        Events are not supported by ``jax_solve``; must be None.
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
        Bad arguments (each names the argument).
    NotImplementedError
        ``events`` given.

    Examples
    --------
    >>> F = sens.jax_solve(prob, Tsit5(), saveat=ts)            # doctest: +SKIP
    >>> loss = lambda p: jnp.sum((F(u0, p)[:, 0] - data) ** 2)  # doctest: +SKIP
    >>> jax.jit(jax.grad(loss))(p), jax.hessian(loss)(p)        # doctest: +SKIP
    """
    prob = _checks.check_problem(prob)
    if events is not None:
        raise NotImplementedError(
            "jax_solve does not support events yet; pass events=None. For derivatives through "
            "events use the NumPy-facing operators (sens.gradient(loss, prob, events=[...]), "
            "sens.jacobian, sens.hessian), which plan the event sequence on the host")
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}")
    options = _options(method, rtol, atol, max_steps, prob.u0.shape)
    saveat = _checks.check_saveat([prob.tspan[1]] if saveat is None else saveat, prob.tspan)
    duplicate_closure = _checks.check_flag("duplicate_closure", duplicate_closure)

    from ._estimate import translate_eigen_est
    from .translate import to_jax

    g = to_jax(prob.f, prob.u0, prob.p, duplicate_closure=duplicate_closure)
    options = replace(options, estimate=translate_eigen_est(options.method))
    dense_steps = max_chunks = 0
    if adjoint == "interpolating":
        # the dense-output buffer (its size is static and cannot grow inside a trace): the
        # prepared operators' size, the steps of a NumPy solve at prob's (u0, p) plus 25%
        # (_dense_steps solves with a copy of f, whose buffers stay untouched). Every call
        # pays for the buffer's size, not for the steps it holds (three times that size made
        # jax.grad 45% slower on Gray-Scott 32). An (u0, p) that needs more steps is solved in
        # chunks of that many (chunked_interpolating_adjoint), at the cost of solving the
        # chunks but the last twice, up to max_steps; past that, NaN.
        dense_steps = _dense_steps(prob, options)
        max_chunks = min(_MAX_CHUNKS, -(-options.max_steps // max(1, (3 * dense_steps) // 4)))
    p = as_jax_tree(prob.p, prob.u0.dtype)
    spec = SolveSpec(g=g, t0=prob.tspan[0], t1=prob.tspan[1], saveat=np.asarray(saveat),
                     options=options, adjoint=adjoint, dense_steps=dense_steps,
                     n_x=1 + len(jax.tree_util.tree_leaves(p)), max_chunks=max_chunks)
    return _SolveFunction(spec, jnp.asarray(prob.u0), p)
