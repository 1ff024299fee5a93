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
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from ._ensemble import tree_leaves, tree_map
from ._solution import Solution

DEFAULT_JAX_BATCH = 4096  # members per compiled batch by default
PILOT_LOOSEN = 1e3  # the pilot's tolerances are this much looser (capped at rtol 1e-2)
PILOT_MAX_STEPS = 256  # pilot steps per member at most: stiff members saturate it
GROUPING_GAIN = 0.95  # group by the pilot's estimate when it saves >= 5% of the lane-steps (the
# pilot is paid by then and reordering costs nothing; the margin absorbs the estimate's noise)
_COMPILED: dict = {}


def run_jax_batches(ens, method, batch_size, options: dict) -> Iterator:
    """Solve ``ens`` in vectorised JAX batches; yields ``(indices, members, stats)``."""
    from . import _checks
    from ._ensemble import make_batches
    from .solvers import Tsit5

    method = Tsit5() if method is None else _checks.check_method(method)
    members = [ens.member(i) for i in range(len(ens))]
    first = members[0]
    opts = _check_options(first, method, options)
    _check_alike(members)
    for m in members:
        _checks.check_saveat(opts["saveat"], m.tspan)
    _checks.first_derivative(_checks.inplace_rhs(first), first)
    if batch_size is not None:
        make_batches(len(ens), batch_size, 1)  # validates batch_size
    return _run(members, method, opts, batch_size or min(len(members), DEFAULT_JAX_BATCH))


def _check_options(prob, method, options: dict) -> dict:
    from . import _checks

    if options.get("saveat") is None:
        raise ValueError("backend='jax' ensembles need saveat=... (members are stacked on shared output times)")
    if options.get("dense", False):
        raise ValueError("backend='jax' ensembles do not keep dense output: use dense=False")
    if options.get("events"):
        raise ValueError("backend='jax' ensembles do not take events: use backend='numpy'")
    rtol, atol = _checks.check_tolerances(options.get("rtol", 1e-6), options.get("atol", 1e-8), prob.u0.shape)
    dt = _checks.check_dt(options.get("dt"), prob.tspan)
    adaptive = _checks.check_flag("adaptive", options.get("adaptive", True))
    if not method.adaptive or not adaptive:
        if dt is None:
            raise ValueError(f"{method!r} with a fixed step needs dt=...")
        adaptive = False
    return dict(rtol=rtol, atol=atol, dt=dt, adaptive=adaptive,
                saveat=np.array(options["saveat"], dtype=np.float64, ndmin=1),
                max_steps=_checks.check_max_steps(options.get("max_steps", 100_000)))


def _check_alike(members: list) -> None:
    first = members[0]
    signature = _signature(first)
    for i, m in enumerate(members):
        if m.f is not first.f or _signature(m) != signature:
            raise ValueError(
                f"backend='jax' vectorises members that share f and the shapes of u0 and p; member {i} "
                f"differs from member 0 (use backend='numpy' for such ensembles)")


def _signature(prob) -> tuple:
    leaves = tuple((path, np.shape(leaf), np.asarray(leaf).dtype.str) for path, leaf in tree_leaves(prob.p))
    return prob.u0.shape, prob.u0.dtype.str, leaves, prob.inplace


def _stack(members: list, idx: np.ndarray) -> dict:
    """The batched arguments of lanes ``idx``."""
    chosen = [members[i] for i in idx]
    t0 = np.array([m.tspan[0] for m in chosen])
    t1 = np.array([m.tspan[1] for m in chosen])
    p = tree_map(lambda leaf, path: np.stack([np.asarray(_at(m.p, path)) for m in chosen]), chosen[0].p) \
        if chosen[0].p is not None else None
    return dict(u0=np.stack([m.u0 for m in chosen]), p=p, t0=t0, t1=t1)


def _at(tree: Any, path: str):
    """The leaf of ``tree`` at ``path`` (as written by :func:`tree_map`)."""
    found = dict(tree_leaves(tree))
    return found[path]


def _run(members: list, method, opts: dict, width: int) -> Iterator:
    from ._backend_jax import translate
    from .sensitivity._jax import load_jax

    jax, _ = load_jax()
    g = translate(members[0])
    n_dev = jax.local_device_count()
    width = n_dev * math.ceil(min(width, len(members)) / n_dev)
    order = np.arange(len(members))
    if len(members) > width and opts["adaptive"]:
        order = _group_order(members, method, opts, width, g, jax)
    grouped = bool(np.any(order != np.arange(len(members))))
    solve = _compiled(members[0], method, opts, width, len(opts["saveat"]), opts["max_steps"], g, jax)
    lane_steps = useful = 0
    for start in range(0, len(members), width):
        idx = order[start:start + width]
        lanes = np.concatenate([idx, np.repeat(idx[-1:], width - len(idx))])  # pad the last batch
        out = jax.device_get(solve(*_arguments(members, lanes, opts)))
        steps = out[3][: len(idx), 0]
        lane_steps, useful = lane_steps + width * int(steps.max()), useful + int(steps.sum())
        sols = [_to_solution(members[i], method, opts, *(x[j] for x in out)) for j, i in enumerate(idx)]
        by_index = np.argsort(idx, kind="stable")
        yield idx[by_index], [sols[j] for j in by_index], {"lockstep": lane_steps / max(useful, 1), "grouped": grouped}


def _arguments(members: list, lanes: np.ndarray, opts: dict) -> tuple:
    """Positional arguments of a compiled batch (vmap maps keyword arguments over axis 0)."""
    b = _stack(members, lanes)
    dt = 0.0 if opts["dt"] is None else opts["dt"]
    dt0 = np.where(b["t1"] > b["t0"], dt, -dt)
    return (b["u0"], b["p"], b["t0"], b["t1"], dt0, np.float64(opts["rtol"]),
            np.asarray(opts["atol"], np.float64), opts["saveat"])


def _group_order(members, method, opts, width, g, jax) -> np.ndarray:
    """Member order by a pilot estimate of their step counts, if grouping pays."""
    pilot_opts = dict(opts, rtol=min(opts["rtol"] * PILOT_LOOSEN, 1e-2), atol=np.asarray(opts["atol"]) * PILOT_LOOSEN)
    pilot = _compiled(members[0], method, opts, width, 0, PILOT_MAX_STEPS, g, jax)
    estimate = np.empty(len(members))
    for start in range(0, len(members), width):
        idx = np.arange(start, min(start + width, len(members)))
        lanes = np.concatenate([idx, np.repeat(idx[-1:], width - len(idx))])
        out = jax.device_get(pilot(*_arguments(members, lanes, pilot_opts)))
        estimate[idx] = out[3][: len(idx), 0]
    sorted_order = np.argsort(-estimate, kind="stable")  # the partial last batch gets the cheapest
    if _lane_steps(estimate[sorted_order], width) < GROUPING_GAIN * _lane_steps(estimate, width):
        return sorted_order
    return np.arange(len(members))


def _lane_steps(steps: np.ndarray, width: int) -> float:
    return sum(width * steps[i:i + width].max() for i in range(0, len(steps), width))


def _compiled(prob, method, opts, width: int, n_save: int, max_steps: int, g, jax):
    """The jitted, vmapped (and sharded) diffrax solve for one batch width and options."""
    from ._backend_jax import _callable_key

    key = (_callable_key(prob.f), _signature(prob), method, opts["adaptive"], opts["dt"] is None,
           width, n_save, max_steps, jax.local_device_count())
    if key not in _COMPILED:
        _COMPILED[key] = _build(method, opts["adaptive"], opts["dt"] is None, n_save, max_steps, g, jax)
    return _COMPILED[key]


def _build(method, adaptive: bool, auto_dt: bool, n_save: int, max_steps: int, g, jax):
    """One member's solve, exactly as a solo JAX solve runs it (:func:`~dxdt.sensitivity._ode.odeint`)."""
    from .sensitivity._ode import SolveOptions, odeint

    jnp = jax.numpy
    fixed = {} if adaptive and auto_dt else {"adaptive": adaptive}

    def one(u0, p, t0, t1, dt0, rtol, atol, ts):
        step = {} if auto_dt else {"dt0": dt0}
        sol, code = odeint(lambda t, y, a: g(y, a, t), u0, p, t0, t1,
                           SolveOptions(method, rtol, atol, max_steps), ts=ts if n_save else None,
                           **fixed, **step)
        counts = jnp.stack([sol.stats["num_steps"], sol.stats["num_accepted_steps"],
                            sol.stats["num_rejected_steps"]])
        return sol.ts, sol.ys, code, counts

    batched = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None, None, None))
    if jax.local_device_count() > 1:
        from jax.sharding import Mesh, PartitionSpec

        lanes, shared = PartitionSpec("m"), PartitionSpec()
        batched = jax.shard_map(batched, mesh=Mesh(np.array(jax.local_devices()), ("m",)),
                                in_specs=(lanes,) * 5 + (shared,) * 3, out_specs=lanes, check_vma=False)
    return jax.jit(batched)


def _to_solution(prob, method, opts, ts, ys, code, counts) -> Solution:
    """One lane's outcome as the :class:`Solution` its solo JAX solve gives."""
    from ._solve import _success_message
    from .sensitivity._ode import STATUS_CODES
    from .solvers._numpy_executor import failure_message

    ts = np.asarray(ts, dtype=np.float64)
    filled = np.isfinite(ts)
    u = np.asarray(ys, dtype=prob.u0.dtype)[filled].reshape((-1,) + prob.u0.shape)
    t_end = float(ts[filled][-1])  # the t1 row tells where the solve stopped
    t, u = opts["saveat"][: len(u) - 1], u[:-1]
    status = STATUS_CODES[int(code)]
    tab = method.tableau
    per_step = tab.stages - 1 if tab.fsal else tab.stages
    steps, accepted, rejected = (int(c) for c in counts)
    auto_dt = opts["dt"] is None and opts["adaptive"]
    stats = {"nfev": 1 + 2 * auto_dt + steps * per_step, "naccept": accepted, "nreject": rejected}
    message = (_success_message(prob, stats) if status == "success"
               else failure_message(status, t_end, None, opts["max_steps"], prob.tspan[1]))
    return Solution(t, u, stats, status, message)
