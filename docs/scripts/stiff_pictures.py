"""Draw the pictures of ``docs/stiff.md``.

- ``docs/img/stability_polynomials.png``: ``|R_s(z)|`` on the negative real axis for RKC,
  RKL2, ROCK2 and ROCK4 at several stage counts, with ``beta(s)`` marked (computed by dxdt);
- ``docs/img/stiff_work_precision.png``: error against wall time from
  ``benchmarks/results/stiff.json`` (run ``benchmarks/bench_stiff.py`` first).

Run from the repository root: ``.venv/bin/python docs/scripts/stiff_pictures.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dxdt.solvers import RKC, RKL2, ROCK2, ROCK4  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"


def stability_polynomials() -> None:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, method, counts in ((axes[0], RKC(), (3, 5, 9)), (axes[1], RKL2(), (3, 5, 9)),
                               (axes[2], ROCK2(), (3, 5, 9)), (axes[3], ROCK4(), (5, 9, 13))):
        reach = 1.15 * method.stability_boundary(max(counts))
        z = -np.linspace(0, reach, 4000)
        for s in counts:
            beta = method.stability_boundary(s)
            line, = ax.plot(z, np.abs(method.stability_polynomial(s, z)), lw=1.2,
                            label=f"s={s}, beta={beta:.1f}")
            ax.axvline(-beta, color=line.get_color(), ls=":", lw=1)
        ax.axhline(1, color="k", lw=0.6)
        ax.set_ylim(0, 1.3)
        ax.set_title(type(method).__name__)
        ax.set_xlabel("z = h lambda (real)")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("|R_s(z)|")
    fig.tight_layout()
    fig.savefig(IMG / "stability_polynomials.png", dpi=110)


def work_precision() -> None:
    path = ROOT / "benchmarks" / "results" / "stiff.json"
    doc = json.loads(path.read_text())
    records = [r for r in doc["records"] if "error" in r]
    problems = list(dict.fromkeys(r["problem"] for r in records))
    solvers = list(dict.fromkeys(r["solver"] for r in records))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(solvers)}
    columns = 3
    rows = -(-len(problems) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False)
    for ax, problem in zip(axes.flat, problems):
        done = [r for r in records if r["problem"] == problem and r["success"]]
        for solver in dict.fromkeys(r["solver"] for r in done):
            pts = [(r["seconds"], r["error"]) for r in
                   sorted((r for r in done if r["solver"] == solver), key=lambda r: -r["rtol"])]
            style = "o-" if solver.startswith("dxdt") else "s--"
            ax.loglog([p[0] for p in pts], [max(p[1], 1e-16) for p in pts], style, ms=4,
                      color=colors[solver], label=solver)
        ax.set_title(problem)
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("relative error at t1")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    fig.suptitle(f"points: rtol 1e-3 ... 1e-7; load average {doc['load_start'][0]:.1f} (start) "
                 f"to {doc['load_end'][0]:.1f} (end) on 2 shared cores: compare within a panel",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(IMG / "stiff_work_precision.png", dpi=100)


if __name__ == "__main__":
    stability_polynomials()
    work_precision()
