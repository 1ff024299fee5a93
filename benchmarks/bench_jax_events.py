"""``sens.jax_solve`` through dosing events: compile time and call time against the number of doses.

Issue 9 (``jax_solve(..., events=...)``). A one-compartment model ``u' = -k u`` with an
intravenous bolus ``u += D`` at ``n`` evenly spaced times in ``[0, 2)`` (``TimeEvent``),
saved at 9 times; ``L(p) = sum u(t_j)^2`` with ``p = (k, D)``. For ``n`` in 0 (no events),
3 and 30 and for ``F``, ``jax.grad(L)`` and ``jax.hessian(L)``:

- first call: ``jax.jit(fn).trace``, ``.lower()``, ``.compile()`` of a newly built ``F``
  (JAX's caches cleared), median of the repeats;
- call: the compiled function, median of 30 calls.

The segments between doses run in one ``lax.scan`` (one solve in the compiled program),
so the first call should not grow with ``n``; the call grows with the solves.

Run: ``.venv/bin/python benchmarks/bench_jax_events.py`` (about 3 minutes on 2 cores);
writes ``benchmarks/results/jax_events.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, fmt_time, format_table, load_average, write_json  # noqa: E402

import numpy as np  # noqa: E402

import dxdt  # noqa: E402
from dxdt import sensitivity as sens  # noqa: E402
from dxdt.sensitivity._jax import load_jax  # noqa: E402

jax, jnp = load_jax()

TS = np.linspace(0.0, 2.0, 9)
P = np.array([0.7, 0.5])


def bolus_rhs(du, u, p, t):
    du[:] = -p[0] * u


def dose(u, p, t):
    u[0] += p[1]


def build(n_doses: int):
    prob = dxdt.ODEProblem(bolus_rhs, np.array([1.0]), (0.0, 2.0), P.copy())
    events = [dxdt.TimeEvent(np.linspace(0.0, 2.0, n_doses + 1)[:-1], dose)] if n_doses else None
    F = sens.jax_solve(prob, saveat=TS, events=events, rtol=1e-8, atol=1e-10)
    u0 = jnp.array([1.0])

    def loss(p):
        return jnp.sum(F(u0, p)[:, 0] ** 2)
    return {"F": lambda p: F(u0, p), "grad": jax.grad(loss), "hessian": jax.hessian(loss)}


def measure(n_doses: int, op: str, repeats: int, calls: int) -> dict:
    stages, run = [], None
    p = jnp.asarray(P)
    for _ in range(repeats):
        jax.clear_caches()
        fn = build(n_doses)[op]
        start = time.perf_counter()
        traced = jax.jit(fn).trace(p)
        lowered = traced.lower()
        middle = time.perf_counter()
        compiled = lowered.compile()
        end = time.perf_counter()
        stages.append({"trace_lower_s": middle - start, "compile_s": end - middle, "first_s": end - start})
        run = compiled
    jax.block_until_ready(run(p))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(run(p))
        times.append(time.perf_counter() - start)
    return {
        "n_doses": n_doses, "op": op,
        "first_s": statistics.median(s["first_s"] for s in stages),
        "trace_lower_s": statistics.median(s["trace_lower_s"] for s in stages),
        "compile_s": statistics.median(s["compile_s"] for s in stages),
        "first_samples": stages, "call_s": statistics.median(times), "calls": calls,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--doses", type=int, nargs="+", default=[0, 3, 30])
    args = parser.parse_args(argv)
    load_start = load_average()
    records = []
    for n in args.doses:
        for op in ("F", "grad", "hessian"):
            rec = measure(n, op, args.repeats, 30)
            print(f"  {n:3d} doses {op:8s} first {fmt_time(rec['first_s'])}, call {fmt_time(rec['call_s'])}",
                  flush=True)
            records.append(rec)
    rows = [[r["op"], r["n_doses"], fmt_time(r["trace_lower_s"]), fmt_time(r["compile_s"]),
             fmt_time(r["first_s"]), fmt_time(r["call_s"])] for r in records]
    print(format_table(rows, ["function", "doses", "trace+lower", "XLA compile", "first call", "call"]))
    path = write_json(RESULTS_DIR / "jax_events.json", records, benchmark="jax_events",
                      settings=vars(args), load_start=load_start, load_end=load_average())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
