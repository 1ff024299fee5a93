"""The ``dxdt`` command: ``dxdt demo | problems | solve NAME | compare NAME | sensitivity NAME``.

Bad arguments print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time

import numpy as np

PROBLEMS = ("lotka_volterra", "lorenz", "fitzhugh_nagumo", "gray_scott", "brusselator",
            "gierer_meinhardt", "heat_1d")
METHODS = ("Euler", "Heun", "RK4", "BS3", "DP5", "Tsit5", "Vern7", "RKC", "RKL2", "ROCK2", "ROCK4")
COMPARED = ("Tsit5", "RKC", "ROCK2", "ROCK4")  # an explicit method and the stabilized ones


class _UsageError(Exception):
    """A bad combination of arguments found after parsing (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _problem(name: str, n: int | None):
    from . import problems

    make = getattr(problems, name)
    if n is None:
        return make()
    if "n" not in inspect.signature(make).parameters:
        raise _UsageError(f"--n applies to grid problems; {name} has no grid")
    return make(n=n)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dxdt", description="Differentiable ODE/PDE solvers for in-place NumPy models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="solve Gray-Scott, compute a sensitivity, save gray_scott.png")
    demo.add_argument("--n", type=int, default=128, help="grid points per side (default 128)")
    demo.add_argument("--out", default="gray_scott.png", help="image file (default gray_scott.png)")

    sub.add_parser("problems", help="list the ready-made problems")

    solve = sub.add_parser("solve", help="solve a ready-made problem")
    solve.add_argument("name", choices=PROBLEMS, metavar="NAME")
    solve.add_argument("--method", choices=METHODS, default="Tsit5")
    solve.add_argument("--backend", choices=("numpy", "jax"), default="numpy")
    solve.add_argument("--rtol", type=float, default=1e-6)
    solve.add_argument("--atol", type=float, default=1e-8)
    solve.add_argument("--t1", type=float, default=None, help="final time (default: the problem's)")
    solve.add_argument("--saveat", type=int, default=None, metavar="N", help="save at N equally spaced times")
    solve.add_argument("--n", type=int, default=None, help="grid size of PDE problems")
    solve.add_argument("--plot", default=None, metavar="FILE", help="plot the solution to FILE")
    solve.add_argument("--progress", action="store_true", help="show a progress bar")
    solve.add_argument("--max-steps", type=int, default=100_000, metavar="N",
                       help="stop after N steps (default 100000)")

    compare = sub.add_parser(
        "compare", help="solve with several methods and compare steps, f evaluations and time",
        description="Solve one problem with each method (each stopped after --max-steps steps, "
                    "so a stability-bound explicit method cannot take minutes) and print steps, "
                    "f evaluations, stage counts, time and the difference of the final states. "
                    "Example: dxdt compare brusselator --t1 1.5")
    compare.add_argument("name", choices=PROBLEMS, metavar="NAME")
    compare.add_argument("--methods", nargs="+", choices=METHODS, default=list(COMPARED),
                         metavar="METHOD", help=f"default: {' '.join(COMPARED)}")
    compare.add_argument("--backend", choices=("numpy", "jax"), default="numpy")
    compare.add_argument("--rtol", type=float, default=1e-4)
    compare.add_argument("--atol", type=float, default=1e-6)
    compare.add_argument("--t1", type=float, default=None, help="final time (default: the problem's)")
    compare.add_argument("--n", type=int, default=None, help="grid size of PDE problems")
    compare.add_argument("--max-steps", type=int, default=2000, metavar="N",
                         help="steps per method before it is stopped (default 2000)")

    sens = sub.add_parser("sensitivity", help="gradient of a default loss, with the mode chosen and why")
    sens.add_argument("name", choices=PROBLEMS, metavar="NAME")
    sens.add_argument("--wrt", choices=("p", "u0"), default="p")
    sens.add_argument("--mode", choices=("auto", "forward", "reverse"), default="auto")
    sens.add_argument("--adjoint", choices=("interpolating", "checkpoint", "backsolve"), default="interpolating")
    sens.add_argument("--n", type=int, default=None, help="grid size of PDE problems")
    return parser


def _plot(sol, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    u = sol.u
    if u.ndim == 2 and u.shape[1] <= 8:
        ax.plot(sol.t, u)
        ax.set_xlabel("t")
    elif u.ndim == 2:
        ax.imshow(u.T, aspect="auto", origin="lower", extent=(sol.t[0], sol.t[-1], 0, u.shape[1]))
        ax.set_xlabel("t")
        ax.set_ylabel("state index")
    else:
        ax.imshow(u[-1].reshape(-1, u.shape[-1]), cmap="viridis")
        ax.set_title(f"{title}: final state")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cmd_problems(args) -> int:
    from . import problems

    for name in PROBLEMS:
        prob = getattr(problems, name)()
        doc = (getattr(problems, name).__doc__ or "").strip().splitlines()[0]
        doc = re.sub(r":math:`([^`]*)`", r"\1", doc).replace("\\,", "")  # plain text, not RST
        print(f"{name:18s} {prob.u0.size:>7d} states  {doc}")
    return 0


def _problem_from_args(args):
    """The named problem with the ``--n``, ``--t1`` and ``--max-steps`` of ``solve``/``compare``."""
    if args.max_steps < 1:
        raise _UsageError(f"--max-steps must be at least 1, got {args.max_steps}")
    prob = _problem(args.name, args.n)
    if args.t1 is not None:
        prob = prob.remake(tspan=(prob.tspan[0], args.t1))
    return prob


def _cmd_solve(args) -> int:
    from . import solve, solvers

    prob = _problem_from_args(args)
    saveat = None if args.saveat is None else np.linspace(*prob.tspan, args.saveat)
    method = getattr(solvers, args.method)()
    dt = None if method.adaptive else abs(prob.tspan[1] - prob.tspan[0]) / 1000
    start = time.perf_counter()
    sol = solve(prob, method, rtol=args.rtol, atol=args.atol, dt=dt, saveat=saveat,
                backend=args.backend, progress=args.progress, max_steps=args.max_steps)
    elapsed = time.perf_counter() - start
    print(f"{args.name}: {sol.status} - {sol.message}")
    print(f"  {args.method} ({args.backend}), {elapsed:.3f} s, stats {sol.stats}")
    print(f"  u(t={sol.t[-1]:g}) = {np.array2string(sol.u[-1].ravel()[:6], precision=6)}"
          + (" ..." if sol.u[-1].size > 6 else ""))
    if args.plot:
        _plot(sol, args.plot, args.name)
        print(f"  saved {args.plot}")
    return 0 if sol.success else 1


def _compare(prob, methods, *, rtol: float, atol: float, backend: str, max_steps: int) -> list[dict]:
    """Solve ``prob`` with each method; a row of statistics per method."""
    from . import solve, solvers

    t0, t1 = prob.tspan
    rows = []
    for name in methods:
        method = getattr(solvers, name)()
        dt = None if method.adaptive else abs(t1 - t0) / 1000
        start = time.perf_counter()
        sol = solve(prob, method, rtol=rtol, atol=atol, dt=dt, backend=backend, max_steps=max_steps)
        rows.append(dict(method=name, sol=sol, time=time.perf_counter() - start, **sol.stats))
    return rows


def _print_comparison(prob, rows) -> None:
    t0, t1 = prob.tspan
    done = [row for row in rows if row["sol"].success]
    reference = done[0] if done else None
    header = (f"{'method':8s} {'status':10s} {'t reached':>10s} {'steps':>7s} {'rejected':>8s} "
              f"{'f evals':>9s} {'stages':>6s} {'time':>8s}  max |u - u_ref| / max |u_ref|")
    print(header)
    for row in rows:
        sol = row["sol"]
        if reference is None or not sol.success:
            diff = "-"
        elif row is reference:
            diff = f"(u_ref: {reference['method']})"
        else:
            u_ref = reference["sol"].u[-1]
            diff = f"{np.max(np.abs(sol.u[-1] - u_ref)) / np.max(np.abs(u_ref)):.1e}"
        stages = row.get("max_stages_used", "-")
        print(f"{row['method']:8s} {sol.status:10s} {sol.t[-1]:10.4g} {row['naccept']:7d} "
              f"{row['nreject']:8d} {row['nfev']:9d} {stages!s:>6s} {row['time']:7.2f}s  {diff}")
    for row in rows:
        reached = row["sol"].t[-1] - t0
        if not row["sol"].success and row["naccept"] and reached != 0:
            scale = (t1 - t0) / reached
            print(f"{row['method']} stopped at t={row['sol'].t[-1]:.4g} after {row['naccept']} steps "
                  f"({row['sol'].status}); at that pace t={t1:g} needs about "
                  f"{row['naccept'] * scale:,.0f} steps and {row['time'] * scale:,.0f} s.")


def _cmd_compare(args) -> int:
    prob = _problem_from_args(args)
    print(f"{args.name}: {prob.u0.size} states, t = {prob.tspan[0]:g}..{prob.tspan[1]:g}, "
          f"rtol={args.rtol:g}, atol={args.atol:g}, {args.backend} backend, at most "
          f"{args.max_steps} steps per method")
    rows = _compare(prob, args.methods, rtol=args.rtol, atol=args.atol, backend=args.backend,
                    max_steps=args.max_steps)
    _print_comparison(prob, rows)
    if args.backend == "jax":
        print("(JAX backend: each time includes tracing and compiling its program, unless an "
              "earlier run left it in the compiled-code cache)")
    return 0 if any(row["sol"].success for row in rows) else 1


def _default_loss(u):
    """Half the squared norm of the final state: a loss every problem has."""
    return 0.5 * np.sum(u[-1] ** 2)


def _cmd_sensitivity(args) -> int:
    from . import sensitivity

    prob = _problem(args.name, args.n)
    start = time.perf_counter()
    prep = sensitivity.prepare("value_and_gradient", _default_loss, prob, wrt=args.wrt,
                               mode=args.mode, adjoint=args.adjoint)
    prepared = time.perf_counter() - start
    value, grad = prep(prob.p if args.wrt == "p" else prob.u0)
    start = time.perf_counter()
    prep(prob.p if args.wrt == "p" else prob.u0)
    call = time.perf_counter() - start
    print(f"{args.name}: d(0.5 ||u(t1)||^2)/d{args.wrt}, loss = {value:.6g}")
    print(f"  mode: {prep.mode}" + (f" (adjoint={prep.adjoint})" if prep.adjoint else ""))
    print(f"  why:  {prep.reason}")
    print(f"  gradient: {np.array2string(np.ravel(grad)[:8], precision=6)}" + (" ..." if np.size(grad) > 8 else ""))
    print(f"  prepare + compile {prepared:.2f} s, prepared call {call * 1e3:.1f} ms")
    return 0


def _cmd_demo(args) -> int:
    from . import problems, sensitivity, solve

    n = args.n
    prob = problems.gray_scott(n=n)
    saveat = np.linspace(*prob.tspan, 5)
    start = time.perf_counter()
    sol = solve(prob, rtol=1e-6, atol=1e-8, saveat=saveat, throw=True)
    solve_time = time.perf_counter() - start
    print(f"Gray-Scott {n}x{n} ({prob.u0.size} states), t = {prob.tspan[0]:g}..{prob.tspan[1]:g}, "
          f"Tsit5 rtol=1e-6: {sol.stats['naccept']} steps, {solve_time:.2f} s")

    small = problems.gray_scott(n=min(n, 32), tspan=(0.0, 100.0))
    start = time.perf_counter()
    prep = sensitivity.prepare("gradient", lambda u: np.mean(u[-1, 1]), small)
    grad = prep(small.p)
    first = time.perf_counter() - start
    start = time.perf_counter()
    prep(small.p)
    again = time.perf_counter() - start
    print(f"Sensitivity of the mean of v at t=100 ({small.u0.shape[1]}x{small.u0.shape[2]} grid) "
          f"to (Du, Dv, F, k): {np.array2string(grad, precision=4)}")
    print(f"  mode {prep.mode}: {prep.reason}")
    print(f"  first call (trace + compile) {first:.2f} s, prepared call {again * 1e3:.1f} ms")

    stiff = problems.brusselator(n=min(n, 32), tspan=(0.0, 1.5))
    side = stiff.u0.shape[-1]
    print(f"Stiff PDE: Brusselator {side}x{side} ({stiff.u0.size} states), t = 0..1.5, rtol=1e-4; "
          "explicit Tsit5 against the stabilized ROCK2 (more: dxdt compare brusselator --t1 1.5)")
    _print_comparison(stiff, _compare(stiff, ("Tsit5", "ROCK2"), rtol=1e-4, atol=1e-6,
                                      backend="numpy", max_steps=1000))

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
    plt.close(fig)
    print(f"Saved {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dxdt`` console script and ``python -m dxdt``."""
    args = _build_parser().parse_args(argv)
    if getattr(args, "n", None) is not None and args.n < 3:
        print(f"dxdt: error: --n must be at least 3, got {args.n}", file=sys.stderr)
        return 2
    commands = {"demo": _cmd_demo, "problems": _cmd_problems, "solve": _cmd_solve,
                "compare": _cmd_compare, "sensitivity": _cmd_sensitivity}
    try:
        return commands[args.command](args)
    except _UsageError as err:
        print(f"dxdt: error: {err}", file=sys.stderr)
        return 2
