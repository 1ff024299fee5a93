"""Fit the Lotka-Volterra rates with optax and optimistix: a dxdt solve inside JAX.

``F = sens.jax_solve(prob, ...)`` turns the in-place NumPy model into a JAX function
``F(u0, p)``. The misfit ``sum (F(u0, p) - data)^2`` is then an ordinary JAX function:

* ``optax.adam`` runs inside one ``jax.jit``-ed training step (value, gradient through
  the interpolating adjoint, and the update, compiled together);
* ``optimistix.LBFGS`` (``optx.minimise``) finishes from where Adam stopped.

Synthetic data: prey and predators of ``dxdt.problems.lotka_volterra()`` at 20 times
(10 with ``--quick``), each value multiplied by ``1 + 0.02 r`` with ``r`` standard normal
(seeded). The rates are fitted in log space starting 20% off; the script fails unless
L-BFGS lands within 5% of the true rates and Adam lowered the misfit at least tenfold.

Run: ``python examples/optax_fit.py [--quick] [--outdir DIR]``.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

P_TRUE = np.array([1.5, 1.0, 3.0, 1.0])  # [a, b, c, d], the lotka_volterra() defaults
P_START = np.array([1.2, 0.8, 2.5, 1.2])
NOISE = 0.02  # relative noise of the observations
TOLERANCE = 0.05  # largest accepted relative error of a recovered rate
RTOL, ATOL = 1e-7, 1e-9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer observations and Adam steps (or DXDT_EXAMPLES_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write optax_fit.png")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("DXDT_EXAMPLES_QUICK") == "1"

    import jax
    import jax.numpy as jnp
    import optax
    import optimistix as optx

    truth = dxdt.problems.lotka_volterra(p=P_TRUE)
    ts = np.linspace(0.0, 10.0, (10 if quick else 20) + 1)[1:]
    clean = dxdt.solve(truth, Tsit5(), rtol=1e-10, atol=1e-12, saveat=ts).u
    data = jnp.asarray(clean * (1.0 + NOISE * np.random.default_rng(0).standard_normal(clean.shape)))

    F = sens.jax_solve(truth.remake(p=P_START), Tsit5(), saveat=ts, rtol=RTOL, atol=ATOL)
    u0 = jnp.asarray(truth.u0)

    def misfit(log_p, _args=None):
        return jnp.sum((F(u0, jnp.exp(log_p)) - data) ** 2)

    optimiser = optax.adam(0.05)

    @jax.jit
    def train_step(log_p, state):
        value, grad = jax.value_and_grad(misfit)(log_p)
        updates, state = optimiser.update(grad, state, log_p)
        return optax.apply_updates(log_p, updates), state, value

    log_p = jnp.log(jnp.asarray(P_START))
    state = optimiser.init(log_p)
    history = []
    start = time.perf_counter()
    for _ in range(60 if quick else 150):
        log_p, state, value = train_step(log_p, state)
        history.append(float(value))
    adam_time = time.perf_counter() - start
    adam_p = np.exp(np.asarray(log_p))
    adam_misfit = float(misfit(log_p))
    print(f"Adam: {len(history)} jitted steps in {adam_time:.1f} s (compile included), misfit "
          f"{history[0]:.3g} -> {adam_misfit:.3g}, rates {np.round(adam_p, 3)}")

    start = time.perf_counter()
    solution = optx.minimise(misfit, optx.LBFGS(rtol=1e-8, atol=1e-8), log_p, max_steps=200)
    fitted = np.exp(np.asarray(solution.value))
    print(f"L-BFGS (optimistix): {int(solution.stats['num_steps'])} steps in "
          f"{time.perf_counter() - start:.1f} s, misfit {float(misfit(solution.value)):.3g}, "
          f"rates {np.round(fitted, 4)} (true {P_TRUE})")

    error = np.max(np.abs(fitted / P_TRUE - 1.0))
    if error > TOLERANCE or not adam_misfit < history[0] / 10:
        raise SystemExit(f"fit failed: largest rate error {error:.1%}, Adam misfit {history[0]:.3g} "
                         f"-> {adam_misfit:.3g}")
    print(f"recovered every rate within {error:.1%} of the truth")
    _plot(ts, data, F(u0, jnp.asarray(fitted)), history, Path(args.outdir) / "optax_fit.png")


def _plot(ts, data, fit, history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, name in enumerate(("prey", "predators")):
        ax.plot(ts, data[:, i], "o", ms=4, label=f"{name} (data)")
        ax.plot(ts, fit[:, i], "-", label=f"{name} (L-BFGS fit)")
    ax.set_xlabel("t")
    ax.legend(fontsize=8)
    bx.semilogy(history)
    bx.set_xlabel("Adam step")
    bx.set_ylabel("misfit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
