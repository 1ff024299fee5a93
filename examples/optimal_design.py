"""Choose measurement times that maximise the information about a model's parameters.

One-compartment pharmacokinetics with first-order absorption: a dose in the gut ``g``
enters the blood ``c`` at rate ``ka`` and is eliminated at rate ``ke``,
``g' = -ka g``, ``c' = ka g - ke c``, ``(g, c)(0) = (1, 0)``, unknown ``theta = (ka, ke)``.
Measuring ``c`` at times ``tau_1, tau_2`` gives the sensitivity matrix
``J_ij = d c(tau_i) / d theta_j`` and the Fisher information ``J^T J`` (unit noise); the
D-optimal design maximises ``phi(tau) = log det(J^T J)``. ``phi`` contains a Jacobian of
the solve (``jax.jacfwd``: forward sensitivities), and its gradient in ``tau``
differentiates that Jacobian again: the nested case, computed forward-over-reverse by
``sens.jax_solve`` without ever reversing through a solve twice.

Measurement times enter as parameters of the time-rescaled model (right-hand side times
``tau``, on ``s in [0, 1]``, so ``u(s = 1) = u(tau)``), vmapped over the times.
``optax.adam`` maximises ``phi``; the script fails unless the gradient matches central
finite differences, and the optimum matches (or beats) the best design of a grid search.

Reference: G. Atkinson, A. Donev, R. Tobias, *Optimum Experimental Designs, with SAS*,
Oxford (2007), ch. 17 (compartmental models, locally D-optimal designs).

Run: ``python examples/optimal_design.py [--quick] [--outdir DIR]``.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

THETA = np.array([0.7, 0.2])  # (ka, ke), per hour
U0 = np.array([1.0, 0.0])  # (gut, blood)
T_MAX = 24.0  # measurements in (0, T_MAX) hours
TAU_START = np.array([4.0, 8.0])
RTOL, ATOL = 1e-9, 1e-11


def absorption_scaled(du, u, p, t):
    """``(g, c)' = tau (-ka g, ka g - ke c)`` with ``p = (ka, ke, tau)``."""
    ka, ke, tau = p
    du[0] = -tau * ka * u[0]
    du[1] = tau * (ka * u[0] - ke * u[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and a coarser grid (or DXDT_EXAMPLES_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write optimal_design.png")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("DXDT_EXAMPLES_QUICK") == "1"

    import jax
    import jax.numpy as jnp
    import optax

    # p holds the longest horizon the design may reach: jax_solve sizes the interpolating
    # adjoint's step buffer from a solve at prob's p (a longer horizon would need more steps)
    prob = dxdt.ODEProblem(absorption_scaled, U0, (0.0, 1.0), np.array([*THETA, T_MAX]))
    F = sens.jax_solve(prob, Tsit5(), rtol=RTOL, atol=ATOL)
    u0, theta = jnp.asarray(U0), jnp.asarray(THETA)

    def u_at(theta, tau):  # c(tau) for parameters theta
        return F(u0, jnp.concatenate([theta, tau[None]]))[0, 1]

    def sensitivities(tau):  # rows d c(tau_i) / d theta
        return jax.vmap(lambda t: jax.jacfwd(u_at)(theta, t))(tau)

    def phi(tau):
        J = sensitivities(tau)
        return jnp.linalg.slogdet(J.T @ J)[1]

    def to_tau(z):
        return T_MAX * jax.nn.sigmoid(z)

    objective = jax.jit(jax.value_and_grad(lambda z: -phi(to_tau(z))))
    z = jnp.log(TAU_START / (T_MAX - TAU_START))

    grad_tau = jax.jit(jax.grad(phi))(jnp.asarray(TAU_START))
    h = 1e-4
    phi_jit = jax.jit(phi)
    fd = np.array([(phi_jit(TAU_START + h * e) - phi_jit(TAU_START - h * e)) / (2 * h) for e in np.eye(2)])
    print(f"d phi / d tau at tau = {TAU_START}: nested AD {np.asarray(grad_tau)}, finite differences {fd}")
    if not np.allclose(grad_tau, fd, rtol=1e-4, atol=1e-6):
        raise SystemExit("the nested gradient does not match finite differences")

    optimiser = optax.adam(0.1)
    state = optimiser.init(z)
    start = time.perf_counter()
    for _ in range(150 if quick else 300):
        value, grad = objective(z)
        updates, state = optimiser.update(grad, state, z)
        z = optax.apply_updates(z, updates)
    tau_opt = np.sort(np.asarray(to_tau(z)))
    phi_opt = float(phi_jit(jnp.asarray(tau_opt)))
    print(f"Adam: design {np.round(tau_opt, 3)}, phi {float(phi_jit(jnp.asarray(TAU_START))):.4f} -> "
          f"{phi_opt:.4f} ({time.perf_counter() - start:.1f} s, compile included)")

    grid = np.linspace(0.05, T_MAX - 0.05, 60 if quick else 150)
    rows = np.asarray(jax.jit(sensitivities)(jnp.asarray(grid)))  # (n, 2)
    dets = rows[:, None, 0] * rows[None, :, 1] - rows[:, None, 1] * rows[None, :, 0]
    with np.errstate(divide="ignore"):
        phi_grid = 2 * np.log(np.abs(dets))
    i, j = np.unravel_index(np.argmax(phi_grid), phi_grid.shape)
    print(f"grid search ({grid.size}^2 designs): best {np.sort(grid[[i, j]]).round(3)}, phi {phi_grid[i, j]:.4f}")
    if phi_opt < phi_grid[i, j] - 1e-3:
        raise SystemExit(f"the optimised design (phi {phi_opt:.4f}) is worse than the grid's best")
    _plot(grid, rows, tau_opt, Path(args.outdir) / "optimal_design.png")


def _plot(grid, rows, tau_opt, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(grid, rows[:, 0], label="dc/dka")
    ax.plot(grid, rows[:, 1], label="dc/dke")
    for t in tau_opt:
        ax.axvline(t, color="k", ls="--", lw=0.8)
    ax.set_xlabel("measurement time (h)")
    ax.set_title("sensitivities and the D-optimal times (dashed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
