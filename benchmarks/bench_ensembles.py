"""Ensembles: a Python loop of solves vs ``dxdt.solve(EnsembleProblem)`` on each executor.

Issue 12's benchmark. Two sweeps:

- Lotka-Volterra, ``--lv-members`` parameter sets (default 2000; each of a, b, c, d
  scaled by U(0.8, 1.2)), t in [0, 10], 21 saves, rtol 1e-6, atol 1e-8: the Python loop
  ``[dxdt.solve(prob.remake(p=p_i)) ...]``, the ensemble on every executor, the ensemble
  on ``backend="jax"``, and the JAX anchor: ``jax.jit(jax.vmap(diffeqsolve))`` written by
  hand (``jnp`` model, ``Tsit5``, ``PIDController`` with dxdt's PI coefficients).
- Gray-Scott 32x32, a ``--gs-members`` (default 64) grid over (F, k), t in [0, 300],
  final state, rtol 1e-5, atol 1e-7: loop vs ensemble serial / threads / processes / Dask
  ``LocalCluster`` (2 worker processes, one thread each) / jax.

Plus memory: the peak traced allocation (``tracemalloc``) of a serial Lotka-Volterra
ensemble (batches of 20) with a ``reduction`` (sum of final states) and without one (all
members kept), at 1/20 and 1/5 of the member count.

Order: the loop and the NumPy executors run first, in a process without threads or JAX
(as a plain script: process workers are then forked), then Dask, then JAX.

Times are wall-clock medians of ``--repeats`` runs after one warm-up run (for JAX the
warm-up includes compilation, reported as ``first``).

``--interleaved`` measures only the pairs the goals compare, each timed round-robin so
that a change of the machine's load during the run affects both alike (in the full run
they are minutes apart): serial, processes and Dask on the Gray-Scott sweep (``--repeats``
rounds, one ``LocalCluster`` for all; processes then start from a forkserver, since the
Dask client runs threads in this process, as in any program that holds a client), then
``backend="jax"`` and the hand-written vmap on Lotka-Volterra (15 rounds). Written to
``results/ensembles_interleaved.json``. Goals (from the issue): jax >= 5x
faster than the loop on Lotka-Volterra and within 1.3x of the hand-written vmap;
processes on 2 cores >= 1.6x serial on Gray-Scott; Dask within 1.2x of processes;
reduction memory flat in the member count.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR, blas_threads_from_argv, add_blas_threads_option, fmt_time, format_table,
    load_average, time_interleaved, time_median, write_json,
)

if __name__ == "__main__":  # before NumPy loads OpenBLAS
    blas_threads_from_argv()

import numpy as np  # noqa: E402

import dxdt  # noqa: E402
from dxdt import problems  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402

LV_TS = np.linspace(0.0, 10.0, 21)
LV_TOL = dict(rtol=1e-6, atol=1e-8)
GS_T1 = 300.0
GS_TOL = dict(rtol=1e-5, atol=1e-7)


def lv_sweep(n: int, seed: int = 0):
    prob = problems.lotka_volterra()
    P = np.asarray(prob.p) * np.random.default_rng(seed).uniform(0.8, 1.2, (n, 4))
    return prob, P


def gs_sweep(n: int):
    prob = problems.gray_scott(n=32, tspan=(0.0, GS_T1))
    side = int(np.ceil(np.sqrt(n)))
    F, k = np.meshgrid(np.linspace(0.02, 0.05, side), np.linspace(0.055, 0.065, side))
    P = np.tile(np.asarray(prob.p, dtype=float), (side * side, 1))[:n]
    P[:, 2], P[:, 3] = F.ravel()[:n], k.ravel()[:n]
    return prob, P


def loop(prob, P, **kw):
    return [dxdt.solve(prob.remake(p=p), Tsit5(), **kw) for p in P]


def handwritten_vmap(prob, P):
    """``jit(vmap(diffeqsolve))`` of Lotka-Volterra written with ``jax.numpy``: the anchor."""
    from dxdt.sensitivity._jax import load_jax
    from dxdt.solvers._diffrax import pid_coefficients

    jax, jnp = load_jax()
    import diffrax

    pcoeff, icoeff = pid_coefficients(Tsit5())
    y0, ts = jnp.asarray(prob.u0), jnp.asarray(LV_TS)

    def field(t, y, p):
        return jnp.stack([p[0] * y[0] - p[1] * y[0] * y[1], -p[2] * y[1] + p[3] * y[0] * y[1]])

    def one(p):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, 10.0, None, y0, args=p,
            saveat=diffrax.SaveAt(ts=ts), throw=False, max_steps=100_000,
            stepsize_controller=diffrax.PIDController(pcoeff=pcoeff, icoeff=icoeff, **LV_TOL))
        return sol.ys

    solve_all = jax.jit(jax.vmap(one))
    return lambda: jax.block_until_ready(solve_all(P))


def timed(name: str, fn, repeats: int, records: list, sweep: str, members: int, **extra):
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    timing = time_median(fn, repeats=repeats, warmup=0)
    records.append({"sweep": sweep, "runner": name, "members": members, "first_s": first,
                    **timing.summary(), **extra})
    print(f"  {sweep:>14} {name:<22} first {fmt_time(first):>9}  median {fmt_time(timing.median):>9}",
          flush=True)
    return result


NUMPY_EXECUTORS = {"ensemble serial": None, "ensemble threads": "threads", "ensemble processes": "processes"}


def sweeps(args) -> dict:
    """Per sweep: the ensemble, the loop's arguments and the solve options."""
    lv_prob, lv_P = lv_sweep(args.lv_members)
    gs_prob, gs_P = gs_sweep(args.gs_members)
    return {
        "lotka-volterra": (lv_prob, lv_P, dict(saveat=LV_TS, **LV_TOL)),
        "gray-scott": (gs_prob, gs_P, dict(saveat=[GS_T1], **GS_TOL)),
    }


def run_numpy(cases: dict, repeats: int, records: list, references: dict) -> None:
    """Loop and the NumPy executors, first: workers fork only from a process without threads
    (Dask's client) or JAX, as in a plain script."""
    for sweep, (prob, P, kw) in cases.items():
        ens = dxdt.EnsembleProblem(prob, p=P)
        references[sweep] = timed("python loop", lambda: loop(prob, P, **kw), repeats, records, sweep, len(P))
        for name, executor in NUMPY_EXECUTORS.items():
            timed(name, lambda: dxdt.solve(ens, Tsit5(), executor=executor, **kw), repeats, records, sweep, len(P))


def run_dask(cases: dict, repeats: int, records: list) -> float:
    """The ensembles on a Dask LocalCluster (2 worker processes, one thread each)."""
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    cluster_start_s = time.perf_counter() - started
    try:
        for sweep, (prob, P, kw) in cases.items():
            ens = dxdt.EnsembleProblem(prob, p=P)
            timed("ensemble dask", lambda: dxdt.solve(ens, Tsit5(), executor=client, **kw), repeats, records,
                  sweep, len(P))
    finally:
        client.close()
        cluster.close()
    return cluster_start_s


def run_jax(cases: dict, repeats: int, records: list, references: dict) -> None:
    """``backend="jax"`` ensembles, and the hand-written vmap on Lotka-Volterra."""
    for sweep, (prob, P, kw) in cases.items():
        ens = dxdt.EnsembleProblem(prob, p=P)
        out = timed("ensemble jax", lambda: dxdt.solve(ens, Tsit5(), backend="jax", **kw), repeats, records,
                    sweep, len(P))
        loop_u = np.stack([r.u for r in references[sweep]])
        records[-1]["max_abs_diff_vs_loop"] = float(np.max(np.abs(out.u - loop_u)))
        records[-1]["lockstep"] = out.stats["lockstep"]
        if sweep == "lotka-volterra":
            timed("handwritten vmap", handwritten_vmap(prob, P), repeats, records, sweep, len(P))


def reduction_memory(counts: list[int]) -> list[dict]:
    """Peak traced allocation of a reduced serial ensemble vs one that keeps its members."""
    rows = []
    for n in counts:
        prob, P = lv_sweep(n, seed=1)
        ens = dxdt.EnsembleProblem(prob, p=P)
        for keep in (False, True):
            reduction = None if keep else (lambda acc, b: (0.0 if acc is None else acc) + b.u[:, -1].sum(axis=0))
            tracemalloc.start()
            dxdt.solve(ens, Tsit5(), saveat=LV_TS, batch_size=20, reduction=reduction, **LV_TOL)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append({"members": n, "reduction": not keep, "peak_mib": peak / 2**20})
            print(f"  memory: {n:>6} members, reduction={not keep!s:<5}  peak {peak / 2**20:8.2f} MiB", flush=True)
    return rows


def goals(records: list, memory: list) -> list[tuple[str, bool, str]]:
    t = {(r["sweep"], r["runner"]): r["median_s"] for r in records}
    out = []

    def check(text, sweep, a, b, op):
        if (sweep, a) in t and (sweep, b) in t:
            ratio = t[(sweep, b)] / t[(sweep, a)]
            out.append((text, op(ratio), f"{ratio:.2f}"))

    check("lv: jax >= 5x faster than the python loop", "lotka-volterra", "ensemble jax", "python loop",
          lambda r: r >= 5)
    check("lv: jax within 1.3x of hand-written vmap", "lotka-volterra", "handwritten vmap", "ensemble jax",
          lambda r: r <= 1.3)
    check("gs: processes >= 1.6x serial (2 cores)", "gray-scott", "ensemble processes", "ensemble serial",
          lambda r: r >= 1.6)
    check("gs: dask within 1.2x of processes", "gray-scott", "ensemble processes", "ensemble dask",
          lambda r: r <= 1.2)
    reduced = [m["peak_mib"] for m in memory if m["reduction"]]
    kept = [m["peak_mib"] for m in memory if not m["reduction"]]
    if len(reduced) >= 2:  # only the per-member status remains: a few bytes, not a trajectory
        share = (reduced[-1] - reduced[0]) / (kept[-1] - kept[0])
        out.append(("memory with a reduction ~flat: growth <= 10% of keeping the members", share <= 0.1,
                    f"{share:.3f}"))
    return out


def interleaved_executors(args) -> None:
    """Round-robin timings of what the goals compare: serial / processes / Dask on Gray-Scott,
    ``backend="jax"`` / the hand-written vmap on Lotka-Volterra."""
    from distributed import Client, LocalCluster

    load_start = load_average()
    print(f"load average at start: {load_start}")
    prob, P = gs_sweep(args.gs_members)
    ens, kw = dxdt.EnsembleProblem(prob, p=P), dict(saveat=[GS_T1], **GS_TOL)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    try:
        runners = {name: (lambda executor=executor: dxdt.solve(ens, Tsit5(), executor=executor, **kw))
                   for name, executor in [("ensemble serial", None), ("ensemble processes", "processes"),
                                          ("ensemble dask", client)]}
        timings = time_interleaved(runners, repeats=args.repeats, warmup=1)
    finally:
        client.close()
        cluster.close()
    records = [{"sweep": "gray-scott", "runner": name, "members": len(P), "first_s": t.warmup, **t.summary()}
               for name, t in timings.items()]
    lv_prob, lv_P = lv_sweep(args.lv_members)
    lv_ens = dxdt.EnsembleProblem(lv_prob, p=lv_P)
    timings = time_interleaved({
        "ensemble jax": lambda: dxdt.solve(lv_ens, Tsit5(), backend="jax", saveat=LV_TS, **LV_TOL),
        "handwritten vmap": handwritten_vmap(lv_prob, lv_P)}, repeats=15, warmup=2)
    records += [{"sweep": "lotka-volterra", "runner": name, "members": len(lv_P), "first_s": t.warmup,
                 **t.summary()} for name, t in timings.items()]
    load_end = load_average()
    for r in records:
        print(f"  {r['sweep']:>14} {r['runner']:<20} median {fmt_time(r['median_s']):>9}  "
              f"min {fmt_time(r['min_s']):>9}")
    results = goals(records, [])
    for text, ok, value in results:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}: {value}")
    print(f"load average: start {load_start}, end {load_end}")
    write_json(RESULTS_DIR / "ensembles_interleaved.json", records, benchmark="ensembles_interleaved",
               settings={"gs_members": args.gs_members, "lv_members": args.lv_members, "rounds": args.repeats,
                         "lv_rounds": 15}, load_start=load_start,
               load_end=load_end, goals=[{"goal": g, "pass": ok, "value": v} for g, ok, v in results])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lv-members", type=int, default=2000)
    parser.add_argument("--gs-members", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 LV members, 16 GS members, 1 repeat")
    parser.add_argument("--out", default=str(RESULTS_DIR / "ensembles.json"))
    parser.add_argument("--interleaved", action="store_true",
                        help="only serial / processes / Dask on Gray-Scott, timed round-robin")
    add_blas_threads_option(parser)
    args = parser.parse_args(argv)
    if args.interleaved:
        return interleaved_executors(args)
    if args.quick:
        args.lv_members, args.gs_members, args.repeats = 200, 16, 1
    load_start = load_average()
    print(f"load average at start: {load_start}")
    cases, records, references = sweeps(args), [], {}
    run_numpy(cases, args.repeats, records, references)
    memory = reduction_memory([max(40, args.lv_members // 20), max(160, args.lv_members // 5)])
    cluster_start_s = run_dask(cases, args.repeats, records)
    run_jax(cases, args.repeats, records, references)
    load_end = load_average()
    rows = [(r["sweep"], r["runner"], r["members"], fmt_time(r["first_s"]), fmt_time(r["median_s"]),
             r.get("lockstep") and f"{r['lockstep']:.2f}") for r in records]
    print(format_table(rows, ["sweep", "runner", "members", "first", "median", "lockstep"]))
    results = goals(records, memory)
    for text, ok, value in results:
        print(f"[{'PASS' if ok else 'FAIL'}] {text}: {value}")
    print(f"load average: start {load_start}, end {load_end}; Dask cluster start {cluster_start_s:.1f} s")
    write_json(args.out, records, benchmark="ensembles", settings=vars(args), load_start=load_start,
               load_end=load_end, memory=memory, cluster_start_s=cluster_start_s,
               goals=[{"goal": g, "pass": ok, "value": v} for g, ok, v in results])


if __name__ == "__main__":
    main()
