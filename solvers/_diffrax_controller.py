"""dxdt's step-size control as a diffrax controller, with the NumPy executor's failure rules.

diffrax's ``PIDController`` (with ``pcoeff``/``icoeff`` from
:func:`dxdt.solvers._diffrax.pid_coefficients`) gives the PI formula of
:class:`dxdt.solvers._controller.PIController`. Wrapped here, it also follows the NumPy
executor where diffrax differs:

- a step whose error estimate or new state is not finite is rejected and shrunk by
  ``factor_min`` (diffrax would propagate the NaN into the step size);
- a step size below ``dt_floor`` (16 eps |t|, in the solve's time unit) ends the solve with
  diffrax's ``dt_min_reached``; the controller state records whether the last rejection was
  non-finite, so that the caller reports ``"nonfinite"`` (f returned NaN/inf and no step
  helped) rather than ``"dt_min"``, as the NumPy backend does.

No ``dtmin`` is given to the PID controller itself: its clipping logic costs about 10% per
step and a larger program. Imported only on a JAX path.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


class GuardedController(diffrax.AbstractAdaptiveStepSizeController):
    """A PID controller that rejects non-finite steps and reports step-size underflow.

    The state is ``(pid_state, last_rejection_nonfinite)``.
    """

    rtol: float
    atol: float
    pid: diffrax.PIDController
    dt_floor: jax.Array
    norm: Callable = optx.rms_norm

    def __init__(self, rtol, atol, pcoeff, icoeff, dt_floor):
        self.rtol, self.atol = rtol, atol
        self.pid = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff)
        self.dt_floor = dt_floor

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        t_next, state = self.pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return t_next, (state, jnp.asarray(False))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        state, _ = controller_state
        finite = _all_finite(y_error) & _all_finite(y1_candidate)
        y_error = jax.tree_util.tree_map(lambda e: jnp.where(finite, e, jnp.inf), y_error)
        keep, next_t0, next_t1, jump, state, result = self.pid.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state)
        underflow = jax.lax.stop_gradient(next_t1 - next_t0) < self.dt_floor
        result = diffrax.RESULTS.where(underflow, diffrax.RESULTS.dt_min_reached, result)
        return keep, next_t0, next_t1, jump, (state, ~finite), result
