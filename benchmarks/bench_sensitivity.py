#!/usr/bin/env python
"""dxdt sensitivity strategies: compile time, call time, accuracy, memory, mode choice.

For every grid point (problem x states x parameters) the loss

    loss(u) = np.sum((u[-1] - target) ** 2)        # NumPy, translated by dxdt

of the final state (``target = 0.9 x`` the final state of the unperturbed solve) is
differentiated with respect to ``p`` at ``rtol=1e-6, atol=1e-8`` (the defaults) by every
strategy, each prepared once with

    dxdt.sensitivity.prepare("gradient", loss, prob, Tsit5(), mode=..., adjoint=...)

- ``forward``: forward sensitivities (``mode="forward"``);
- ``reverse/interp``, ``reverse/ckpt``, ``reverse/backsolve``: ``mode="reverse"`` with
  ``adjoint="interpolating"``, ``"checkpoint"``, ``"backsolve"`` (backsolve raises
  ``SolverError`` on ill-posed backward problems: recorded as ``ill-posed``);
- ``auto``: ``mode="auto"`` (what it picks: ``prep.mode`` / ``prep.adjoint``);
- ``diffrax ckpt (hand)``: the hand-written pure-JAX equivalent of the checkpoint
  strategy, ``jax.jit(jax.value_and_grad(loss))`` of ``diffrax.diffeqsolve(...,
  adjoint=diffrax.RecursiveCheckpointAdjoint())`` on ``g = dxdt.sensitivity.to_jax(f, u0,
  p)``, with dxdt's step-size controller coefficients so both take the same steps;
- ``diffrax fwd (hand)``: the same for the forward strategy, ``jax.jit(jax.jacfwd(loss))``
  through ``adjoint=diffrax.ForwardMode()``;
- ``primal (dxdt jax)``: ``dxdt.solve(prob, Tsit5(), backend="jax", saveat=[t1])``, the
  unit of the ``x primal`` column; ``primal (jit)``: the bare jitted diffrax solve, for
  context (``dxdt.solve`` adds host-side checks and conversions).

Per strategy: compile time (the ``prepare`` call), first call, median call time of the
timed calls after the first (all candidates of a grid point run round-robin so load
changes hit all alike), time as a multiple of the primal, relative error (2-norm) of the
gradient against a tight reference (``rtol=1e-11, atol=1e-13``; forward mode for small
targets, reverse interpolating for large ones; the two are cross-checked where cheap).

Also: the backsolve vs interpolating (vs checkpoint) memory scaling on ``heat_1d`` with
10x the steps (peak RSS of a gradient call, fresh subprocess per configuration), the
prepared-vs-first-call speed-up on Lotka-Volterra (fresh subprocess), and the measured
forward/reverse crossover with the constants ``FORWARD_COST_PER_DIRECTION`` and
``REVERSE_COST`` of ``dxdt/sensitivity/_mode.py`` implied by the timings.

Usage::

    .venv/bin/python benchmarks/bench_sensitivity.py            # full run (~10-20 min)
    .venv/bin/python benchmarks/bench_sensitivity.py --quick    # smoke run (~2 min)
    .venv/bin/python benchmarks/bench_sensitivity.py --wait-load 0.5 --repeats 9

Writes ``benchmarks/results/sensitivity.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR, Timing, add_blas_threads_option, blas_threads_from_argv, fmt_float, fmt_time,
    format_table, gc_disabled, load_average, machine_info, time_median, wait_for_low_load,
    write_json,
)

if __name__ == "__main__":  # before NumPy loads OpenBLAS
    blas_threads_from_argv()

import numpy as np  # noqa: E402

import dxdt  # noqa: E402
from dxdt import sensitivity as sens  # noqa: E402
from dxdt._solution import SolverError  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8            # the operators' defaults: what is benchmarked
REF_RTOL, REF_ATOL = 1e-11, 1e-13  # reference gradient
TARGET_RTOL, TARGET_ATOL = 1e-10, 1e-12  # NumPy solve giving the loss's fixed target
REF_FORWARD_MAX_M = 16             # reference by forward mode up to this target size
MAX_STEPS = 100_000                # the operators' default, also for the hand-written one
ACCURATE = 1e-3                    # relative error below which a strategy counts as accurate

# issue goals
GOAL_AUTO = 1.2           # auto within 1.2x of the fastest accurate strategy
GOAL_CKPT_VS_HAND = 1.1   # dxdt checkpoint within 1.1x of the hand-written diffrax one
GOAL_FWD_VS_HAND = 1.1    # dxdt forward within 1.1x of hand-written jax.jacfwd with ForwardMode
GOAL_INTERP_PRIMAL = 4.0  # interpolating adjoint at most 4x the primal solve
GOAL_FIRST_CALL = 20.0    # prepared calls >= 20x faster than the first (unprepared) call
MEM_NOISE_MIB = 4.0       # RSS noise floor when judging "flat" memory

STRATEGIES = [  # (name, mode, adjoint)
    ("forward", "forward", "interpolating"),
    ("reverse/interp", "reverse", "interpolating"),
    ("reverse/ckpt", "reverse", "checkpoint"),
    ("reverse/backsolve", "reverse", "backsolve"),
    ("auto", "auto", "interpolating"),
]
DXDT_STRATEGIES = [name for name, _, _ in STRATEGIES if name != "auto"]
PRIMAL = "primal (dxdt jax)"
PRIMAL_JIT = "primal (jit)"
HAND = "diffrax ckpt (hand)"
HAND_FWD = "diffrax fwd (hand)"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], dxdt.ODEProblem]
    family: str
    quick: bool = False
    crosscheck: bool = False  # compute the reference both ways (forward and reverse)


CASES = [
    Case("lotka_volterra", lambda: dxdt.problems.lotka_volterra(tspan=(0.0, 10.0)), "ode",
         quick=True, crosscheck=True),
    Case("lorenz", lambda: dxdt.problems.lorenz(tspan=(0.0, 1.0)), "ode", crosscheck=True),
    Case("gray_scott_32", lambda: dxdt.problems.gray_scott(n=32, tspan=(0.0, 50.0)), "gray_scott"),
    Case("gray_scott_64", lambda: dxdt.problems.gray_scott(n=64, tspan=(0.0, 50.0)), "gray_scott"),
    Case("heat_1d_32", lambda: dxdt.problems.heat_1d(n=32, tspan=(0.0, 1.0)), "heat_1d",
         quick=True, crosscheck=True),
    Case("heat_1d_64", lambda: dxdt.problems.heat_1d(n=64, tspan=(0.0, 1.0)), "heat_1d"),
    Case("heat_1d_128", lambda: dxdt.problems.heat_1d(n=128, tspan=(0.0, 1.0)), "heat_1d"),
    Case("heat_1d_256", lambda: dxdt.problems.heat_1d(n=256, tspan=(0.0, 1.0)), "heat_1d"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_jax():
    """dxdt's loader (float64, and XLA:CPU's small-loop threshold before the backend
    starts: the hand-written programs of this process run under the same XLA settings)."""
    from dxdt.sensitivity._jax import load_jax as dxdt_load_jax

    return dxdt_load_jax()


# --------------------------------------------------------------------------- pieces

def final_state(prob) -> np.ndarray:
    t1 = prob.tspan[1]
    sol = dxdt.solve(prob, Tsit5(), rtol=TARGET_RTOL, atol=TARGET_ATOL, saveat=[t1])
    if not sol.success:
        raise RuntimeError(f"target solve failed: {sol.message}")
    return np.array(sol.u[-1])


def make_loss(target: np.ndarray) -> Callable:
    """The benchmark loss, written with NumPy (dxdt translates it)."""
    target = np.array(target)

    def loss(u):
        return np.sum((u[-1] - target) ** 2)

    return loss


def rel_err(g, ref) -> float:
    g, ref = np.ravel(np.asarray(g, dtype=float)), np.ravel(np.asarray(ref, dtype=float))
    if g.shape != ref.shape or not np.all(np.isfinite(g)):
        return math.inf
    return float(np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-300))


def short(msg: str, n: int = 160) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def prepare_strategy(loss, prob, mode, adjoint, rtol=RTOL, atol=ATOL):
    """``(prep, compile_s, first_call_s, grad, warnings)``; raises what prepare/call raise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        prep = sens.prepare("gradient", loss, prob, Tsit5(), mode=mode, adjoint=adjoint,
                            rtol=rtol, atol=atol)
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        grad = np.array(prep(prob.p))
        first_s = time.perf_counter() - start
    msgs = sorted({f"{w.category.__name__}: {short(w.message, 120)}" for w in caught})
    return prep, compile_s, first_s, grad, msgs


def dense_steps(prep) -> int | None:
    """The interpolating adjoint's dense step buffer of a prepared operator (None without one)."""
    return prep._program.meta.get("dense_steps") or None


def quiet(fn: Callable) -> Callable:
    """``fn`` with warnings silenced (the checkpoint strategy warns on every call)."""
    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return call


def diffrax_parts(prob, target, rtol=RTOL, atol=ATOL):
    """Hand-written pure-JAX/diffrax functions on the translated ``f``.

    Returns ``(value_and_grad_jit, primal_jit, g, jacfwd_jit)``:
    ``jax.jit(jax.value_and_grad(loss))`` through ``RecursiveCheckpointAdjoint``, the jitted
    primal solve, the translated ``f`` and ``jax.jit(jax.jacfwd(loss))`` through ``ForwardMode``.
    """
    jax, jnp = load_jax()
    import diffrax

    from dxdt.solvers._diffrax import pid_coefficients

    g = sens.to_jax(prob.f, prob.u0, prob.p)
    t0, t1 = (float(t) for t in prob.tspan)
    pcoeff, icoeff = pid_coefficients(Tsit5())  # dxdt's PI controller: same steps as dxdt
    term = diffrax.ODETerm(lambda t, y, args: g(y, args, t))
    controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff)
    u0, tgt = jnp.asarray(prob.u0), jnp.asarray(target)

    def solve(p, adjoint):
        return diffrax.diffeqsolve(term, diffrax.Tsit5(), t0, t1, None, u0, args=p,
                                   saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
                                   max_steps=MAX_STEPS, throw=False, adjoint=adjoint)

    def loss(p, adjoint=diffrax.RecursiveCheckpointAdjoint()):
        sol = solve(p, adjoint)
        return jnp.sum((sol.ys[-1] - tgt) ** 2)

    def primal(p):
        sol = solve(p, diffrax.RecursiveCheckpointAdjoint())
        return sol.ys[-1], sol.stats["num_accepted_steps"], sol.result._value

    forward = jax.jacfwd(lambda p: loss(p, diffrax.ForwardMode()))
    return jax.jit(jax.value_and_grad(loss)), jax.jit(primal), g, jax.jit(forward)


def aot(fn, *args) -> tuple[Callable, float]:
    """Compile ``fn`` ahead of time; ``(compiled, seconds)``."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


# --------------------------------------------------------------------------- timing

def time_blocked(fns: dict[str, Callable], repeats: int, min_total_s: float, block_s: float = 0.02,
                 max_rounds: int = 60) -> dict[str, Timing]:
    """Round-robin like :func:`_common.time_interleaved`, but each turn is a *block* of calls.

    A candidate's block is as many consecutive calls as take about ``block_s`` (at least
    one); a sample is the mean time per call of one block. Calls of ~100 us run 1.5-2x
    slower when every call follows a different compiled program (cold caches), which
    one-call turns would charge to the cheap candidates; blocks measure the steady state
    of repeated calls (the use case of a prepared operator) while the rounds still spread
    load changes over all candidates. Rounds: ``repeats``, raised (up to ``max_rounds``)
    until the slowest block times the rounds reaches ``min_total_s``.
    """
    timings = {name: Timing() for name in fns}
    sizes, second = {}, {}
    for name, fn in fns.items():
        with gc_disabled():
            start = time.perf_counter()
            fn()
            timings[name].warmup = time.perf_counter() - start
            start = time.perf_counter()  # the second call sizes the block (the first may be cold)
            fn()
            second[name] = time.perf_counter() - start
        sizes[name] = max(1, min(1000, int(block_s / max(second[name], 1e-7))))
    block_times = {name: sizes[name] * second[name] for name in fns}
    slowest_block = max(max(block_times.values()), block_s)
    rounds = max(repeats, min(max_rounds, math.ceil(min_total_s / slowest_block)))
    for _ in range(rounds):
        for name, fn in fns.items():
            k = sizes[name]
            with gc_disabled():
                start = time.perf_counter()
                for _ in range(k):
                    fn()
                elapsed = time.perf_counter() - start
            timings[name].times.append(elapsed / k)
    for name in fns:
        timings[name].block = sizes[name]  # type: ignore[attr-defined]
    return timings


# --------------------------------------------------------------------------- grid point

def reference_gradient(case: Case, loss, prob, m: int) -> tuple[np.ndarray, dict]:
    kinds = [("forward", "interpolating") if m <= REF_FORWARD_MAX_M else ("reverse", "interpolating")]
    if case.crosscheck:
        other = ("reverse", "interpolating") if kinds[0][0] == "forward" else ("forward", "interpolating")
        kinds.append(other)
    grads, info = [], {"rtol": REF_RTOL, "atol": REF_ATOL}
    for mode, adjoint in kinds:
        start = time.perf_counter()
        prep = sens.prepare("gradient", loss, prob, Tsit5(), mode=mode, adjoint=adjoint,
                            rtol=REF_RTOL, atol=REF_ATOL)
        grads.append(np.array(prep(prob.p)))
        info.setdefault("strategies", []).append(
            {"mode": mode, "adjoint": prep.adjoint, "time_s": time.perf_counter() - start})
    info["strategy"] = f"{kinds[0][0]}" + ("" if kinds[0][0] == "forward" else "/interp")
    if len(grads) == 2:
        info["crosscheck_rel_diff"] = rel_err(grads[1], grads[0])
    return grads[0], info


def bench_point(case: Case, repeats: int, min_time: float) -> tuple[list[dict], dict]:
    jax, jnp = load_jax()
    prob = case.make()
    t0, t1 = prob.tspan
    n_state, m = int(prob.u0.size), int(np.size(prob.p))
    log(f"[{case.name}] states {n_state}, parameters {m}, t in [{t0:g}, {t1:g}]")
    target = 0.9 * final_state(prob)
    loss = make_loss(target)

    # primal: dxdt.solve with the JAX backend (first call compiles; cached afterwards)
    primal_fn = lambda: dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, saveat=[t1], backend="jax")  # noqa: E731
    start = time.perf_counter()
    sol = primal_fn()
    primal_compile = time.perf_counter() - start
    steps = {"naccept": int(sol.stats["naccept"]), "nreject": int(sol.stats["nreject"])}
    log(f"[{case.name}]   primal: {steps['naccept']} steps, first call {primal_compile:.2f} s")

    start = time.perf_counter()
    g_ref, ref_info = reference_gradient(case, loss, prob, m)
    log(f"[{case.name}]   reference ({ref_info['strategy']}, rtol {REF_RTOL:g}) "
        f"{time.perf_counter() - start:.1f} s"
        + (f"; forward vs reverse reference differ by {ref_info['crosscheck_rel_diff']:.1e}"
           if "crosscheck_rel_diff" in ref_info else ""))

    cells: dict[str, dict[str, Any]] = {}
    fns: dict[str, Callable] = {PRIMAL: primal_fn}
    cells[PRIMAL] = {"status": "ok", "compile_s": primal_compile, "first_call_s": None,
                     "rel_err": None, "warnings": []}

    for name, mode, adjoint in STRATEGIES:
        cell: dict[str, Any] = {"mode_requested": mode, "adjoint_requested": adjoint}
        try:
            prep, compile_s, first_s, grad, msgs = prepare_strategy(loss, prob, mode, adjoint)
        except SolverError as exc:
            ill = adjoint == "backsolve" and mode == "reverse"
            cell.update(status="ill-posed" if ill else "error", message=short(exc, 400))
            log(f"[{case.name}]   {name}: {cell['status']}: {short(exc, 120)}")
            cells[name] = cell
            continue
        except Exception as exc:  # noqa: BLE001 - record and go on (e.g. TranslationError)
            cell.update(status="error", message=f"{type(exc).__name__}: {short(exc, 400)}",
                        traceback=traceback.format_exc(limit=6))
            log(f"[{case.name}]   {name}: ERROR {type(exc).__name__}: {short(exc, 200)}")
            cells[name] = cell
            continue
        err = rel_err(grad, g_ref)
        cell.update(status="ok", compile_s=compile_s, first_call_s=first_s, rel_err=err,
                    mode=prep.mode, adjoint=prep.adjoint, reason=getattr(prep, "reason", None),
                    n_traces=prep.n_traces, warnings=msgs,
                    dense_steps=dense_steps(prep))
        cells[name] = cell
        fns[name] = quiet(lambda prep=prep: prep(prob.p))
        log(f"[{case.name}]   {name}: compile {compile_s:.2f} s, first call {fmt_time(first_s)}, "
            f"rel err {err:.1e}" + (f" -> {prep.mode}/{prep.adjoint}" if mode == "auto" else "")
            + (f"  [{len(msgs)} warning(s)]" if msgs else ""))

    # hand-written diffrax checkpoint equivalent and the bare jitted primal
    try:
        vg, primal_jit, _, fwd = diffrax_parts(prob, target)
        p_jax = jnp.asarray(prob.p)
        start = time.perf_counter()
        vg_c, vg_compile = aot(vg, p_jax)
        _, grad = vg_c(p_jax)
        grad = np.asarray(grad)
        first_s = time.perf_counter() - start - vg_compile
        cells[HAND] = {"status": "ok", "compile_s": vg_compile, "first_call_s": first_s,
                       "rel_err": rel_err(grad, g_ref), "warnings": []}
        fns[HAND] = lambda: np.asarray(vg_c(p_jax)[1])
        pj_c, pj_compile = aot(primal_jit, p_jax)
        u1, n_acc, result = pj_c(p_jax)
        cells[PRIMAL_JIT] = {"status": "ok", "compile_s": pj_compile, "first_call_s": None,
                             "rel_err": None, "warnings": [], "naccept": int(n_acc),
                             "u1_max_abs_diff_vs_dxdt": float(np.max(np.abs(np.asarray(u1) - sol.u[-1])))}
        fns[PRIMAL_JIT] = lambda: np.asarray(pj_c(p_jax)[0])
        log(f"[{case.name}]   {HAND}: compile {vg_compile:.2f} s, rel err {cells[HAND]['rel_err']:.1e}; "
            f"{PRIMAL_JIT}: {int(n_acc)} steps")
        fwd_c, fwd_compile = aot(fwd, p_jax)
        start = time.perf_counter()
        grad = np.asarray(fwd_c(p_jax))
        cells[HAND_FWD] = {"status": "ok", "compile_s": fwd_compile,
                           "first_call_s": time.perf_counter() - start,
                           "rel_err": rel_err(grad, g_ref), "warnings": []}
        fns[HAND_FWD] = lambda: np.asarray(fwd_c(p_jax))
    except Exception as exc:  # noqa: BLE001
        cells[HAND] = {"status": "error", "message": f"{type(exc).__name__}: {short(exc, 400)}",
                       "traceback": traceback.format_exc(limit=6)}
        log(f"[{case.name}]   {HAND}: ERROR {type(exc).__name__}: {short(exc, 200)}")

    log(f"[{case.name}]   timing {len(fns)} candidates, >= {repeats} rounds ...")
    load_before = load_average()
    timings = time_blocked(fns, repeats=repeats, min_total_s=min_time)
    load_after = load_average()
    primal_s = timings[PRIMAL].median
    primal_min = timings[PRIMAL].min

    records = []
    for name in [PRIMAL, *[s[0] for s in STRATEGIES], HAND, HAND_FWD, PRIMAL_JIT]:
        if name not in cells:
            continue
        cell = cells[name]
        rec = {"problem": case.name, "family": case.family, "n_state": n_state, "m": m,
               "tspan": [t0, t1], "rtol": RTOL, "atol": ATOL, "steps": steps,
               "strategy": name, **cell}
        if name in timings:
            t = timings[name]
            rec.update(time={**t.summary(), "block_calls": t.block}, time_median_s=t.median,
                       x_primal=t.median / primal_s,
                       x_primal_min=t.min / primal_min)
            if PRIMAL_JIT in timings:
                rec["x_primal_jit"] = t.median / timings[PRIMAL_JIT].median
        records.append(rec)
    info = {"problem": case.name, "family": case.family, "n_state": n_state, "m": m,
            "tspan": [t0, t1], "steps": steps, "reference": ref_info,
            "primal_median_s": primal_s, "load_during_timing": [load_before, load_after]}
    return records, info


# --------------------------------------------------------------------------- subprocess workers

def _rss_now_kib() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return None


def _vm_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the peak-RSS high-water mark (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memory_worker(spec: dict) -> dict:
    """One gradient configuration in this (fresh) process; RSS numbers in KiB.

    ``ru_maxrss`` of a process started by ``fork`` + ``exec`` starts at the spawning
    process's peak (Linux keeps the signal struct's maxrss across exec), so the peaks here
    come from ``VmHWM`` (the high-water mark of this process's own address space), reset
    with ``/proc/self/clear_refs`` before each measured region; ``ru_maxrss`` is recorded too.
    """
    ru = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731 (KiB on Linux)
    prob = dxdt.problems.heat_1d(n=spec["n"], tspan=(0.0, spec["t1"]))
    sol = dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL)
    loss = make_loss(0.9 * final_state(prob))
    load_jax()
    out = {**spec, "steps": int(sol.stats["naccept"] + sol.stats["nreject"]),
           "ru_maxrss_start_kib": ru()}
    out["hwm_reset"] = _reset_hwm()
    out["rss_start_kib"] = _rss_now_kib()
    prep = sens.prepare("gradient", loss, prob, Tsit5(), mode="reverse", adjoint=spec["adjoint"])
    out["dense_steps"] = dense_steps(prep)
    status = "ok"

    def call():
        nonlocal status
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                prep(prob.p)
            except SolverError as exc:
                status = "ill-posed" if spec["adjoint"] == "backsolve" else f"SolverError: {short(exc, 120)}"

    call()  # first call (allocations of the compiled program's first run)
    out["hwm_after_first_call_kib"] = _vm_hwm_kib()
    out["ru_maxrss_after_first_call_kib"] = ru()
    _reset_hwm()
    out["rss_before_call_kib"] = _rss_now_kib()
    call()
    out["hwm_after_call_kib"] = _vm_hwm_kib()
    out["ru_maxrss_end_kib"] = ru()
    out["status"] = status
    ok = out["hwm_reset"] and None not in (out["rss_start_kib"], out["hwm_after_first_call_kib"],
                                           out["rss_before_call_kib"], out["hwm_after_call_kib"])
    # peak RSS growth from before prepare to the end of the first call (compile included)
    out["peak_delta_kib"] = out["hwm_after_first_call_kib"] - out["rss_start_kib"] if ok else None
    # peak of a second call above the resident set before it: the call's own working memory
    out["call_peak_delta_kib"] = out["hwm_after_call_kib"] - out["rss_before_call_kib"] if ok else None
    # the plain ru_maxrss difference (0 when the spawning process's peak is larger)
    out["ru_maxrss_delta_kib"] = out["ru_maxrss_after_first_call_kib"] - out["ru_maxrss_start_kib"]
    return out


def first_call_worker(spec: dict) -> dict:
    """Lotka-Volterra: first unprepared ``gradient`` call in a fresh process vs prepared calls."""
    start = time.perf_counter()
    load_jax()
    import_s = time.perf_counter() - start
    prob = dxdt.problems.lotka_volterra(tspan=(0.0, 10.0))
    loss = make_loss(0.9 * final_state(prob))
    start = time.perf_counter()
    g_first = sens.gradient(loss, prob, Tsit5())
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    sens.gradient(loss, prob, Tsit5())
    second_unprepared_s = time.perf_counter() - start
    start = time.perf_counter()
    prep = sens.prepare("gradient", loss, prob, Tsit5())
    prepare_s = time.perf_counter() - start
    timing = time_median(lambda: prep(prob.p), repeats=spec["repeats"], warmup=1, min_total_s=0.5)
    same = bool(np.array_equal(np.asarray(prep(prob.p)), np.asarray(g_first)))
    return {"import_jax_s": import_s, "first_call_s": first_s,
            "second_unprepared_call_s": second_unprepared_s, "prepare_s": prepare_s,
            "prepared_call": timing.summary(), "prepared_call_median_s": timing.median,
            "speedup": first_s / timing.median, "mode": prep.mode, "adjoint": prep.adjoint,
            "identical_result": same}


def run_worker(kind: str, spec: dict, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(spec),
           "--blas-threads", str(args.blas_threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {**spec, "status": "error", "wall_s": wall,
                "message": short(proc.stderr[-2000:] or proc.stdout[-2000:], 600)}
    return {**json.loads(lines[-1][len("RESULT "):]), "wall_s": wall}


def memory_scaling(args, quick: bool) -> list[dict]:
    sizes = [64] if quick else [64, 256]
    adjoints = ["interpolating", "backsolve"] if quick else ["interpolating", "backsolve", "checkpoint"]
    out = []
    for n in sizes:
        for adjoint in adjoints:
            for t1 in (1.0, 10.0):
                spec = {"n": n, "t1": t1, "adjoint": adjoint}
                res = run_worker("memory", spec, args)
                out.append(res)
                log(f"[memory] heat_1d n={n} t1={t1:g} {adjoint}: steps {res.get('steps')}, "
                    f"peak delta {kib(res.get('peak_delta_kib'))}, "
                    f"call peak delta {kib(res.get('call_peak_delta_kib'))} ({res.get('status')}, "
                    f"{res['wall_s']:.1f} s)")
    return out


def kib(x) -> str:
    return "-" if x is None else f"{x / 1024:.1f} MiB"


# --------------------------------------------------------------------------- analysis

def _pairs(records: list[dict]) -> list[dict]:
    """Grid points with both forward and reverse-interpolating timed."""
    by = {(r["problem"], r["strategy"]): r for r in records}
    out = []
    for (problem, strategy), fwd in by.items():
        rev = by.get((problem, "reverse/interp"))
        if strategy != "forward" or "time_median_s" not in fwd or not rev or "time_median_s" not in rev:
            continue
        out.append({"problem": problem, "family": fwd["family"], "m": fwd["m"], "n_state": fwd["n_state"],
                    "forward_s": fwd["time_median_s"], "reverse_s": rev["time_median_s"],
                    "fwd_over_rev": fwd["time_median_s"] / rev["time_median_s"],
                    "forward_faster": fwd["time_median_s"] < rev["time_median_s"],
                    "x": {k: (fwd.get(k), rev.get(k)) for k in ("x_primal", "x_primal_jit")}})
    return out


def measured_crossover(pairs: list[dict], family: str = "heat_1d") -> dict:
    """Model-free m*: where forward time / reverse-interpolating time crosses 1 along ``family``.

    Log-log interpolation between consecutive sizes (extrapolation from the nearest two
    when the ratio does not cross 1 within the measured sizes).
    """
    pts = sorted((p["m"], p["fwd_over_rev"]) for p in pairs if p["family"] == family)
    if len(pts) < 2:
        return {"family": family, "note": f"fewer than two {family} sizes"}
    logs = [(math.log(m_), math.log(r)) for m_, r in pts]
    seg = None
    for (x0, y0), (x1, y1) in zip(logs, logs[1:]):
        if (y0 <= 0 <= y1) or (y1 <= 0 <= y0):
            seg = ((x0, y0), (x1, y1))
            break
    how = "interpolated"
    if seg is None:
        how = "extrapolated"
        seg = (logs[0], logs[1]) if logs[0][1] > 0 else (logs[-2], logs[-1])
    (x0, y0), (x1, y1) = seg
    if y1 == y0:
        return {"family": family, "points": pts, "note": "flat ratio: no crossing"}
    x = x0 - y0 * (x1 - x0) / (y1 - y0)
    slope = (y1 - y0) / (x1 - x0)
    return {"family": family, "m_star": math.exp(x), "how": how, "loglog_slope": slope,
            "points": [{"m": m_, "forward_over_reverse": r} for m_, r in pts]}


def rule_scan(pairs: list[dict], current: float | None) -> dict:
    """How every CROSSOVER value would decide (forward iff m <= CROSSOVER) on the grid.

    For each interval of CROSSOVER values between distinct target sizes: the grid points
    decided right (the faster of forward / reverse-interpolating) and the worst and
    geometric-mean slowdown of the decision against the faster one.
    """
    ms = sorted({p["m"] for p in pairs})
    bounds = [0.0] + ms + [math.inf]
    scan = []
    for lo, hi in zip(bounds, bounds[1:]):
        if lo == hi:
            continue
        slow, right = [], 0
        for p in pairs:
            forward = p["m"] <= lo  # any CROSSOVER in [lo, hi) decides like lo
            t = p["forward_s"] if forward else p["reverse_s"]
            best = min(p["forward_s"], p["reverse_s"])
            slow.append(t / best)
            right += forward == p["forward_faster"]
        scan.append({"crossover_from": lo, "crossover_below": hi, "right": right, "of": len(pairs),
                     "worst_slowdown": max(slow),
                     "geomean_slowdown": math.exp(statistics.fmean(math.log(x) for x in slow)),
                     "contains_current": current is not None and lo <= current < hi})
    best = min(scan, key=lambda s: (round(s["worst_slowdown"], 3), round(s["geomean_slowdown"], 3)))
    lo, hi = best["crossover_from"], best["crossover_below"]
    if lo == 0.0:
        mid = hi / 2
    elif math.isinf(hi):
        mid = 2 * lo
    else:
        mid = math.sqrt(lo * hi)
    return {"scan": scan, "best": best, "recommended_crossover": mid}


def crossover(records: list[dict], key: str = "x_primal") -> dict:
    """Implied cost constants in units of a primal solve (``key``), and the linear fit.

    ``key``: ``"x_primal"`` (times in units of ``dxdt.solve(backend="jax")``, the issue's
    primal) or ``"x_primal_jit"`` (units of the bare jitted diffrax solve: compute only).
    Per grid point: ``b = (forward / primal - 1) / m`` and ``R = reverse / primal``, and
    the crossover ``(R - 1) / b`` they imply; over the heat_1d sizes (where m varies) the
    fit ``forward / primal = a + b m`` of the issue's cost model.
    """
    pairs = [p for p in _pairs(records) if None not in p["x"][key]]
    if not pairs:
        return {"unit": key, "points": [], "note": "no grid point with both forward and reverse timings"}
    points = []
    for p in pairs:
        fx, rx = p["x"][key]
        b = (fx - 1.0) / p["m"]
        points.append({"problem": p["problem"], "family": p["family"], "m": p["m"], "forward_x": fx,
                       "reverse_x": rx, "implied_b": b,
                       "implied_crossover": (rx - 1.0) / b if b > 0 else None,
                       "forward_faster": p["forward_faster"]})
    out: dict[str, Any] = {"unit": key, "points": points,
                           "FORWARD_COST_PER_DIRECTION_median": statistics.median(p["implied_b"] for p in points),
                           "REVERSE_COST_median": statistics.median(p["reverse_x"] for p in points)}
    heat = [p for p in points if p["family"] == "heat_1d"]
    if len({p["m"] for p in heat}) >= 2:
        x = np.array([p["m"] for p in heat], float)
        y = np.array([p["forward_x"] for p in heat], float)
        b, a = np.polyfit(x, y, 1)
        resid = y - (a + b * x)
        r2 = 1.0 - float(resid @ resid) / max(float(((y - y.mean()) ** 2).sum()), 1e-300)
        rev = statistics.median(p["reverse_x"] for p in heat)
        out["heat_fit"] = {"a": float(a), "b": float(b), "r2": r2, "reverse_x_median": rev,
                           "m_star": (rev - a) / b if b > 0 else None,
                           "model": "forward / primal = a + b m over heat_1d n = m"}
    return out


def check_goals(records: list[dict], memory: list[dict], first: dict | None) -> list[dict]:
    goals = []
    problems = list(dict.fromkeys(r["problem"] for r in records))
    by = {(r["problem"], r["strategy"]): r for r in records}
    for problem in problems:
        accurate = [by[(problem, s)] for s in DXDT_STRATEGIES
                    if (problem, s) in by and by[(problem, s)].get("status") == "ok"
                    and "time_median_s" in by[(problem, s)] and by[(problem, s)]["rel_err"] < ACCURATE]
        auto = by.get((problem, "auto"))
        if auto and auto.get("status") == "ok" and accurate:
            best = min(accurate, key=lambda r: r["time_median_s"])
            picked_name = "forward" if auto["mode"] == "forward" else {
                "interpolating": "reverse/interp", "checkpoint": "reverse/ckpt",
                "backsolve": "reverse/backsolve"}.get(auto["adjoint"], "?")
            picked = by.get((problem, picked_name), {})
            t_pick = picked.get("time_median_s", auto["time_median_s"])
            ratio = t_pick / best["time_median_s"]
            ratio_own = auto["time_median_s"] / best["time_median_s"]
            goals.append({
                "goal": f"auto within {GOAL_AUTO}x of the fastest accurate strategy on {problem}",
                "value": f"picks {picked_name}: {ratio:.2f}x of {best['strategy']} "
                         f"(auto's own prepared op {ratio_own:.2f}x), rel err {auto['rel_err']:.1e}",
                "ratio": ratio, "ratio_auto_own": ratio_own,
                "pass": ratio <= GOAL_AUTO and auto["rel_err"] < ACCURATE,
            })
        elif auto is not None:
            goals.append({"goal": f"auto within {GOAL_AUTO}x of the fastest accurate strategy on {problem}",
                          "value": f"auto {auto.get('status')}, {len(accurate)} accurate strategies",
                          "pass": False})
    for problem in problems:
        ck, hand = by.get((problem, "reverse/ckpt")), by.get((problem, HAND))
        if ck and hand and "time_median_s" in ck and "time_median_s" in hand:
            ratio = ck["time_median_s"] / hand["time_median_s"]
            goals.append({"goal": f"reverse/ckpt within {GOAL_CKPT_VS_HAND}x of hand-written diffrax on {problem}",
                          "value": f"{ratio:.2f}x ({fmt_time(ck['time_median_s'])} vs "
                                   f"{fmt_time(hand['time_median_s'])})",
                          "ratio": ratio, "pass": ratio <= GOAL_CKPT_VS_HAND})
    for problem in problems:
        fw, hand = by.get((problem, "forward")), by.get((problem, HAND_FWD))
        if fw and hand and "time_median_s" in fw and "time_median_s" in hand:
            ratio = fw["time_median_s"] / hand["time_median_s"]
            goals.append({"goal": f"forward within {GOAL_FWD_VS_HAND}x of hand-written jax.jacfwd + "
                                  f"ForwardMode on {problem}",
                          "value": f"{ratio:.2f}x ({fmt_time(fw['time_median_s'])} vs "
                                   f"{fmt_time(hand['time_median_s'])})",
                          "ratio": ratio, "pass": ratio <= GOAL_FWD_VS_HAND})
    for problem in problems:
        it = by.get((problem, "reverse/interp"))
        if it and "x_primal" in it:
            goals.append({"goal": f"reverse/interp <= {GOAL_INTERP_PRIMAL}x primal on {problem}",
                          "value": f"{it['x_primal']:.2f}x", "ratio": it["x_primal"],
                          "pass": it["x_primal"] <= GOAL_INTERP_PRIMAL})
    mem = {(m_["n"], m_["adjoint"], m_["t1"]): m_ for m_ in memory}
    for n in sorted({m_["n"] for m_ in memory}):
        a, b = mem.get((n, "backsolve", 1.0)), mem.get((n, "backsolve", 10.0))
        ia, ib = mem.get((n, "interpolating", 1.0)), mem.get((n, "interpolating", 10.0))
        if not (a and b) or a.get("call_peak_delta_kib") is None or b.get("call_peak_delta_kib") is None:
            continue
        d1, d10 = a["call_peak_delta_kib"] / 1024, b["call_peak_delta_kib"] / 1024
        growth = d10 - d1
        interp = ""
        if ia and ib and ia.get("call_peak_delta_kib") is not None and ib.get("call_peak_delta_kib") is not None:
            interp = (f"; interpolating {ia['call_peak_delta_kib'] / 1024:.1f} -> "
                      f"{ib['call_peak_delta_kib'] / 1024:.1f} MiB")
        goals.append({"goal": f"backsolve memory flat as steps grow 10x (heat_1d n={n})",
                      "value": f"call peak {d1:.1f} -> {d10:.1f} MiB at {a.get('steps')} -> "
                               f"{b.get('steps')} steps{interp}",
                      "pass": growth <= max(MEM_NOISE_MIB, 0.2 * d1)})
    if first and "speedup" in first:
        goals.append({"goal": f"prepared call >= {GOAL_FIRST_CALL:g}x faster than the first call (Lotka-Volterra)",
                      "value": f"{first['speedup']:.0f}x ({fmt_time(first['first_call_s'])} vs "
                               f"{fmt_time(first['prepared_call_median_s'])})",
                      "ratio": first["speedup"], "pass": first["speedup"] >= GOAL_FIRST_CALL})
    return goals


def current_constants() -> dict | None:
    try:
        from dxdt.sensitivity import _mode

        return {"REVERSE_COST": _mode.REVERSE_COST, "FORWARD_COST_SMALL": _mode.FORWARD_COST_SMALL,
                "FORWARD_COST_LARGE": _mode.FORWARD_COST_LARGE, "STATE_SCALE": _mode.STATE_SCALE,
                "crossover": _mode.crossover}
    except Exception:  # noqa: BLE001
        return None


def calibrate(records: list[dict]) -> dict:
    """Everything for ``_mode.py``: m*, implied constants in both units, the rule scan."""
    pairs = _pairs(records)
    current = current_constants()
    out: dict[str, Any] = {"current": current,
                           "by_unit": {unit: crossover(records, unit) for unit in ("x_primal", "x_primal_jit")}}
    if not pairs:
        out["note"] = "no grid point with both forward and reverse timings"
        return out
    out["m_star_heat"] = measured_crossover(pairs)
    out["rule"] = rule_scan(pairs, None)
    if current:  # the state-size rule of _mode.py on this grid
        rule = current.pop("crossover")
        decisions = [{"problem": p["problem"], "m": p["m"], "n_state": p["n_state"],
                      "crossover": rule(p["n_state"]), "forward": p["m"] <= rule(p["n_state"]),
                      "right": (p["m"] <= rule(p["n_state"])) == p["forward_faster"]} for p in pairs]
        out["state_rule"] = {"right": sum(d["right"] for d in decisions), "of": len(decisions),
                             "decisions": decisions}
    primary = out["by_unit"]["x_primal"]
    rc = primary["REVERSE_COST_median"]
    cross = out["rule"]["recommended_crossover"]
    out["calibrated"] = {
        "CROSSOVER": cross,
        "REVERSE_COST": rc,
        "FORWARD_COST_PER_DIRECTION": (rc - 1.0) / cross if cross > 0 else None,
        "note": ("CROSSOVER: middle (geometric) of the CROSSOVER interval with the smallest worst "
                 "slowdown of the rule on this grid; REVERSE_COST: median reverse-interpolating / "
                 "dxdt.solve(backend='jax') over the grid; FORWARD_COST_PER_DIRECTION = (REVERSE_COST "
                 "- 1) / CROSSOVER so that _mode.py's formula gives that CROSSOVER. The per-point "
                 "constants (by_unit) vary ~10x between problems: only their ratio is calibrated."),
    }
    return out


def print_calibration(cal: dict) -> None:
    cur = cal.get("current") or {}
    if "rule" not in cal:
        print(f"crossover: {cal.get('note')}")
        return
    primary, jit = cal["by_unit"]["x_primal"], cal["by_unit"]["x_primal_jit"]
    by_jit = {p["problem"]: p for p in jit.get("points", [])}
    rows = []
    for p in primary["points"]:
        q = by_jit.get(p["problem"], {})
        ic, jc = p["implied_crossover"], q.get("implied_crossover")
        rows.append([p["problem"], p["m"], f"{p['forward_x']:.2f}x", f"{p['reverse_x']:.2f}x",
                     f"{p['implied_b']:.3f}", "-" if ic is None else f"{ic:.1f}",
                     f"{q['forward_x']:.1f}x" if q else "-", f"{q['reverse_x']:.1f}x" if q else "-",
                     f"{q['implied_b']:.3f}" if q else "-", "-" if jc is None else f"{jc:.1f}",
                     "forward" if p["forward_faster"] else "reverse"])
    print("forward / reverse-interp crossover (b = (forward/primal - 1) / m, R = reverse/primal, "
          "implied crossover (R - 1) / b; primal = dxdt.solve(backend='jax') | bare jitted solve)")
    print(format_table(rows, ["problem", "m", "fwd", "rev", "b", "(R-1)/b", "fwd(jit)", "rev(jit)",
                              "b(jit)", "(R-1)/b(jit)", "faster"], align="lrrrrrrrrrl"))
    ms = cal["m_star_heat"]
    if "m_star" in ms:
        print(f"measured crossover on heat_1d (forward time = reverse-interp time, log-log {ms['how']}): "
              f"m* = {ms['m_star']:.1f}")
    for unit, c in (("dxdt.solve", primary), ("jit", jit)):
        hf = c.get("heat_fit")
        if hf:
            ms_txt = "-" if hf["m_star"] is None else f"{hf['m_star']:.1f}"
            print(f"  linear model over heat_1d ({unit} units): forward/primal = {hf['a']:.2f} + "
                  f"{hf['b']:.4f} m (R^2 {hf['r2']:.2f}), reverse/primal median {hf['reverse_x_median']:.2f}"
                  f" -> m* = {ms_txt}")
        print(f"  medians over the grid ({unit} units): FORWARD_COST_PER_DIRECTION "
              f"{c['FORWARD_COST_PER_DIRECTION_median']:.3f}, REVERSE_COST {c['REVERSE_COST_median']:.2f}")
    rows = []
    for sc in cal["rule"]["scan"]:
        hi = "inf" if math.isinf(sc["crossover_below"]) else f"{sc['crossover_below']:g}"
        rows.append([f"[{sc['crossover_from']:g}, {hi})", f"{sc['right']}/{sc['of']}",
                     f"{sc['worst_slowdown']:.2f}x", f"{sc['geomean_slowdown']:.2f}x",
                     "<- " + ", ".join(tag for tag, on in (("current", sc["contains_current"]),
                                                           ("best", sc is cal["rule"]["best"])) if on)
                     if sc["contains_current"] or sc is cal["rule"]["best"] else ""])
    print("CROSSOVER values and the rule's decisions on this grid (slowdown: chosen / faster of "
          "forward and reverse-interp):")
    print(format_table(rows, ["CROSSOVER", "right", "worst", "geomean", ""], align="lrrrl"))
    c = cal["calibrated"]
    print(f"calibrated: FORWARD_COST_PER_DIRECTION = {c['FORWARD_COST_PER_DIRECTION']:.3f}, "
          f"REVERSE_COST = {c['REVERSE_COST']:.2f}, CROSSOVER = {c['CROSSOVER']:.1f}  (one crossover for all sizes)")
    if "state_rule" in cal:
        st = cal["state_rule"]
        print(f"current _mode.py (crossover by state size, {cur}): right on {st['right']}/{st['of']}: "
              + ", ".join(f"{d['problem']} m={d['m']} vs {d['crossover']:.1f} -> "
                          f"{'forward' if d['forward'] else 'reverse'}{'' if d['right'] else ' (WRONG)'}"
                          for d in st["decisions"]))


# --------------------------------------------------------------------------- report

def table(records: list[dict]) -> str:
    header = ["problem", "states", "m", "steps", "strategy", "compile", "1st call", "call",
              "min", "runs", "x primal", "rel err", "note"]
    rows, last = [], None
    for r in records:
        first = r["problem"] != last
        note = ""
        if r["strategy"] == "auto" and r.get("status") == "ok":
            note = f"-> {r['mode']}" + (f"/{r['adjoint']}" if r.get("adjoint") else "")
        if r.get("status") not in (None, "ok"):
            note = r["status"]
        elif r.get("warnings"):
            note = (note + " " if note else "") + "warns"
        if r.get("rel_err") is not None and r.get("status") == "ok" and r["rel_err"] >= ACCURATE:
            note = (note + " " if note else "") + "INACCURATE"
        timed = "time_median_s" in r
        rows.append([
            r["problem"] if first else "",
            r["n_state"] if first else "",
            r["m"] if first else "",
            r["steps"]["naccept"] if first else "",
            r["strategy"],
            fmt_time(r.get("compile_s")),
            fmt_time(r.get("first_call_s")),
            fmt_time(r["time_median_s"]) if timed else "-",
            fmt_time(r["time"]["min_s"]) if timed else "-",
            r["time"]["n"] if timed else "-",
            f"{r['x_primal']:.2f}x" if timed else "-",
            fmt_float(r.get("rel_err"), ".1e") if r.get("rel_err") is not None else "-",
            note,
        ])
        last = r["problem"]
    return format_table(rows, header, align="lrrrlrrrrrrrl")


def memory_table(memory: list[dict]) -> str:
    header = ["heat_1d", "t1", "adjoint", "steps", "dense buf", "peak delta", "call peak", "status"]
    rows = []
    for m_ in memory:
        rows.append([f"n={m_['n']}", f"{m_['t1']:g}", m_["adjoint"], m_.get("steps", "-"),
                     m_.get("dense_steps") or "-", kib(m_.get("peak_delta_kib")),
                     kib(m_.get("call_peak_delta_kib")), m_.get("status")])
    return format_table(rows, header, align="lrlrrrrl")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9,
                    help="timed rounds per grid point after one warm-up call (default 9; cheap "
                         "points get more, see --min-time)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="sample the slowest candidate of a grid point for about this many seconds "
                         "(default 1.0)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: Lotka-Volterra and heat_1d n=32, 2 rounds, small memory test")
    ap.add_argument("--problems", nargs="+", choices=[c.name for c in CASES],
                    help="run only these grid points")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--no-first-call", action="store_true", help="skip the first-call subprocess")
    ap.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                    help="first wait (up to 5 min) for the 1-min load average to drop below LOAD")
    add_blas_threads_option(ap)
    ap.add_argument("--out", default=str(RESULTS_DIR / "sensitivity.json"),
                    help="JSON output path (default benchmarks/results/sensitivity.json)")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        kind, spec = args.worker[0], json.loads(args.worker[1])
        result = {"memory": memory_worker, "first_call": first_call_worker}[kind](spec)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    os.environ["DXDT_CACHE"] = "0"  # no disk cache (workers inherit it): `compile` and first calls build
    repeats, min_time = args.repeats, args.min_time
    cases = CASES
    if args.quick:
        repeats, min_time = 2, min(min_time, 0.2)
        cases = [c for c in cases if c.quick]
    if args.problems:
        cases = [c for c in CASES if c.name in args.problems]
    if repeats < 1:
        ap.error("--repeats must be >= 1")

    if args.wait_load is not None:
        wait_for_low_load(args.wait_load)
    run_start = time.perf_counter()
    load_start = load_average()
    jax, _ = load_jax()
    meta = machine_info(["jax", "jaxlib", "diffrax", "equinox"])
    meta["xla_flags"] = os.environ.get("XLA_FLAGS")
    meta["jax_devices"] = [str(d) for d in jax.devices()]
    log(f"load average at start: {load_start}")

    records, problems = [], []
    for case in cases:
        recs, info = bench_point(case, repeats, min_time)
        records += recs
        problems.append(info)

    first = None
    if not args.no_first_call:
        log("[first call] fresh subprocess: Lotka-Volterra, unprepared gradient() vs prepared calls ...")
        first = run_worker("first_call", {"repeats": max(repeats, 5)}, args)
        if first.get("status") == "error":
            log(f"[first call] ERROR: {first.get('message')}")
        else:
            log(f"[first call] first {first['first_call_s']:.2f} s, prepared {fmt_time(first['prepared_call_median_s'])}"
                f": {first['speedup']:.0f}x")
    memory = [] if args.no_memory else memory_scaling(args, args.quick)
    load_end = load_average()
    cal = calibrate(records)
    goals = check_goals(records, memory, first)
    elapsed = time.perf_counter() - run_start

    print("dxdt sensitivities: gradient of sum((u(t1) - target)^2) w.r.t. p, Tsit5, "
          f"rtol {RTOL:g}, atol {ATOL:g}")
    print("(compile = prepare(); 1st call = first call after it; call = median over rounds of the mean "
          "time per call in a block of calls after the first, candidates round-robin; runs = rounds; "
          "x primal = call / dxdt.solve(backend='jax') call; "
          f"rel err vs reference at rtol {REF_RTOL:g}, atol {REF_ATOL:g}; INACCURATE: >= {ACCURATE:g})")
    print(f"{meta['platform']}, {meta['cpu_count']} CPUs, jax {meta['versions'].get('jax')}, "
          f"diffrax {meta['versions'].get('diffrax')}, load avg start {load_start} end {load_end}, "
          f"run {elapsed / 60:.1f} min")
    print()
    print(table(records))
    refs = [f"{p['problem']}: {p['reference']['strategy']}"
            + (f" (forward vs reverse refs differ {p['reference']['crosscheck_rel_diff']:.1e})"
               if "crosscheck_rel_diff" in p["reference"] else "") for p in problems]
    print("\nreference gradients: " + "; ".join(refs))
    for r in records:
        if r.get("status") not in (None, "ok"):
            print(f"note: {r['problem']} {r['strategy']}: {r['status']}: {short(r.get('message', ''), 200)}")
    warned = sorted({(r["strategy"], w) for r in records for w in r.get("warnings") or []})
    for strategy, w in warned:
        probs = [r["problem"] for r in records if r["strategy"] == strategy and w in (r.get("warnings") or [])]
        print(f"note: {strategy} warned on {', '.join(probs)}: {short(w, 150)}")

    if first is not None:
        print()
        if first.get("status") == "error":
            print(f"first call (Lotka-Volterra, fresh process): ERROR {first.get('message')}")
        else:
            print(f"first call (Lotka-Volterra, fresh process): unprepared gradient() {fmt_time(first['first_call_s'])} "
                  f"(second unprepared call {fmt_time(first['second_unprepared_call_s'])}, "
                  f"prepare {fmt_time(first['prepare_s'])}); prepared call {fmt_time(first['prepared_call_median_s'])} "
                  f"-> {first['speedup']:.0f}x")
    if memory:
        print()
        print("memory (fresh process per row; peak delta = peak RSS (VmHWM) up to the end of the first call "
              "minus RSS before prepare, compile included; call peak = peak RSS of a second call above the "
              "RSS before it; dense buf = steps of the interpolating adjoint's dense-output buffer)")
        print(memory_table(memory))

    print()
    print_calibration(cal)

    if goals:
        print()
        print("goals:")
        for g in goals:
            print(f"  [{'PASS' if g['pass'] else 'FAIL'}] {g['goal']}: {g['value']}")

    settings = {"repeats": repeats, "min_time_s": min_time, "quick": args.quick,
                "blas_threads": args.blas_threads, "rtol": RTOL, "atol": ATOL,
                "reference": {"rtol": REF_RTOL, "atol": REF_ATOL, "forward_up_to_m": REF_FORWARD_MAX_M},
                "accurate_rel_err": ACCURATE, "method": "Tsit5", "wrt": "p",
                "loss": "np.sum((u[-1] - 0.9 * u_t1_unperturbed) ** 2)",
                "strategies": [{"name": n, "mode": m_, "adjoint": a} for n, m_, a in STRATEGIES],
                "cases": [c.name for c in cases],
                "goals": {"auto_vs_best": GOAL_AUTO, "ckpt_vs_hand": GOAL_CKPT_VS_HAND,
                          "forward_vs_hand": GOAL_FWD_VS_HAND,
                          "interp_vs_primal": GOAL_INTERP_PRIMAL, "first_call_speedup": GOAL_FIRST_CALL}}
    path = write_json(args.out, records, benchmark="sensitivity", settings=settings, meta=meta,
                      load_start=load_start, load_end=load_end, run_s=elapsed, problems=problems,
                      crossover=cal, calibrated=cal.get("calibrated"), memory=memory,
                      first_call=first, goals=goals)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
