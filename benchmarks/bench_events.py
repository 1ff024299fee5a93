"""Events: a bouncing ball to t = 10 and a 30-dose PK model over 15 days.

Candidates, all at rtol = 1e-8, atol = 1e-10:

- ``dxdt numpy``: ``dxdt.solve(..., events=[...])`` (``Event`` with an affect for the
  ball, ``TimeEvent`` for the doses), Tsit5;
- ``dxdt jax``: the same with ``backend="jax"`` (the ball: one compiled call per bounce
  that integrates and locates it, then the compiled affect; the doses: one compiled call
  over the dose schedule). The first call's compile time is reported separately, cold
  (the benchmark uses a fresh compiled-code cache), and so is the same call once the
  programs are dropped from memory: they then load from the disk cache, as in a rerun
  of the script (JAX's own start-up excluded);
- ``scipy DOP853``: ``solve_ivp`` with a terminal event restarted by hand after each
  bounce (scipy cannot change the state), or solved dose interval by dose interval;
- ``diffrax loop``: a jitted ``diffeqsolve`` (Tsit5) with ``diffrax.Event`` and a Newton
  root finder, restarted from Python after each bounce / dose (compiled once; the first
  call's compile time is reported separately).

Errors: the ball's bounce times against the closed form ``t_k = t_1 (1 + 2e + ... + 2e^(k-1))``;
the PK central amount at 15 days against the sum of Bateman functions.

Gradient cost: a prepared ``value_and_gradient`` through the doses (forward, and reverse
with the default adjoint and the discrete one) of a least-squares loss on the PK model, relative to one NumPy
primal solve of the same problem and to the same primal compiled (``jax.jit`` of
``sens.jax_solve`` with the doses: one ``lax.scan`` over the segments, as the operators
use); with ``--quick``, 10 doses over 5 days instead of 30 over 15. The same through
a ball's 6 bounces (state events: every call re-plans with a NumPy solve), forward,
reverse and the discrete adjoint, against the NumPy primal and ``jax_solve`` jitted.

Run: ``.venv/bin/python benchmarks/bench_events.py [--quick] [--repeats N]``; prints a
table and writes ``benchmarks/results/events.json`` with the load average.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import blas_threads_from_argv, format_table, fmt_float, fmt_time, load_average, set_blas_threads
from _common import time_median, write_json

set_blas_threads(blas_threads_from_argv(sys.argv[1:]))
os.environ["DXDT_CACHE_DIR"] = tempfile.mkdtemp(prefix="dxdt-bench-events-")  # cold first calls

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import dxdt  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402

G, H0, E, T_BALL = 9.81, 1.0, 0.95, 10.0
KA, CL, V, DOSE = 1.0, 5.0, 50.0, 100.0
RTOL, ATOL = 1e-8, 1e-10
RESULTS = Path(__file__).resolve().parent / "results" / "events.json"


def ball_exact(n: int) -> np.ndarray:
    t1 = math.sqrt(2 * H0 / G)
    return t1 * (1 + 2 * np.concatenate(([0.0], np.cumsum(E ** np.arange(1, n)))))


def fall(du, u, p, t):
    du[0] = u[1]
    du[1] = -G


def pk(du, u, p, t):
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] / p[2] * u[1]


def pk_exact(t_end: float, doses: np.ndarray) -> float:
    ke = CL / V
    return sum(DOSE * KA / (KA - ke) * (math.exp(-ke * (t_end - td)) - math.exp(-KA * (t_end - td)))
               for td in doses)


def from_disk(call) -> float:
    """Seconds of ``call()`` with dxdt's compiled programs dropped from memory (they load
    from the disk cache, as in a rerun of the script)."""
    from dxdt import sensitivity as sens

    sens.clear_cache(disk=False)
    tic = time.perf_counter()
    call()
    return time.perf_counter() - tic


# ---------------------------------------------------------------- bouncing ball
BALL = dxdt.ODEProblem(fall, [H0, 0.0], (0.0, T_BALL), p=np.array([E]))
FLOOR = dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: u.__setitem__(1, -p[0] * u[1]), direction=-1)


def ball_dxdt(backend: str = "numpy"):
    return dxdt.solve(BALL, Tsit5(), rtol=RTOL, atol=ATOL, events=[FLOOR], backend=backend).t_events[0]


def ball_scipy():
    def floor(t, y):
        return y[0]
    floor.terminal, floor.direction = True, -1
    t, y, times = 0.0, np.array([H0, 0.0]), []
    while t < T_BALL:
        sol = solve_ivp(lambda t, y: [y[1], -G], (t, T_BALL), y, method="DOP853", rtol=RTOL, atol=ATOL,
                        events=floor)
        if sol.status != 1:
            break
        t, y = sol.t_events[0][0], sol.y_events[0][0].copy()
        times.append(t)
        y[0], y[1] = 0.0, -E * y[1]
    return np.array(times)


def make_ball_diffrax():
    import diffrax
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    jax.config.update("jax_enable_x64", True)
    term = diffrax.ODETerm(lambda t, y, args: jnp.stack([y[1], -G]))
    event = diffrax.Event(lambda t, y, args, **kw: y[0], root_finder=optx.Newton(rtol=1e-12, atol=1e-12),
                          direction=False)
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    @jax.jit
    def segment(t0, y0):
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), t0, T_BALL, None, y0, event=event,
                                  stepsize_controller=controller, max_steps=100_000)
        return sol.ts[-1], sol.ys[-1], sol.event_mask

    def run():
        t, y, times = 0.0, jnp.array([H0, 0.0]), []
        while t < T_BALL:
            t_new, y_new, hit = jax.device_get(segment(t, y))
            if not hit:
                break
            times.append(float(t_new))
            # restart from the floor, moving up (the root is on the far side by rounding)
            t, y = float(t_new), jnp.array([0.0, -E * float(y_new[1])])
        return np.array(times)
    return run


# ---------------------------------------------------------------- PK, 30 doses
def pk_problem(days: float):
    return dxdt.ODEProblem(pk, np.zeros(2), (0.0, 24.0 * days), p=np.array([KA, CL, V]))


def pk_dose_times(days: float) -> np.ndarray:
    return np.arange(0.0, 24.0 * days, 12.0)


def give_dose(u, p, t):
    u[0] += DOSE


def pk_dxdt(days: float, backend: str = "numpy"):
    dose = dxdt.TimeEvent(pk_dose_times(days), give_dose)
    return dxdt.solve(pk_problem(days), Tsit5(), rtol=RTOL, atol=ATOL, events=[dose], saveat=[24.0 * days],
                      backend=backend).u[-1, 1]


def pk_scipy(days: float):
    y, doses = np.zeros(2), pk_dose_times(days)
    ends = np.append(doses[1:], 24.0 * days)
    for start, end in zip(doses, ends):
        y[0] += DOSE
        y = solve_ivp(lambda t, y: [-KA * y[0], KA * y[0] - CL / V * y[1]], (start, end), y, method="DOP853",
                      rtol=RTOL, atol=ATOL).y[:, -1].copy()
    return y[1]


def make_pk_diffrax(days: float):
    import diffrax
    import jax
    import jax.numpy as jnp

    term = diffrax.ODETerm(lambda t, y, args: jnp.stack([-KA * y[0], KA * y[0] - CL / V * y[1]]))
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    @jax.jit
    def segment(t0, t1, y0):
        y0 = y0.at[0].add(DOSE)
        return diffrax.diffeqsolve(term, diffrax.Tsit5(), t0, t1, None, y0, stepsize_controller=controller,
                                   max_steps=100_000).ys[-1]

    doses = pk_dose_times(days)
    ends = np.append(doses[1:], 24.0 * days)

    def run():
        y = jnp.zeros(2)
        for start, end in zip(doses, ends):
            y = segment(start, end, y)
        return float(y[1])
    return run


def gradient_cost(days: float, repeats: int) -> list[dict]:
    prob = pk_problem(days)
    dose = dxdt.TimeEvent(pk_dose_times(days), lambda u, p, t: u.__setitem__(0, u[0] + DOSE))
    ts = np.linspace(1.0, 24.0 * days, 4 * int(days) + 1)
    data = 1.1 * dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, saveat=ts, events=[dose]).u[:, 1]

    def loss(u):
        return np.sum((u[:, 1] - data) ** 2)

    # the compiled primal: jax_solve's chain (one lax.scan over the doses), jitted
    return _gradient_records(f"pk {int(days)} days", prob, [dose], ts, loss, "jax_solve primal (jit)",
                             (("forward", "interpolating"), ("reverse", "interpolating"), ("reverse", "checkpoint")),
                             repeats)


def ball_gradient_cost(repeats: int) -> list[dict]:
    """Prepared ``value_and_gradient`` through a ball bouncing 6 times (t <= 3, e = 0.8,
    15 saves), in the restitution: forward, reverse (interpolating) and the discrete
    adjoint; each call re-plans the bounces with a NumPy solve and passes the planned times
    to one compiled program (its segments in one ``lax.scan``)."""
    prob = dxdt.ODEProblem(fall, np.array([H0, 0.0]), (0.0, 3.0), np.array([0.8]))

    def loss(u):
        return np.sum(u[:, 0] ** 2)

    return _gradient_records("ball 6 bounces, gradient", prob, [FLOOR], np.linspace(0.1, 2.9, 15), loss,
                             "jax_solve primal (jit, re-plans)",
                             (("forward", "interpolating"), ("reverse", "interpolating"), ("reverse", "checkpoint")),
                             repeats)


def _gradient_records(case: str, prob, events: list, ts, loss, compiled_what: str, strategies, repeats: int):
    """Records of a prepared ``value_and_gradient`` through ``events`` for each ``(mode,
    adjoint)`` of ``strategies``, against one NumPy primal solve and the same primal
    compiled (``jax.jit`` of ``sens.jax_solve`` with the events). A record names its
    adjoint when ``strategies`` hold more than one."""
    from dxdt import sensitivity as sens

    import jax
    import jax.numpy as jnp

    primal = time_median(lambda: dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, saveat=ts, events=events),
                         repeats=repeats)
    records = [{"case": case, "what": "numpy primal", "median_s": primal.median}]
    tic = time.perf_counter()
    F = sens.jax_solve(prob, Tsit5(), saveat=ts, events=events, rtol=RTOL, atol=ATOL)
    u0, p = jnp.asarray(prob.u0), jnp.asarray(prob.p)
    compiled = jax.jit(F).lower(u0, p).compile()
    compile_s = time.perf_counter() - tic
    jitted = time_median(lambda: np.asarray(compiled(u0, p)), repeats=max(repeats, 100))
    records.append({"case": case, "what": compiled_what, "median_s": jitted.median, "prepare_s": compile_s})
    for mode, adjoint in strategies:
        tic = time.perf_counter()
        prep = sens.prepare("value_and_gradient", loss, prob, Tsit5(), saveat=ts, events=events,
                            rtol=RTOL, atol=ATOL, mode=mode, adjoint=adjoint)
        prepare_s = time.perf_counter() - tic
        timing = time_median(lambda: prep(prob.p), repeats=max(repeats, 100))
        several = len({a for _, a in strategies}) > 1
        what = f"value_and_gradient {prep.mode}" + (f" {prep.adjoint}" if several and prep.adjoint else "")
        records.append({"case": case, "what": what, "median_s": timing.median, "prepare_s": prepare_s,
                        "ratio_to_primal": timing.median / primal.median,
                        "ratio_to_compiled_primal": timing.median / jitted.median})
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="gradient cost on 10 doses instead of 30")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blas-threads", type=int, default=1)
    args = parser.parse_args(argv)
    load_start = load_average()
    records = []

    exact = ball_exact(64)
    candidates = {"dxdt numpy": ball_dxdt, "scipy DOP853": ball_scipy}
    first_call = {}
    tic = time.perf_counter()
    ball_dxdt("jax")
    candidates["dxdt jax"] = lambda: ball_dxdt("jax")
    first_call["dxdt jax"] = time.perf_counter() - tic
    rerun = {"dxdt jax": from_disk(lambda: ball_dxdt("jax"))}
    tic = time.perf_counter()
    diffrax_run = make_ball_diffrax()
    diffrax_run()
    candidates["diffrax loop"] = diffrax_run
    first_call["diffrax loop"] = time.perf_counter() - tic
    for name, fn in candidates.items():
        times = fn()
        timing = time_median(fn, repeats=args.repeats)
        error = float(np.max(np.abs(times - exact[:len(times)])))
        records.append({"case": "bouncing ball t<=10", "what": name, "median_s": timing.median,
                        "bounces": len(times), "error": error, "first_call_s": first_call.get(name),
                        "from_disk_s": rerun.get(name)})

    days = 15.0
    reference = pk_exact(24.0 * days, pk_dose_times(days))
    candidates = {"dxdt numpy": lambda: pk_dxdt(days), "scipy DOP853": lambda: pk_scipy(days)}
    first_call = {}
    tic = time.perf_counter()
    pk_dxdt(days, "jax")
    candidates["dxdt jax"] = lambda: pk_dxdt(days, "jax")
    first_call["dxdt jax"] = time.perf_counter() - tic
    rerun = {"dxdt jax": from_disk(lambda: pk_dxdt(days, "jax"))}
    tic = time.perf_counter()
    diffrax_pk = make_pk_diffrax(days)
    diffrax_pk()
    candidates["diffrax loop"] = diffrax_pk
    first_call["diffrax loop"] = time.perf_counter() - tic
    for name, fn in candidates.items():
        timing = time_median(fn, repeats=args.repeats)
        error = abs(fn() - reference) / reference
        records.append({"case": "pk 30 doses", "what": name, "median_s": timing.median,
                        "error": error, "first_call_s": first_call.get(name), "from_disk_s": rerun.get(name)})

    records += gradient_cost(5.0 if args.quick else 15.0, max(3, args.repeats // 2))
    records += ball_gradient_cost(max(3, args.repeats // 2))
    load_end = load_average()
    rows = [(r["case"], r["what"], fmt_time(r["median_s"]), fmt_float(r.get("error")),
             r.get("bounces", ""), fmt_time(r.get("first_call_s") or r.get("prepare_s")),
             fmt_time(r.get("from_disk_s")),
             fmt_float(r.get("ratio_to_primal"), ".2f"), fmt_float(r.get("ratio_to_compiled_primal"), ".1f"))
            for r in records]
    print(format_table(rows, ["case", "candidate", "median", "error", "bounces", "compile/prepare", "from disk",
                              "x numpy primal", "x compiled primal"]))
    print(f"load average: start {load_start}, end {load_end}")
    path = write_json(RESULTS, records, benchmark="events",
                      settings={"rtol": RTOL, "atol": ATOL, "quick": args.quick, "repeats": args.repeats},
                      load_start=load_start, load_end=load_end)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
