"""dxdt's step-size control as a diffrax controller, with the NumPy executor's failure rules.

The PI formula of :class:`dxdt.solvers._controller.PIController` (diffrax's
``PIDController`` with ``dcoeff = 0``; ``pcoeff``/``icoeff`` from
:func:`dxdt.solvers._diffrax.pid_coefficients`), written out so that it also follows the
NumPy executor where diffrax differs, at the cost of one scalar test per step:

- a step whose error estimate or new state is not finite is rejected and shrunk by
  ``factor_min`` (diffrax would propagate the NaN into the step size, or accept a NaN
  state whose error is finite);
- a proposed step below ``dt_floor |t|`` (``dt_floor = 16 eps``, ``t`` the physical time
  where the step would start, in the solve's time unit) ends the solve with
  diffrax's ``dt_min_reached``; the controller state records whether a step was rejected
  as non-finite since the step last grew, so that the caller reports ``"nonfinite"`` (f
  returned NaN/inf and no step helped) rather than ``"dt_min"``, as the NumPy backend does
  (a rule that does not hinge on the last attempt: the two backends' last few steps
  before such a failure differ in rounding);
- a solver whose stability bounds the step (a stabilized method at its largest stage
  count) reports a :class:`StepReport` as its error: no step is proposed beyond its
  stability interval ``h_stable``, an attempt beyond it is retried at ``h_stable`` (the
  NumPy executor shortens such a step before taking it), and the work of rejected
  attempts, which diffrax drops with the solver state, is counted here.

With ``e = ||err / (atol + rtol max(|u_n|, |u_{n+1}|))||_RMS`` and ``q`` diffrax's error
order (the embedded pair's lower order + 1), a step is accepted when ``e <= 1``; the next
step after an accepted one is

.. math:: h_{n+1} = h_n \\operatorname{clip}\\big(s\\, e_n^{-(\\beta_P+\\beta_I)/q}\\,
   e_{n-1}^{\\beta_P/q},\\ f_{min},\\ f_{max}\\big)

(at most ``h_n`` right after a rejection; ``e_{n-1}`` of the last accepted step, floored at
1e-4), and after a rejected one ``h max(f_min, s e^{-1/q})``: the NumPy executor's rules
(Söderlind & Wang, J. Comput. Appl. Math. 185, 2006; Hairer, Norsett & Wanner I, II.4), so
that both backends take the same steps. The first step is Hairer & Wanner's, computed in
physical time as the NumPy backend does. For a stabilized method the older clipping stays
(``never_shrink_after_accept``, see the field). Imported only on a JAX path.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from ..sensitivity._jax import load_diffrax

load_diffrax()  # first: diffrax and JAX are imported once, under a lock
import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax
import jax.numpy as jnp
import optimistix as optx
from jax.flatten_util import ravel_pytree

from ._controller import PIController

STIFF_MARGIN = 1.05  # a proposal above this times h_stable is recorded (below: rounding of rho)
NO_STIFF_RECORD = (float("inf"), 0.0, 0.0)  # GuardedState.stiff before any proposal exceeded the bound


class StepReport(eqx.Module):
    """A solver's error estimate with what its stability says about the step.

    ``error``: the error estimate (the state's structure); ``h_stable``: the longest step
    the solver can take stably from here (``inf``: no bound); ``covered``: whether this
    attempt was within it (if not, the solver did not take it and ``error`` is meaningless);
    ``work``: the attempt's integer counters (f evaluations, stage count, estimates).
    """

    error: object
    h_stable: jax.Array
    covered: jax.Array
    work: jax.Array


class GuardedState(NamedTuple):
    """:class:`GuardedController`'s state."""

    inv: jax.Array  # 1 / e of the last accepted step
    nonfinite: jax.Array  # a rejection was non-finite since the step last grew
    next_step: jax.Array  # the step proposed next
    rejected_work: jax.Array  # StepReport.work summed (stage count: max) over rejected attempts
    stiff: jax.Array  # [s, proposal, proposal / h_stable] where a proposal first exceeded the bound
    rejected: jax.Array  # the last attempt was rejected (the next accepted step may not grow)
    end: jax.Array  # where the solve ends (a proposal after the last step is never taken)


def ravel_like(atol, tree):
    """``atol`` (a scalar, or an array broadcastable to each leaf of ``tree``) raveled as
    ``ravel_pytree(tree)`` ravels the state (an ``atol`` of shape ``(2, 1)`` for a state of
    shape ``(2, 3)`` broadcast against the raveled state instead: a wrong first step)."""
    atol = jnp.asarray(atol)
    if atol.ndim == 0:
        return atol
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.concatenate([jnp.broadcast_to(atol, jnp.shape(leaf)).ravel() for leaf in leaves])


def first_step(derivative, flat, span, rtol, atol, order: int, norm: Callable = optx.rms_norm):
    """The starting step (physical, positive) of Hairer, Norsett & Wanner I, Sec. II.4, as
    the NumPy backend computes it (:func:`dxdt.solvers._controller.initial_step`), with
    ``derivative(h, y)`` the derivative along the direction of integration at ``h`` after
    the start, ``flat`` the start state, ``atol`` raveled like it (:func:`ravel_like`) and
    ``span`` the length of the whole solve."""
    scale = atol + rtol * jnp.abs(flat)
    f0 = derivative(0.0, flat)
    d0, d1 = norm(flat / scale), norm(f0 / scale)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.minimum(jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1.0, d1)), span)
    f1 = derivative(h0, flat + h0 * f0)
    d2 = norm((f1 - f0) / scale) / h0
    big = jnp.maximum(d1, d2)
    h1 = jnp.where(big <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3),
                   (0.01 / jnp.where(big <= 1e-15, 1.0, big)) ** (1.0 / (order + 1)))
    h = jnp.where(jnp.isfinite(big), jnp.minimum(jnp.minimum(100 * h0, h1), span), h0 * 1e-3)
    # f non-finite at the start: a step all the same, which the controller then rejects
    return jnp.where(jnp.isfinite(h) & (h > 0), h, 0.01 * span)


class GuardedController(diffrax.AbstractAdaptiveStepSizeController):
    """A PI controller that rejects non-finite steps and reports step-size underflow.

    The state is a :class:`GuardedState`; its ``next_step``, read after a solve, starts
    the next of a chain of solves (the adjoint's save intervals) where this one ended,
    instead of choosing afresh.
    """

    rtol: float
    atol: float
    pcoeff: float
    icoeff: float
    dt_floor: jax.Array  # relative: steps below dt_floor |t| underflow (0: no floor)
    safety: float = PIController.safety
    factor_min: float = PIController.factor_min
    factor_max: float = PIController.factor_max
    norm: Callable = optx.rms_norm
    order: int | None = None  # the method's order: the first step as the NumPy backend picks it
    time_scale: object = 1.0  # physical time per unit of the solve's time (odeint's span)
    time_origin: object = 0.0  # the physical time at the solve's time 0 (odeint's t0)
    first_inv: object = None  # 1 / e of the step before the first: a solve that goes on from another
    # a stabilized solver tells a retry by a step shorter than its last accepted one
    # (_stabilized_diffrax.RETRY_RATIO), so for it no accepted step may be followed by a
    # shorter proposal: diffrax's clipping (factor >= 1 after an accepted step, the PI factor
    # after a rejected one) instead of the NumPy executor's rules
    never_shrink_after_accept: bool = False

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        if dt0 is None and self.order is not None:
            t_next, inv = t0 + self._first_step(terms, t0, t1, y0, args, func), jnp.asarray(1.0)
        else:
            pid = diffrax.PIDController(rtol=self.rtol, atol=self.atol, pcoeff=self.pcoeff, icoeff=self.icoeff)
            t_next, (inv, _, _) = pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
        dtype = jnp.result_type(t_next)
        if self.first_inv is not None:
            inv = jnp.asarray(self.first_inv, jnp.result_type(inv))
        return t_next, GuardedState(inv, jnp.asarray(False), t_next - t0, jnp.zeros(3, int),
                                    jnp.array(NO_STIFF_RECORD, dtype), jnp.asarray(False), jnp.asarray(t1, dtype))

    def _first_step(self, terms, t0, t1, y0, args, func):
        """Hairer & Wanner's starting step as the NumPy backend computes it
        (:func:`first_step`, in physical time), returned in the solve's time, which runs
        forwards (:func:`dxdt.sensitivity._ode.odeint`'s normalised time). diffrax's own
        selection does not apply: for the wrapped terms that ``diffeqsolve`` passes it
        returns 0.01 of the span, whatever the tolerances."""
        stop = jax.lax.stop_gradient
        flat, unravel = ravel_pytree(stop(y0))
        time_scale = jnp.abs(stop(jnp.asarray(self.time_scale, jnp.result_type(t0))))

        def derivative(h, y):  # in physical time (with the span's sign), h after t0
            return stop(ravel_pytree(func(terms, t0 + h / time_scale, unravel(y), args))[0]) / time_scale

        h = first_step(derivative, flat, jnp.abs(t1 - t0) * time_scale, self.rtol, ravel_like(self.atol, y0),
                       self.order, self.norm)
        return h / time_scale

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        prev_inv, nonfinite, _, rejected_work, stiff, rejected_last, end = controller_state
        report = y_error if isinstance(y_error, StepReport) else None
        # (diffrax maps y_error's NaNs to inf, promoting its bool and int leaves to floats)
        covered = jnp.asarray(True) if report is None else report.covered != 0
        if report is not None:
            y_error = report.error

        def scaled(u0, u1, err):
            # (u1 - u1) is NaN where u1 is not finite: such a step is rejected as well
            return err / (self.atol + jnp.maximum(jnp.abs(u0), jnp.abs(u1)) * self.rtol) + (u1 - u1)

        error = jax.lax.stop_gradient(self.norm(jax.tree_util.tree_map(scaled, y0, y1_candidate, y_error)))
        finite = jnp.isfinite(error) | ~covered  # an attempt not taken is no NaN of f's
        inv = jnp.where(finite, 1 / error, 0.0)  # 0: shrink by factor_min
        if self.never_shrink_after_accept:
            keep = finite & (error < 1) & covered
            factor = self.safety * inv ** ((self.pcoeff + self.icoeff) / error_order) \
                * prev_inv ** (-self.pcoeff / error_order)
            factor = jnp.clip(factor, jnp.where(keep, 1.0, self.factor_min),
                              jnp.where(keep, self.factor_max, self.safety))
        else:  # the NumPy executor's rules (dxdt.solvers._controller.PIController)
            keep = finite & (error <= 1) & covered
            factor = jnp.where(keep, self._accepted_factor(inv, prev_inv, rejected_last, error_order),
                               jnp.maximum(self.factor_min, self.safety * inv ** (1 / error_order)))
        dt = (t1 - t0) * jax.lax.stop_gradient(factor)
        if report is not None:
            dt, rejected_work, stiff = self._within_stability(t1, dt, keep, report, rejected_work, stiff,
                                                              before_end=t1 != end)
        next_t0 = jnp.where(keep, t1, t0)
        if self.never_shrink_after_accept:
            inv = jnp.where(keep & (inv != 0) & jnp.isfinite(inv), inv, jnp.where(keep, 1.0, prev_inv))
        else:  # e_{n-1} floored at min_previous_error (DOPRI5's facold), as the NumPy executor does
            inv = jnp.where(keep, jnp.minimum(inv, 1 / PIController.min_previous_error), prev_inv)
        result = diffrax.RESULTS.where(dt < self._floor(next_t0), diffrax.RESULTS.dt_min_reached,
                                       diffrax.RESULTS.successful)
        nonfinite = ~finite | (nonfinite & ~(keep & (factor > 1)))
        state = GuardedState(inv, nonfinite, dt, rejected_work, stiff, ~keep & covered, end)
        return keep, next_t0, next_t0 + dt, False, state, result

    def _floor(self, t):
        """The smallest step from the solve's time ``t``: ``16 eps |t|`` in physical time, as
        the NumPy executor's, and at least the smallest normal number (a floor fixed by the
        span's ends, ``16 eps max(|t0|, |t1|)``, ended a solve over ``[0, 1e8]`` at
        ``t = 1e-8``, where NumPy steps on)."""
        stop = jax.lax.stop_gradient
        scale = jnp.abs(stop(jnp.asarray(self.time_scale, jnp.result_type(t))))
        t_physical = stop(jnp.asarray(self.time_origin, jnp.result_type(t))) + t * scale
        # near t = 0 at least the smallest normal number: XLA flushes subnormals to zero,
        # and a floor of 0 would let a step shrunk to 0 go on to max_steps
        tiny = jnp.where(self.dt_floor > 0, jnp.finfo(jnp.result_type(t)).tiny, 0.0)
        return jnp.maximum(self.dt_floor * jnp.abs(t_physical) / scale, tiny)

    def _accepted_factor(self, inv, prev_inv, rejected_last, error_order):
        """The PI factor after an accepted step, clipped to ``[factor_min, factor_max]``
        (``factor_max`` for a zero error), at most 1 right after a rejection."""
        factor = self.safety * inv ** ((self.pcoeff + self.icoeff) / error_order) \
            * prev_inv ** (-self.pcoeff / error_order)
        factor = jnp.where(jnp.isfinite(inv), jnp.clip(factor, self.factor_min, self.factor_max), self.factor_max)
        return jnp.where(rejected_last, jnp.minimum(factor, 1.0), factor)

    @staticmethod
    def _within_stability(t1, dt, keep, report: StepReport, rejected_work, stiff, before_end):
        """The proposal ``dt`` cut to the stability bound (an attempt beyond it is retried
        at the bound), the rejected attempts' work, and where an accepted step's proposal
        first exceeded the bound (the NumPy executor's "too stiff" warning)."""
        stop = jax.lax.stop_gradient
        h_stable = stop(report.h_stable).astype(dt.dtype)
        proposal = jnp.abs(dt)
        cut = jnp.where(report.covered != 0, jnp.minimum(proposal, h_stable), h_stable)
        work = report.work.astype(rejected_work.dtype)
        added = jnp.stack([rejected_work[0] + work[0], jnp.maximum(rejected_work[1], work[1]),
                           rejected_work[2] + work[2]])
        # (after the last step no step follows: the NumPy executor warns when it takes one)
        first = keep & before_end & (stiff[0] == jnp.inf) & (proposal > STIFF_MARGIN * h_stable)
        record = jnp.stack([stop(t1), stop(proposal), stop(proposal / h_stable)]).astype(stiff.dtype)
        stiff = jnp.where(first, record, stiff)
        return jnp.sign(dt) * cut, jnp.where(keep, rejected_work, added), stiff


def stiff_record(solution):
    """``[s, proposal, proposal / h_stable]`` where :class:`GuardedController` first proposed
    a step beyond a solver's stability interval after an accepted step (in the solve's
    time; ``s = inf`` if never, or if the solve ran under another controller); see
    :func:`~dxdt.solvers._stabilized_executor.recorded_too_stiff`."""
    state = solution.controller_state
    return state.stiff if isinstance(state, GuardedState) else jnp.array(NO_STIFF_RECORD)


class FixedGridState(NamedTuple):
    """:class:`FixedGrid`'s state."""

    count: jax.Array  # steps taken on the grid
    nonfinite: jax.Array  # the last attempt gave a non-finite state (the solve ends there)
    origin: jax.Array
    end: jax.Array
    dt: jax.Array


class FixedGrid(diffrax.AbstractStepSizeController):
    """Fixed steps on the NumPy executor's grid ``t_k = t_0 + k\\,dt``, the last one cut to
    ``t_1`` (a grid point within ``10^{-12} dt`` of ``t_1`` is ``t_1``); a step whose new
    state is not finite ends the solve with diffrax's ``dt_min_reached`` and the state's
    ``nonfinite`` flag, which the caller reports as ``"nonfinite"``, keeping the steps before.

    diffrax's ``ConstantStepSize`` instead spreads the steps evenly over the span after the
    first (other times than the NumPy backend's whenever ``dt`` does not divide it) and
    accepts non-finite states.

    ``origin`` and ``first`` (traced scalars): a solve that resumes a grid begun earlier
    (after an event: the chunks of :mod:`dxdt._events_jax`), on ``t_k = origin + k\\,dt``
    from ``k = first``; by default the grid starts at the solve's ``t0`` with ``k = 1``.
    """

    origin: object = None
    first: object = None

    def wrap(self, direction):  # diffrax runs a backward solve in -t
        return self if self.origin is None else type(self)(self.origin * direction, self.first)

    def _grid(self, count, origin, end, dt):
        t = origin + count.astype(dt.dtype) * dt
        return jnp.where(t - end >= -1e-12 * jnp.abs(dt), end, t)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        if dt0 is None:
            raise ValueError("fixed steps need dt")
        dtype = jnp.result_type(t0, t1, dt0)
        origin = t0 if self.origin is None else self.origin
        origin, end, dt = (jnp.asarray(x, dtype) for x in (origin, t1, dt0))
        first = jnp.asarray(1 if self.first is None else self.first, jnp.int32)
        return self._grid(first, origin, end, dt), FixedGridState(first, jnp.asarray(False), origin, end, dt)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        count, _, origin, end, dt = controller_state
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(y1_candidate)]))
        count = jnp.where(finite, count + 1, count)
        next_t0 = jnp.where(finite, t1, t0)
        result = diffrax.RESULTS.where(finite, diffrax.RESULTS.successful, diffrax.RESULTS.dt_min_reached)
        return finite, next_t0, self._grid(count, origin, end, dt), False, \
            FixedGridState(count, ~finite, origin, end, dt), result
