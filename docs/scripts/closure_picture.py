"""Draw ``docs/img/closure_duplication.png``: a gradient through a work buffer, right and wrong.

The model is 1-D periodic reaction-diffusion, ``u_t = D u_xx + p(x) u (1 - u)``, written
in place the way a NumPy user writes it: the Laplacian goes into a work buffer ``lap``
kept in the closure. The loss is the final state at one cell, ``L = u(T, x_j)`` (a
detector), and the target is the reaction-rate field ``p`` (one entry per cell). The
picture compares these answers for ``dL/dp``:

- dxdt: ``dxdt.sensitivity.gradient`` on the unchanged NumPy function (the closure is
  duplicated, so the derivative flows through ``lap``);
- finite differences: central differences of NumPy solves at a few cells, an
  independent reference;
- a naive tracer: the same model in JAX, solved and differentiated with diffrax, in
  which the buffer is a constant (``jax.lax.stop_gradient``). Its values are right at
  every evaluation (the forward solution is unchanged), but no derivative flows through
  it. This is what a translation that reads closure arrays as constants returns; dxdt
  refuses that case with ``TranslationError`` when ``duplicate_closure=False``;
- the same JAX model differentiated without ``stop_gradient``, to show that the
  difference comes from the buffer, not from the solver.

The script prints the agreement it finds (dxdt vs finite differences about 1e-9, vs the
JAX model about 4e-10; the naive gradient is 9 times too large at the detector).

Run from the repository root (about 15 s)::

    .venv/bin/python docs/scripts/closure_picture.py
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import dxdt  # noqa: E402
from dxdt import sensitivity as sens  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "img" / "closure_duplication.png"
N = 64  # cells on [0, 1), periodic
D = 0.01  # diffusivity: diffusion length sqrt(2 D T) ~ 0.14, about twice the bump width
T = 1.0
RTOL, ATOL = 1e-8, 1e-10
FD_CELLS = np.arange(2, N, 5)  # cells checked by finite differences
FD_STEP = 1e-5
# diffrax differentiates its discrete steps. Adaptive steps are set by stability here
# (h rho(J) ~ 0.85 of Tsit5's limit), and the derivative of those steps oscillates from
# cell to cell (the problem dxdt's adjoint="checkpoint" warns about), so the JAX
# versions take many small fixed steps, whose derivative is accurate.
JAX_STEPS = 2000

x = (np.arange(N) + 0.5) / N
u0 = 0.5 * np.exp(-(((x - 0.4) / 0.08) ** 2))
p0 = 1.0 + 0.5 * np.sin(2 * np.pi * x)
lap = np.zeros(N)  # the work buffer
DETECTOR = 38  # the cell j whose final value is the loss (x_j = 0.602)


def reaction_diffusion(du, u, p, t):
    """In place, with the Laplacian in the closure buffer ``lap``."""
    lap[1:-1] = u[:-2] - 2 * u[1:-1] + u[2:]
    lap[0] = u[-1] - 2 * u[0] + u[1]
    lap[-1] = u[-2] - 2 * u[-1] + u[0]
    np.multiply(p, u * (1 - u), out=du)
    du += (D * N * N) * lap


def loss(u):
    return u[-1, DETECTOR]


def finite_differences(prob):
    def value(p):
        sol = dxdt.solve(prob.remake(p=p), Tsit5(), rtol=1e-12, atol=1e-14, saveat=[T])
        return loss(sol.u)

    grad = []
    for i in FD_CELLS:
        e = np.zeros(N)
        e[i] = FD_STEP
        grad.append((value(p0 + e) - value(p0 - e)) / (2 * FD_STEP))
    return np.array(grad)


def diffrax_gradient(buffer_is_constant: bool):
    """``dL/dp`` of the JAX model, the buffer optionally a constant (a naive tracer)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    def field(t, u, p):
        lap_value = jnp.roll(u, 1) - 2 * u + jnp.roll(u, -1)
        if buffer_is_constant:
            lap_value = jax.lax.stop_gradient(lap_value)
        return p * u * (1 - u) + (D * N * N) * lap_value

    def value(p):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, T, T / JAX_STEPS, jnp.asarray(u0),
            args=p, saveat=diffrax.SaveAt(t1=True), max_steps=JAX_STEPS,
        )
        return sol.ys[-1, DETECTOR]

    return np.asarray(jax.jit(jax.grad(value))(jnp.asarray(p0)))


def main() -> None:
    prob = dxdt.ODEProblem(reaction_diffusion, u0, (0.0, T), p0)
    grad = sens.gradient(loss, prob, Tsit5(), rtol=RTOL, atol=ATOL)
    fd = finite_differences(prob)
    naive = diffrax_gradient(buffer_is_constant=True)
    plain = diffrax_gradient(buffer_is_constant=False)
    uT = dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, saveat=[T]).u[-1]

    fd_error = np.max(np.abs(grad[FD_CELLS] - fd)) / np.max(np.abs(fd))
    naive_error = np.max(np.abs(naive - grad)) / np.max(np.abs(grad))
    print(f"dxdt vs finite differences: max relative difference {fd_error:.1e}")
    jax_error = np.max(np.abs(plain - grad)) / np.max(np.abs(grad))
    print(f"dxdt vs the JAX model without stop_gradient: max relative difference {jax_error:.1e}")
    print(f"naive tracer vs dxdt: max relative difference {naive_error:.2f}")

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.5, 5.6), sharex=True, gridspec_kw={"height_ratios": [1, 1.6]}
    )
    xj = x[DETECTOR]
    for ax in (top, bottom):
        ax.axvline(xj, color="0.75", lw=0.8, ls=":")
    top.plot(x, u0, color="0.6", label="u(0)")
    top.plot(x, uT, color="k", label=f"u(T), T = {T:g} (the same for all answers)")
    top.plot(x, p0 / 4, color="tab:green", ls=":", label="p(x) / 4 (reaction rate)")
    top.annotate("detector: L = u(T, x_j)", (xj, 0.30), xytext=(6, 0),
                 textcoords="offset points", fontsize=8, color="0.4")
    top.set_ylabel("state")
    top.set_ylim(-0.02, 0.55)
    top.legend(loc="upper right", fontsize=8, frameon=False)
    top.set_title("u_t = D u_xx + p(x) u (1 - u), with the Laplacian in a closure work buffer",
                  fontsize=9)

    bottom.axhline(0.0, color="0.85", lw=0.8)
    bottom.plot(x, grad, color="tab:blue", lw=2.5, label="dxdt, closure duplicated")
    bottom.plot(x, plain, color="k", lw=0.8, ls="--",
                label="JAX model, buffer differentiated")
    bottom.plot(x[FD_CELLS], fd, "o", color="k", ms=4, label="finite differences")
    bottom.plot(x, naive, color="tab:red", lw=1.5,
                label="naive tracer: buffer read as a constant")
    bottom.set_xlabel("x")
    bottom.set_ylabel("dL / dp(x)")
    bottom.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=130)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
