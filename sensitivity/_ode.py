"""One diffrax call shared by every sensitivity pass (forward, adjoint, checkpoint).

Passes are written as plain ``diffeqsolve`` calls on augmented systems, so that they
can themselves be differentiated forward (``jax.jvp``) for second-order operators:
``differentiable="forward"`` uses diffrax's ``ForwardMode`` adjoint, ``"reverse"`` its
``RecursiveCheckpointAdjoint`` (the discrete adjoint). Solves never raise inside JAX;
their result codes travel out and :func:`raise_on_failure` turns them into
``SolverError`` on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._solution import SolverError
from ..solvers import AbstractRungeKutta
from ._jax import load_jax

jax, jnp = load_jax()
import diffrax  # noqa: E402  (after load_jax: float64 on)

from ..solvers._diffrax import diffrax_solver, pid_coefficients  # noqa: E402

_EPS = np.finfo(np.float64).eps
STATUS_CODES = {0: "success", 1: "max_steps", 2: "dt_min", 3: "nonfinite"}


@dataclass(frozen=True)
class SolveOptions:
    """Static options of every ODE solve inside a sensitivity computation."""

    method: AbstractRungeKutta
    rtol: float
    atol: float
    max_steps: int


def status_code(result) -> jnp.ndarray:
    """diffrax's result as dxdt's status code (see ``STATUS_CODES``)."""
    return jnp.where(
        result == diffrax.RESULTS.successful, 0,
        jnp.where(result == diffrax.RESULTS.max_steps_reached, 1,
                  jnp.where(result == diffrax.RESULTS.dt_min_reached, 2, 3)),
    )


def odeint(vector_field, y0, args, t0, t1, options: SolveOptions, *, ts=None, dense=False,
           differentiable: str = "forward", max_steps: int | None = None):
    """Solve ``dy/dt = vector_field(t, y, args)`` from ``t0`` to ``t1`` (either direction).

    Saves at ``ts`` (then at ``t1``), or only at ``t1``. Returns the diffrax solution and
    a status code (0 success).
    """
    method = options.method
    with_interp = ts is not None or dense
    pcoeff, icoeff = pid_coefficients(method)
    controller = diffrax.PIDController(
        rtol=options.rtol, atol=options.atol, pcoeff=pcoeff, icoeff=icoeff,
        dtmin=16 * _EPS * jnp.maximum(jnp.abs(t0), jnp.abs(t1)), force_dtmin=False,
    )
    saveat = diffrax.SaveAt(ts=ts, t1=True, dense=dense) if ts is not None else diffrax.SaveAt(t1=True, dense=dense)
    adjoint = diffrax.ForwardMode() if differentiable == "forward" else diffrax.RecursiveCheckpointAdjoint()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), diffrax_solver(method, with_interp), t0, t1, None, y0,
        args=args, saveat=saveat, stepsize_controller=controller,
        max_steps=max_steps or options.max_steps, throw=False, adjoint=adjoint,
    )
    return sol, status_code(sol.result)


def raise_on_failure(codes, what: str, hint: str = "") -> None:
    """Raise ``SolverError`` if any solve of a sensitivity computation failed."""
    codes = np.atleast_1d(np.asarray(codes))
    bad = codes[codes != 0]
    if bad.size:
        status = STATUS_CODES.get(int(bad[0]), "nonfinite")
        hints = {
            "max_steps": "increase max_steps, or loosen rtol/atol",
            "dt_min": "the step size underflowed: the problem may be singular or too stiff",
            "nonfinite": "non-finite values appeared: check f, p and the time span",
        }
        raise SolverError(f"{what} failed with status {status!r}: {hints[status]}{hint}.")
