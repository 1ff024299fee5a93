"""``sens.jax_solve`` against hand-written diffrax, transformation by transformation.

For each problem, the loss ``L(p) = sum_k |u(t_k)|^2`` over 10 save times, and:

======================  ==============================  =====================================
transformation          dxdt (``jax_solve``)            diffrax (same run, same vector field)
======================  ==============================  =====================================
``jax.grad``            interpolating adjoint           ``RecursiveCheckpointAdjoint``
``jax.grad`` (ckpt)     ``adjoint="checkpoint"``        ``RecursiveCheckpointAdjoint``
``jax.grad`` (backsolve) ``adjoint="backsolve"``        ``BacksolveAdjoint`` (Lotka-Volterra)
``jax.jacfwd`` of ``F`` forward sensitivities           ``ForwardMode``
``jax.hessian``         forward-over-reverse            ``DirectAdjoint`` (first call, steady)
``vmap(grad)``, 64 p    interpolating adjoint           ``RecursiveCheckpointAdjoint``
nested gradient         ``grad(|grad L|^2)`` / primal   (cost ratio only)
======================  ==============================  =====================================

Both sides use the same translated right-hand side (``sens.to_jax`` of the problem's
in-place ``f``), Tsit5, the same PID coefficients, tolerances and ``max_steps``, so the
table compares strategies rather than vector fields. Goals (issue 9): first derivatives
within 1.1x of diffrax's same-strategy time (the checkpoint and backsolve rows; diffrax
has no interpolating adjoint, so the ``grad`` row compares with its default); Hessians at least 3x faster than
``DirectAdjoint`` with a first call at least 3x faster; nested gradient at most 6x the
primal. ``--quick`` runs Lotka-Volterra only, with fewer repeats.

Run: ``.venv/bin/python benchmarks/bench_jax_native.py [--quick] [--problems lv,gs,heat]``.
"""

from __future__ import annotations

import argparse
import sys

from _common import (RESULTS_DIR, blas_threads_from_argv, fmt_time, format_table, load_average,
                     time_interleaved, write_json)

blas_threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402

import dxdt  # noqa: E402
from dxdt import sensitivity as sens  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402

N_SAVE = 10
N_BATCH = 64
MAX_STEPS = 4096  # diffrax's default; DirectAdjoint's cost grows with it


def problems(names):
    cases = {
        # (name, problem, rtol, atol, with a Hessian, with backsolve: not on diffusion, whose
        # backward state solve is ill-posed: dxdt reports it, diffrax would not)
        "lv": ("Lotka-Volterra", dxdt.problems.lotka_volterra(), 1e-8, 1e-10, True, True),
        "gs": ("Gray-Scott 32", dxdt.problems.gray_scott(n=32), 1e-6, 1e-8, True, False),
        "heat": ("heat_1d(128)", dxdt.problems.heat_1d(n=128), 1e-6, 1e-8, False, False),
    }
    return [cases[n] for n in names]


def candidates(prob, rtol, atol, with_hessian, with_backsolve=False):
    import diffrax
    import jax
    import jax.numpy as jnp

    from dxdt.solvers._diffrax import pid_coefficients

    t0, t1 = prob.tspan
    ts = np.linspace(t0, t1, N_SAVE + 1)[1:]
    F = sens.jax_solve(prob, Tsit5(), saveat=ts, rtol=rtol, atol=atol, max_steps=MAX_STEPS)  # x64 on
    g = sens.to_jax(prob.f, prob.u0, prob.p)
    u0 = jnp.asarray(prob.u0)
    p = jnp.asarray(np.asarray(prob.p, dtype=float))
    pcoeff, icoeff = pid_coefficients(Tsit5())

    def diffrax_F(adjoint):
        def solve(u0, p):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, q: g(y, q, t)), diffrax.Tsit5(), t0, t1, None, u0,
                args=p, saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), max_steps=MAX_STEPS,
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff),
                adjoint=adjoint)
            return sol.ys
        return solve

    def loss_of(solve):
        return lambda p: jnp.sum(solve(u0, p) ** 2)

    L = loss_of(F)

    def dxdt_grad(adjoint):
        G = sens.jax_solve(prob, Tsit5(), saveat=ts, rtol=rtol, atol=atol, max_steps=MAX_STEPS, adjoint=adjoint)
        return jax.jit(jax.grad(loss_of(G)))
    P = p * (1.0 + 0.05 * jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (N_BATCH,) + p.shape)))
    rows = {
        "primal": {"dxdt": (jax.jit(L), p)},
        "grad": {"dxdt": (jax.jit(jax.grad(L)), p),
                 "diffrax": (jax.jit(jax.grad(loss_of(diffrax_F(diffrax.RecursiveCheckpointAdjoint())))), p)},
        "grad (checkpoint)": {
            "dxdt": (dxdt_grad("checkpoint"), p),
            "diffrax": (jax.jit(jax.grad(loss_of(diffrax_F(diffrax.RecursiveCheckpointAdjoint())))), p)},
        "jacfwd": {"dxdt": (jax.jit(jax.jacfwd(lambda p: F(u0, p))), p),
                   "diffrax": (jax.jit(jax.jacfwd(lambda p: diffrax_F(diffrax.ForwardMode())(u0, p))), p)},
        f"vmap(grad) x{N_BATCH}": {
            "dxdt": (jax.jit(jax.vmap(jax.grad(L))), P),
            "diffrax": (jax.jit(jax.vmap(jax.grad(loss_of(diffrax_F(diffrax.RecursiveCheckpointAdjoint()))))), P)},
        "nested grad": {"dxdt": (jax.jit(jax.grad(lambda p: jnp.sum(jax.grad(L)(p) ** 2))), p)},
    }
    if with_backsolve:
        rows["grad (backsolve)"] = {"dxdt": (dxdt_grad("backsolve"), p),
                                    "diffrax": (jax.jit(jax.grad(loss_of(diffrax_F(diffrax.BacksolveAdjoint())))), p)}
    if with_hessian:
        rows["hessian"] = {"dxdt": (jax.jit(jax.hessian(L)), p),
                           "diffrax": (jax.jit(jax.hessian(loss_of(diffrax_F(diffrax.DirectAdjoint())))), p)}
    return rows


def step_counts(prob, rtol, atol):
    """Steps of the primal solve and of ``jacfwd``'s one state-and-tangents solve (all
    parameter directions, tangents inside the error norm): the cause of most of the
    ``jacfwd`` gap, since diffrax's ``ForwardMode`` differentiates the primal's steps."""
    import jax
    import jax.numpy as jnp

    from dxdt.sensitivity._ode import odeint

    t0, t1 = prob.tspan
    ts = jnp.asarray(np.linspace(t0, t1, N_SAVE + 1)[1:])
    F = sens.jax_solve(prob, Tsit5(), saveat=np.asarray(ts), rtol=rtol, atol=atol, max_steps=MAX_STEPS)
    spec, u0 = F.spec, jnp.asarray(prob.u0)
    p = jnp.asarray(np.asarray(prob.p, dtype=float))
    V0, Vp = jnp.zeros((p.size,) + u0.shape), jnp.eye(p.size).reshape((p.size,) + p.shape)

    def field(t, z, q):
        u, S = z
        du, push = jax.linearize(lambda uu, qq: spec.g(uu, qq, t), u, q)
        return du, jax.vmap(push)(S, Vp)

    primal = jax.jit(lambda p: odeint(spec.rhs, u0, p, t0, t1, spec.options, ts=ts)[0].stats["num_steps"])
    stacked = jax.jit(lambda p: odeint(field, (u0, V0), p, t0, t1, spec.options, ts=ts)[0].stats["num_steps"])
    return {"primal": int(primal(p)), "jacfwd (state + tangents)": int(stacked(p))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--problems", default="lv,gs,heat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blas-threads", type=int, default=1)
    args = parser.parse_args(argv)
    names = ["lv"] if args.quick else args.problems.split(",")
    repeats = 3 if args.quick else args.repeats
    import jax

    records, table = [], []
    load_before = load_average()
    for name, prob, rtol, atol, with_hessian, with_backsolve in problems(names):
        rows = candidates(prob, rtol, atol, with_hessian, with_backsolve)
        steps = step_counts(prob, rtol, atol)
        print(f"{name}: steps {steps}", flush=True)
        records.append({"problem": name, "op": "steps", "steps": steps})
        primal = None
        for op, cands in rows.items():
            fns = {who: (lambda fn=fn, x=x: jax.block_until_ready(fn(x))) for who, (fn, x) in cands.items()}
            timings = time_interleaved(fns, repeats=repeats, warmup=1, min_total_s=0.5)
            t = {who: timing.median for who, timing in timings.items()}
            t_min = {who: timing.min for who, timing in timings.items()}
            first = {who: timing.warmup for who, timing in timings.items()}
            if op == "primal":
                primal, primal_min = t["dxdt"], t_min["dxdt"]
            ratio = t["dxdt"] / t["diffrax"] if "diffrax" in t else t["dxdt"] / primal
            # the ratio of the fastest calls: medians of a few calls on a loaded machine vary
            # by up to 3x between runs (jacfwd measured 1.5x-4.8x diffrax), minima much less
            min_ratio = t_min["dxdt"] / (t_min["diffrax"] if "diffrax" in t else primal_min)
            first_ratio = first["diffrax"] / first["dxdt"] if "diffrax" in first else None
            records.append({"problem": name, "op": op, "steady_s": t, "min_s": t_min, "first_call_s": first,
                            "ratio": ratio, "min_ratio": min_ratio, "first_call_speedup": first_ratio,
                            "load_average": load_average()})
            table.append([name, op, fmt_time(t["dxdt"]), fmt_time(t.get("diffrax")),
                          f"{ratio:.2f}" + ("" if "diffrax" in t else " (x primal)"), f"{min_ratio:.2f}",
                          fmt_time(first["dxdt"]), fmt_time(first.get("diffrax")),
                          "" if first_ratio is None else f"{first_ratio:.1f}"])
            print(table[-1], flush=True)
    header = ["problem", "transformation", "dxdt", "diffrax", "dxdt/diffrax", "ratio of minima", "dxdt 1st",
              "diffrax 1st",
              "1st speedup"]
    print(format_table(table, header))
    print(f"load average before {load_before}, after {load_average()}")
    path = RESULTS_DIR / ("jax_native_quick.json" if args.quick else "jax_native.json")
    write_json(path, records, benchmark="jax_native", settings={"quick": args.quick, "problems": names,
               "repeats": repeats, "max_steps": MAX_STEPS}, load_start=load_before, load_end=load_average())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
