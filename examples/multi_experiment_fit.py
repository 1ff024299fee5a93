"""Fit one set of Lotka-Volterra rates to five experiments with different initial states.

Synthetic data: five experiments of ``dxdt.problems.lotka_volterra()``, each starting
from its own prey/predator populations, observed at 20 times (10 with ``--quick``) with
2% multiplicative noise (seeded). The model is an :class:`dxdt.EnsembleProblem` (one
member per experiment, a ``u0`` batch); the loss sums the squared misfits of all
experiments, ``loss(u)`` with ``u`` of shape ``(experiments, times, 2)``.

``dxdt.sensitivity.prepare("value_and_gradient", loss, ensemble, ...)`` compiles the
multi-experiment gradient once (the members are solved as one stacked system); L-BFGS-B
then fits the four shared rates from 25% off. The fit must recover every rate within 5%,
and the script fails otherwise. The fitted model is solved as an ensemble
(``dxdt.solve(ensemble)``) for the plot.

Run: ``python examples/multi_experiment_fit.py [--quick] [--outdir DIR]``.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

P_TRUE = np.array([1.5, 1.0, 3.0, 1.0])  # [a, b, c, d], the lotka_volterra() defaults
P_START = P_TRUE * np.array([0.75, 1.25, 0.75, 1.25])
U0 = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0], [3.0, 1.5], [1.5, 3.0]])  # the five experiments
NOISE = 0.02  # relative noise of the observations
TOLERANCE = 0.05  # largest accepted relative error of a recovered rate
RTOL, ATOL = 1e-8, 1e-10


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 observations per experiment (or DXDT_EXAMPLES_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write multi_experiment_fit.png")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("DXDT_EXAMPLES_QUICK") == "1"

    ts = np.linspace(0.0, 6.0, (10 if quick else 20) + 1)[1:]
    truth = dxdt.EnsembleProblem(dxdt.problems.lotka_volterra(p=P_TRUE, tspan=(0.0, 6.0)), u0=U0)
    clean = dxdt.solve(truth, Tsit5(), rtol=1e-10, atol=1e-12, saveat=ts).u  # (experiments, times, 2)
    data = clean * (1.0 + NOISE * np.random.default_rng(0).standard_normal(clean.shape))

    def loss(u):
        return np.sum((u - data) ** 2)

    model = dxdt.EnsembleProblem(truth.prob.remake(p=P_START), u0=U0)
    start = time.perf_counter()
    value_and_grad = sens.prepare("value_and_gradient", loss, model, saveat=ts, rtol=RTOL, atol=ATOL)
    print(f"{len(U0)} experiments, {data.size} noisy values: gradient prepared in "
          f"{time.perf_counter() - start:.1f} s (mode {value_and_grad.mode}: {value_and_grad.reason})")

    start = time.perf_counter()
    fit = minimize(value_and_grad, P_START, jac=True, method="L-BFGS-B", bounds=[(1e-3, None)] * 4)
    print(f"  L-BFGS-B {fit.nit} iterations, {fit.nfev} gradients, loss {fit.fun:.5f}, "
          f"{time.perf_counter() - start:.2f} s: {fit.message}")
    for i, name in enumerate("abcd"):
        print(f"  {name}  true {P_TRUE[i]:.4f}  start {P_START[i]:.4f}  fit {fit.x[i]:.4f}")
    error = np.max(np.abs(fit.x / P_TRUE - 1.0))
    print(f"  largest relative error: {error:.2%}")
    if not (fit.success and error < TOLERANCE):
        raise SystemExit(f"FAILED: the rates were recovered only to {error:.1%} (needed < {TOLERANCE:.0%}): "
                         f"{fit.message}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = np.linspace(0.0, 6.0, 300)
    fitted = dxdt.solve(dxdt.EnsembleProblem(model.prob.remake(p=fit.x), u0=U0), Tsit5(),
                        rtol=RTOL, atol=ATOL, saveat=fine)
    fig, axes = plt.subplots(1, len(U0), figsize=(14, 3), sharey=True)
    for e, ax in enumerate(axes):
        for k, (name, colour) in enumerate((("prey", "C0"), ("predators", "C1"))):
            ax.plot(ts, data[e, :, k], "o", color=colour, ms=3, label=f"{name} (data)")
            ax.plot(fine, fitted.u[e, :, k], "-", color=colour, label=f"{name} (fit)")
        ax.set_title(f"experiment {e + 1}: u0 = {tuple(U0[e])}", fontsize=9)
        ax.set_xlabel("t")
    axes[0].legend(fontsize=7)
    fig.suptitle("One set of rates fitted to five experiments (dxdt.EnsembleProblem)")
    fig.tight_layout()
    out = Path(args.outdir) / "multi_experiment_fit.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"  saved {out}")
    return fit.x


if __name__ == "__main__":
    main()
