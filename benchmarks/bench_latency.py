#!/usr/bin/env python
"""Latency of dxdt's compiled path: the first result of a fresh process, and per-call overhead.

Issue 8's benchmark ("the compiled path at the hand-written limit"). Three parts:

1. **Time to first result** in a fresh process, for five workloads, each measured in its
   own subprocess (this script in ``--worker`` mode), from after ``import dxdt, jax,
   numpy`` (timed separately) and ``import dxdt.problems`` (the models; timed separately
   too, as it imports ``scipy.linalg``, which a user's own model need not) to the first
   result as a NumPy array:

   - ``dxdt cold``: ``DXDT_CACHE_DIR`` is a new empty directory (translate, trace,
     compile, run; the program is written to the directory);
   - ``dxdt warm``: ``DXDT_CACHE_DIR`` is the directory the cold run filled (the
     serialised executable is loaded; nothing is traced or compiled);
   - ``diffrax (hand)``: the hand-written JAX equivalent in a fresh process: the model
     in ``jax.numpy``, ``diffrax.diffeqsolve`` with the same tolerances and dxdt's PI
     coefficients, differentiated as a JAX user would (``jax.jit(jax.jacfwd(L))`` with
     ``ForwardMode`` for forward gradients, ``jax.jit(jax.grad(L))`` with
     ``RecursiveCheckpointAdjoint`` for reverse ones, ``jax.jit(jax.hessian(L))`` with
     ``DirectAdjoint``); its ``import diffrax`` falls inside the timed region (dxdt's
     warm path does not import diffrax at all) and is reported separately.

   The three run round-robin, ``--repeats`` times each (a new cold directory every
   time); medians are reported. Goals: warm <= 0.3 s; cold <= 0.5 x the hand-written
   first call.

2. **Second unprepared call vs prepared call** (one process): Lotka-Volterra gradient,
   forward and reverse; ``sens.gradient(...)`` called again (its program found in memory)
   against ``prep(p)``. Goal: unprepared <= 1.2 x prepared + 1 ms.

3. **Python overhead per call**: ``solve(backend="jax")`` and a prepared operator. The
   Python of the call is timed with its compiled executable replaced by a stub that returns
   the executable's outputs at once (goal: <= 50 us). Also reported: the call minus the
   executable called alone with the same arguments (transfers and the checks of the
   results; docs/compiled.md, "The cost of a call once compiled").

Usage::

    .venv/bin/python benchmarks/bench_latency.py            # full run (~5 min on a quiet machine)
    .venv/bin/python benchmarks/bench_latency.py --quick    # one repeat of each

Writes ``benchmarks/results/latency.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR, add_blas_threads_option, blas_threads_from_argv, fmt_time, format_table,
    load_average, machine_info, time_interleaved, wait_for_low_load, write_json,
)

SCRIPT = Path(__file__).resolve()

RTOL, ATOL = 1e-6, 1e-8  # the sensitivity operators' defaults
SOLVE_RTOL, SOLVE_ATOL, SOLVE_NSAVE = 1e-8, 1e-10, 101  # bench_jax.py's Lotka-Volterra solve
MAX_STEPS = 100_000  # dxdt's default, also for the hand-written programs
TARGET_SCALE = 0.9  # loss target: 0.9 x u0 (closed form: no solve inside the timed region)

# issue 8's goals
GOAL_WARM_S = 0.3           # warm disk cache: first result within this many seconds
GOAL_COLD_VS_HAND = 0.5     # cold: at most this fraction of the hand-written first call
GOAL_UNPREPARED_RATIO = 1.2  # second unprepared call <= 1.2 x prepared + 1 ms
GOAL_UNPREPARED_SLACK_S = 1e-3
GOAL_PYTHON_S = 50e-6        # Python per call (solve, prepared operator), executable stubbed

DXDT_COLD, DXDT_WARM, HAND = "dxdt cold", "dxdt warm", "diffrax (hand)"
VARIANTS = (DXDT_COLD, DXDT_WARM, HAND)

# name -> (problem, what, dxdt call, hand-written equivalent)
CASES = {
    "lv_gradient_fwd": ("lotka_volterra", "gradient", "sens.gradient(loss, prob, mode='forward')",
                        "jax.jit(jax.jacfwd(L)), ForwardMode"),
    "heat_256_gradient_rev": ("heat_1d_256", "gradient", "sens.gradient(loss, prob, mode='reverse')",
                              "jax.jit(jax.grad(L)), RecursiveCheckpointAdjoint"),
    # auto picks the interpolating adjoint here (choose_mode: 4 parameters, 2048 states);
    # the hand-written reverse equivalent is diffrax's checkpointed adjoint
    "gs_32_gradient": ("gray_scott_32", "gradient", "sens.gradient(loss, prob)  (auto)",
                       "jax.jit(jax.grad(L)), RecursiveCheckpointAdjoint"),
    "lv_hessian": ("lotka_volterra", "hessian", "sens.hessian(loss, prob)  (auto)",
                   "jax.jit(jax.hessian(L)), DirectAdjoint"),
    "lv_solve_jax": ("lotka_volterra", "solve", "dxdt.solve(prob, Tsit5(), backend='jax', saveat)",
                     "jax.jit(diffeqsolve), SaveAt(ts)"),
}
EXPLICIT_MODES = {"lv_gradient_fwd": "forward", "heat_256_gradient_rev": "reverse"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- worker side
# Everything below up to "parent side" runs in the fresh subprocess. The worker imports
# numpy, jax and dxdt itself (timed), so this module imports none of them at the top.

def _problem(name: str):
    import dxdt

    if name == "lotka_volterra":
        return dxdt.problems.lotka_volterra(tspan=(0.0, 10.0))
    if name == "heat_1d_256":
        return dxdt.problems.heat_1d(n=256, tspan=(0.0, 1.0))
    if name == "gray_scott_32":
        return dxdt.problems.gray_scott(n=32, tspan=(0.0, 50.0))
    raise ValueError(f"unknown problem {name!r}")


def _numpy_loss(target):
    import numpy as np

    def loss(u):
        return np.sum((u[-1] - target) ** 2)
    return loss


def _dxdt_first_result(case: str):
    """The dxdt call of ``case``; returns ``(result as NumPy, facts)``."""
    import numpy as np

    import dxdt
    from dxdt import sensitivity as sens
    from dxdt.solvers import Tsit5

    problem, what = CASES[case][:2]
    prob = _problem(problem)
    if what == "solve":
        t0, t1 = prob.tspan
        sol = dxdt.solve(prob, Tsit5(), backend="jax", rtol=SOLVE_RTOL, atol=SOLVE_ATOL,
                         saveat=np.linspace(t0, t1, SOLVE_NSAVE))
        return np.asarray(sol.u), {"naccept": int(sol.stats["naccept"])}
    loss = _numpy_loss(TARGET_SCALE * prob.u0)
    if what == "hessian":
        return np.asarray(sens.hessian(loss, prob, Tsit5(), rtol=RTOL, atol=ATOL)), {}
    mode = EXPLICIT_MODES.get(case, "auto")
    return np.asarray(sens.gradient(loss, prob, Tsit5(), rtol=RTOL, atol=ATOL, mode=mode)), {}


def _hand_vf(problem: str, n: int):
    """The model in ``jax.numpy``, ``vf(t, y, p)`` (diffrax's argument order)."""
    import jax.numpy as jnp

    if problem == "lotka_volterra":
        def vf(t, y, p):
            return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1], -p[2] * y[1] + p[3] * y[0] * y[1]])
    elif problem == "heat_1d_256":
        def vf(t, u, p):
            face = (p[:-1] + p[1:]) * (0.5 * n * n)  # D_{i+1/2} / dx^2
            flux = jnp.pad((u[1:] - u[:-1]) * face, 1)  # no-flux walls
            return flux[1:] - flux[:-1]
    else:  # Gray-Scott, five-point periodic Laplacian by jnp.roll
        def lap(a):
            return (jnp.roll(a, 1, 0) + jnp.roll(a, -1, 0) + jnp.roll(a, 1, 1) + jnp.roll(a, -1, 1)
                    - 4.0 * a)

        def vf(t, y, p):
            U, V = y[0], y[1]
            uvv = U * V * V
            return jnp.stack([p[0] * lap(U) - uvv + p[2] * (1.0 - U),
                              p[1] * lap(V) + uvv - (p[2] + p[3]) * V])
    return vf


def _hand_first_result(case: str):
    """The hand-written JAX + diffrax equivalent of ``case``; ``(result, facts)``."""
    import jax
    import numpy as np

    from dxdt.solvers import Tsit5
    from dxdt.solvers._diffrax import pid_coefficients

    jax.config.update("jax_enable_x64", True)
    start = time.perf_counter()
    import diffrax
    import jax.numpy as jnp
    import_diffrax_s = time.perf_counter() - start

    problem, what = CASES[case][:2]
    prob = _problem(problem)
    t0, t1 = (float(t) for t in prob.tspan)
    pcoeff, icoeff = pid_coefficients(Tsit5())
    term = diffrax.ODETerm(_hand_vf(problem, prob.u0.shape[0]))
    solver = diffrax.Tsit5()
    facts = {"import_diffrax_s": import_diffrax_s}
    if what == "solve":
        controller = diffrax.PIDController(rtol=SOLVE_RTOL, atol=SOLVE_ATOL, pcoeff=pcoeff, icoeff=icoeff)

        @jax.jit
        def solve(y0, p, ts):
            return diffrax.diffeqsolve(term, solver, t0, t1, None, y0, args=p,
                                       saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                       max_steps=MAX_STEPS)

        out = solve(prob.u0, prob.p, np.linspace(t0, t1, SOLVE_NSAVE))
        return np.asarray(out.ys), {**facts, "naccept": int(out.stats["num_accepted_steps"])}

    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL, pcoeff=pcoeff, icoeff=icoeff)
    target = jnp.asarray(TARGET_SCALE * prob.u0)
    y0 = jnp.asarray(prob.u0)
    if what == "hessian":
        adjoint, transform = diffrax.DirectAdjoint(), jax.hessian
    elif "RecursiveCheckpointAdjoint" in CASES[case][3]:
        adjoint, transform = diffrax.RecursiveCheckpointAdjoint(), jax.grad
    else:
        adjoint, transform = diffrax.ForwardMode(), jax.jacfwd

    def loss(p):
        sol = diffrax.diffeqsolve(term, solver, t0, t1, None, y0, args=p,
                                  saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
                                  max_steps=MAX_STEPS, adjoint=adjoint)
        return jnp.sum((sol.ys[-1] - target) ** 2)

    return np.asarray(jax.jit(transform(loss))(prob.p)), facts


def worker(case: str, variant: str) -> dict:
    """One fresh-process measurement; the parent reads the JSON line it prints."""
    start = time.perf_counter()
    import numpy  # noqa: F401
    import jax  # noqa: F401

    import dxdt  # noqa: F401
    after_imports = time.perf_counter()
    import dxdt.problems  # noqa: F401  (the benchmark's models; it imports scipy.linalg)
    after_problems = time.perf_counter()
    if variant == HAND:
        result, facts = _hand_first_result(case)
    else:
        result, facts = _dxdt_first_result(case)
    done = time.perf_counter()
    out = {"case": case, "variant": variant, "import_s": after_imports - start,
           "import_problems_s": after_problems - after_imports,
           "first_result_s": done - after_problems, "result": result.ravel().tolist(), **facts}
    if variant != HAND:
        from dxdt import sensitivity as sens

        info = sens.cache_info()
        out["cache"] = {k: info[k] for k in ("memory_hits", "disk_hits", "builds")}
        what = CASES[case][1]
        if what != "solve":  # the strategy that ran (mode="auto": what choose_mode picks)
            order = 2 if what == "hessian" else 1
            out["mode"] = EXPLICIT_MODES.get(case) or sens.choose_mode(_problem(CASES[case][0]),
                                                                        order=order)[0]
    return out


# --------------------------------------------------------------------------- parent side

def run_worker(case: str, variant: str, cache_dir: str, blas_threads: int, timeout: float) -> dict:
    env = dict(os.environ)
    env["DXDT_CACHE_DIR"] = cache_dir
    env.pop("DXDT_CACHE", None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # no JAX persistent cache for either side
    # a script rerun by a user imports its libraries from cached bytecode; without this, a
    # PYTHONDONTWRITEBYTECODE environment recompiles dxdt's sources (~0.2 s) in every process
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, str(SCRIPT), "--worker", case, variant, "--blas-threads", str(blas_threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {case}/{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rel_diff(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _directional_reference(case: str):
    """``(v, dL/dp . v)`` by central differences of NumPy solves at rtol 1e-12 (gradient
    cases; None otherwise): an independent check of both dxdt's and diffrax's gradients."""
    import numpy as np

    import dxdt
    from dxdt.solvers import DP5

    problem, what = CASES[case][:2]
    if what != "gradient":
        return None
    prob = _problem(problem)
    loss = _numpy_loss(TARGET_SCALE * prob.u0)
    p = np.asarray(prob.p, float)
    v = np.random.default_rng(0).standard_normal(p.shape)
    h = 1e-6 * max(1.0, float(np.linalg.norm(p))) / float(np.linalg.norm(v))

    def value(q):
        sol = dxdt.solve(prob.remake(p=q), DP5(), rtol=1e-12, atol=1e-14)
        return loss(sol.u)
    return v, (value(p + h * v) - value(p - h * v)) / (2 * h)


def _directional_error(result, reference) -> float | None:
    import numpy as np

    if reference is None:
        return None
    v, exact = reference
    return float(abs(np.dot(np.ravel(result), np.ravel(v)) - exact) / max(abs(exact), 1e-300))


def first_results(cases: list[str], repeats: int, blas_threads: int, timeout: float) -> list[dict]:
    """Part 1: every case, cold / warm / hand, round-robin, ``repeats`` times."""
    samples: dict[tuple[str, str], list[dict]] = {(c, v): [] for c in cases for v in VARIANTS}
    loads = {c: [] for c in cases}
    scratch = tempfile.mkdtemp(prefix="dxdt-bench-latency-")
    try:
        for r in range(repeats):
            for case in cases:
                directory = tempfile.mkdtemp(dir=scratch)
                loads[case].append(load_average())
                for variant in VARIANTS:  # cold fills `directory`, warm reads it
                    out = run_worker(case, variant, directory, blas_threads, timeout)
                    samples[(case, variant)].append(out)
                    log(f"[{case}] round {r + 1}/{repeats} {variant}: import {out['import_s']:.2f} s, "
                        f"first result {out['first_result_s']:.3f} s"
                        + (f", cache {out['cache']}" if "cache" in out else ""))
                shutil.rmtree(directory, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    records = []
    for case in cases:
        problem, what, call, hand_call = CASES[case]
        hand = samples[(case, HAND)]
        hand_med = statistics.median(s["first_result_s"] for s in hand)
        reference = _directional_reference(case)
        for variant in VARIANTS:
            runs = samples[(case, variant)]
            times = [s["first_result_s"] for s in runs]
            med = statistics.median(times)
            rec = {
                "case": case, "problem": problem, "operator": what, "variant": variant,
                "first_result_s": med, "first_result_min_s": min(times),
                "import_s": statistics.median(s["import_s"] for s in runs),
                "import_problems_s": statistics.median(s["import_problems_s"] for s in runs),
                "vs_hand": med / hand_med, "runs": len(runs), "times_s": times, "call": hand_call if variant == HAND else call,
            }
            rec["rel_err_vs_fd"] = _directional_error(runs[0]["result"], reference)
            if variant == HAND:
                rec["import_diffrax_s"] = statistics.median(s["import_diffrax_s"] for s in runs)
            else:
                rec["rel_diff_vs_hand"] = _rel_diff(runs[0]["result"], hand[0]["result"])
                rec["cache"] = runs[-1]["cache"]
                rec["mode"] = runs[-1].get("mode")
                expected = "builds" if variant == DXDT_COLD else "disk_hits"
                rec["cache_as_expected"] = all(s["cache"][expected] >= 1 for s in runs) and (
                    variant == DXDT_COLD or all(s["cache"]["builds"] == 0 for s in runs))
            rec["load_average"] = loads[case]  # at the start of each round
            rec["load_1min"] = loads[case][0][0] if loads[case][0] else None
            records.append(rec)
    return records


def _record_program_calls() -> tuple[Callable, list]:
    """Patch ``dxdt._backend_jax._program`` to record the program and arguments of each solve."""
    import dxdt._backend_jax as backend

    original, seen = backend._program, []

    def recording(prob, method, static, args, *rest):
        program = original(prob, method, static, args, *rest)
        seen.append((program, dict(args)))
        return program

    backend._program = recording

    def restore():
        backend._program = original
    return restore, seen


def _executable_alone(program, args: tuple) -> Callable:
    """``program``'s compiled executable on ``args`` as :class:`Program` passes them (packed
    into its flat input vector beforehand when it has one), blocked, outputs not unpacked."""
    import jax

    inputs = program.meta.get("inputs")
    if inputs is None:
        return lambda: jax.block_until_ready(program.executable(*args))
    packed = inputs.pack(args)
    return lambda: jax.block_until_ready(program.executable(packed))


def _python_alone(program, args: tuple, call: Callable, repeats: int, min_time: float):
    """``call``'s timing with ``program``'s executable replaced by a stub returning its
    outputs at once: the Python of the call alone."""
    import jax
    import numpy as np

    real = program.executable
    inputs = program.meta.get("inputs")
    if inputs is None:
        out = jax.device_get(real(*args))
    else:
        out = np.asarray(real(inputs.pack(args)))
    program.executable = lambda *_: out
    try:
        return time_interleaved({"python": call}, repeats=repeats, min_total_s=min_time)["python"]
    finally:
        program.executable = real


def _overhead_row(case: str, t: dict, total: str, python, load) -> dict:
    """A row of part 3 from the interleaved timings ``t`` (``total``, ``executable``) and the
    stubbed timing ``python``."""
    return {
        "case": case, "total_s": t[total].median, "executable_s": t["executable"].median,
        "overhead_s": t[total].median - t["executable"].median,
        "overhead_min_s": t[total].min - t["executable"].min,
        "python_s": python.median, "python_min_s": python.min,
        "runs": len(t[total].times), "load_1min": load and load[0],
    }


def in_process(repeats: int, min_time: float) -> tuple[list[dict], list[dict]]:
    """Parts 2 and 3, in this process (cache directory: a temporary one)."""
    import numpy as np

    import dxdt
    from dxdt import sensitivity as sens
    from dxdt.sensitivity._jax import load_jax
    from dxdt.solvers import Tsit5

    load_jax()  # 64-bit floats on, as the operators run
    prob = _problem("lotka_volterra")
    loss = _numpy_loss(TARGET_SCALE * prob.u0)
    p = np.array(prob.p)

    unprepared = []
    overhead = []
    for mode in ("forward", "reverse"):
        kw = dict(rtol=RTOL, atol=ATOL, mode=mode)
        sens.gradient(loss, prob, Tsit5(), **kw)  # builds (or loads) the program
        prep = sens.prepare("gradient", loss, prob, Tsit5(), **kw)
        executable = _executable_alone(prep._program, (p, prep._host_context))
        fns = {
            "unprepared": lambda kw=kw: sens.gradient(loss, prob, Tsit5(), **kw),
            "prepared": lambda prep=prep: prep(p),
            "executable": executable,
        }
        load = load_average()
        t = time_interleaved(fns, repeats=repeats, min_total_s=min_time)
        python = _python_alone(prep._program, (p, prep._host_context), lambda prep=prep: prep(p),
                               repeats, min_time)
        limit = GOAL_UNPREPARED_RATIO * t["prepared"].median + GOAL_UNPREPARED_SLACK_S
        unprepared.append({
            "case": f"lv_gradient_{mode}", "mode": prep.mode,
            "unprepared_s": t["unprepared"].median, "prepared_s": t["prepared"].median,
            "ratio": t["unprepared"].median / t["prepared"].median,
            "limit_s": limit, "met": t["unprepared"].median <= limit,
            "runs": len(t["prepared"].times), "load_1min": load and load[0],
        })
        overhead.append(_overhead_row(f"prepared gradient ({mode})", t, "prepared", python, load))
        log(f"[lv gradient {mode}] unprepared {fmt_time(t['unprepared'].median)}, prepared "
            f"{fmt_time(t['prepared'].median)}, executable {fmt_time(t['executable'].median)}")

    t0, t1 = prob.tspan
    kw = dict(rtol=SOLVE_RTOL, atol=SOLVE_ATOL, saveat=np.linspace(t0, t1, SOLVE_NSAVE))
    dxdt.solve(prob, Tsit5(), backend="jax", **kw)
    restore, seen = _record_program_calls()
    try:
        dxdt.solve(prob, Tsit5(), backend="jax", **kw)
    finally:
        restore()
    (program, args), = seen
    executable = _executable_alone(program, tuple(args.values()))
    fns = {
        "solve": lambda: dxdt.solve(prob, Tsit5(), backend="jax", **kw),
        "executable": executable,
    }
    load = load_average()
    t = time_interleaved(fns, repeats=repeats, min_total_s=min_time)
    python = _python_alone(program, tuple(args.values()),
                           lambda: dxdt.solve(prob, Tsit5(), backend="jax", **kw), repeats, min_time)
    overhead.append(_overhead_row("solve(backend='jax')", t, "solve", python, load))
    log(f"[lv solve jax] solve {fmt_time(t['solve'].median)}, executable {fmt_time(t['executable'].median)}")
    return unprepared, overhead


# --------------------------------------------------------------------------- report

def check_goals(records: list[dict], unprepared: list[dict], overhead: list[dict] = ()) -> list[dict]:
    goals = []
    for o in overhead:
        goals.append({"goal": f"{o['case']}: Python overhead per call <= {GOAL_PYTHON_S * 1e6:g} us "
                              "(the call with a stubbed executable)",
                      "value": f"{fmt_time(o['python_s'])} (total - executable alone: "
                               f"{fmt_time(o['overhead_s'])})",
                      "pass": o["python_s"] <= GOAL_PYTHON_S})
    by = {(r["case"], r["variant"]): r for r in records}
    for case in dict.fromkeys(r["case"] for r in records):
        warm, cold, hand = by[(case, DXDT_WARM)], by[(case, DXDT_COLD)], by[(case, HAND)]
        goals.append({"goal": f"{case}: warm first result <= {GOAL_WARM_S} s",
                      "value": f"{warm['first_result_s']:.3f} s",
                      "pass": warm["first_result_s"] <= GOAL_WARM_S})
        goals.append({"goal": f"{case}: cold <= {GOAL_COLD_VS_HAND} x hand-written first call",
                      "value": f"{cold['vs_hand']:.2f} ({cold['first_result_s']:.2f} s vs "
                               f"{hand['first_result_s']:.2f} s)",
                      "pass": cold["vs_hand"] <= GOAL_COLD_VS_HAND})
    for u in unprepared:
        goals.append({"goal": f"{u['case']}: second unprepared call <= {GOAL_UNPREPARED_RATIO} x "
                              f"prepared + {GOAL_UNPREPARED_SLACK_S * 1e3:g} ms",
                      "value": f"{fmt_time(u['unprepared_s'])} vs limit {fmt_time(u['limit_s'])} "
                               f"(ratio {u['ratio']:.2f})",
                      "pass": u["met"]})
    return goals


def first_table(records: list[dict]) -> str:
    rows, last = [], None
    for r in records:
        rows.append([r["case"] if r["case"] != last else "", r["variant"], fmt_time(r["import_s"]),
                     fmt_time(r["import_problems_s"]), fmt_time(r["first_result_s"]), fmt_time(r["first_result_min_s"]), r["runs"],
                     f"{r['vs_hand']:.2f}",
                     "" if r["variant"] == HAND else f"{r['rel_diff_vs_hand']:.1e}",
                     "-" if r.get("rel_err_vs_fd") is None else f"{r['rel_err_vs_fd']:.1e}",
                     fmt_time(r.get("import_diffrax_s")) if r["variant"] == HAND else
                     ("ok" if r["cache_as_expected"] else f"UNEXPECTED {r['cache']}"),
                     "-" if r["load_1min"] is None else r["load_1min"]])
        last = r["case"]
    return format_table(rows, ["case", "variant", "import", "problems import", "1st result", "min",
                               "runs", "/hand", "rel diff vs hand", "err vs FD", "cache / diffrax import",
                               "load"],
                        align="llrrrrrrrrll")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        blas_threads_from_argv(argv)
        print(json.dumps(worker(argv[1], argv[2])))
        return 0

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3,
                    help="fresh-process rounds per case and variant (default 3), and the minimum "
                         "rounds of the in-process timings")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="sample each in-process cell for about this many seconds (default 1.0)")
    ap.add_argument("--quick", action="store_true", help="smoke run: one round, short in-process timings")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), help="run only these cases")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per worker process (default 600)")
    ap.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                    help="first wait (up to 5 min) for the 1-min load average to drop below LOAD")
    add_blas_threads_option(ap)
    ap.add_argument("--out", default=str(RESULTS_DIR / "latency.json"),
                    help="JSON output path (default benchmarks/results/latency.json)")
    args = ap.parse_args(argv)
    blas_threads_from_argv(argv)
    repeats, min_time = (1, 0.2) if args.quick else (args.repeats, args.min_time)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    cases = args.cases or list(CASES)

    if args.wait_load is not None:
        wait_for_low_load(args.wait_load)
    load_start = load_average()
    log(f"load average at start: {load_start}")
    records = first_results(cases, repeats, args.blas_threads, args.timeout)

    parent_cache = tempfile.mkdtemp(prefix="dxdt-bench-latency-parent-")
    os.environ["DXDT_CACHE_DIR"] = parent_cache  # before dxdt reads it
    try:
        unprepared, overhead = in_process(max(repeats, 5), min_time)
    except Exception:  # noqa: BLE001 - keep part 1's measurements (dxdt's internals may have moved)
        log(f"in-process part failed:\n{traceback.format_exc()}")
        unprepared, overhead = [], []
    finally:
        shutil.rmtree(parent_cache, ignore_errors=True)
    load_end = load_average()
    goals = check_goals(records, unprepared, overhead)
    meta = machine_info(extra_packages=["jax", "jaxlib", "diffrax", "equinox"])

    v = meta["versions"]
    print("Time to first result in a fresh process, after `import dxdt, jax, numpy` and `import "
          "dxdt.problems` (both timed separately); medians of fresh processes; cold = empty DXDT_CACHE_DIR, warm = the directory "
          "the cold run filled; /hand = median / median of the hand-written diffrax program's first call")
    print(f"{meta['platform']}, {meta['cpu_count']} CPUs, jax {v['jax']}, diffrax {v['diffrax']}, "
          f"BLAS threads {args.blas_threads or 'default'}, load avg start {load_start} end {load_end}")
    print()
    print(first_table(records))
    print()
    print("second unprepared call vs prepared call (Lotka-Volterra gradient, medians, one process)")
    print(format_table([[u["case"], u["mode"], fmt_time(u["unprepared_s"]), fmt_time(u["prepared_s"]),
                         f"{u['ratio']:.2f}", fmt_time(u["limit_s"]), "met" if u["met"] else "MISSED",
                         u["runs"], u["load_1min"]] for u in unprepared],
                       ["case", "mode", "unprepared", "prepared", "ratio", "limit", "goal", "runs", "load"]))
    print()
    print("Python overhead per call: the call with its executable stubbed (Python alone); total - the "
          "compiled executable called alone (medians; min-based)")
    print(format_table([[o["case"], fmt_time(o["python_s"]), fmt_time(o["total_s"]),
                         fmt_time(o["executable_s"]), fmt_time(o["overhead_s"]),
                         fmt_time(o["overhead_min_s"]), o["runs"], o["load_1min"]] for o in overhead],
                       ["call", "Python (stub)", "total", "executable", "total - exe", "(min)",
                        "runs", "load"]))
    print()
    print("goals:")
    for g in goals:
        print(f"  [{'PASS' if g['pass'] else 'FAIL'}] {g['goal']}: {g['value']}")

    settings = {"repeats": repeats, "quick": args.quick, "blas_threads": args.blas_threads,
                "rtol": RTOL, "atol": ATOL, "solve_rtol": SOLVE_RTOL, "solve_atol": SOLVE_ATOL,
                "goals": {"warm_s": GOAL_WARM_S, "cold_vs_hand": GOAL_COLD_VS_HAND,
                          "python_s": GOAL_PYTHON_S,
                          "unprepared_ratio": GOAL_UNPREPARED_RATIO,
                          "unprepared_slack_s": GOAL_UNPREPARED_SLACK_S}}
    path = write_json(args.out, records, benchmark="latency", settings=settings, meta=meta,
                      load_start=load_start, load_end=load_end, unprepared=unprepared,
                      overhead=overhead, goals=goals)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
