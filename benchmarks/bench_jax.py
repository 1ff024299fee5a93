"""JAX backend: ``dxdt.solve(backend="jax")`` on in-place NumPy models vs hand-written JAX.

Issue 3's benchmark. For each problem four solvers integrate the same model at the same
tolerances and save points:

- ``dxdt jax``: ``dxdt.solve(prob, Tsit5(), backend="jax", ...)`` on the problem's own
  in-place NumPy ``f`` (translated by :func:`dxdt.sensitivity.to_jax`, integrated by
  diffrax, compiled solve cached per problem shape);
- ``handwritten jax``: the same model written by hand with ``jax.numpy`` (Gray-Scott with
  a ``jnp.roll`` five-point periodic Laplacian), solved with ``diffrax.diffeqsolve``
  (``Tsit5``, ``PIDController`` with dxdt's PI coefficients, ``dt0=None``,
  ``SaveAt(ts=saveat)``) inside ``jax.jit``: what a JAX user would write;
- ``dxdt numpy``: the NumPy backend, running ``f`` as written;
- ``scipy RK45``: ``solve_ivp`` with an out-of-place wrapper of the same ``f``.

Measured: steady-state time per solve (median after a warm-up), the first-call time of
both JAX variants (trace + compile + run, JAX's caches and dxdt's caches cleared before
every call), their ratios (goals: steady state <= 1.05, first call <= 1.3), steps, the
max abs difference from the hand-written solution, and the cost of the translation
itself (``to_jax``, one traced evaluation, ``make_jaxpr``, jaxpr size and the
primitives it contains, compiled HLO op counts, per-evaluation time).

``--rhs-only`` runs the right-hand-side diagnostics of issue 8 instead (``_rhs_only.py``):
the translated field alone against hand-written ``jnp.roll``/slicing models, per call and
per step of a full solve, written to ``results/jax_rhs.json``.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR, Timing, add_blas_threads_option, blas_threads_from_argv, fmt_float, fmt_time,
    format_table, gc_disabled, load_average, machine_info, time_median,
    time_per_call, wait_for_low_load, write_json,
)

if __name__ == "__main__":  # before NumPy loads OpenBLAS
    blas_threads_from_argv()

import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import dxdt  # noqa: E402
import dxdt._backend_jax as dxdt_backend_jax  # noqa: E402
from dxdt.sensitivity import _compiled as dxdt_compiled  # noqa: E402
from dxdt.sensitivity import to_jax  # noqa: E402
from dxdt.sensitivity._jax import load_jax  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402
from dxdt.solvers._diffrax import pid_coefficients  # noqa: E402

jax, jnp = load_jax()  # 64-bit floats on, as dxdt runs them
import diffrax  # noqa: E402

PCOEFF, ICOEFF = pid_coefficients(Tsit5())
MAX_STEPS = 100_000  # dxdt.solve's default
MODEL_CHECK_TOL = 1e-12  # max |hand vf - f| on u0, relative to max(1, max |f|)

# issue goals
GOAL_STEADY = 1.05  # dxdt jax / handwritten jax, steady-state time per solve
GOAL_FIRST = 1.3    # dxdt jax / handwritten jax, first call (trace + compile + run)

DXDT_JAX, HAND, DXDT_NP, SCIPY = "dxdt jax", "handwritten jax", "dxdt numpy", "scipy RK45"
SOLVER_ORDER = [DXDT_JAX, HAND, DXDT_NP, SCIPY]
# diagnostics: where the difference between dxdt jax and handwritten jax comes from
COMPILED_ONLY = "diag: dxdt compiled call only"       # dxdt's jitted solve, no Python around it
DX_HARNESS_HAND_VF = "diag: dxdt compiled, hand vf"   # dxdt's jitted solve around the hand vf
HAND_HARNESS_DX_G = "diag: hand solve, to_jax(f)"     # the handwritten solve around dxdt's g
DIAG_ORDER = [COMPILED_ONLY, DX_HARNESS_HAND_VF, HAND_HARNESS_DX_G]

# primitives that signal copies / write chains in a translated vector field
WATCH_PRIMITIVES = ("scatter", "scatter-add", "dynamic_update_slice", "concatenate", "pad",
                    "copy", "copy_p", "gather", "dynamic_slice", "select_n", "broadcast_in_dim")
WATCH_HLO = ("fusion", "scatter", "dynamic-update-slice", "concatenate", "copy", "pad",
             "gather", "slice")


# --------------------------------------------------------------------------- hand-written models

def make_lv_vf() -> Callable:
    """A fresh hand-written Lotka-Volterra vector field ``vf(t, y, p)`` (diffrax's order)."""
    def lotka_volterra_vf(t, y, p):
        a, b, c, d = p[0], p[1], p[2], p[3]
        x, z = y[0], y[1]
        return jnp.stack([a * x - b * x * z, -c * z + d * x * z])
    return lotka_volterra_vf


def make_lorenz_vf() -> Callable:
    """A fresh hand-written Lorenz vector field."""
    def lorenz_vf(t, y, p):
        return jnp.stack([p[0] * (y[1] - y[0]), y[0] * (p[1] - y[2]) - y[1], y[0] * y[1] - p[2] * y[2]])
    return lorenz_vf


def make_gs_vf() -> Callable:
    """A fresh hand-written Gray-Scott vector field: 5-point periodic Laplacian by ``jnp.roll``."""
    def laplacian(a):
        return (jnp.roll(a, 1, axis=0) + jnp.roll(a, -1, axis=0)
                + jnp.roll(a, 1, axis=1) + jnp.roll(a, -1, axis=1) - 4.0 * a)

    def gray_scott_vf(t, y, p):
        Du, Dv, F, k = p[0], p[1], p[2], p[3]
        U, V = y[0], y[1]
        uvv = U * V * V
        dU = Du * laplacian(U) - uvv + F * (1.0 - U)
        dV = Dv * laplacian(V) + uvv - (F + k) * V
        return jnp.stack([dU, dV])
    return gray_scott_vf


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], dxdt.ODEProblem]
    make_vf: Callable[[], Callable]  # factory: a new function object on every call
    rtol: float
    atol: float
    nsave: int
    quick: bool


CASES = [
    Case("lotka_volterra", lambda: dxdt.problems.lotka_volterra(tspan=(0.0, 10.0)), make_lv_vf,
         1e-8, 1e-10, 101, True),
    Case("gray_scott_64", lambda: dxdt.problems.gray_scott(n=64, tspan=(0.0, 200.0)), make_gs_vf,
         1e-6, 1e-8, 11, True),
    Case("gray_scott_128", lambda: dxdt.problems.gray_scott(n=128, tspan=(0.0, 200.0)), make_gs_vf,
         1e-6, 1e-8, 11, False),
    Case("lorenz", lambda: dxdt.problems.lorenz(tspan=(0.0, 10.0)), make_lorenz_vf,
         1e-8, 1e-10, 101, False),
]


def _rhs_model(name: str):
    """A model of the rhs-only diagnostics (``_rhs_only.py``): problem and hand-written field."""
    import _rhs_only

    return next(m for m in _rhs_only.models(make_gs_vf) if m.name == name)


# issue 8's per-step rows: the models of the rhs-only diagnostics, solved end to end here
CASES += [Case(name, lambda name=name: _rhs_model(name).make(), lambda name=name: _rhs_model(name).make_vf(),
               1e-6, 1e-8, 11, False)
          for name in ("heat_1d_256", "brusselator_32", "gierer_meinhardt_64", "gray_scott_64_window_writes")]


def make_handwritten_solve(case: Case, t0: float, t1: float, vf: Callable | None = None) -> Callable:
    """A new jitted ``solve(y0, p, ts) -> diffrax.Solution`` (new vector field, term, jit).

    ``vf(t, y, p)`` replaces the hand-written field (diagnostics only).
    """
    term = diffrax.ODETerm(case.make_vf() if vf is None else vf)
    solver = diffrax.Tsit5()
    controller = diffrax.PIDController(rtol=case.rtol, atol=case.atol, pcoeff=PCOEFF, icoeff=ICOEFF)

    @jax.jit
    def solve(y0, p, ts):
        return diffrax.diffeqsolve(term, solver, t0, t1, None, y0, args=p,
                                   saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                   max_steps=MAX_STEPS)

    return solve


def scipy_rhs(prob: dxdt.ODEProblem) -> Callable[[float, np.ndarray], np.ndarray]:
    """Out-of-place ``rhs(t, u)`` for ``solve_ivp`` around the problem's in-place ``f``."""
    f, p, shape = prob.f, prob.p, prob.u0.shape

    def rhs(t, u):
        du = np.empty_like(u)
        f(du.reshape(shape), u.reshape(shape), p, t)
        return du

    return rhs


def accepted_rejected(out) -> tuple[int, int]:
    """Accepted and rejected steps from a diffrax ``Solution`` or dxdt's compiled-solve output."""
    if hasattr(out, "stats"):  # diffrax.Solution
        return int(out.stats["num_accepted_steps"]), int(out.stats["num_rejected_steps"])
    counts = np.asarray(out[3])  # dxdt's program outputs (ts, ys, code, counts): steps, accepted, rejected
    return int(counts[1]), int(counts[2])


def saved_states(out) -> np.ndarray:
    """The saved states of a diffrax ``Solution`` or of dxdt's compiled-solve output."""
    return np.asarray(out.ys if hasattr(out, "ys") else out[1])


def record_solve_programs() -> tuple[Callable[[], None], list]:
    """Patch ``dxdt._backend_jax._program`` to record ``(program, static, args)`` of each solve."""
    original, seen = dxdt_backend_jax._program, []

    def recording(prob, method, static, args, *rest):
        program = original(prob, method, static, args, *rest)
        seen.append((program, dict(static), dict(args)))
        return program

    dxdt_backend_jax._program = recording

    def restore():
        dxdt_backend_jax._program = original
    return restore, seen


class _HandField:
    """Stands in for a translation of ``f`` in dxdt's solve build: ``g(y, p, t) = vf(t, y, p)``."""

    def __init__(self, vf: Callable):
        self.vf, self.n_traces, self.constant_reads = vf, 0, []

    def __call__(self, y, p, t):
        return self.vf(t, y, p)


def build_dxdt_solve(prob, static: dict, args: dict, vf: Callable | None = None) -> Callable:
    """dxdt's compiled solve (``_backend_jax._build``) for ``prob``; around ``vf(t, y, p)`` if given.

    Returns ``call()``: the compiled program run on ``args`` (its ``Program.__call__``: NumPy
    outputs ``(ts, ys, code, counts)``), with the program as ``call.program``.

    With ``vf``, ``_build`` gets a stand-in problem whose translation (``to_jax``, which
    ``_build`` looks up in ``dxdt.sensitivity`` when it runs) is the hand-written field.
    """
    if vf is None:
        return program_call(dxdt_backend_jax._build(prob, Tsit5(), static, args, None), args)

    def stand_in_f(du, u, p, t):
        raise AssertionError("the hand-written field replaces this f")

    stand_in = dxdt.ODEProblem(stand_in_f, prob.u0, prob.tspan, prob.p)
    original = dxdt.sensitivity.to_jax

    def to_jax_or_hand(f, *args, **kwargs):
        return _HandField(vf) if f is stand_in_f else original(f, *args, **kwargs)

    dxdt.sensitivity.to_jax = to_jax_or_hand
    try:
        return program_call(dxdt_backend_jax._build(stand_in, Tsit5(), static, args, None), args)
    finally:
        dxdt.sensitivity.to_jax = original


def program_call(program, args: dict) -> Callable[[], tuple]:
    """``program(*args)`` as ``dxdt.solve`` calls it (flat input packed, outputs unpacked)."""
    values = tuple(args.values())

    def call():
        return program(*values)
    call.program = program
    return call


def program_traces() -> list[int]:
    """How often ``f`` was traced to build each compiled program now in dxdt's memory cache."""
    return [program.traces for programs in dxdt_compiled._MEMORY.values() for program in programs]


def time_interleaved_warm(fns: dict[str, Callable[[], Any]], repeats: int,
                          min_total_s: float, max_repeats: int = 200) -> dict[str, Timing]:
    """Round-robin like :func:`_common.time_interleaved`, but every timed call directly follows
    an untimed call of the same candidate.

    A JAX call that follows other work (a NumPy/SciPy solve, a 10 ms pause) costs ~0.3 ms
    more on this machine than one that follows another JAX call (XLA's CPU worker threads
    have gone to sleep, caches are cold): on Lotka-Volterra, a 0.5 ms solve, plain
    round-robin order would decide the comparison. Here each candidate is timed in the
    state of a loop of its own solves.
    """
    timings = {name: Timing() for name in fns}
    for name, fn in fns.items():
        timings[name].warmup, _ = timed_once(fn)
    slowest = max(t.warmup for t in timings.values())
    n = max(int(repeats), 1)
    if min_total_s > 0 and slowest > 0:
        n = min(max(n, math.ceil(min_total_s / slowest)), max(max_repeats, n))
    for _ in range(n):
        for name, fn in fns.items():
            fn()
            timings[name].times.append(timed_once(fn)[0])
    return timings


def clear_all_caches() -> None:
    """Forget every compilation: dxdt's programs and all of JAX's caches.

    ``main`` turns dxdt's disk cache off (``DXDT_CACHE=0``): a first call traces and compiles.
    """
    dxdt_compiled.clear_cache(disk=False)
    jax.clear_caches()


def timed_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    with gc_disabled():
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
    return elapsed, out


def first_call_stages(make: Callable[[], Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """Caches cleared, then ``make()``'s jitted function traced, lowered, compiled and run,
    each stage timed (JAX's ahead-of-time API); plus the size of the optimized HLO."""
    clear_all_caches()
    jitted = make()
    with gc_disabled():
        t_a = time.perf_counter()
        traced = jitted.trace(*args, **kwargs)
        t_b = time.perf_counter()
        lowered = traced.lower()
        t_c = time.perf_counter()
        compiled = lowered.compile()
        t_d = time.perf_counter()
        jax.block_until_ready(compiled(*args, **kwargs))
        t_e = time.perf_counter()
    return {"trace_s": t_b - t_a, "lower_s": t_c - t_b, "compile_s": t_d - t_c, "run_s": t_e - t_d,
            "hlo_lines": len(compiled.as_text().splitlines()),
            "stablehlo_lines": len(lowered.as_text().splitlines())}


def dxdt_build_stages(build: Callable[[], Callable]) -> dict[str, Any]:
    """:func:`first_call_stages` for dxdt's solve build (``build()``: :func:`build_dxdt_solve`).

    ``_build`` compiles with ``jax.jit(fn).lower(...).compile()`` (``fn`` its ``run``, or the
    flat-vector wrapper of ``_compiled.compile_function``); that one ``jax.jit`` is replaced
    by a wrapper timing trace, lower and compile separately.
    """
    clear_all_caches()
    original, stages = jax.jit, {}

    class Lowered:
        def __init__(self, lowered):
            self.lowered = lowered

        def compile(self, *options):  # dxdt's compiler options (_compiled.compiler_options)
            start = time.perf_counter()
            compiled = self.lowered.compile(*options)
            stages["compile_s"] = time.perf_counter() - start
            return compiled

    class Staged:
        def __init__(self, jitted):
            self.jitted = jitted

        def lower(self, *args, **kw):
            t_a = time.perf_counter()
            traced = self.jitted.trace(*args, **kw)
            t_b = time.perf_counter()
            lowered = traced.lower()
            stages.update(trace_s=t_b - t_a, lower_s=time.perf_counter() - t_b)
            stages["stablehlo_lines"] = len(lowered.as_text().splitlines())
            return Lowered(lowered)

    def jit(fn, *args, **kw):
        if getattr(fn, "__qualname__", "") in COMPILED_SOLVE_FUNCTIONS:
            return Staged(original(fn, *args, **kw))
        return original(fn, *args, **kw)

    jax.jit = jit
    try:
        with gc_disabled():
            call = build()
    finally:
        jax.jit = original
    if "compile_s" not in stages:
        raise RuntimeError("dxdt's solve build no longer compiles through jax.jit(run).lower().compile()")
    with gc_disabled():
        start = time.perf_counter()
        jax.block_until_ready(call())
        stages["run_s"] = time.perf_counter() - start
    stages["hlo_lines"] = len(call.program.executable.as_text().splitlines())
    return stages


COMPILED_SOLVE_FUNCTIONS = ("_build.<locals>.run", "compile_function.<locals>.flat_fn")


def median_stages(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]} | {"samples": samples}


# --------------------------------------------------------------------------- jaxpr / HLO profile

def _sub_jaxprs(eqn):
    for v in eqn.params.values():
        for item in (v if isinstance(v, (tuple, list)) else (v,)):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):  # ClosedJaxpr
                yield item.jaxpr
            elif hasattr(item, "eqns"):  # Jaxpr
                yield item


def jaxpr_stats(closed) -> dict[str, Any]:
    """Equation counts (top level and with sub-jaxprs), primitive histogram, constants."""
    counts: collections.Counter = collections.Counter()

    def walk(jaxpr):
        n = 0
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] += 1
            n += 1
            for sub in _sub_jaxprs(eqn):
                n += walk(sub)
        return n

    total = walk(closed.jaxpr)
    consts = [np.asarray(c) for c in closed.consts if hasattr(c, "shape")]
    return {
        "eqns_top": len(closed.jaxpr.eqns),
        "eqns_total": total,
        "primitives": dict(counts.most_common()),
        "n_consts": len(closed.consts),
        "const_bytes": int(sum(c.nbytes for c in consts)),
        "const_shapes": [list(c.shape) for c in consts if c.ndim > 0],
    }


def hlo_stats(jitted, *args) -> dict[str, int]:
    """Counts of a few op kinds in the optimized (post-XLA) HLO of ``jitted(*args)``."""
    text = jitted.lower(*args).compile().as_text()
    counts = {}
    for op in WATCH_HLO:
        counts[op] = sum(1 for line in text.splitlines()
                         if f" {op}(" in line and "=" in line and not line.lstrip().startswith("//"))
    counts["lines"] = len(text.splitlines())
    return counts


def profile_vector_fields(case: Case, prob, repeats: int, log) -> dict[str, Any]:
    """Translation cost and quality: dxdt's translated ``g`` vs the hand-written field."""
    f, u0, p = prob.f, prob.u0, prob.p
    u0j, pj = jnp.asarray(u0), jnp.asarray(p)
    t0 = float(prob.tspan[0])
    out: dict[str, Any] = {}

    # to_jax itself (no tracing happens here)
    out["to_jax_s"] = time_median(lambda: to_jax(f, u0, p), repeats=max(repeats, 5),
                                  min_total_s=0.05).summary()

    # first traced evaluation: to_jax + jax.jit(g)(u0, p, t) (caches cleared each time)
    def first_dxdt():
        jax.clear_caches()
        g = to_jax(f, u0, p)
        return jax.block_until_ready(jax.jit(g)(u0j, pj, t0))

    def first_hand():
        jax.clear_caches()
        vf = case.make_vf()
        return jax.block_until_ready(jax.jit(vf)(t0, u0j, pj))

    fd, fh = [], []
    for _ in range(max(repeats, 3)):
        fd.append(timed_once(first_dxdt)[0])
        fh.append(timed_once(first_hand)[0])
    out["first_eval_dxdt"] = Timing(times=fd).summary()
    out["first_eval_hand"] = Timing(times=fh).summary()

    # tracing cost: make_jaxpr (a new lambda each time, so nothing is reused)
    g = to_jax(f, u0, p)
    vf = case.make_vf()
    out["make_jaxpr_dxdt"] = time_median(lambda: jax.make_jaxpr(lambda u: g(u, pj, t0))(u0j),
                                         repeats=max(repeats, 5), min_total_s=0.2).summary()
    out["make_jaxpr_hand"] = time_median(lambda: jax.make_jaxpr(lambda u: vf(t0, u, pj))(u0j),
                                         repeats=max(repeats, 5), min_total_s=0.2).summary()
    out["jaxpr_dxdt"] = jaxpr_stats(jax.make_jaxpr(lambda u: g(u, pj, t0))(u0j))
    out["jaxpr_hand"] = jaxpr_stats(jax.make_jaxpr(lambda u: vf(t0, u, pj))(u0j))

    # compiled code and per-evaluation run time
    jg = jax.jit(lambda u, q, t: g(u, q, t))
    jv = jax.jit(lambda u, q, t: vf(t, u, q))
    out["hlo_dxdt"] = hlo_stats(jg, u0j, pj, t0)
    out["hlo_hand"] = hlo_stats(jv, u0j, pj, t0)
    ref = np.empty_like(u0)
    f(ref, u0.copy(), p, t0)
    out["max_abs_diff_g_vs_numpy_f"] = float(np.max(np.abs(np.asarray(jg(u0j, pj, t0)) - ref)))
    out["max_abs_diff_hand_vs_numpy_f"] = float(np.max(np.abs(np.asarray(jv(u0j, pj, t0)) - ref)))
    call_g = lambda: jg(u0j, pj, t0).block_until_ready()  # noqa: E731
    call_v = lambda: jv(u0j, pj, t0).block_until_ready()  # noqa: E731
    call_g(), call_v()
    out["eval_dxdt"] = time_per_call(call_g, min_loop_s=0.1).summary()
    out["eval_hand"] = time_per_call(call_v, min_loop_s=0.1).summary()
    log(f"[{case.name}]   vector field: jaxpr eqns dxdt {out['jaxpr_dxdt']['eqns_total']} vs hand "
        f"{out['jaxpr_hand']['eqns_total']}; eval {fmt_time(out['eval_dxdt']['median_s'])} vs "
        f"{fmt_time(out['eval_hand']['median_s'])}")
    return out


# --------------------------------------------------------------------------- benchmark

def bench_case(case: Case, repeats: int, first_repeats: int, min_total_s: float, log,
               diagnostics: bool = True) -> tuple[list[dict], dict]:
    prob = case.make()
    t0, t1 = (float(x) for x in prob.tspan)
    saveat = np.linspace(t0, t1, case.nsave)
    kw = dict(rtol=case.rtol, atol=case.atol, saveat=saveat)
    u0j, pj, tsj = jnp.asarray(prob.u0), jnp.asarray(prob.p), jnp.asarray(saveat)
    log(f"[{case.name}] state {prob.u0.shape} ({prob.u0.size} values), load {load_average()}")

    # the hand-written model must be the same model
    vf = case.make_vf()
    ref = np.empty_like(prob.u0)
    prob.f(ref, prob.u0.copy(), prob.p, t0)
    model_diff = float(np.max(np.abs(np.asarray(vf(t0, u0j, pj)) - ref)))
    if not model_diff <= MODEL_CHECK_TOL * max(1.0, float(np.max(np.abs(ref)))):
        raise RuntimeError(f"{case.name}: hand-written model differs from the NumPy f by {model_diff:.3g}")
    log(f"[{case.name}]   hand-written model matches the NumPy f on u0: max |diff| {model_diff:.2e}")

    # untimed runs: results and stats (these also compile)
    clear_all_caches()
    hand = make_handwritten_solve(case, t0, t1)
    t_first_dxdt, sol_jax = timed_once(lambda: dxdt.solve(prob, Tsit5(), backend="jax", **kw))
    g_traces = program_traces()
    t_first_hand, sol_hand = timed_once(lambda: jax.block_until_ready(hand(u0j, pj, tsj)))
    log(f"[{case.name}]   first calls (untimed warm-up): dxdt jax {fmt_time(t_first_dxdt)}, "
        f"handwritten {fmt_time(t_first_hand)}; f traced {g_traces} time(s) by dxdt's compile")
    if not sol_jax.success:
        raise RuntimeError(f"{case.name}: dxdt jax solve failed: {sol_jax.message}")
    if sol_hand.result != diffrax.RESULTS.successful:
        raise RuntimeError(f"{case.name}: handwritten solve failed: {sol_hand.result}")
    sol_np = dxdt.solve(prob, Tsit5(), **kw)
    rhs = scipy_rhs(prob)
    sol_sp = solve_ivp(rhs, (t0, t1), prob.u0.ravel(), method="RK45", t_eval=saveat,
                       rtol=case.rtol, atol=case.atol)
    plain = solve_ivp(rhs, (t0, t1), prob.u0.ravel(), method="RK45", rtol=case.rtol, atol=case.atol)
    sp_steps = len(plain.t) - 1
    attempts, rest = divmod(plain.nfev - 2, scipy.integrate.RK45.n_stages)
    sp_rej = attempts - sp_steps if rest == 0 and attempts >= sp_steps else None

    u_hand = np.asarray(sol_hand.ys).reshape(case.nsave, -1)
    stats = {
        DXDT_JAX: (np.asarray(sol_jax.u).reshape(case.nsave, -1), sol_jax.stats["nfev"],
                   sol_jax.stats["naccept"], sol_jax.stats["nreject"]),
        HAND: (u_hand, None, int(sol_hand.stats["num_accepted_steps"]),
               int(sol_hand.stats["num_rejected_steps"])),
        DXDT_NP: (np.asarray(sol_np.u).reshape(case.nsave, -1), sol_np.stats["nfev"],
                  sol_np.stats["naccept"], sol_np.stats["nreject"]),
        SCIPY: (sol_sp.y.T.copy(), int(sol_sp.nfev), sp_steps, sp_rej),
    }

    # dxdt's compiled solve called directly with the arguments dxdt passes it: separates
    # the Python work around it (validation, conversions, result wrapping) from the solve
    restore, seen = record_solve_programs()
    try:
        dxdt.solve(prob, Tsit5(), backend="jax", **kw)
    finally:
        restore()
    (program, static, recorded), = seen
    compiled = program_call(program, recorded)

    # the 2 x 2 of (dxdt's compiled solve | handwritten solve) x (to_jax(f) | hand vf)
    dx_hand = build_dxdt_solve(prob, static, recorded, vf=case.make_vf())
    g_diag = to_jax(prob.f, prob.u0, prob.p)
    hand_g = make_handwritten_solve(case, t0, t1, vf=lambda t, y, q: g_diag(y, q, t))
    for name, out in ((DX_HARNESS_HAND_VF, dx_hand()), (HAND_HARNESS_DX_G, hand_g(u0j, pj, tsj))):
        ys = saved_states(out)[:case.nsave]  # dxdt's compiled solve adds a t1 row
        stats[name] = (ys.reshape(case.nsave, -1), None, *accepted_rejected(out))
    stats[COMPILED_ONLY] = stats[DXDT_JAX]

    # steady state, round-robin
    fns = {
        DXDT_JAX: lambda: dxdt.solve(prob, Tsit5(), backend="jax", **kw),
        HAND: lambda: np.asarray(hand(u0j, pj, tsj).ys),
        DXDT_NP: lambda: dxdt.solve(prob, Tsit5(), **kw),
        SCIPY: lambda: solve_ivp(rhs, (t0, t1), prob.u0.ravel(), method="RK45", t_eval=saveat,
                                 rtol=case.rtol, atol=case.atol),
        COMPILED_ONLY: lambda: saved_states(compiled()),
        DX_HARNESS_HAND_VF: lambda: saved_states(dx_hand()),
        HAND_HARNESS_DX_G: lambda: np.asarray(hand_g(u0j, pj, tsj).ys),
    }
    log(f"[{case.name}]   steady state: {len(fns)} candidates, >= {repeats} rounds ...")
    timings = time_interleaved_warm(fns, repeats=repeats, min_total_s=min_total_s)

    # first call, caches cleared every time, the two variants alternating
    log(f"[{case.name}]   first calls: {first_repeats} rounds ...")
    first = {DXDT_JAX: Timing(), HAND: Timing()}
    n_traces = []

    def first_dxdt():
        sol = dxdt.solve(prob, Tsit5(), backend="jax", **kw)
        return np.asarray(sol.u)

    def first_hand():
        solve = make_handwritten_solve(case, t0, t1)
        return np.asarray(solve(u0j, pj, tsj).ys)

    for _ in range(first_repeats):
        clear_all_caches()
        first[DXDT_JAX].times.append(timed_once(first_dxdt)[0])
        n_traces += program_traces()
        clear_all_caches()
        first[HAND].times.append(timed_once(first_hand)[0])

    # where the first call goes: trace / lower / compile / run of each jitted solve,
    # and the same for dxdt's compiled solve around the hand-written field
    log(f"[{case.name}]   first-call stages: {first_repeats} rounds ...")
    stage_samples: dict[str, list] = {DXDT_JAX: [], HAND: [], DX_HARNESS_HAND_VF: []}
    makers = {
        DXDT_JAX: lambda: dxdt_build_stages(lambda: build_dxdt_solve(prob, static, recorded)),
        HAND: lambda: first_call_stages(lambda: make_handwritten_solve(case, t0, t1), (u0j, pj, tsj), {}),
        DX_HARNESS_HAND_VF: lambda: dxdt_build_stages(
            lambda: build_dxdt_solve(prob, static, recorded, vf=case.make_vf())),
    }
    for _ in range(first_repeats if diagnostics else 0):
        for name, measure in makers.items():
            stage_samples[name].append(measure())
    stages = {name: median_stages(v) for name, v in stage_samples.items() if v}

    profile = profile_vector_fields(case, prob, repeats, log) if diagnostics else None

    base_hand = timings[HAND].median
    hand_steps = max(stats[HAND][2] + stats[HAND][3], 1)
    records = []
    for name in SOLVER_ORDER + DIAG_ORDER:
        timing = timings[name]
        u, nfev, nacc, nrej = stats[name]
        rec = {
            "problem": case.name, "n_state": int(prob.u0.size), "state_shape": list(prob.u0.shape),
            "tspan": [t0, t1], "rtol": case.rtol, "atol": case.atol, "nsave": case.nsave,
            "solver": name, "diagnostic": name in DIAG_ORDER,
            "time": timing.summary(), "time_median_s": timing.median,
            "ratio_vs_handwritten": timing.median / base_hand,
            "ratio_vs_handwritten_min": timing.min / timings[HAND].min,
            "time_per_step_s": timing.median / max(nacc + (nrej or 0), 1),
            "per_step_ratio_vs_handwritten": (timing.median / max(nacc + (nrej or 0), 1))
                                             / (base_hand / hand_steps),
            "nfev": nfev, "naccept": nacc, "nreject": nrej,
            "max_abs_diff_vs_handwritten": float(np.max(np.abs(u - u_hand))),
        }
        if name in first:
            rec["first_call"] = first[name].summary()
            rec["first_call_median_s"] = first[name].median
            rec["first_call_ratio_vs_handwritten"] = first[name].median / first[HAND].median
            rec["first_call_ratio_vs_handwritten_min"] = first[name].min / first[HAND].min
        if name in stages:
            rec["first_call_stages"] = stages[name]
        records.append(rec)

    info = {
        "problem": case.name, "state_shape": list(prob.u0.shape),
        "model_check_max_abs_diff": model_diff,
        "f_traces_per_compile": n_traces,
        "python_overhead_s": timings[DXDT_JAX].median - timings[COMPILED_ONLY].median,
        "python_overhead_min_s": timings[DXDT_JAX].min - timings[COMPILED_ONLY].min,
        "first_call_stages": {name: {k: v for k, v in st.items() if k != "samples"}
                              for name, st in stages.items()},
    }
    if profile is not None:
        info["vector_field"] = profile
    return records, info


# --------------------------------------------------------------------------- report

def table(records: list[dict]) -> str:
    header = ["problem", "solver", "time", "min", "runs", "per step", "/hand", "/hand min", "1st call",
              "1st min", "1st /hand", "steps", "rej", "nfev", "max|diff| vs hand"]
    rows, last = [], None
    for r in records:
        fc = r.get("first_call")
        rows.append([
            r["problem"] if r["problem"] != last else "",
            r["solver"],
            fmt_time(r["time_median_s"]),
            fmt_time(r["time"]["min_s"]),
            r["time"]["n"],
            fmt_time(r["time_per_step_s"]),
            f"{r['ratio_vs_handwritten']:.3f}",
            f"{r['ratio_vs_handwritten_min']:.3f}",
            f"{fmt_time(fc['median_s'])} (n={fc['n']})" if fc else "",
            fmt_time(fc["min_s"]) if fc else "",
            f"{r['first_call_ratio_vs_handwritten']:.3f}" if fc else "",
            r["naccept"],
            "-" if r["nreject"] is None else r["nreject"],
            "-" if r["nfev"] is None else r["nfev"],
            fmt_float(r["max_abs_diff_vs_handwritten"], ".2e"),
        ])
        last = r["problem"]
    return format_table(rows, header, align="llrrrrrrrrrrrrr")


def stages_table(records: list[dict]) -> str:
    header = ["problem", "jitted solve", "trace", "lower", "compile", "run", "total",
              "HLO lines", "StableHLO lines"]
    rows, last = [], None
    for r in records:
        st = r.get("first_call_stages")
        if not st:
            continue
        total = st["trace_s"] + st["lower_s"] + st["compile_s"] + st["run_s"]
        rows.append([r["problem"] if r["problem"] != last else "", r["solver"],
                     fmt_time(st["trace_s"]), fmt_time(st["lower_s"]), fmt_time(st["compile_s"]),
                     fmt_time(st["run_s"]), fmt_time(total), int(st["hlo_lines"]),
                     int(st["stablehlo_lines"])])
        last = r["problem"]
    return format_table(rows, header, align="llrrrrrrr")


def _watch(prims: dict[str, int]) -> str:
    parts = [f"{k} {prims[k]}" for k in WATCH_PRIMITIVES if prims.get(k)]
    return ", ".join(parts) or "-"


def translation_table(problems: list[dict]) -> str:
    header = ["problem", "field", "to_jax", "1st jit eval", "make_jaxpr", "eqns", "consts",
              "HLO fusion/scatter/dus/copy", "eval", "notable jaxpr primitives"]
    rows = []
    for info in problems:
        v = info["vector_field"]
        for who, label in (("dxdt", "dxdt to_jax(f)"), ("hand", "handwritten")):
            j, h = v[f"jaxpr_{who}"], v[f"hlo_{who}"]
            rows.append([
                info["problem"] if who == "dxdt" else "",
                label,
                fmt_time(v["to_jax_s"]["median_s"]) if who == "dxdt" else "",
                fmt_time(v[f"first_eval_{who}"]["median_s"]),
                fmt_time(v[f"make_jaxpr_{who}"]["median_s"]),
                j["eqns_total"],
                f"{j['n_consts']} ({j['const_bytes'] // 1024} KiB)" if j["const_bytes"] >= 1024
                else str(j["n_consts"]),
                f"{h['fusion']}/{h['scatter']}/{h['dynamic-update-slice']}/{h['copy']}",
                fmt_time(v[f"eval_{who}"]["median_s"]),
                _watch(j["primitives"]),
            ])
    return format_table(rows, header, align="llrrrrrrrl")


def check_goals(records: list[dict]) -> list[dict]:
    goals = []
    for r in records:
        if r["solver"] != DXDT_JAX:
            continue
        goals.append({"goal": f"dxdt jax / handwritten time per step (accepted + rejected) <= "
                              f"{GOAL_STEADY} on {r['problem']}",
                      "value": f"{r['per_step_ratio_vs_handwritten']:.3f} (per solve "
                               f"{r['ratio_vs_handwritten']:.3f}, min-based {r['ratio_vs_handwritten_min']:.3f})",
                      "pass": r["per_step_ratio_vs_handwritten"] <= GOAL_STEADY})
        goals.append({"goal": f"dxdt jax / handwritten first call <= {GOAL_FIRST} on {r['problem']}",
                      "value": f"{r['first_call_ratio_vs_handwritten']:.3f} (min-based "
                               f"{r['first_call_ratio_vs_handwritten_min']:.3f})",
                      "pass": r["first_call_ratio_vs_handwritten"] <= GOAL_FIRST})
    return goals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed steady-state rounds after one warm-up (default 5; cheap problems "
                         "get more, see --min-time)")
    ap.add_argument("--first-repeats", type=int, default=3,
                    help="first-call measurements per JAX variant (default 3)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="sample each steady-state cell for at least about this many seconds (default 1.0)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: Lotka-Volterra and Gray-Scott n=64, 3 rounds, 2 first calls")
    ap.add_argument("--no-stages", action="store_true",
                    help="skip the first-call stage and vector-field diagnostics (main table only)")
    ap.add_argument("--problems", nargs="+", choices=[c.name for c in CASES],
                    help="run only these problems")
    ap.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                    help="first wait (up to 5 min) for the 1-min load average to drop below LOAD")
    add_blas_threads_option(ap)
    ap.add_argument("--out", default=str(RESULTS_DIR / "jax.json"),
                    help="JSON output path (default benchmarks/results/jax.json)")
    ap.add_argument("--rhs-only", nargs="*", metavar="MODEL", default=None,
                    help="only the right-hand-side diagnostics (_rhs_only.py), of all models or "
                         "those named; JSON to benchmarks/results/jax_rhs.json unless --out")
    args = ap.parse_args(argv)
    if args.rhs_only is not None:
        return rhs_only_main(args)

    repeats, first_repeats, min_time = args.repeats, args.first_repeats, args.min_time
    cases = CASES
    if args.quick:
        repeats, first_repeats, min_time = min(repeats, 3), min(first_repeats, 2), min(min_time, 0.2)
        cases = [c for c in cases if c.quick]
    if args.problems:
        cases = [c for c in cases if c.name in args.problems]
    if repeats < 1 or first_repeats < 1:
        ap.error("--repeats and --first-repeats must be >= 1")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    os.environ["DXDT_CACHE"] = "0"  # no disk cache: a first call traces and compiles
    if args.wait_load is not None:
        wait_for_low_load(args.wait_load)
    load_start = load_average()
    meta = machine_info(extra_packages=["jax", "jaxlib", "diffrax", "equinox"])
    meta["jax_devices"] = [str(d) for d in jax.devices()]
    meta["xla_flags"] = os.environ.get("XLA_FLAGS")
    meta["jax_compilation_cache_dir"] = jax.config.jax_compilation_cache_dir
    log(f"load average at start: {load_start}; JAX devices {meta['jax_devices']}")

    records, problems = [], []
    for case in cases:
        recs, info = bench_case(case, repeats, first_repeats, min_time, log, not args.no_stages)
        records += recs
        problems.append(info)
    load_end = load_average()
    goals = check_goals(records)

    v = meta["versions"]
    print("dxdt JAX backend vs hand-written JAX + diffrax, Tsit5, equal tolerances "
          "(time = median per solve after 1 warm-up, min = fastest; /hand = ratio of medians to "
          "handwritten jax, < 1 is faster, /hand min = ratio of mins; 1st call = trace + compile + "
          "run with JAX's and dxdt's caches cleared, median and min; 1st /hand = ratio of medians)")
    print(f"{meta['platform']}, {meta['cpu_count']} CPUs, {meta['jax_devices'][0]}, jax {v['jax']}, "
          f"diffrax {v['diffrax']}, numpy {v['numpy']}, scipy {v['scipy']}, "
          f"BLAS threads {args.blas_threads or 'default'}, load avg start {load_start} end {load_end}")
    print()
    print(table([r for r in records if not r["diagnostic"]]))
    print()
    print("diagnostics (same rounds as above): 'dxdt compiled call only' = dxdt's cached jitted "
          "solve called with the arguments dxdt.solve passes it; 'dxdt compiled, hand vf' = the same "
          "jitted solve built by dxdt._backend_jax._build around the hand-written field; 'hand solve, "
          "to_jax(f)' = the handwritten diffeqsolve around dxdt's translated g")
    print(table([r for r in records if r["diagnostic"]]))
    if not args.no_stages:
        print()
        print("first-call stages (caches cleared; jax.jit(...).trace / .lower / .compile / run; medians)")
        print(stages_table(records))
    print()
    print("dxdt jax Python overhead per solve (dxdt.solve - its compiled call; medians, mins): "
          + ", ".join(f"{p['problem']} {fmt_time(p['python_overhead_s'])}, "
                      f"{fmt_time(p['python_overhead_min_s'])}" for p in problems))
    if not args.no_stages:
        print()
        print("vector field alone (to_jax = translation object; 1st jit eval = to_jax + jax.jit(g)(u0, p, t) "
              "with caches cleared, or jax.jit(vf) for the handwritten one; make_jaxpr = tracing; "
              "eqns = jaxpr equations incl. sub-jaxprs; consts = captured constants; HLO = op counts "
              "after XLA (dus = dynamic-update-slice); eval = one jitted evaluation)")
        print(translation_table(problems))
    print("f traced per dxdt compile: " + ", ".join(
        f"{p['problem']} {sorted(set(p['f_traces_per_compile']))}" for p in problems))
    if goals:
        print()
        print("goals:")
        for g in goals:
            print(f"  [{'PASS' if g['pass'] else 'FAIL'}] {g['goal']}: {g['value']}")

    settings = {"repeats": repeats, "first_repeats": first_repeats, "min_time_s": min_time,
                "quick": args.quick, "stages": not args.no_stages, "blas_threads": args.blas_threads,
                "max_steps": MAX_STEPS,
                "pid": {"pcoeff": PCOEFF, "icoeff": ICOEFF}, "dt0": None,
                "first_call": "jax.clear_caches() + dxdt's programs in memory cleared "
                              "before each; disk cache off (DXDT_CACHE=0)",
                "handwritten": "jax.jit(diffeqsolve(ODETerm(vf), Tsit5(), t0, t1, None, y0, args=p, "
                               "saveat=SaveAt(ts=ts), PIDController(rtol, atol, pcoeff, icoeff)))",
                "goals": {"steady_ratio_max": GOAL_STEADY, "first_call_ratio_max": GOAL_FIRST},
                "cases": [{"problem": c.name, "rtol": c.rtol, "atol": c.atol, "nsave": c.nsave}
                          for c in cases]}
    path = write_json(args.out, records, benchmark="jax", settings=settings, meta=meta,
                      load_start=load_start, load_end=load_end, problems=problems, goals=goals)
    print(f"\nwrote {path}")
    return 0


# --------------------------------------------------------------------------- rhs-only diagnostics

def rhs_only_main(args) -> int:
    """``--rhs-only``: the translated right-hand side alone vs hand-written JAX (issue 8)."""
    import _rhs_only

    os.environ["DXDT_CACHE"] = "0"  # as in main: dxdt.solve builds its program, no disk cache
    if args.wait_load is not None:
        wait_for_low_load(args.wait_load)
    rounds = min(args.repeats, 3) if args.quick else max(args.repeats, 9)
    block_s = 0.02 if args.quick else 0.05
    load_start = load_average()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    records = _rhs_only.bench(make_gs_vf, rounds, block_s, PCOEFF, ICOEFF, log, args.rhs_only or None)
    load_end = load_average()
    print("translated right-hand side vs hand-written JAX (jnp.roll / slicing): per call of the "
          "jitted field (median of round-robin blocks; x hand = ratio of medians, x hand min = of "
          "mins), jaxpr dynamic_update_slice + scatter count, concatenate and HLO fusion counts "
          "(hand-written in brackets), time per step of a Tsit5 solve: hand-written diffeqsolve "
          "around to_jax(f), and dxdt.solve(backend='jax'), over the same diffeqsolve around the "
          "hand-written field")
    print(f"load avg start {load_start} end {load_end}")
    print(_rhs_only.table(records, fmt_time, format_table))
    out = args.out if args.out != str(RESULTS_DIR / "jax.json") else str(RESULTS_DIR / "jax_rhs.json")
    meta = machine_info(extra_packages=["jax", "jaxlib", "diffrax"])
    path = write_json(out, records, benchmark="jax_rhs", meta=meta, load_start=load_start,
                      load_end=load_end, settings={"rounds": rounds, "block_s": block_s})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
