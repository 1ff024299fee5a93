"""Derivatives through work buffers held in a closure: right, or an error, never silently wrong.

``dxdt.problems.gierer_meinhardt`` is the fast in-place form of the DifferentialEquations.jl
tutorial: six ``(n, n)`` work buffers ``Ayu, uAx, Du, Ayv, vAx, Dv`` live in the
closure of ``f`` and every step writes into them (``np.matmul(Ay, u, out=Ayu)``, ...).
We differentiate ``S = var(u(t1))``, the spatial variance of the activator at
``t1 = 0.1``, with respect to ``p = [a, alpha, ubar, beta, D1, D2]``, four ways:

1. central differences of tightly converged NumPy solves (the reference);
2. ``dxdt.sensitivity.gradient`` with the default ``duplicate_closure=True``: each buffer
   gets a private shadow during tracing, so derivatives flow through the writes;
3. ``duplicate_closure=False``: the buffers are constants, and the first write of a
   value that depends on ``u`` or ``p`` raises ``TranslationError`` naming the buffer;
4. a naive tracer, emulated by a hand-written JAX version of the model in which the six
   buffers are constants holding the stale contents the last NumPy call left in them
   (a tracer that bakes closure arrays into the trace and drops the writes into them),
   solved with diffrax's Tsit5 and differentiated with ``jax.grad``. The same JAX
   harness with the buffers recomputed checks the harness itself.

The naive gradient is wrong by large factors (exactly zero for ``D1`` and ``D2``); a
tool that performed the writes but dropped their derivatives (Enzyme with a constant
closure, the case discussed in the DifferentiationInterface.jl issue "Make Enzyme
dispatches compatible with closures") would also return zero for ``D1`` and ``D2``.

Run: ``python examples/closure_caches.py [--quick] [--outdir DIR]``.
"""

import argparse
import inspect
import os
import textwrap
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Vern7

NAMES = ["a", "alpha", "ubar", "beta", "D1", "D2"]
RTOL, ATOL = 1e-10, 1e-12
FD_STEP = 1e-4  # relative step of the central differences


def loss(u):
    return np.var(u[-1, 0])


def jax_gradient(prob, buffers):
    """``jax.grad`` of the loss through diffrax, the model in ``jax.numpy``.

    ``buffers=None`` recomputes the work arrays at every call; otherwise the writes into
    them are dropped and ``du``, ``dv`` read the constants ``buffers["Du"]``,
    ``buffers["Dv"]`` (``Ayu, uAx, Ayv, vAx`` only feed those two).
    """
    matrices = inspect.getclosurevars(prob.f).nonlocals
    Ax, Ay = jnp.asarray(matrices["Ax"]), jnp.asarray(matrices["Ay"])

    def rhs(t, r, p):
        a, alpha, ubar, beta, D1, D2 = p
        u, v = r[0], r[1]
        if buffers is None:
            Du, Dv = D1 * (Ay @ u + u @ Ax), D2 * (Ay @ v + v @ Ax)
        else:
            Du, Dv = jnp.asarray(buffers["Du"]), jnp.asarray(buffers["Dv"])
        return jnp.stack([(a * u / v - alpha) * u + ubar + Du, (a * u * u / v - beta) * v + Dv])

    def value(p):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(rhs), diffrax.Tsit5(), *prob.tspan, None, jnp.asarray(prob.u0), p,
                                  stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL))
        return jnp.var(sol.ys[-1, 0])

    return np.asarray(jax.jit(jax.grad(value))(jnp.asarray(prob.p)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 x 8 grid, not 64 x 64 (or DXDT_EXAMPLES_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write closure_caches.png")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("DXDT_EXAMPLES_QUICK") == "1"
    jax.config.update("jax_enable_x64", True)
    prob = dxdt.problems.gierer_meinhardt(n=8 if quick else 64)
    t1 = prob.tspan[1]

    def loss_at(p):
        return loss(dxdt.solve(prob.remake(p=p), Vern7(), rtol=1e-12, atol=1e-14, saveat=[t1], throw=True).u)

    steps = FD_STEP * np.abs(prob.p)[:, None] * np.eye(6)
    rows = {"central differences": np.array([(loss_at(prob.p + h) - loss_at(prob.p - h)) / (2 * h[i])
                                             for i, h in enumerate(steps)])}
    stale = {k: v.copy() for k, v in inspect.getclosurevars(prob.f).nonlocals.items()}  # left by NumPy
    rows["dxdt (duplicated buffers)"] = sens.gradient(loss, prob, rtol=RTOL, atol=ATOL)
    try:
        sens.gradient(loss, prob, rtol=RTOL, atol=ATOL, duplicate_closure=False)
    except sens.TranslationError as err:
        refusal = str(err).splitlines()[0]
    else:
        raise SystemExit("FAILED: duplicate_closure=False returned a gradient instead of raising")
    rows["JAX, buffers recomputed"] = jax_gradient(prob, None)
    rows["naive tracer (stale buffers)"] = jax_gradient(prob, stale)

    reference = rows["central differences"]
    errors = {name: np.linalg.norm(g - reference) / np.linalg.norm(reference) for name, g in rows.items()}
    n = prob.u0.shape[1]
    print(f"Gierer-Meinhardt {n}x{n}, S = var(u(t1 = {t1:g})): dS/dp")
    print(f"  {'':29s}" + "".join(f"{name:>11s}" for name in NAMES) + f"{'rel. error':>12s}")
    for name, g in rows.items():
        print(f"  {name:29s}" + "".join(f"{x:11.3e}" for x in g) + f"{errors[name]:12.1e}")
    print(f"  {'duplicate_closure=False':29s} raises TranslationError:")
    print(textwrap.fill(refusal, 100, initial_indent=" " * 4, subsequent_indent=" " * 4))
    ratio = rows["naive tracer (stale buffers)"] / reference + 0.0  # + 0.0: no "-0.00"
    print("  naive tracer / true: " + ", ".join(f"{name} {r:.2f}" for name, r in zip(NAMES, ratio)))
    checks = [
        (errors["dxdt (duplicated buffers)"] < 1e-6, "dxdt's gradient disagrees with the differences"),
        (errors["JAX, buffers recomputed"] < 1e-6, "the JAX harness disagrees with the differences"),
        ("'Ayu'" in refusal, f"the TranslationError does not name the buffer Ayu: {refusal}"),
        (errors["naive tracer (stale buffers)"] > 0.5, "the naive tracer was not far off"),
    ]
    for ok, message in checks:
        if not ok:
            raise SystemExit(f"FAILED: {message}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(6)
    for k, name in enumerate(["dxdt (duplicated buffers)", "naive tracer (stale buffers)"]):
        ax.bar(x + (k - 0.5) * 0.4, rows[name] / reference, 0.4, label=name)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, [f"dS/d{name}" for name in NAMES])
    ax.set_ylabel("component / central difference")
    ax.set_title("Gradient through closure work buffers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.outdir) / "closure_caches.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"  saved {out}")
    return rows


if __name__ == "__main__":
    main()
