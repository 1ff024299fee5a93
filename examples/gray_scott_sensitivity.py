"""Sensitivity of a Gray-Scott pattern to the feed and kill rates: forward mode vs differences.

In ``dxdt.problems.gray_scott(n=64)`` Pearson's square relaxes to one spot which, at
``t = 1000``, is about to split (two spots by ``t = 1600``, four by ``t = 3000``);
``--quick`` stops a 32 x 32 grid at ``t = 300``. The pattern statistic is the spatial
variance of ``v`` at the final time. Its derivatives with respect to the feed rate ``F`` and
the kill rate ``k`` come from forward sensitivities (``mode="forward"``, all four
parameters in one pass, the sensitivities inside the error control) and are compared
with central differences of tightly converged NumPy solves; the script fails if they
differ by more than 1e-3 (relative). The difference step must be small: the statistic
is strongly nonlinear in ``k`` (at full size a relative step of 1e-3 is already 2% off),
so the differences use a relative step of 1e-6.

``dxdt.sensitivity.jacobian`` then gives the whole sensitivity fields ``dv/dF`` and
``dv/dk`` at the final time: they show the shape of the coming split. The figure
shows the pattern, both fields and the two derivatives of the statistic from both
methods.

Run: ``python examples/gray_scott_sensitivity.py [--quick] [--outdir DIR]``.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Vern7

F, K = 2, 3  # indices of the feed and kill rates in p = [Du, Dv, F, k]
RTOL, ATOL = 1e-8, 1e-10  # forward sensitivities
FD_STEP = 1e-6  # relative step of the central differences
AGREEMENT = 1e-3


def statistic(u):
    """Spatial variance of v at the final (only) saved time."""
    return np.var(u[-1, 1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 32, t1 = 300 (or DXDT_EXAMPLES_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write gray_scott_sensitivity.png")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("DXDT_EXAMPLES_QUICK") == "1"
    n, t1 = (32, 300.0) if quick else (64, 1000.0)
    prob = dxdt.problems.gray_scott(n=n, tspan=(0.0, t1))
    print(f"Gray-Scott {n}x{n}, t = 0..{t1:g}: statistic = var(v(t1))")

    start = time.perf_counter()
    grad = sens.gradient(statistic, prob, mode="forward", rtol=RTOL, atol=ATOL)
    print(f"  forward sensitivities: {time.perf_counter() - start:.1f} s (with compilation)")

    def statistic_at(p):
        sol = dxdt.solve(prob.remake(p=p), Vern7(), rtol=1e-11, atol=1e-13, saveat=[t1], throw=True)
        return statistic(sol.u)

    start = time.perf_counter()
    differences = {}
    for i in (F, K):
        step = FD_STEP * prob.p[i] * np.eye(4)[i]
        differences[i] = (statistic_at(prob.p + step) - statistic_at(prob.p - step)) / (2 * step[i])
    print(f"  central differences: {time.perf_counter() - start:.1f} s")
    print(f"  {'':8s} {'forward':>14s} {'differences':>14s} {'rel. diff':>10s}")
    worst = 0.0
    for i, name in ((F, "dS/dF"), (K, "dS/dk")):
        relative = abs(grad[i] - differences[i]) / abs(differences[i])
        worst = max(worst, relative)
        print(f"  {name:8s} {grad[i]:14.8g} {differences[i]:14.8g} {relative:10.2e}")
    if not worst < AGREEMENT:
        raise SystemExit(f"FAILED: forward mode and differences differ by {worst:.2e} (needed < {AGREEMENT:g})")

    start = time.perf_counter()
    jac = sens.jacobian(prob, mode="forward", rtol=RTOL, atol=ATOL)  # (1, 2, n, n, 4)
    print(f"  jacobian {jac.shape}: {time.perf_counter() - start:.1f} s (with compilation)")
    v = dxdt.solve(prob, Vern7(), rtol=RTOL, atol=ATOL, saveat=[t1]).u[-1, 1]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = ((v, f"v at t = {t1:g}", "viridis"), (jac[0, 1, :, :, F], "dv/dF", "RdBu_r"),
              (jac[0, 1, :, :, K], "dv/dk", "RdBu_r"))
    for ax, (field, title, cmap) in zip(axes, panels):
        limit = np.abs(field).max()
        image = ax.imshow(field, cmap=cmap, vmin=None if cmap == "viridis" else -limit,
                          vmax=None if cmap == "viridis" else limit)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(title)
        ax.axis("off")
    bars = axes[3]
    x = np.arange(2)
    bars.bar(x - 0.2, [grad[F], grad[K]], 0.4, label="forward mode")
    bars.bar(x + 0.2, [differences[F], differences[K]], 0.4, label="central differences")
    bars.set_xticks(x, ["dS/dF", "dS/dk"])
    bars.axhline(0.0, color="k", lw=0.5)
    bars.set_title("S = var(v(t1))")
    bars.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.outdir) / "gray_scott_sensitivity.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"  saved {out}")
    return {"forward": grad[[F, K]], "differences": np.array([differences[F], differences[K]])}


if __name__ == "__main__":
    main()
