"""dxdt demo: solve the Gray-Scott reaction-diffusion model and save a picture.

Run with ``make demo`` (or ``python examples/demo.py [--n 128] [--t1 1000]``).
"""

import argparse
import time

import numpy as np

import dxdt
from dxdt.solvers import Tsit5


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=128, help="grid points per side")
    parser.add_argument("--t1", type=float, default=1000.0, help="final time")
    parser.add_argument("--out", default="gray_scott.png", help="image file")
    args = parser.parse_args(argv)

    prob = dxdt.problems.gray_scott(n=args.n, tspan=(0.0, args.t1))
    saveat = np.linspace(0.0, args.t1, 5)
    start = time.perf_counter()
    sol = dxdt.solve(prob, Tsit5(), rtol=1e-6, atol=1e-8, saveat=saveat, progress=True, throw=True)
    elapsed = time.perf_counter() - start
    print(f"Gray-Scott {args.n}x{args.n} ({prob.u0.size} states), t = 0..{args.t1:g}, Tsit5 rtol=1e-6")
    print(f"  {sol.stats['naccept']} steps, {sol.stats['nreject']} rejected, "
          f"{sol.stats['nfev']} f evaluations, {elapsed:.2f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(saveat), figsize=(3 * len(saveat), 3.2))
    for ax, t, u in zip(axes, sol.t, sol.u):
        ax.imshow(u[1], cmap="viridis", vmin=0, vmax=0.5)
        ax.set_title(f"v at t = {t:g}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"  saved {args.out}")


if __name__ == "__main__":
    main()
