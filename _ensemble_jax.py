"""``solve(ensemble, backend="jax")``: members as vectorised, compiled diffrax batches.

The members' ``f`` is translated to JAX once; a diffrax solve of one member is
``jax.vmap``-ed over the member axis and compiled once per batch width. Every lane keeps
its own step size, step count and status (a failing member cannot stop the others:
``throw=False`` inside, statuses mapped on the host as for a solo JAX solve).

Lockstep. A vectorised ``while`` loop runs until its slowest lane finishes, so a batch
costs ``width * max(steps)`` lane-steps for ``sum(steps)`` useful ones; the ratio is
reported as ``stats["lockstep"]``. When the members do not fit in one batch, a cheap
pilot (tolerances loosened by ``PILOT_LOOSEN``, at most ``PILOT_MAX_STEPS`` steps,
final state only) estimates each member's step count, and members are batched in
decreasing order of that estimate if it cuts the estimated lane-steps by ``GROUPING_GAIN``
(torchode's per-sample control makes results independent of the batch's
composition; grouping only changes which members run together).

Devices. With several local devices the member axis is sharded over them with
``jax.shard_map``: each device runs its own loop over its own lanes.

Compiled batches are :class:`~dxdt.sensitivity._compiled.Program` objects found again
through :func:`~dxdt.sensitivity._compiled.lookup` (in memory, or on disk in a later
process), keyed by the code of ``f`` and the values it reads, the shapes of a batch's
arguments and the options; a closure array ``f`` reads and the user changed in place
misses, so the next solve traces ``f`` again and never sees a stale constant.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from ._ensemble import tree_leaves, tree_map
from ._problem import ODEProblem, as_state
from ._solution import Solution
from .solvers import AbstractStabilized

DEFAULT_JAX_BATCH = 4096  # members per compiled batch by default
PILOT_LOOSEN = 1e3  # the pilot's tolerances are this much looser (capped at rtol 1e-2)
PILOT_MAX_STEPS = 256  # pilot steps per member at most: stiff members saturate it
GROUPING_GAIN = 0.95  # group by the pilot's estimate when it saves >= 5% of the lane-steps (the
# pilot is paid by then and reordering costs nothing; the margin absorbs the estimate's noise)


@dataclass
class _Lanes:
    """The members as stacked arrays: ``u0`` ``(n, *shape)``, ``p`` (a pytree, batched on
    axis 0 when ``p_batched``), ``t0``/``t1`` ``(n,)``; ``template`` is member 0."""

    template: ODEProblem
    u0: np.ndarray
    p: Any
    p_batched: bool
    t0: np.ndarray
    t1: np.ndarray

    def __len__(self) -> int:
        return len(self.u0)

    def take(self, idx: np.ndarray) -> tuple:
        p = tree_map(lambda leaf, path: leaf[idx], self.p) if self.p_batched else self.p
        return self.u0[idx], p, self.t0[idx], self.t1[idx]


def run_jax_batches(ens, method, batch_size, options: dict) -> Iterator:
    """Solve ``ens`` in vectorised JAX batches; yields ``(indices, members, stats)``."""
    from . import _checks
    from ._ensemble import make_batches
    from .solvers import Tsit5

    method = Tsit5() if method is None else _checks.check_method(method)
    first = ens.member(0)
    opts = _check_options(first, method, options)
    lanes = _from_batches(ens, first) if ens.prob_func is None else _from_members(ens)
    if opts["saveat"] is not None:
        for t0, t1 in {(a, b) for a, b in zip(lanes.t0.tolist(), lanes.t1.tolist())}:
            _checks.check_saveat(opts["saveat"], (t0, t1))
    _checks.first_derivative_on_duplicate(_checks.inplace_rhs(first), first)
    if batch_size is not None:
        make_batches(len(ens), batch_size, 1)  # validates batch_size
    return _run(lanes, method, opts, batch_size or min(len(lanes), DEFAULT_JAX_BATCH))


def _from_batches(ens, first: ODEProblem) -> _Lanes:
    """Lanes straight from the batches (no member problems built)."""
    n, prob = len(ens), ens.prob
    if ens._u0 is not None:
        u0 = as_state(ens._u0, "u0 batch")
        if u0.shape[1:] != first.u0.shape or u0.dtype != first.u0.dtype:
            raise ValueError(f"backend='jax' needs the u0 batch of shape (members, *state) of one dtype, "
                             f"got {u0.shape} {u0.dtype}")
    else:
        u0 = np.broadcast_to(prob.u0, (n,) + prob.u0.shape)
    if ens._tspan is not None:
        t0, t1 = (np.asarray(ens._tspan[:, k], np.float64) for k in (0, 1))
        for i in np.flatnonzero(~np.isfinite(t0) | ~np.isfinite(t1) | (t0 == t1))[:1]:
            ens.member(int(i))  # raises the member's own tspan error
    else:
        t0, t1 = np.full(n, prob.tspan[0]), np.full(n, prob.tspan[1])
    batched = ens._p is not None
    from ._backend_jax import as_numpy

    shared = as_numpy(prob.p)  # as a solo JAX solve passes it (None stays None)
    return _Lanes(first, u0, ens._p if batched else shared, batched, t0, t1)


def _from_members(ens) -> _Lanes:
    """Lanes from the member problems (``prob_func`` may change anything)."""
    members = [ens.member(i) for i in range(len(ens))]
    first, signature = members[0], _signature(members[0])
    for i, m in enumerate(members):
        if m.f is not first.f or _signature(m) != signature:
            raise ValueError(
                f"backend='jax' vectorises members that share f and the shapes of u0 and p; member {i} "
                f"differs from member 0 (use backend='numpy' for such ensembles)")
    p = None if first.p is None else tree_map(
        lambda leaf, path: np.stack([np.asarray(dict(tree_leaves(m.p))[path]) for m in members]), first.p)
    return _Lanes(first, np.stack([m.u0 for m in members]), p, p is not None,
                  np.array([m.tspan[0] for m in members]), np.array([m.tspan[1] for m in members]))


def _check_options(prob, method, options: dict) -> dict:
    from . import _checks

    if options.get("dense", False):
        raise ValueError("backend='jax' ensembles do not keep dense output: use dense=False")
    rtol, atol = _checks.check_tolerances(options.get("rtol", 1e-6), options.get("atol", 1e-8), prob.u0.shape)
    dt = _checks.check_dt(options.get("dt"), prob.tspan)
    adaptive = _checks.check_flag("adaptive", options.get("adaptive", True))
    if not method.adaptive or not adaptive:
        if dt is None:
            raise ValueError(f"{method!r} with a fixed step needs dt=...")
        adaptive = False
    return dict(rtol=rtol, atol=atol, dt=dt, adaptive=adaptive,
                saveat=None if options.get("saveat") is None else np.array(options["saveat"], np.float64, ndmin=1),
                max_steps=_checks.check_max_steps(options.get("max_steps", 100_000)))


def _signature(prob) -> tuple:
    leaves = tuple((path, np.shape(leaf), np.asarray(leaf).dtype.str) for path, leaf in tree_leaves(prob.p))
    return prob.u0.shape, prob.u0.dtype.str, leaves, prob.inplace


def _run(lanes: _Lanes, method, opts: dict, width: int) -> Iterator:
    from .sensitivity._jax import load_jax

    jax, _ = load_jax()
    n_dev = jax.local_device_count()
    width = n_dev * math.ceil(min(width, len(lanes)) / n_dev)
    order = np.arange(len(lanes))
    if len(lanes) > width and opts["adaptive"]:
        order = _group_order(lanes, method, opts, width)
    grouped = bool(np.any(order != np.arange(len(lanes))))
    lane_steps = useful = 0
    warned = False  # the "too stiff"/"too oscillatory" warnings, once per ensemble
    for start in range(0, len(lanes), width):
        idx = order[start:start + width]
        padded = np.concatenate([idx, np.repeat(idx[-1:], width - len(idx))])  # pad the last batch
        if opts["saveat"] is None:
            out = _every_step(lanes, method, opts, padded)
        else:
            out = _solve_batch(lanes, method, opts, _arguments(lanes, padded, opts), len(opts["saveat"]),
                               opts["max_steps"])
        steps = out[3][: len(idx), 0]
        lane_steps, useful = lane_steps + width * int(steps.max()), useful + int(steps.sum())
        by_index = np.argsort(idx, kind="stable")
        if not warned:
            warned = _warn_stabilized(lanes, idx, method, out[4][: len(idx)])
        sols = _to_solutions(lanes, idx[by_index], method, opts, *(x[by_index] for x in (*out[:4], out[5])))
        yield idx[by_index], sols, {"lockstep": lane_steps / max(useful, 1), "grouped": grouped}


def _every_step(lanes: _Lanes, method, opts: dict, padded: np.ndarray) -> tuple:
    """A batch's outputs (as :func:`_solve_batch`) saving every accepted step of each lane,
    as a solo JAX solve does when its buffers would be large: a first pass is the solve
    (final states only; its statuses, counts and warning records are the lanes'), a second
    one runs it again, saving every step, with as many steps allowed as the most a lane
    took (:func:`~dxdt._backend_jax.steps_buffer`, at most ``max_steps``), in narrower
    batches where ``width`` such buffers would pass ``BUFFER_BUDGET_BYTES``."""
    from ._backend_jax import BUFFER_BUDGET_BYTES, steps_buffer

    counted = _solve_batch(lanes, method, opts, _arguments(lanes, padded, opts), 0, opts["max_steps"])
    buffer = min(opts["max_steps"], steps_buffer(int(np.max(counted[3][:, 0]))))
    n_dev = _local_device_count()
    width = max(n_dev, n_dev * (BUFFER_BUDGET_BYTES // ((buffer + 1) * lanes.u0[0].nbytes * n_dev)))
    rows = []
    for start in range(0, len(padded), width):
        part = np.resize(padded[start:start + width], min(width, len(padded)))
        saved = _solve_batch(lanes, method, opts, _arguments(lanes, part, opts), 0, buffer, steps=True)
        rows.append([x[: min(width, len(padded) - start)] for x in saved[:2]])
    ts, ys = (np.concatenate(pieces) for pieces in zip(*rows))
    return (ts, ys) + tuple(counted[2:])


def _warn_stabilized(lanes: _Lanes, idx: np.ndarray, method, records: np.ndarray) -> bool:
    """Warn, as a solo solve does, for the first member (of ``idx``, a batch) whose steps were
    cut to the stability interval of ``max_stages`` or whose spectrum was found far from the
    negative real axis (``records``: each lane's, see
    :func:`~dxdt.solvers._stabilized_diffrax.warning_record`); whether it warned."""
    hit = np.flatnonzero(np.isfinite(records[:, 0]) | np.isfinite(records[:, 4]))
    if not hit.size:
        return False
    from .solvers._stabilized_executor import recorded_warnings

    member = int(idx[hit[0]])
    for message in recorded_warnings(method, records[hit[0]], float(lanes.t0[member]), float(lanes.t1[member])):
        warnings.warn(f"ensemble member {member}: {message}", RuntimeWarning, stacklevel=6)  # dxdt.solve's caller
    return True


def _arguments(lanes: _Lanes, idx: np.ndarray, opts: dict) -> tuple:
    """Positional arguments of a compiled batch (vmap maps keyword arguments over axis 0)."""
    u0, p, t0, t1 = lanes.take(idx)
    dt = 0.0 if opts["dt"] is None else opts["dt"]
    ts = np.zeros(1) if opts["saveat"] is None else opts["saveat"]  # (not read without saveat)
    return (u0, p, t0, t1, np.where(t1 > t0, dt, -dt), np.float64(opts["rtol"]),
            np.asarray(opts["atol"], np.float64), ts)


def _group_order(lanes: _Lanes, method, opts, width) -> np.ndarray:
    """Member order by a pilot estimate of their step counts, if grouping pays."""
    pilot_opts = dict(opts, rtol=min(opts["rtol"] * PILOT_LOOSEN, 1e-2), atol=np.asarray(opts["atol"]) * PILOT_LOOSEN)
    estimate = np.empty(len(lanes))
    for start in range(0, len(lanes), width):
        idx = np.arange(start, min(start + width, len(lanes)))
        padded = np.concatenate([idx, np.repeat(idx[-1:], width - len(idx))])
        out = _solve_batch(lanes, method, opts, _arguments(lanes, padded, pilot_opts), 0, PILOT_MAX_STEPS)
        estimate[idx] = out[3][: len(idx), 0]
    sorted_order = np.argsort(-estimate, kind="stable")  # the partial last batch gets the cheapest
    if _lane_steps(estimate[sorted_order], width) < GROUPING_GAIN * _lane_steps(estimate, width):
        return sorted_order
    return np.arange(len(lanes))


def _lane_steps(steps: np.ndarray, width: int) -> float:
    return sum(width * steps[i:i + width].max() for i in range(0, len(steps), width))


def _solve_batch(lanes: _Lanes, method, opts, args: tuple, n_save: int, max_steps: int,
                 steps: bool = False) -> tuple:
    """Run one batch's compiled solve on ``args``: NumPy ``(ts, ys, codes, counts, warning records)``
    per lane, saving at ``n_save`` times, or every step (``steps``), or the end."""
    from ._backend_jax import structure
    from .sensitivity._compiled import lookup
    from .sensitivity._estimate import with_estimate

    prob = lanes.template
    auto_dt = opts["dt"] is None
    static = (structure(args), lanes.p_batched, prob.inplace, repr(method), opts["adaptive"], auto_dt,
              n_save, max_steps, steps, _local_device_count())
    callables, constant_arrays = with_estimate(method, (prob.f,), (False,))
    program = lookup("ensemble", static, callables, constant_arrays=constant_arrays,
                     build=lambda: _build(prob, method, opts["adaptive"], auto_dt, n_save, max_steps,
                                          lanes.p_batched, args, steps))
    return program(*args)


def _local_device_count() -> int:
    from .sensitivity._jax import load_jax

    return load_jax()[0].local_device_count()


def _build(prob: ODEProblem, method, adaptive: bool, auto_dt: bool, n_save: int, max_steps: int,
           p_batched: bool, args: tuple, steps: bool = False):
    """One member's solve, exactly as a solo JAX solve runs it (:func:`~dxdt.sensitivity._ode.odeint`),
    vmapped over the lanes (sharded over the local devices), traced and compiled for ``args``."""
    from .sensitivity import to_jax
    from .sensitivity._compiled import Program, compile_function
    from .sensitivity._estimate import translate_eigen_est
    from .sensitivity._jax import load_jax
    from .sensitivity._ode import SolveOptions, odeint
    from .solvers._stabilized_diffrax import warning_record

    jax, jnp = load_jax()
    # a fresh translation: JAX caches traces per function object, and a rebuild after a
    # closure array changed must trace f again, not reuse the old trace's constants
    g = to_jax(prob.f, prob.u0, prob.p)
    rho = translate_eigen_est(method)  # None: the power iteration of a stabilized method
    g_once = jax.jit(g)  # diffrax evaluates the field at several places: trace f once
    fixed = {} if adaptive and auto_dt else {"adaptive": adaptive}

    def one(u0, p, t0, t1, dt0, rtol, atol, ts):
        step = {} if auto_dt else {"dt0": dt0}
        sol, code = odeint(lambda t, y, a: g_once(y, a, t), u0, p, t0, t1,
                           SolveOptions(method, rtol, atol, max_steps), ts=ts if n_save else None,
                           save_steps=steps,
                           spectral_radius=rho, **fixed, **step)
        counts = jnp.stack([sol.stats["num_steps"], sol.stats["num_accepted_steps"],
                            sol.stats["num_rejected_steps"]])
        if isinstance(method, AbstractStabilized):  # its solver state counts f, stages, estimates
            from .solvers._stabilized_diffrax import stabilized_counters

            counts = jnp.concatenate([counts, stabilized_counters(sol.sol).astype(counts.dtype)])
        # (the step the controller proposed last: the dt a failure's message names)
        return sol.ts, sol.ys, code, counts, warning_record(method, sol.sol), sol.next_step

    p_axis = 0 if p_batched else None
    batched = jax.vmap(one, in_axes=(0, p_axis, 0, 0, 0, None, None, None))
    if jax.local_device_count() > 1:
        from jax.sharding import Mesh, PartitionSpec

        lanes, shared = PartitionSpec("m"), PartitionSpec()
        batched = jax.shard_map(batched, mesh=Mesh(np.array(jax.local_devices()), ("m",)),
                                in_specs=(lanes, lanes if p_batched else shared, lanes, lanes, lanes,
                                          shared, shared, shared),
                                out_specs=lanes, check_vma=False)
    executable, meta = compile_function(batched, *args)
    reads = tuple(g.constant_reads) + (() if rho is None else tuple(rho.constant_reads))
    return Program(executable, reads, meta, traces=g.n_traces)


def _to_solutions(lanes: _Lanes, idx, method, opts, ts, ys, codes, counts, next_dts) -> list[Solution]:
    """Each lane's outcome as the :class:`Solution` its solo JAX solve gives."""
    from ._backend_jax import jax_failure_message, rows_at_t0, stats_rule
    from ._solve import _success_message
    from .sensitivity._ode import STATUS_CODES

    shape, dtype = lanes.template.u0.shape, lanes.u0.dtype
    ys = np.asarray(ys, dtype=dtype).reshape(ys.shape[:2] + shape)  # the problem's dtype
    filled = np.isfinite(ts)
    reached = filled.sum(axis=1) - 1  # as a solo solve: the last filled row tells where it stopped
    fixed_dt = None if opts["adaptive"] else opts["dt"]
    member_stats = stats_rule(method, opts["dt"] is None and opts["adaptive"], fixed=fixed_dt is not None,
                              interpolant=opts["saveat"] is not None)
    saveat, sols = opts["saveat"], []
    # Python scalars up front: per-lane NumPy indexing dominated this loop for thousands of lanes
    rows = zip(counts.tolist(), np.asarray(codes).ravel().tolist(), reached.tolist(),
               lanes.t0[idx].tolist(), lanes.t1[idx].tolist(), np.asarray(next_dts).ravel().tolist())
    for j, (lane_counts, code, n, t0, t1, next_dt) in enumerate(rows):
        stats = member_stats(*lane_counts)
        status = STATUS_CODES[int(code)]
        if status == "success":
            message = _success_message(SimpleNamespace(tspan=(t0, t1)), stats)
        else:
            dt = None if fixed_dt is None else math.copysign(fixed_dt, t1 - t0)
            p_j = tree_map(lambda leaf, path: leaf[idx[j]], lanes.p) if lanes.p_batched else lanes.p
            message = jax_failure_message(status, float(ts[j][filled[j]][-1]), dt, opts["max_steps"], t1,
                                          method, ys[j][filled[j]][-1], p_j, math.copysign(next_dt, t1 - t0))
        if saveat is None:  # every step: the filled rows, t1 exact on success (as a solo solve)
            t, u = ts[j][filled[j]], ys[j][filled[j]]
            if status == "success":
                t[-1] = t1
        else:
            t, u = saveat[:n], ys[j, :n]
            if n == 0:  # no step was accepted: as a solo solve
                t, u = rows_at_t0(saveat, t0, lanes.u0[idx[j]])
        sols.append(Solution(t, u, stats, status, message))
    return sols


