"""The one diffrax call shared by every compiled solve: the JAX backend and every
sensitivity pass (forward, adjoint, checkpoint).

Every solve runs in normalised time ``s`` in ``[0, 1]``, ``t = t0 + s (t1 - t0)``, with the
vector field scaled by ``t1 - t0``:

.. math:: \\frac{du}{ds} = (t_1 - t_0)\\, f\\big(u, p, t_0 + s (t_1 - t_0)\\big).

``t0`` and ``t1`` are then ordinary (traced) arguments, one compiled program serves every
time span and both directions, and diffrax's machinery for backward time and traced end
points (a third of the program, +40% compile time) is not generated. The error norm and
the PI controller are invariant under this change of variable, so the steps are those of
the physical-time solve.

Passes are written as plain ``diffeqsolve`` calls on augmented systems, so that they can
themselves be differentiated forward (``jax.jvp``) for second-order operators:
``differentiable="forward"`` uses diffrax's ``ForwardMode`` adjoint, ``"reverse"`` its
``RecursiveCheckpointAdjoint`` (the discrete adjoint). Solves never raise inside JAX and
contain no host callbacks (so their executables can be serialised, see
:mod:`._compiled`): result codes travel out and :func:`._options.raise_on_failure` turns them into
``SolverError`` on the host.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from ._compiled import without_host_callbacks
from ._jax import load_diffrax, load_jax
from ._options import STATUS_CODES, SolveOptions, raise_on_failure  # noqa: F401  (re-exported)

jax, jnp = load_jax()
load_diffrax()  # (diffrax and equinox imported once, under a lock)
import diffrax  # noqa: E402  (after load_jax: float64 on)
import equinox as eqx  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from ..solvers import AbstractStabilized  # noqa: E402
from ..solvers._controller import STEP_FLOOR  # noqa: E402
from ..solvers._diffrax import (diffrax_solver, horner, pid_coefficients, polynomial_interpolation,  # noqa: E402
                               sorted_position, stage_args_class)
from ..solvers._diffrax_controller import FixedGrid, GuardedController  # noqa: E402


def status_code(result, nonfinite) -> jnp.ndarray:
    """diffrax's result as dxdt's status code (see ``STATUS_CODES``).

    ``nonfinite``: whether the last rejected step had a non-finite error estimate; a step
    size underflow after such rejections is ``"nonfinite"``, as on the NumPy backend.
    """
    return jnp.where(
        result == diffrax.RESULTS.successful, 0,
        jnp.where(result == diffrax.RESULTS.max_steps_reached, 1,
                  jnp.where((result == diffrax.RESULTS.dt_min_reached) & ~nonfinite, 2, 3)),
    )


def _normalised(vector_field, t0, t1, stage_input=None):
    """``(field(s, y, a), t0, span, scale, input_at)``: the vector field in normalised
    time ``s``, and ``stage_input`` in it (None without one; see :func:`odeint`)."""
    dtype = jnp.result_type(float)
    t0 = jnp.asarray(t0, dtype)
    span = jnp.asarray(t1 - t0, dtype)
    scale = jnp.where(span == 0, 1, span)  # a zero-length solve has a zero field
    input_at = None if stage_input is None else (lambda s: stage_input(t0 + s * span))
    StageArgs = stage_args_class()

    def field(s, y, a):
        if stage_input is None:
            dy = vector_field(t0 + s * span, y, a)
        elif isinstance(a, StageArgs):  # within a step: the input at its stages, looked up at once
            dy = vector_field(t0 + s * span, y, a.args, a.at(s))
        else:  # (the solver's first evaluation, a stabilized solver)
            one = jax.tree_util.tree_map(lambda x: x[0], input_at(jnp.reshape(s, (1,))))
            dy = vector_field(t0 + s * span, y, a, one)
        return jax.tree_util.tree_map(lambda d: d * span.astype(d.dtype), dy)

    return field, t0, span, scale, input_at


def _normalised_radius(spectral_radius, t0, span):
    """The spectral-radius bound ``spectral_radius(t, y, a)`` in normalised time (or None)."""
    if spectral_radius is None:
        return None
    return lambda s, y, a: jnp.abs(span) * spectral_radius(t0 + s * span, y, a)


def initial_step(vector_field, y0, args, t0, t1, options: SolveOptions):
    """The first step (physical, positive) that :func:`odeint` chooses when given no ``dt0``
    (Hairer & Wanner's selection as the NumPy backend makes it,
    :func:`~dxdt.solvers._diffrax_controller.first_step`), for a solve that must start with
    an explicit one (a chain of solves whose first link chooses for the whole span
    ``[t0, t1]``)."""
    from jax.flatten_util import ravel_pytree

    from ..solvers._diffrax_controller import first_step, ravel_like

    dtype = jnp.result_type(float)
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    flat, unravel = ravel_pytree(jax.lax.stop_gradient(y0))
    direction = jnp.where(t1 >= t0, 1.0, -1.0).astype(dtype)
    args = jax.lax.stop_gradient(args)

    def derivative(h, y):  # along the direction of integration, h after t0
        return direction * ravel_pytree(vector_field(t0 + direction * h, unravel(y), args))[0]

    return first_step(derivative, flat, jnp.abs(t1 - t0), options.rtol, ravel_like(options.atol, y0),
                      options.method.order)


class Solved(eqx.Module):
    """A diffrax solution in normalised time, read in physical time ``t = t0 + s T``."""

    sol: diffrax.Solution
    t0: jax.Array
    span: jax.Array  # T = t1 - t0

    @property
    def ys(self):
        return self.sol.ys

    @property
    def ts(self):
        """Physical times of the saved rows (``inf`` for unfilled rows)."""
        return self.t0 + self.sol.ts * self.span

    @property
    def stats(self):
        return self.sol.stats

    @property
    def next_step(self):
        """The step size (physical, positive) the controller proposed after the last step:
        where a following solve can start instead of choosing its first step afresh."""
        return jnp.abs(self.sol.controller_state[2] * self.span)

    def evaluate(self, t):
        """The dense output at physical time ``t`` (in the solved span; just outside it, the
        nearest step's interpolant).

        diffrax's ``DenseInterpolation.evaluate`` written without its ``lax.cond`` (a NaN for
        times out of bounds) and its zero-length case (impossible in normalised time), and
        for dxdt's polynomial interpolants
        (:func:`~dxdt.solvers._diffrax.polynomial_interpolation`) without copying the step's
        buffers out: the interpolating adjoint evaluates at every stage of every backward step.
        """
        interp = self.sol.interpolation
        s = (t - self.t0) / self.span
        ts = interp.ts
        index = jnp.clip(sorted_position(ts, s) - 1, 0, interp.ts_size - 2)
        if interp.interpolation_cls is not polynomial_interpolation():  # BS3, Euler, stabilized
            infos = jax.tree_util.tree_map(lambda x: x[index], interp.infos)
            return interp.interpolation_cls(t0=ts[index], t1=ts[index + 1], **infos).evaluate(s)
        # the step's polynomial read straight from the buffers, in one loop over the state
        # (copying the step's vectors out first cost the interpolating adjoint on Gray-Scott
        # 32 4 of its 8.6 ms). It sits in a conditional (both branches equal) so that XLA
        # computes it once: fused into its consumers, it was recomputed at every point of a
        # stencil reading u (5x on a Laplacian); XLA drops optimization barriers before fusing.
        theta = (s - ts[index]) / (ts[index + 1] - ts[index])

        def interpolant():
            def leaf(y0, c):
                at = lambda x: jax.lax.dynamic_index_in_dim(x, index, keepdims=False)  # noqa: E731
                return horner(at(y0), at(c), theta.astype(c.real.dtype))
            return jax.tree_util.tree_map(leaf, interp.infos["y0"], interp.infos["c"])
        if self.small_state:  # recomputing is cheaper than the conditional's call
            return interpolant()
        return jax.lax.cond(theta == theta, interpolant, interpolant)

    @property
    def small_state(self) -> bool:
        """Whether the state has fewer than :data:`_ONCE_FROM_SIZE` entries: its dense
        output costs less to recompute than to hold (:meth:`evaluate`), and reading it at
        a step's stages in one batch pays (:meth:`evaluate_stages`; on Gray-Scott 32 the
        batch made the interpolating gradient 24% slower: the lookups cost nothing beside
        the field, and the batch computes seven stages where six are read)."""
        leaves = jax.tree_util.tree_leaves(self.sol.interpolation.infos["y0"])
        return sum(leaf[0].size for leaf in leaves) < _ONCE_FROM_SIZE

    def evaluate_stages(self, t):
        """The dense output at the times ``t`` (1-d, leading axis of the result) of one step
        of another solve: the interpolating adjoint's stages (:class:`StageArgs`).

        The step's first interval is looked up once, the others in a window of the next
        :data:`_STAGE_WINDOW` step ends (one comparison of all times with the window),
        and the polynomials evaluated together: seven separate lookups were half of a
        small model's backward step (Lotka-Volterra: 0.70 us a step against 0.39 us).
        A step longer than the window's intervals slides the window on (a loop, not a
        ``cond``: under ``vmap`` a ``cond`` runs both branches, the loop only as long as
        some member needs it).
        """
        interp = self.sol.interpolation
        if interp.interpolation_cls is not polynomial_interpolation():
            return jax.vmap(self.evaluate)(t)
        s = (t - self.t0) / self.span
        ts = interp.ts
        n = ts.shape[0]
        k = min(_STAGE_WINDOW, n)
        s_max = jnp.max(s)

        def below(begin, counted_from):
            """How many of ``ts[counted_from : begin + k]`` lie below each time."""
            window = jax.lax.dynamic_slice_in_dim(ts, begin, k)
            fresh = begin + jnp.arange(k, dtype=begin.dtype) >= counted_from
            return jnp.sum(fresh & (window[None, :] < s[:, None]), axis=1, dtype=begin.dtype)

        def more(carry):  # entries after the window may still lie below a time
            end = carry[0] + k
            return (end < n) & (ts[jnp.minimum(end, n) - 1] < s_max)

        def slide(carry):
            start, position = carry
            begin = jnp.minimum(start + k, n - k)
            return start + k, position + below(begin, start + k)

        start = jnp.minimum(sorted_position(ts, jnp.min(s)), n - k)  # ts[:start] all < s
        _, position = jax.lax.while_loop(more, slide, (start, start + below(start, start)))
        index = jnp.clip(position - 1, 0, interp.ts_size - 2)
        theta = (s - ts[index]) / (ts[index + 1] - ts[index])
        return jax.tree_util.tree_map(
            lambda y0, c: jax.vmap(horner)(y0[index], c[index], theta.astype(c.real.dtype)),
            interp.infos["y0"], interp.infos["c"])


_ONCE_FROM_SIZE = 512  # state entries from which the dense output is computed once per reading
_STAGE_WINDOW = 8  # step ends searched after a step's first interval (Solved.evaluate_stages)


@contextmanager
def quiet_about_complex(tree):
    """Without diffrax's trace-time notice that complex states are "a work in progress"
    (it names no call of the user's; dxdt tests complex states against the NumPy backend).
    Only around complex solves: ``catch_warnings`` is process-wide."""
    if not any(jnp.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves(tree)):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Complex dtype support in Diffrax", category=UserWarning)
        yield


def odeint(vector_field, y0, args, t0, t1, options: SolveOptions, *, ts=None, dense=False,
           differentiable: str = "forward", max_steps: int | None = None,
           save_steps: bool = False, dt0=None, adaptive: bool = True, progress_meter=None,
           spectral_radius=None, stage_input=None):
    """Solve ``dy/dt = vector_field(t, y, args)`` from ``t0`` to ``t1`` (either direction).

    Parameters
    ----------
    vector_field : callable
        ``vector_field(t, y, args)`` in physical time.
    ts : array, optional
        Save at these times, then at ``t1`` (the last row tells where a failed solve
        stopped). Without ``ts``: only ``t1``, or every step with ``save_steps``.
    dense : bool
        Keep the dense output (``Solved.evaluate``).
    differentiable : {"forward", "reverse"}
        diffrax adjoint: ``ForwardMode`` or ``RecursiveCheckpointAdjoint``.
    max_steps : int, optional
        Size of diffrax's step buffers (default ``options.max_steps``).
    dt0 : float, optional
        First step (or the fixed step when ``adaptive=False``), in physical time.
    spectral_radius : callable, optional
        ``spectral_radius(t, y, args)``: a bound of the spectral radius of
        ``d vector_field / dy`` in physical time, for a stabilized method instead of its
        power iteration (the user's ``eigen_est``).
    stage_input : callable, optional
        An input of the field known beforehand at every time (the interpolating
        adjoint's ``u(t)``), passed as ``vector_field(t, y, args, u)``;
        ``stage_input(times)`` takes the physical times of one step's stages (1-d) and
        returns the input at each on a leading axis: a Runge-Kutta step evaluates it at
        all its stages at once (see :meth:`Solved.evaluate_stages`).

    Returns
    -------
    (Solved, code)
        The solution and its status code (0 success, see ``STATUS_CODES``).
    """
    method = options.method
    dtype = jnp.result_type(float)
    y0, unravel = _flat_if_small(y0, dense)
    if unravel is not None:  # the field and a spectral-radius bound on the flat vector
        vector_field = _on_flat(vector_field, unravel, lambda dy: ravel_pytree(dy)[0])
        spectral_radius = None if spectral_radius is None else _on_flat(spectral_radius, unravel)
    field, t0, span, scale, input_at = _normalised(vector_field, t0, t1, stage_input)
    if adaptive:
        pcoeff, icoeff = pid_coefficients(method)
        controller = GuardedController(options.rtol, options.atol, pcoeff, icoeff,
                                       jnp.where(span == 0, 0.0, STEP_FLOOR), order=method.order, time_scale=scale,
                                       time_origin=t0,
                                       never_shrink_after_accept=isinstance(method, AbstractStabilized))
    else:
        controller = FixedGrid()
    rho = _normalised_radius(spectral_radius, t0, span)
    # a stabilized method counts its f evaluations and stage counts in its solver state
    counting = dict(controller_state=True, solver_state=isinstance(method, AbstractStabilized))
    if ts is not None:
        # clipped into [0, 1] against rounding, with the derivative of the unclipped time: a
        # save time at the span's start (moving with it) had half its derivative (JAX's
        # clip at a tie), so a row at a dose time got half the dose time's derivative
        s_save = (jnp.asarray(ts, dtype) - t0) / scale
        s_save = s_save + jax.lax.stop_gradient(jnp.clip(s_save, 0.0, 1.0) - s_save)
        saveat = diffrax.SaveAt(ts=s_save, t1=True, dense=dense, **counting)
    elif save_steps:
        saveat = diffrax.SaveAt(t0=True, steps=True, dense=dense, **counting)
    else:
        saveat = diffrax.SaveAt(t1=True, dense=dense, **counting)
    adjoint = diffrax.ForwardMode() if differentiable == "forward" else diffrax.RecursiveCheckpointAdjoint()
    solver = diffrax_solver(method, ts is not None or dense, dense_buffer=dense, spectral_radius=rho,
                            limited=adaptive, stage_input=input_at)
    # diffrax checks dt0 and the save times at run time, by host callbacks unless traced
    # without them; dxdt's never trip (dt0 has the span's sign, the save times are sorted
    # and clipped into [0, 1]), and a callback anywhere inside a loop keeps XLA:CPU from
    # compiling that loop into one kernel: the interpolating adjoint's save intervals (a
    # scan of solves with a traced dt0) cost 40% more with them (Lotka-Volterra)
    with quiet_about_complex((y0, args)), without_host_callbacks():
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, 0.0, 1.0, None if dt0 is None else dt0 / scale, y0, args=args,
            saveat=saveat,
            stepsize_controller=controller, max_steps=max_steps or options.max_steps, throw=False,
            adjoint=adjoint, progress_meter=progress_meter or diffrax.NoProgressMeter(),
        )
    nonfinite = sol.controller_state[1]
    if unravel is not None:
        sol = eqx.tree_at(lambda s: s.ys, sol, jax.vmap(unravel)(sol.ys))
    return Solved(sol, t0, span), status_code(sol.result, nonfinite)


def _flat_if_small(y0, dense: bool):
    """``(y0 as one flat vector, unravel)`` for a state of several leaves of one dtype
    with fewer than :data:`FLAT_BELOW` entries in all, else ``(y0, None)``.

    Solved as one vector, the Runge-Kutta combinations and the error norm act on one array
    instead of on each leaf (the norm, over all entries either way, and so the steps are
    the same). A dense solve keeps its leaves: its dense output is read as the state's
    pytree (:class:`Solved`)."""
    leaves = jax.tree_util.tree_leaves(y0)
    if dense or len(leaves) < 2 or len({jnp.result_type(x) for x in leaves}) > 1:
        return y0, None
    if sum(jnp.size(x) for x in leaves) >= FLAT_BELOW:
        return y0, None
    return ravel_pytree(y0)


def _on_flat(function, unravel, out=lambda x: x):
    """``function(t, y, args, *more)`` taking the flat vector of a pytree state ``y``."""
    return lambda t, y, args, *more: out(function(t, unravel(y), args, *more))


# states (every leaf: the state and its tangents, an adjoint and its parameter integral)
# with fewer entries than this are solved as one flat vector (_flat_if_small). Same-process
# medians of jax.jit-ed derivatives of jax_solve, flat against by leaves (the adjoint's
# solves): Lorenz grad -16%, hessian -13%, vmap(grad) -18%, nested -17%; Lotka-Volterra
# grad -12%, nested -14%; heat_1d(32) grad -5%; but heat_1d(128)'s nested gradient (a
# 262-entry second-order adjoint) +18%: there the concatenations cost more than the
# leaves' separate combinations
FLAT_BELOW = 128
