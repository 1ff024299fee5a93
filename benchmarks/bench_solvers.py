#!/usr/bin/env python
"""dxdt NumPy solvers vs ``scipy.integrate.solve_ivp`` at equal tolerances.

For every problem the same in-place right-hand side ``prob.f(du, u, p, t)`` drives all
solvers; SciPy gets the out-of-place wrapper

    def rhs(t, u):
        du = np.empty_like(u)
        prob.f(du.reshape(shape), u.reshape(shape), p, t)
        return du

so the cost of the model itself is identical and the comparison measures the solvers.

Per (problem, solver) it reports: median wall time of a full solve (one warm-up, then
``--repeats`` rounds run round-robin over the solvers; cheap problems get more rounds),
RHS evaluations, accepted steps, the max abs error at the save points against a
``solve_ivp(method="DOP853", rtol=1e-12, atol=1e-14)`` reference, the speed-up over
``solve_ivp`` RK45 (> 1: faster) and the per-step overhead

    (time per solve - f calls x time per f call) / accepted steps

where the time per ``f`` call is timed separately (timeit loop of the in-place ``f`` on
``u0``, before and after the solver timings) and "f calls" are counted exactly in an
untimed run with a counting ``f`` (validation calls included; SciPy's overhead also
contains the wrapper's allocation and reshapes).

Usage::

    .venv/bin/python benchmarks/bench_solvers.py              # full run (~ minutes)
    .venv/bin/python benchmarks/bench_solvers.py --quick      # smoke run, small problems
    .venv/bin/python benchmarks/bench_solvers.py --repeats 9 --wait-load 0.5

Writes ``benchmarks/results/solvers.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR, add_blas_threads_option, blas_threads_from_argv, fmt_float, fmt_time,
    format_table, load_average, machine_info, time_interleaved, time_per_call,
    wait_for_low_load, write_json,
)

if __name__ == "__main__":  # before NumPy loads OpenBLAS
    blas_threads_from_argv()

import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import dxdt  # noqa: E402
from dxdt.solvers import DP5, Tsit5  # noqa: E402

REF_RTOL, REF_ATOL = 1e-12, 1e-14
BASELINE = "scipy RK45"

# issue goals (checked at the end of the run)
GOAL_SPEEDUP_SMALL = 2.0      # Lotka-Volterra, Lorenz: dxdt >= 2x RK45 at equal or better error
GOAL_SPEEDUP_GS128 = 1.5      # Gray-Scott n=128
GOAL_OVERHEAD_US = 20.0       # executor overhead per step on the small problems


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], dxdt.ODEProblem]
    rtol: float
    atol: float
    nsave: int
    small: bool           # part of --quick; the overhead goal applies
    note: str = ""


CASES = [
    Case("lotka_volterra", lambda: dxdt.problems.lotka_volterra(tspan=(0.0, 10.0)),
         1e-8, 1e-10, 101, True),
    Case("lorenz", lambda: dxdt.problems.lorenz(tspan=(0.0, 10.0)),
         1e-8, 1e-10, 101, True, "chaotic: errors vs the reference grow like e^(0.9 t)"),
    Case("gray_scott_64", lambda: dxdt.problems.gray_scott(n=64, tspan=(0.0, 200.0)),
         1e-6, 1e-8, 11, False),
    Case("gray_scott_128", lambda: dxdt.problems.gray_scott(n=128, tspan=(0.0, 200.0)),
         1e-6, 1e-8, 11, False),
]


# --------------------------------------------------------------------------- solver adapters

def scipy_rhs(prob: dxdt.ODEProblem) -> Callable[[float, np.ndarray], np.ndarray]:
    """Out-of-place ``rhs(t, u)`` for ``solve_ivp`` around the problem's in-place ``f``."""
    f, p, shape = prob.f, prob.p, prob.u0.shape

    def rhs(t, u):
        du = np.empty_like(u)
        f(du.reshape(shape), u.reshape(shape), p, t)
        return du

    return rhs


def counting(f):
    """An in-place ``f`` (4 named parameters, so dxdt sees it as in place) that counts calls."""
    def counted(du, u, p, t):
        counted.calls += 1
        f(du, u, p, t)
    counted.calls = 0
    return counted


@dataclass
class Run:
    """One solve's outputs: states at saveat (flattened), stats."""
    u: np.ndarray
    nfev: int
    naccept: int
    nreject: int | None
    success: bool
    message: str


class DxdtSolver:
    backend = "dxdt numpy"

    def __init__(self, method_cls):
        self.method_cls = method_cls
        self.name = f"dxdt {method_cls.__name__}"

    def solve(self, prob, case, saveat, f=None):
        if f is not None:
            prob = prob.remake(f=f)
        return dxdt.solve(prob, self.method_cls(), rtol=case.rtol, atol=case.atol, saveat=saveat)

    def run(self, prob, case, saveat, f=None) -> Run:
        sol = self.solve(prob, case, saveat, f)
        return Run(np.asarray(sol.u).reshape(len(saveat), -1), sol.stats["nfev"],
                   sol.stats["naccept"], sol.stats["nreject"], sol.success, sol.message)


class ScipySolver:
    backend = "scipy solve_ivp"

    def __init__(self, method: str):
        self.method = method
        self.name = f"scipy {method}"

    def solve(self, prob, case, saveat, f=None, t_eval="saveat"):
        if f is not None:
            prob = prob.remake(f=f)
        return solve_ivp(scipy_rhs(prob), prob.tspan, prob.u0.ravel(), method=self.method,
                         t_eval=saveat if t_eval == "saveat" else t_eval,
                         rtol=case.rtol, atol=case.atol)

    def run(self, prob, case, saveat, f=None) -> Run:
        sol = self.solve(prob, case, saveat, f)
        # solve_ivp does not report steps; t_eval only interpolates (it never changes the
        # steps), so a run without t_eval returns every accepted step. Without dense output
        # every step attempt costs n_stages evaluations (+2 at the start: f(t0) and the
        # initial-step guess), which gives the rejected steps.
        plain = self.solve(prob, case, saveat, t_eval=None)
        steps = len(plain.t) - 1
        attempts, rest = divmod(plain.nfev - 2, getattr(scipy.integrate, self.method).n_stages)
        nreject = attempts - steps if rest == 0 and attempts >= steps else None
        return Run(sol.y.T.copy(), sol.nfev, steps, nreject, sol.success, sol.message)


SOLVERS = [DxdtSolver(Tsit5), DxdtSolver(DP5), ScipySolver("RK45"), ScipySolver("DOP853")]


# --------------------------------------------------------------------------- benchmark

def reference(prob, saveat) -> tuple[np.ndarray, dict[str, Any]]:
    start = time.perf_counter()
    sol = solve_ivp(scipy_rhs(prob), prob.tspan, prob.u0.ravel(), method="DOP853",
                    t_eval=saveat, rtol=REF_RTOL, atol=REF_ATOL)
    elapsed = time.perf_counter() - start
    if not sol.success:
        raise RuntimeError(f"reference solve failed: {sol.message}")
    info = {"method": "solve_ivp DOP853", "rtol": REF_RTOL, "atol": REF_ATOL,
            "nfev": int(sol.nfev), "time_s": elapsed}
    return sol.y.T.copy(), info


def rhs_call_time(prob) -> tuple[list[float], list[float]]:
    """Per-call times (s) of the in-place ``f`` on ``u0`` and of the SciPy wrapper (7 loops each)."""
    f, p, t0 = prob.f, prob.p, prob.tspan[0]
    u = np.array(prob.u0)
    du = np.empty_like(u)
    t_f = time_per_call(f, args=(du, u, p, t0)).times
    rhs = scipy_rhs(prob)
    t_rhs = time_per_call(rhs, args=(t0, u.ravel())).times
    return t_f, t_rhs


def bench_case(case: Case, repeats: int, min_total_s: float, log) -> tuple[list[dict], dict]:
    prob = case.make()
    t0, t1 = prob.tspan
    saveat = np.linspace(t0, t1, case.nsave)

    log(f"[{case.name}] state {prob.u0.shape} ({prob.u0.size} values): reference DOP853 "
        f"rtol={REF_RTOL:g} ...")
    u_ref, ref_info = reference(prob, saveat)
    log(f"[{case.name}]   reference: {ref_info['nfev']} f evaluations, {ref_info['time_s']:.2f} s")

    # f is timed before and after the solver timings; the median over both brackets the
    # machine state the solves ran in
    f_before, rhs_before = rhs_call_time(prob)
    log(f"[{case.name}]   f call {fmt_time(statistics.median(f_before))} "
        f"(scipy wrapper {fmt_time(statistics.median(rhs_before))})")

    # untimed runs: results, stats, exact f-call counts
    runs, calls = {}, {}
    for solver in SOLVERS:
        counter = counting(prob.f)
        runs[solver.name] = solver.run(prob, case, saveat)
        solver.solve(prob, case, saveat, f=counter)
        calls[solver.name] = counter.calls

    log(f"[{case.name}]   timing {len(SOLVERS)} solvers, >= {repeats} rounds ...")
    fns = {s.name: (lambda s=s: s.solve(prob, case, saveat)) for s in SOLVERS}
    timings = time_interleaved(fns, repeats=repeats, warmup=1, min_total_s=min_total_s)

    f_after, rhs_after = rhs_call_time(prob)
    t_f = statistics.median(f_before + f_after)
    t_rhs = statistics.median(rhs_before + rhs_after)
    log(f"[{case.name}]   f call after timing {fmt_time(statistics.median(f_after))}; using {fmt_time(t_f)}")

    base = timings[BASELINE].median
    records = []
    for solver in SOLVERS:
        run, timing = runs[solver.name], timings[solver.name]
        err = float(np.max(np.abs(run.u - u_ref))) if run.u.shape == u_ref.shape else math.inf
        overhead = (timing.median - calls[solver.name] * t_f) / max(run.naccept, 1)
        records.append({
            "problem": case.name, "n_state": int(prob.u0.size), "state_shape": list(prob.u0.shape),
            "tspan": [t0, t1], "rtol": case.rtol, "atol": case.atol, "nsave": case.nsave,
            "solver": solver.name, "backend": solver.backend,
            "time": timing.summary(),
            "time_median_s": timing.median,
            "speedup_vs_rk45": base / timing.median,
            "speedup_vs_rk45_min": timings[BASELINE].min / timing.min,
            "nfev": int(run.nfev), "f_calls": int(calls[solver.name]),
            "naccept": int(run.naccept), "nreject": run.nreject,
            "max_abs_err": err, "success": bool(run.success), "message": run.message,
            "f_call_s": t_f, "scipy_wrapper_call_s": t_rhs,
            "f_call_before_s": statistics.median(f_before), "f_call_after_s": statistics.median(f_after),
            "overhead_us_per_step": overhead * 1e6,
            "small": case.small, "note": case.note,
        })
    problem_info = {"problem": case.name, "state_shape": list(prob.u0.shape),
                    "reference": ref_info, "f_call_s": t_f, "scipy_wrapper_call_s": t_rhs}
    return records, problem_info


# --------------------------------------------------------------------------- report

def table(records: list[dict]) -> str:
    header = ["problem", "solver", "time", "min", "runs", "vs RK45", "nfev", "steps", "rej",
              "max err", "f call", "ovh/step"]
    rows, last = [], None
    for r in records:
        rows.append([
            r["problem"] if r["problem"] != last else "",
            r["solver"],
            fmt_time(r["time_median_s"]),
            fmt_time(r["time"]["min_s"]),
            r["time"]["n"],
            f"{r['speedup_vs_rk45']:.2f}x",
            r["nfev"],
            r["naccept"],
            "-" if r["nreject"] is None else r["nreject"],
            fmt_float(r["max_abs_err"], ".2e"),
            fmt_time(r["f_call_s"]),
            f"{r['overhead_us_per_step']:.1f} us",
        ])
        last = r["problem"]
    return format_table(rows, header, align="llrrrrrrrrrr")


def check_goals(records: list[dict]) -> list[dict]:
    by = {(r["problem"], r["solver"]): r for r in records}
    goals = []
    dxdt_names = [s.name for s in SOLVERS if isinstance(s, DxdtSolver)]
    for problem, target in (("lotka_volterra", GOAL_SPEEDUP_SMALL), ("lorenz", GOAL_SPEEDUP_SMALL),
                            ("gray_scott_128", GOAL_SPEEDUP_GS128)):
        base = by.get((problem, BASELINE))
        if base is None:
            continue
        for name in dxdt_names:
            r = by[(problem, name)]
            speed_ok = r["speedup_vs_rk45"] >= target
            err_ok = r["max_abs_err"] <= base["max_abs_err"]
            # equal-or-better error is part of the small-problem goal only
            ok = speed_ok and (err_ok or problem == "gray_scott_128")
            goals.append({
                "goal": f"{name} >= {target}x RK45 on {problem}"
                        + (" at equal or better error" if problem != "gray_scott_128" else ""),
                "value": f"{r['speedup_vs_rk45']:.2f}x, err {r['max_abs_err']:.1e} vs RK45 "
                         f"{base['max_abs_err']:.1e}",
                "pass": ok,
            })
    for r in records:
        if r["small"] and r["solver"] in dxdt_names:
            goals.append({
                "goal": f"{r['solver']} overhead < {GOAL_OVERHEAD_US:g} us/step on {r['problem']}",
                "value": f"{r['overhead_us_per_step']:.1f} us/step",
                "pass": r["overhead_us_per_step"] < GOAL_OVERHEAD_US,
            })
    return goals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed rounds per cell after one warm-up (default 5; cheap cells get "
                         "more, see --min-time)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="sample each cell for at least about this many seconds (default 1.0)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: small problems only, 3 rounds, short sampling")
    ap.add_argument("--problems", nargs="+", choices=[c.name for c in CASES],
                    help="run only these problems")
    ap.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                    help="first wait (up to 5 min) for the 1-min load average to drop below LOAD")
    add_blas_threads_option(ap)
    ap.add_argument("--out", default=str(RESULTS_DIR / "solvers.json"),
                    help="JSON output path (default benchmarks/results/solvers.json)")
    args = ap.parse_args(argv)

    repeats, min_time = args.repeats, args.min_time
    cases = CASES
    if args.quick:
        repeats, min_time = min(repeats, 3), min(min_time, 0.2)
        cases = [c for c in cases if c.small]
    if args.problems:
        cases = [c for c in cases if c.name in args.problems]
    if repeats < 1:
        ap.error("--repeats must be >= 1")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.wait_load is not None:
        wait_for_low_load(args.wait_load)
    load_start = load_average()
    meta = machine_info()
    log(f"load average at start: {load_start}")

    records, problems = [], []
    for case in cases:
        recs, info = bench_case(case, repeats, min_time, log)
        records += recs
        problems.append(info)
    load_end = load_average()
    goals = check_goals(records)

    print("dxdt vs scipy solve_ivp, equal tolerances (time = median of runs after 1 warm-up, "
          "min = fastest run; vs RK45 = ratio of medians, > 1 is faster; "
          "ovh/step = (time - f calls x f call) / steps)")
    print(f"{meta['platform']}, {meta['cpu_count']} CPUs, numpy {meta['versions']['numpy']}, "
          f"scipy {meta['versions']['scipy']}, BLAS threads {args.blas_threads or 'default'}, "
          f"load avg start {load_start} end {load_end}")
    print()
    print(table(records))
    if goals:
        print()
        print("goals:")
        for g in goals:
            print(f"  [{'PASS' if g['pass'] else 'FAIL'}] {g['goal']}: {g['value']}")
    notes = sorted({f"{r['problem']}: {r['note']}" for r in records if r["note"]})
    for n in notes:
        print(f"note: {n}")

    settings = {"repeats": repeats, "blas_threads": args.blas_threads, "min_time_s": min_time, "quick": args.quick,
                "reference": {"method": "solve_ivp DOP853", "rtol": REF_RTOL, "atol": REF_ATOL},
                "baseline": BASELINE, "solvers": [s.name for s in SOLVERS],
                "cases": [{"problem": c.name, "rtol": c.rtol, "atol": c.atol, "nsave": c.nsave}
                          for c in cases]}
    path = write_json(args.out, records, benchmark="solvers", settings=settings, meta=meta,
                      load_start=load_start, load_end=load_end, problems=problems, goals=goals)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
