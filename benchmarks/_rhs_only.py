"""``bench_jax.py --rhs-only``: the translated right-hand side against hand-written JAX.

Issue 8, item 4: does the translation of stencil-style in-place NumPy code (window writes
``out[1:] += a[:-1]``, scratch buffers, ``np.multiply(a, b, out=c)`` chains) compile to
code as fast as the same model written with ``jnp.roll`` and slicing? For each model:

- ``rhs``: one call of ``jax.jit(to_jax(f, u0, p))`` against the jitted hand-written
  field, per call (blocks of calls timed round-robin, median and min over the blocks);
  the jaxpr's count of ``dynamic_update_slice``/``scatter`` (write chains XLA does not
  fuse) and ``concatenate``; the fusions of the optimized HLO and its census of
  elementwise, slice, concatenate, update and copy ops (``HLO ops``);
- ``solve``: time per step of a full ``Tsit5`` solve: the hand-written
  ``diffrax.diffeqsolve`` around ``to_jax(f)`` and ``dxdt.solve(backend="jax")``, both
  against the same ``diffeqsolve`` around the hand-written field (steps = accepted +
  rejected; the fields agree to rounding, so the step counts agree).

Models: Gray-Scott n = 64 and 128 (``dxdt.problems.gray_scott``), ``heat_1d``,
``brusselator``, ``gierer_meinhardt``, and a user-written Gray-Scott whose Laplacian is
nine window increments (``np.multiply(a, -4, out=out); out[1:] += a[:-1]; out[0] +=
a[-1]; ...``).
"""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import dxdt
from dxdt.sensitivity import to_jax
from dxdt.sensitivity._jax import load_jax
from dxdt.solvers import Tsit5

jax, jnp = load_jax()
import diffrax  # noqa: E402

WRITE_CHAINS = ("dynamic_update_slice", "scatter", "scatter-add")
HLO_OPS = ("add", "subtract", "negate", "multiply", "divide", "slice", "concatenate",
           "dynamic-update-slice", "scatter", "copy")  # counted in the optimized HLO
MAX_STEPS = 100_000


def _roll_laplacian(a):
    return (jnp.roll(a, 1, axis=0) + jnp.roll(a, -1, axis=0)
            + jnp.roll(a, 1, axis=1) + jnp.roll(a, -1, axis=1) - 4.0 * a)


def make_heat_vf(n: int) -> Callable:
    """``heat_1d``'s finite volumes by slicing: face fluxes joined with the zero wall fluxes.

    (``jnp.pad(interior, 1)`` instead of the concatenation runs 2-4x slower on XLA:CPU.)
    """
    half_inv_dx2 = 0.5 * n * n
    wall = jnp.zeros(1)

    def heat_vf(t, y, p):
        interior = (p[:-1] + p[1:]) * half_inv_dx2 * (y[1:] - y[:-1])
        flux = jnp.concatenate([wall, interior, wall])
        return flux[1:] - flux[:-1]
    return heat_vf


def make_brusselator_vf(n: int) -> Callable:
    """``brusselator`` with the ``jnp.roll`` Laplacian."""
    from dxdt.problems._brusselator import FORCING_TIME, forcing_field

    inv_dx2 = (n - 1) ** 2.0
    forcing = jnp.asarray(forcing_field(n))

    def brusselator_vf(t, y, p):
        A, B, alpha = p[0], p[1], p[2]
        U, V = y[0], y[1]
        uuv = U * U * V
        dU = U * -(A + 1.0) + uuv + B + _roll_laplacian(U) * (alpha * inv_dx2) + forcing * (t >= FORCING_TIME)
        dV = U * A - uuv + _roll_laplacian(V) * (alpha * inv_dx2)
        return jnp.stack([dU, dV])
    return brusselator_vf


def make_gierer_meinhardt_vf(n: int) -> Callable:
    """``gierer_meinhardt`` with the same dense second-difference matrices."""
    from dxdt.problems._gierer_meinhardt import second_difference_matrices

    Ax, Ay = (jnp.asarray(m) for m in second_difference_matrices(n))

    def gierer_meinhardt_vf(t, y, p):
        a, alpha, ubar, beta, D1, D2 = (p[i] for i in range(6))
        u, v = y[0], y[1]
        du = (u / v * a - alpha) * u + ubar + (Ay @ u + u @ Ax) * D1
        dv = (u / v * u * a - beta) * v + (Ay @ v + v @ Ax) * D2
        return jnp.stack([du, dv])
    return gierer_meinhardt_vf


def make_window_gray_scott(n: int) -> Callable:
    """A user-written Gray-Scott ``f``: the Laplacian as nine window increments."""
    lap_u, lap_v, uvv = np.empty((n, n)), np.empty((n, n)), np.empty((n, n))

    def laplacian(a, out):
        np.multiply(a, -4, out=out)
        out[1:] += a[:-1]
        out[0] += a[-1]
        out[:-1] += a[1:]
        out[-1] += a[0]
        out[:, 1:] += a[:, :-1]
        out[:, 0] += a[:, -1]
        out[:, :-1] += a[:, 1:]
        out[:, -1] += a[:, 0]

    def window_gray_scott_rhs(du, u, p, t):
        Du, Dv, F, k = p
        U, V = u[0], u[1]
        laplacian(U, lap_u)
        laplacian(V, lap_v)
        np.multiply(V, V, out=uvv)
        np.multiply(uvv, U, out=uvv)
        du[0] = Du * lap_u - uvv + F * (1.0 - U)
        du[1] = Dv * lap_v + uvv - (F + k) * V

    return window_gray_scott_rhs


@dataclass(frozen=True)
class RhsModel:
    name: str
    make: Callable[[], dxdt.ODEProblem]
    make_vf: Callable[[], Callable]  # hand-written vf(t, y, p)
    rtol: float = 1e-6
    atol: float = 1e-8


def models(make_gs_vf: Callable[[], Callable]) -> list[RhsModel]:
    """The models of the section; ``make_gs_vf`` is bench_jax's hand-written Gray-Scott."""
    gs = dxdt.problems.gray_scott

    def window(n):
        prob = gs(n=n, tspan=(0.0, 200.0))
        return dxdt.ODEProblem(make_window_gray_scott(n), prob.u0, prob.tspan, prob.p)

    return [
        RhsModel("gray_scott_64", lambda: gs(n=64, tspan=(0.0, 200.0)), make_gs_vf),
        RhsModel("gray_scott_128", lambda: gs(n=128, tspan=(0.0, 200.0)), make_gs_vf),
        RhsModel("gray_scott_64_window_writes", lambda: window(64), make_gs_vf),
        RhsModel("heat_1d_256", lambda: dxdt.problems.heat_1d(n=256), lambda: make_heat_vf(256)),
        RhsModel("brusselator_32", lambda: dxdt.problems.brusselator(n=32, tspan=(0.0, 0.02)),
                 lambda: make_brusselator_vf(32)),
        RhsModel("gierer_meinhardt_64", lambda: dxdt.problems.gierer_meinhardt(n=64),
                 lambda: make_gierer_meinhardt_vf(64)),
    ]


def _primitives(fn, *args) -> collections.Counter:
    """Primitive counts of the jaxpr of ``fn(*args)``, sub-jaxprs (``jnp.roll``'s) included."""
    counts: collections.Counter = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


def _hlo_ops(jitted, *args) -> dict[str, int]:
    """Counts of fusions and of the :data:`HLO_OPS` in the optimized HLO of ``jitted(*args)``."""
    lines = [line for line in jitted.lower(*args).compile().as_text().splitlines() if " = " in line]
    return {op: sum(1 for line in lines if f" {op}(" in line) for op in ("fusion",) + HLO_OPS}


def _per_call(fns: dict[str, Callable[[], Any]], rounds: int, block_s: float) -> dict[str, list[float]]:
    """Round-robin blocks of calls of each candidate; seconds per call of every block."""
    calls = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn())
        start = time.perf_counter()
        jax.block_until_ready(fn())
        calls[name] = max(1, int(block_s / max(time.perf_counter() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            jax.block_until_ready(fn())
            start = time.perf_counter()
            for _ in range(calls[name]):
                out = fn()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / calls[name])
    return times


def _hand_solve(vf: Callable, prob, rtol: float, atol: float, pcoeff: float, icoeff: float) -> Callable:
    term = diffrax.ODETerm(vf)
    controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff)
    t0, t1 = (float(x) for x in prob.tspan)

    @jax.jit
    def solve(y0, p):
        return diffrax.diffeqsolve(term, diffrax.Tsit5(), t0, t1, None, y0, args=p,
                                   saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
                                   max_steps=MAX_STEPS)
    return solve


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times)}


def bench_model(model: RhsModel, rounds: int, block_s: float, pcoeff: float, icoeff: float, log) -> dict:
    """Per-call and per-step times of the translated field against the hand-written one."""
    prob = model.make()
    u0, p, t0 = jnp.asarray(prob.u0), jnp.asarray(prob.p), float(prob.tspan[0])
    g = to_jax(prob.f, prob.u0, prob.p)
    vf = model.make_vf()
    jg, jv = jax.jit(g), jax.jit(lambda u, q, t: vf(t, u, q))
    ref = np.empty_like(prob.u0)
    prob.f(ref, prob.u0.copy(), prob.p, t0)
    scale = float(np.max(np.abs(ref)))
    counts = _primitives(lambda u: g(u, p, t0), u0)
    record: dict[str, Any] = {
        "problem": model.name, "state": list(prob.u0.shape),
        "translated_vs_numpy": float(np.max(np.abs(np.asarray(jg(u0, p, t0)) - ref))) / scale,
        "hand_vs_numpy": float(np.max(np.abs(np.asarray(jv(u0, p, t0)) - ref))) / scale,
        "write_chains": sum(counts[name] for name in WRITE_CHAINS),
        "concatenate": counts["concatenate"],
        "concatenate_hand": _primitives(lambda u: vf(t0, u, p), u0)["concatenate"],
        "hlo": _hlo_ops(jg, u0, p, t0), "hlo_hand": _hlo_ops(jv, u0, p, t0),
    }
    rhs = _per_call({"translated": lambda: jg(u0, p, t0), "hand": lambda: jv(u0, p, t0)}, rounds, block_s)
    record["rhs_translated"], record["rhs_hand"] = _summary(rhs["translated"]), _summary(rhs["hand"])

    hand = _hand_solve(lambda t, y, q: vf(t, y, q), prob, model.rtol, model.atol, pcoeff, icoeff)
    hand_g = _hand_solve(lambda t, y, q: g(y, q, t), prob, model.rtol, model.atol, pcoeff, icoeff)
    kw = dict(rtol=model.rtol, atol=model.atol, saveat=[float(prob.tspan[1])])
    sol = dxdt.solve(prob, Tsit5(), backend="jax", **kw)
    steps = {
        "hand": int(sum(hand(u0, p).stats[k] for k in ("num_accepted_steps", "num_rejected_steps"))),
        "hand_solve_translated": int(sum(hand_g(u0, p).stats[k]
                                         for k in ("num_accepted_steps", "num_rejected_steps"))),
        "dxdt_solve": int(sol.stats["naccept"] + sol.stats["nreject"]),
    }
    solves = {
        "hand": lambda: hand(u0, p).ys,
        "hand_solve_translated": lambda: hand_g(u0, p).ys,
        "dxdt_solve": lambda: np.asarray(dxdt.solve(prob, Tsit5(), backend="jax", **kw).u),
    }
    per_solve = _per_call(solves, rounds, 0.0)
    for name, times in per_solve.items():
        record[f"step_{name}"] = _summary([s / steps[name] for s in times]) | {"steps": steps[name]}
    hand_rhs, hand_step = record["rhs_hand"]["median_s"], record["step_hand"]["median_s"]
    record["rhs_ratio"] = record["rhs_translated"]["median_s"] / hand_rhs
    record["rhs_ratio_min"] = record["rhs_translated"]["min_s"] / record["rhs_hand"]["min_s"]
    record["step_ratio_translated"] = record["step_hand_solve_translated"]["median_s"] / hand_step
    record["step_ratio_dxdt_solve"] = record["step_dxdt_solve"]["median_s"] / hand_step
    log(f"[rhs-only {model.name}] rhs x{record['rhs_ratio']:.3f}, step (hand solve around g) "
        f"x{record['step_ratio_translated']:.3f}, step (dxdt.solve) x{record['step_ratio_dxdt_solve']:.3f}")
    return record


def bench(make_gs_vf: Callable, rounds: int, block_s: float, pcoeff: float, icoeff: float, log,
          names: list[str] | None = None) -> list[dict]:
    """Records of :func:`bench_model` for every model (or those named)."""
    chosen = [m for m in models(make_gs_vf) if names is None or m.name in names]
    return [bench_model(m, rounds, block_s, pcoeff, icoeff, log) for m in chosen]


def table(records: list[dict], fmt_time: Callable[[float], str], format_table: Callable) -> str:
    header = ["problem", "rhs dxdt", "rhs hand", "x hand", "x hand min", "dus+scatter",
              "concat (hand)", "fusions (hand)", "HLO ops (hand)", "step g/hand",
              "step dxdt.solve/hand", "steps", "max|g-f|/max|f|"]
    rows = []
    for r in records:
        rows.append([
            r["problem"], fmt_time(r["rhs_translated"]["median_s"]), fmt_time(r["rhs_hand"]["median_s"]),
            f"{r['rhs_ratio']:.3f}", f"{r['rhs_ratio_min']:.3f}", r["write_chains"],
            f"{r['concatenate']} ({r['concatenate_hand']})",
            f"{r['hlo']['fusion']} ({r['hlo_hand']['fusion']})",
            f"{sum(r['hlo'][op] for op in HLO_OPS)} ({sum(r['hlo_hand'][op] for op in HLO_OPS)})",
            f"{r['step_ratio_translated']:.3f}", f"{r['step_ratio_dxdt_solve']:.3f}",
            r["step_hand"]["steps"], f"{r['translated_vs_numpy']:.1e}",
        ])
    return format_table(rows, header, align="lrrrrrrrrrrrr")
