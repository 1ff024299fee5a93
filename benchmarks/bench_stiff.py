"""Work-precision of the stabilized methods on diffusion-dominated problems.

Problems (reference solutions in brackets):

- ``heat1d``: ``u_t = u_xx`` on (0, 1), Dirichlet ends, N = 1000 interior points,
  ``u0 = sin(pi x)``, t in [0, 0.1] [exact: ``exp(lambda_1 t) sin(pi x_i)``];
- ``heat2d``: ``u_t = lap u`` on the unit square, Dirichlet walls, 128 x 128 interior
  points, ``u0 = sin(pi x) sin(pi y)``, t in [0, 0.1] [exact, as for heat1d];
- ``bruss2d-N``: the 2-D Brusselator of Hairer & Wanner II (BRUSS-2D as used by the ROCK
  papers): ``u_t = 1 + u^2 v - 4.4 u + alpha lap u``, ``v_t = 3.4 u - u^2 v + alpha lap v``,
  ``alpha = 0.1``, no-flux boundaries, ``u0 = 0.5 + y``, ``v0 = 1 + 5 x``, t in [0, 1.5],
  N x N cells, N = 32 and 64 [scipy BDF with ``jac_sparsity``, rtol 1e-10];
- ``brusselator``: dxdt's own ``dxdt.problems.brusselator()`` at its defaults
  [dxdt RKC at rtol 1e-9].

Solvers: dxdt RKC, RKL2, ROCK2, ROCK4 (NumPy; RKC and ROCK4 also on the JAX backend, at
every tolerance on heat1d, at rtol 1e-6 on bruss2d-32), dxdt Tsit5
(stability-bound: run once per problem), scipy ``solve_ivp`` BDF and Radau with
``jac_sparsity`` (or the exact sparse Jacobian), LSODA (banded Jacobian, heat1d only). Error: max |u - ref| / max |ref| at
t1. One timed run per point (the machine is shared; the load average is recorded).
Also: the gradient through a ROCK2 solve (JAX; forward mode and the interpolating adjoint)
against its primal JAX solve, medians of 9 interleaved calls after compilation
(``--only PART ...`` reruns some parts and replaces their records in the JSON).

The goals of issue 11 that these problems measure are evaluated from the records
(:func:`goals`) and written with them.

Run: ``.venv/bin/python benchmarks/bench_stiff.py [--quick]``; writes
``benchmarks/results/stiff.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from _common import (RESULTS_DIR, add_blas_threads_option, blas_threads_from_argv,
                     format_table, load_average, time_interleaved, write_json)

blas_threads_from_argv()
# no compiled programs from the disk cache: its key has dxdt's version, not its source, so a
# program compiled by an earlier checkout would be timed (compilation is excluded anyway)
os.environ.setdefault("DXDT_CACHE", "0")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import dxdt  # noqa: E402
from dxdt.problems import brusselator  # noqa: E402
from dxdt.solvers import RKC, RKL2, ROCK2, ROCK4, Tsit5  # noqa: E402

RTOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
ATOL_FACTOR = 1e-3  # atol = rtol * ATOL_FACTOR * max|u0|


def heat1d(n=1000):
    scale = (n + 1) ** 2

    def rhs(du, u, p, t):
        np.subtract(u[2:], u[1:-1], out=du[1:-1])
        du[1:-1] -= u[1:-1]
        du[1:-1] += u[:-2]
        du[0] = u[1] - 2 * u[0]
        du[-1] = u[-2] - 2 * u[-1]
        du *= scale

    x = np.arange(1, n + 1) / (n + 1)
    lam = -4 * scale * np.sin(np.pi / (2 * (n + 1))) ** 2
    prob = dxdt.ODEProblem(rhs, np.sin(np.pi * x), (0.0, 0.1))
    jac = sp.diags([np.ones(n - 1), -2 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]) * scale
    return prob, np.exp(lam * 0.1) * np.sin(np.pi * x), jac.tocsc(), dict(lband=1, uband=1)


def heat2d(n=128):
    """``u_t = lap u`` on the unit square, Dirichlet walls, ``n x n`` interior points."""
    scale = (n + 1) ** 2
    padded = np.zeros((n + 2, n + 2))  # the walls stay 0
    inner = padded[1:-1, 1:-1]
    work = np.empty((n, n))

    def rhs(du, u, p, t):
        inner[...] = u
        np.add(padded[:-2, 1:-1], padded[2:, 1:-1], out=du)
        du += padded[1:-1, :-2]
        du += padded[1:-1, 2:]
        np.multiply(u, 4.0, out=work)
        du -= work
        du *= scale

    x = np.arange(1, n + 1) / (n + 1)
    mode = np.outer(np.sin(np.pi * x), np.sin(np.pi * x))
    lam = -8 * scale * np.sin(np.pi / (2 * (n + 1))) ** 2
    prob = dxdt.ODEProblem(rhs, mode, (0.0, 0.1))
    d1 = sp.diags([np.ones(n - 1), -2 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]) * scale
    jac = (sp.kron(d1, sp.identity(n)) + sp.kron(sp.identity(n), d1)).tocsc()
    return prob, np.exp(lam * 0.1) * mode, jac


def _neumann_laplacian(n):
    """Five-point Laplacian on n x n cells of width 1/n with no-flux walls (sparse)."""
    main = -2 * np.ones(n)
    main[0] = main[-1] = -1
    d1 = sp.diags([np.ones(n - 1), main, np.ones(n - 1)], [-1, 0, 1]) * n * n
    eye = sp.identity(n)
    return (sp.kron(d1, eye) + sp.kron(eye, d1)).tocsr()


def bruss2d(n, alpha=0.1):
    lap = _neumann_laplacian(n) * alpha
    m = n * n
    uuv = np.empty(m)

    def rhs(du, u, p, t):
        U, V, dU, dV = u[:m], u[m:], du[:m], du[m:]
        np.multiply(U, U, out=uuv)
        np.multiply(uuv, V, out=uuv)
        dU[:] = lap @ U
        dU += 1.0
        dU += uuv
        dU -= 4.4 * U
        dV[:] = lap @ V
        dV += 3.4 * U
        dV -= uuv

    x = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    u0 = np.concatenate([(0.5 + Y).ravel(), (1 + 5 * X).ravel()])
    prob = dxdt.ODEProblem(rhs, u0, (0.0, 1.5))
    sparsity = sp.bmat([[lap + sp.identity(m), sp.identity(m)],
                        [sp.identity(m), lap + sp.identity(m)]]) != 0
    return prob, sparsity


def _scipy(prob, method, rtol, atol, **options):
    f, shape = prob.f, prob.u0.shape

    def fun(t, y):
        du = np.empty(shape)
        f(du, y.reshape(shape), prob.p, t)
        return du.ravel()

    start = time.perf_counter()
    sol = solve_ivp(fun, prob.tspan, prob.u0.ravel(), method=method, rtol=rtol, atol=atol,
                    t_eval=[prob.tspan[1]], **options)
    return time.perf_counter() - start, sol.y[:, -1].reshape(shape), sol.nfev, sol.success


def _dxdt(prob, method, rtol, atol, backend="numpy"):
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = dxdt.solve(prob, method, rtol=rtol, atol=atol, saveat=[prob.tspan[1]],
                             backend=backend, max_steps=10**6 if backend == "numpy" else 100_000)
    return time.perf_counter() - start, sol.u[-1], sol.stats["nfev"], sol.success


def run_problem(name, prob, ref, scipy_options, rtols, tsit5_rtol, jax_rtols, records):
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    amp = float(np.max(np.abs(prob.u0)))
    candidates = [("dxdt RKC", lambda r, a: _dxdt(prob, RKC(), r, a)),
                  ("dxdt RKL2", lambda r, a: _dxdt(prob, RKL2(), r, a)),
                  ("dxdt ROCK2", lambda r, a: _dxdt(prob, ROCK2(), r, a)),
                  ("dxdt ROCK4", lambda r, a: _dxdt(prob, ROCK4(), r, a))]
    for label, options in scipy_options:
        candidates.append((f"scipy {label}", lambda r, a, o=options: _scipy(prob, rtol=r, atol=a, **o)))
    for rtol in rtols:
        atol = rtol * ATOL_FACTOR * amp
        for label, run in candidates:
            seconds, u, nfev, ok = run(rtol, atol)
            _record(records, name, label, rtol, seconds, u, ref, scale, nfev, ok)
        if rtol == tsit5_rtol:
            seconds, u, nfev, ok = _dxdt(prob, Tsit5(), rtol, atol)
            _record(records, name, "dxdt Tsit5", rtol, seconds, u, ref, scale, nfev, ok)
        if rtol in jax_rtols:
            for label, method in (("dxdt RKC jax", RKC()), ("dxdt ROCK4 jax", ROCK4())):
                _dxdt(prob, method, rtol, atol, "jax")  # warm-up (compiles at the first rtol)
                seconds, u, nfev, ok = _dxdt(prob, method, rtol, atol, "jax")
                _record(records, name, label, rtol, seconds, u, ref, scale, nfev, ok)


def _record(records, problem, solver, rtol, seconds, u, ref, scale, nfev, ok):
    error = float(np.max(np.abs(np.asarray(u) - ref))) / scale
    records.append(dict(problem=problem, solver=solver, rtol=rtol, seconds=seconds,
                        error=error, nfev=nfev, success=bool(ok), load=load_average()))
    print(f"  {problem:12s} {solver:18s} rtol={rtol:.0e} {seconds:8.3f} s  error={error:.2e}  "
          f"nfev={nfev}", flush=True)


def gradient_cost(records):
    """Gradient of sum(u(t1)^2) w.r.t. the diffusivity through a ROCK2 solve vs the primal."""
    from dxdt import sensitivity as sens

    n = 200

    def rhs(u, p, t):
        du = np.empty_like(u)
        du[1:-1] = u[2:] - 2 * u[1:-1] + u[:-2]
        du[0] = u[1] - 2 * u[0]
        du[-1] = u[-2] - 2 * u[-1]
        return du * ((n + 1) ** 2 * p[0]) - p[1] * u**3

    x = np.arange(1, n + 1) / (n + 1)
    prob = dxdt.ODEProblem(rhs, np.sin(np.pi * x) + 0.3 * np.sin(5 * np.pi * x), (0.0, 0.1),
                           np.array([1.0, 0.5]))
    loss = lambda u: np.sum(u[-1] ** 2)  # noqa: E731
    primal = lambda: dxdt.solve(prob, ROCK2(), rtol=1e-6, saveat=[0.1], backend="jax")  # noqa: E731
    candidates = {"primal": primal}
    for mode in ("forward", "reverse"):
        prep = sens.prepare("gradient", loss, prob, ROCK2(), saveat=[0.1], rtol=1e-6, mode=mode)
        candidates[mode] = lambda prep=prep: prep(prob.p)
    timings = time_interleaved(candidates, repeats=9)  # first calls compile (warm-up)
    primal_s = timings["primal"].median
    for mode in ("forward", "reverse"):
        grad_s = timings[mode].median
        records.append(dict(problem="grad-heat200", solver=f"ROCK2 gradient ({mode})",
                            seconds=grad_s, primal_seconds=primal_s, ratio=grad_s / primal_s,
                            iqr_s=timings[mode].iqr, primal_iqr_s=timings["primal"].iqr,
                            load=load_average()))
        print(f"  gradient ({mode}) {grad_s:.3f} s, primal {primal_s:.3f} s (medians of 9), "
              f"ratio {grad_s / primal_s:.2f}", flush=True)


def _heat1d_part(rtols, records):
    prob, exact, jac, band = heat1d()
    print("heat1d N=1000", flush=True)
    run_problem("heat1d", prob, exact,
                [("LSODA banded", dict(method="LSODA", **band)),
                 ("BDF sparse", dict(method="BDF", jac=jac)),
                 ("Radau sparse", dict(method="Radau", jac=jac))],
                rtols, 1e-6, RTOLS, records)  # JAX at every rtol: the LSODA goal


def _heat2d_part(rtols, records):
    prob, exact, jac = heat2d()
    print("heat2d N=128", flush=True)
    run_problem("heat2d", prob, exact,
                [("BDF sparse", dict(method="BDF", jac=jac)),
                 ("Radau sparse", dict(method="Radau", jac=jac))],
                rtols, 1e-6, (), records)


def _bruss2d_part(rtols, records):
    for n in (32, 64):
        prob, sparsity = bruss2d(n)
        _, ref, _, _ = _scipy(prob, "BDF", 1e-10, 1e-12, jac_sparsity=sparsity)
        print(f"bruss2d N={n}", flush=True)
        run_problem(f"bruss2d-{n}", prob, ref,
                    [("BDF sparse", dict(method="BDF", jac_sparsity=sparsity)),
                     ("Radau sparse", dict(method="Radau", jac_sparsity=sparsity))],
                    rtols, 1e-6 if n == 32 else None, (1e-6,) if n == 32 else (), records)


def _periodic_sparsity(n):
    """Jacobian pattern of dxdt's brusselator: periodic 5-point stencil, species coupled."""
    ring = sp.diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(n, n)).tolil()
    ring[0, n - 1] = ring[n - 1, 0] = 1
    eye = sp.identity(n)
    block = (sp.kron(ring, eye) + sp.kron(eye, ring)) != 0
    same = sp.identity(n * n)
    return sp.bmat([[block, same], [same, block]]) != 0


def _brusselator_part(rtols, records):
    prob = brusselator()
    _, ref, _, _ = _dxdt(prob, RKC(), 1e-9, 1e-11)
    print("dxdt brusselator (defaults)", flush=True)
    run_problem("brusselator", prob, ref,
                [("BDF sparse", dict(method="BDF", jac_sparsity=_periodic_sparsity(32)))],
                tuple(r for r in rtols if r >= 1e-5), None, (), records)


def _gradient_part(rtols, records):
    print("gradient through ROCK2 vs primal (JAX)", flush=True)
    gradient_cost(records)


STABILIZED = ("dxdt RKC", "dxdt RKL2", "dxdt ROCK2", "dxdt ROCK4")


def _fastest(records, problem, solvers, max_error=float("inf")):
    """The fastest successful record of ``problem`` by one of ``solvers`` (labels, or
    labels followed by " jax") with error <= ``max_error``; None if there is none."""
    found = [r for r in records if r["problem"] == problem and r.get("success")
             and r.get("error", float("inf")) <= max_error
             and any(r["solver"] in (s, s + " jax") for s in solvers)]
    return min(found, key=lambda r: r["seconds"], default=None)


def _at(records, problem, solver, rtol):
    return next((r for r in records if r["problem"] == problem and r["solver"] == solver
                 and r.get("rtol") == rtol), None)


def _describe(r) -> str:
    return (f"{r['solver']} rtol {r['rtol']:.0e}: {r['seconds']:.3f} s, error {r['error']:.1e}"
            + (f", {r['nfev']:,} f" if r.get("nfev") is not None else ""))


def goals(records) -> list[dict]:
    """The goals of issue 11 that these records measure (``pass`` from one timed run each)."""
    out = []
    tsit5 = _at(records, "heat1d", "dxdt Tsit5", 1e-6)
    best = min((r for r in records if r["problem"] == "heat1d" and r.get("rtol") == 1e-6
                and r["solver"] in STABILIZED and r.get("nfev")), key=lambda r: r["nfev"],
               default=None)
    if tsit5 and best:
        ratio = tsit5["nfev"] / best["nfev"]
        out.append(dict(goal=">= 10x fewer f evaluations than Tsit5, heat 1-D N=1000, rtol 1e-6",
                        value=f"{ratio:.0f}x ({_describe(best)}; Tsit5 {tsit5['nfev']:,} f)",
                        ratio=ratio, **{"pass": ratio >= 10}))
    pairs = []  # (ours / LSODA, ours, LSODA) at equal or better error, per LSODA point
    for lsoda in (r for r in records if r["problem"] == "heat1d" and r["solver"] == "scipy LSODA banded"):
        ours = _fastest(records, "heat1d", STABILIZED, lsoda["error"])
        if ours:
            pairs.append((ours["seconds"] / lsoda["seconds"], ours, lsoda))
    if pairs:
        ratio, ours, lsoda = min(pairs, key=lambda pair: pair[0])
        out.append(dict(goal="heat 1-D N=1000 within 2x of LSODA (banded) at equal or better "
                             "error (the best ratio over LSODA's tolerances)",
                        value=f"{ratio:.1f}x slower ({_describe(ours)}; {_describe(lsoda)})",
                        ratio=ratio, **{"pass": ratio <= 2}))
    for problem in ("bruss2d-32", "bruss2d-64", "heat2d"):
        scipy_best = _fastest([r for r in records if r.get("rtol") == 1e-6], problem,
                              ("scipy BDF sparse", "scipy Radau sparse"))
        if not scipy_best:
            continue
        ours = _fastest(records, problem, STABILIZED, scipy_best["error"])
        if ours:
            ratio = scipy_best["seconds"] / ours["seconds"]
            out.append(dict(goal=f">= 3x faster than the fastest SciPy stiff method (at rtol 1e-6)"
                                 f" at equal or better error, {problem}",
                            value=f"{ratio:.1f}x ({_describe(ours)}; {_describe(scipy_best)})",
                            ratio=ratio, **{"pass": ratio >= 3}))
    for r in records:
        if r["problem"].startswith("grad"):
            out.append(dict(goal=f"{r['solver']} <= 4x its primal", value=f"{r['ratio']:.2f}x",
                            ratio=r["ratio"], **{"pass": r["ratio"] <= 4}))
    return out


PARTS = {"heat1d": _heat1d_part, "heat2d": _heat2d_part, "bruss2d": _bruss2d_part,
         "brusselator": _brusselator_part, "gradient": _gradient_part}


def _part(problem: str) -> str:
    """The part a record's problem belongs to."""
    return "gradient" if problem.startswith("grad") else problem.split("-")[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="rtol 1e-3 and 1e-6 only")
    parser.add_argument("--only", nargs="+", choices=list(PARTS),
                        help="run these parts and replace their records in stiff.json")
    add_blas_threads_option(parser)
    args = parser.parse_args(argv)
    rtols = (1e-3, 1e-6) if args.quick else RTOLS
    load_start = load_average()
    records: list[dict] = []
    parts = args.only or list(PARTS)
    for part in parts:
        PARTS[part](rtols, records)
    if args.only:  # replace those parts' records in the existing results
        doc = json.loads((RESULTS_DIR / "stiff.json").read_text())
        kept = [r for r in doc["records"] if _part(r["problem"]) not in parts]
        records = kept + records
        doc["records"] = records
        doc["goals"] = goals(records)
        doc.setdefault("reruns", []).append(dict(parts=parts, load_start=load_start,
                                                 load_end=load_average()))
        (RESULTS_DIR / "stiff.json").write_text(json.dumps(doc, indent=1) + "\n")
        return 0

    rows = [(r["problem"], r["solver"], f"{r.get('rtol', float('nan')):.0e}",
             f"{r['seconds']:.3f}", f"{r.get('error', float('nan')):.1e}", r.get("nfev"))
            for r in records]
    print(format_table(rows, ("problem", "solver", "rtol", "s", "error", "nfev")))
    found = goals(records)
    for goal in found:
        print(f"{'pass' if goal['pass'] else 'FAIL'}  {goal['goal']}: {goal['value']}")
    path = write_json(RESULTS_DIR / "stiff.json", records, benchmark="stiff",
                      settings=dict(rtols=rtols, atol_factor=ATOL_FACTOR),
                      load_start=load_start, load_end=load_average(), goals=found)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
