"""dxdt's step-size control as a diffrax controller, with the NumPy executor's failure rules.

The PI formula of :class:`dxdt.solvers._controller.PIController` (diffrax's
``PIDController`` with ``dcoeff = 0``; ``pcoeff``/``icoeff`` from
:func:`dxdt.solvers._diffrax.pid_coefficients`), written out so that it also follows the
NumPy executor where diffrax differs, at the cost of one scalar test per step:

- a step whose error estimate or new state is not finite is rejected and shrunk by
  ``factor_min`` (diffrax would propagate the NaN into the step size, or accept a NaN
  state whose error is finite);
- a step size below ``dt_floor`` (16 eps |t|, in the solve's time unit) ends the solve with
  diffrax's ``dt_min_reached``; the controller state records whether the last rejection was
  non-finite, so that the caller reports ``"nonfinite"`` (f returned NaN/inf and no step
  helped) rather than ``"dt_min"``, as the NumPy backend does.

With ``e = ||err / (atol + rtol max(|u_n|, |u_{n+1}|))||_RMS`` and ``q`` the error order
(the method's order + 1), a step is accepted when ``e < 1`` and the next step is

.. math:: h_{n+1} = h_n \\operatorname{clip}\\big(s\\, e_n^{-(\\beta_P+\\beta_I)/q}\\,
   e_{n-1}^{\\beta_P/q},\\ f_{min},\\ f_{max}\\big)

(Söderlind & Wang, J. Comput. Appl. Math. 185, 2006; ``e_{n-1}`` of the last accepted
step; ``f_min = 1`` and ``f_max = s`` after an accepted and a rejected step respectively).
The wrapped diffrax ``PIDController`` only chooses the first step (Hairer & Wanner's
algorithm). Imported only on a JAX path.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx

from ._controller import PIController


class GuardedController(diffrax.AbstractAdaptiveStepSizeController):
    """A PI controller that rejects non-finite steps and reports step-size underflow.

    The state is ``(1 / e of the last accepted step, last rejection non-finite, the step
    proposed next)``: the last, read after a solve, starts the next of a chain of solves
    (the adjoint's save intervals) where this one ended, instead of choosing afresh.
    """

    rtol: float
    atol: float
    pcoeff: float
    icoeff: float
    dt_floor: jax.Array
    safety: float = PIController.safety
    factor_min: float = PIController.factor_min
    factor_max: float = PIController.factor_max
    norm: Callable = optx.rms_norm

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        pid = diffrax.PIDController(rtol=self.rtol, atol=self.atol, pcoeff=self.pcoeff, icoeff=self.icoeff)
        t_next, (inv, _, _) = pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return t_next, (inv, jnp.asarray(False), t_next - t0)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        prev_inv, _, _ = controller_state

        def scaled(u0, u1, err):
            # (u1 - u1) is NaN where u1 is not finite: such a step is rejected as well
            return err / (self.atol + jnp.maximum(jnp.abs(u0), jnp.abs(u1)) * self.rtol) + (u1 - u1)

        error = jax.lax.stop_gradient(self.norm(jax.tree_util.tree_map(scaled, y0, y1_candidate, y_error)))
        finite = jnp.isfinite(error)
        keep = finite & (error < 1)
        inv = jnp.where(finite, 1 / error, 0.0)  # 0: shrink by factor_min
        factor = self.safety * inv ** ((self.pcoeff + self.icoeff) / error_order) \
            * prev_inv ** (-self.pcoeff / error_order)
        factor = jnp.clip(factor, jnp.where(keep, 1.0, self.factor_min), jnp.where(keep, self.factor_max, self.safety))
        dt = (t1 - t0) * jax.lax.stop_gradient(factor)
        next_t0 = jnp.where(keep, t1, t0)
        inv = jnp.where(keep & (inv != 0) & jnp.isfinite(inv), inv, jnp.where(keep, 1.0, prev_inv))
        result = diffrax.RESULTS.where(dt < self.dt_floor, diffrax.RESULTS.dt_min_reached, diffrax.RESULTS.successful)
        return keep, next_t0, next_t0 + dt, False, (inv, ~finite, dt), result
