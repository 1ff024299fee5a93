"""Ensembles: one model solved for many members (``u0`` / ``p`` / ``tspan`` batches).

:class:`EnsembleProblem` describes the members, :func:`solve_ensemble` (reached through
``dxdt.solve(ens, ...)``) solves them in batches on an executor
(:mod:`._ensemble_executors`) or as vectorised JAX batches (:mod:`._ensemble_jax`) and
returns an :class:`EnsembleSolution`. The design follows DifferentialEquations.jl's
``EnsembleProblem`` (``prob_func``, ``reduction``, a choice of executors).

Every member is solved by exactly the call a user would write for it alone,
``dxdt.solve(member, method, **options)``, so on the NumPy backend its result is
bitwise the solo result whatever the executor or batch size.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any, Callable

import numpy as np

from ._problem import ODEProblem, as_tspan
from ._solution import SUCCESS_STATUSES, Solution, SolverError

DEFAULT_MAX_BATCH = 256  # members per batch at most by default (bounds memory with a reduction)
BATCHES_PER_WORKER = 4  # default batch count per worker: keeps workers busy to the end


class EnsembleProblem:
    """Many members of one problem: batches of ``u0``, ``p``, ``tspan`` and/or a ``prob_func``.

    Member ``i`` is ``prob.remake(u0=u0[i], p=p_i, tspan=tspan[i])`` with the fields whose
    batch is given (``p_i`` takes index ``i`` of every leaf of the ``p`` pytree), then
    ``prob_func(member, i)`` when given. Batches are copied.

    Parameters
    ----------
    prob : ODEProblem
        The template; fields without a batch come from it.
    u0 : array_like, optional
        Initial states, shape ``(members, *state_shape)``.
    p : pytree, optional
        Parameters: an array, or a dict / tuple / list of arrays, every leaf with the
        member axis first.
    tspan : array_like, optional
        Time spans, shape ``(members, 2)``.
    prob_func : callable, optional
        ``prob_func(member_prob, i) -> ODEProblem`` adjusts member ``i``.
    n : int, optional
        The member count when no batch is given (must agree with the batches if both).

    Raises
    ------
    TypeError
        ``prob`` is not an ODEProblem, ``prob_func`` is not callable, a batch is not
        numeric.
    ValueError
        Batches with different leading axes (naming them), a batch leaf without a member
        axis, no batch and no ``n``.

    References
    ----------
    C. Rackauckas and Q. Nie, "DifferentialEquations.jl -- a performant and feature-rich
    ecosystem for solving differential equations in Julia", J. Open Res. Softw. 5 (2017);
    its ``EnsembleProblem`` (``prob_func``, ``reduction``, ensemble algorithms) is the model.
    """

    def __init__(self, prob: ODEProblem, *, u0: Any = None, p: Any = None, tspan: Any = None,
                 prob_func: Callable | None = None, n: int | None = None):
        if not isinstance(prob, ODEProblem):
            raise TypeError(f"prob must be a dxdt.ODEProblem, got {type(prob).__name__}")
        if prob_func is not None:
            if not callable(prob_func):
                raise TypeError(f"prob_func must be callable as prob_func(prob, i), got {type(prob_func).__name__}")
            from ._problem import check_positional

            check_positional(prob_func, 2, "prob_func must take 2 positional parameters prob_func(prob, i)")
        counts = {}
        if u0 is not None:
            u0 = _batch_array(u0, "u0")
            counts["u0"] = u0.shape[0]
        if p is not None:
            p = tree_map(lambda leaf, path: _batch_array(leaf, f"p{path}"), p)
            for path, leaf in tree_leaves(p):
                counts[f"p{path}"] = leaf.shape[0]
        if tspan is not None:
            tspan = _batch_array(tspan, "tspan")
            if tspan.shape[1:] != (2,):
                raise ValueError(f"tspan batch must have shape (members, 2), got {tspan.shape}")
            counts["tspan"] = tspan.shape[0]
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"n must be a positive integer, got {n!r}")
            counts["n"] = int(n)
        if not counts:
            raise ValueError("EnsembleProblem needs batches (u0=, p=, tspan=) or a member count n=")
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{name} has {count}" for name, count in counts.items())
            raise ValueError(f"batches must share their leading (member) axis: {listing}")
        empty = [name for name, count in counts.items() if count == 0]
        if empty:
            raise ValueError(f"an ensemble needs at least one member: the batch {empty[0]} has none")
        self.prob, self.prob_func = prob, prob_func
        self._u0, self._p, self._tspan = u0, p, tspan
        self._n = next(iter(counts.values()))

    def __len__(self) -> int:
        return self._n

    @property
    def n(self) -> int:
        """The member count."""
        return self._n

    def member(self, i: int) -> ODEProblem:
        """The problem of member ``i`` (batches applied, then ``prob_func``)."""
        if not 0 <= i < self._n:
            raise IndexError(f"member index {i} out of range for {self._n} members")
        fields = {}
        if self._u0 is not None:
            fields["u0"] = self._u0[i]
        if self._p is not None:
            fields["p"] = tree_map(lambda leaf, path: leaf[i], self._p)
        if self._tspan is not None:
            fields["tspan"] = as_tspan(self._tspan[i])
        member = self.prob.remake(**fields) if fields else self.prob
        if self.prob_func is not None:
            try:
                member = self.prob_func(member, i)
            except Exception as err:  # on every executor, as f's errors are (see _solve_member)
                err.add_note(f"raised by prob_func for ensemble member {i}")
                raise
            if not isinstance(member, ODEProblem):
                raise TypeError(
                    f"prob_func must return a dxdt.ODEProblem, got {type(member).__name__} for member {i}")
        return member

    def __repr__(self) -> str:
        batches = [name for name, b in (("u0", self._u0), ("p", self._p), ("tspan", self._tspan)) if b is not None]
        return (f"EnsembleProblem({self.prob!r}, members={self._n}, batches={batches}, "
                f"prob_func={self.prob_func is not None})")


class EnsembleSolution:
    """The result of ``dxdt.solve(ensemble, ...)`` (or one batch of it, for a ``reduction``).

    Attributes
    ----------
    t : ndarray or list
        The ``saveat`` times, shape ``(len(saveat),)``; without ``saveat`` the list of
        each member's times.
    u : ndarray or list or None
        ``(members, len(saveat), *u0.shape)``, NaN in rows a failed member did not reach;
        without ``saveat`` (or with members of different state shapes) the list of each
        member's ``u``. None with a ``reduction``.
    status : ndarray of str, shape (members,)
        Each member's status; ``"worker_died"`` for a member whose worker process died.
    success : ndarray of bool, shape (members,)
    members : list of Solution or None
        Each member's solution (None with a ``reduction``).
    index : ndarray of int
        The member indices (``arange(members)``; a batch's indices in a reduction).
    stats : dict
        ``nfev``, ``naccept``, ``nreject`` summed over members, ``n_members``,
        ``n_failed``, ``n_batches``; ``backend="jax"`` adds ``lockstep`` (steps the
        vectorised batches ran, over the steps the members needed) and ``grouped``
        (whether members were batched by a pilot estimate of their step counts).
    reduced : object
        The final value of the ``reduction`` (None without one).
    """

    def __init__(self, index, statuses, members, saveat, stats, reduced=None):
        self.index = np.asarray(index, dtype=np.int64)
        self.status = np.array(statuses, dtype=str)
        self.success = np.isin(self.status, SUCCESS_STATUSES)
        self.members = members
        self.stats = stats
        self.reduced = reduced
        self.t, self.u = (saveat, None) if members is None else _stack(members, saveat)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return (f"EnsembleSolution(members={len(self)}, failed={int((~self.success).sum())}, "
                f"u: {np.shape(self.u) if isinstance(self.u, np.ndarray) else type(self.u).__name__}, "
                f"stats={self.stats})")


class LostMember(Solution):
    """A member whose worker process died before returning it: no data, status ``"worker_died"``."""

    def __init__(self, prob: ODEProblem, message: str):
        super().__init__(np.empty(0), np.empty((0,) + prob.u0.shape, prob.u0.dtype),
                         {"nfev": 0, "naccept": 0, "nreject": 0}, "success", message)
        self.status = "worker_died"


def _stack(members: list, saveat):
    """``(t, u)``: stacked on the ``saveat`` rows (NaN where not reached), else lists."""
    if saveat is None:
        return [m.t for m in members], [m.u for m in members]
    shapes = {m.u.shape[1:] for m in members}
    if len(shapes) != 1:
        return saveat, [m.u for m in members]
    dtype = np.result_type(*(m.u.dtype for m in members))
    u = np.full((len(members), len(saveat)) + shapes.pop(), np.nan, dtype=dtype)
    for row, m in zip(u, members):
        row[: len(m.u)] = m.u
    return saveat, u


def _batch_solution(index, members: list, saveat) -> EnsembleSolution:
    """An :class:`EnsembleSolution` of some members with their summed stats."""
    return EnsembleSolution(index, [m.status for m in members], members, saveat, _sum_stats(members))


def _sum_stats(members: list) -> dict:
    stats = {key: int(sum(m.stats[key] for m in members)) for key in ("nfev", "naccept", "nreject")}
    stats["n_members"] = len(members)
    stats["n_failed"] = sum(not m.success for m in members)
    return stats


def tree_map(fn: Callable, tree: Any, path: str = ""):
    """Apply ``fn(leaf, path)`` to every leaf of a dict / tuple / list pytree (a NamedTuple
    is rebuilt from its fields)."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, f"{path}[{k!r}]") for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        items = [tree_map(fn, v, f"{path}[{i}]") for i, v in enumerate(tree)]
        return tree._make(items) if hasattr(tree, "_fields") else type(tree)(items)
    return fn(tree, path)


def tree_leaves(tree: Any, path: str = "") -> list:
    """``[(path, leaf), ...]`` of a dict / tuple / list pytree (tuple subclasses such as
    NamedTuples included: nothing is rebuilt)."""
    if isinstance(tree, dict):
        return [found for k, v in tree.items() for found in tree_leaves(v, f"{path}[{k!r}]")]
    if isinstance(tree, (tuple, list)):
        return [found for i, v in enumerate(tree) for found in tree_leaves(v, f"{path}[{i}]")]
    return [(path, tree)]


def _batch_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.array(value)  # a copy, like ODEProblem's u0
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} batch must be an array of numbers, got {type(value).__name__}") from err
    if array.dtype == object or array.dtype.kind not in "biufc":
        raise TypeError(f"{name} batch must be an array of numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"{name} batch is a scalar: a batch needs the member axis first")
    return array


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_batches(n: int, batch_size: Any, workers: int) -> list[np.ndarray]:
    """Member indices in consecutive batches of ``batch_size`` (default: ~4 per worker, <= 256)."""
    if batch_size is None:
        batch_size = max(1, min(DEFAULT_MAX_BATCH, math.ceil(n / (BATCHES_PER_WORKER * workers))))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return [np.arange(start, min(n, start + batch_size)) for start in range(0, n, int(batch_size))]


def check_options(options: dict) -> None:
    """Reject keyword arguments that ``dxdt.solve`` does not take, naming them."""
    from ._solve import solve

    known = {name for name, par in inspect.signature(solve).parameters.items() if par.kind == par.KEYWORD_ONLY}
    unknown = sorted(set(options) - known - {"progress", "throw"})
    if unknown:
        raise TypeError(f"solve() got unexpected keyword argument(s) {unknown} for an ensemble")


def solve_ensemble(ens: EnsembleProblem, method: Any = None, *, backend: str = "numpy",
                   executor: Any = None, max_workers: int | None = None, batch_size: int | None = None,
                   reduction: Callable | None = None, progress: bool = False, throw: bool = False,
                   **options) -> EnsembleSolution:
    """Solve every member of ``ens``; see :func:`dxdt.solve` for the ensemble arguments."""
    from . import _checks

    check_options(options)
    progress = _checks.check_flag("progress", progress)
    throw = _checks.check_flag("throw", throw)
    if reduction is not None and not callable(reduction):
        raise TypeError(f"reduction must be callable as reduction(acc, batch), got {type(reduction).__name__}")
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, (int, np.integer))
                                    or max_workers < 1):
        raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
    saveat = options.get("saveat")
    if saveat is not None:
        saveat = np.array(saveat, dtype=np.float64, ndmin=1)
    if backend == "jax":
        from ._ensemble_jax import run_jax_batches

        _checks.check_jax_dtype(ens.prob.u0, "backend='jax'")
        if executor is not None:
            raise ValueError("backend='jax' runs members as vectorised batches on the local devices; "
                             f"use executor=None (got executor={executor!r})")
        if options.get("events"):  # each member locates its own events: one compiled solve after another
            from ._ensemble_executors import run_batches

            batches = run_batches(ens, method, {**options, "backend": "jax"}, None, None, batch_size)
        else:
            batches = run_jax_batches(ens, method, batch_size, options)
    elif backend == "numpy":
        from ._ensemble_executors import run_batches

        batches = run_batches(ens, method, options, executor, max_workers, batch_size)
    else:
        raise ValueError(f"backend must be one of ('numpy', 'jax'), got {backend!r}")
    result = _collect(ens, batches, saveat, reduction, progress)
    if throw and not result.success.all():
        failed = np.flatnonzero(~result.success)
        raise SolverError(
            f"{failed.size} of {len(ens)} ensemble members failed (members {failed[:10].tolist()}"
            f"{' ...' if failed.size > 10 else ''}, first status {str(result.status[failed[0]])!r})", result)
    return result


def _collect(ens: EnsembleProblem, batches, saveat, reduction, progress: bool) -> EnsembleSolution:
    """Fold the batches (in member order) into the ensemble's solution or the reduction."""
    statuses = np.empty(len(ens), dtype=object)
    members = None if reduction is not None else [None] * len(ens)
    stats = {"nfev": 0, "naccept": 0, "nreject": 0, "n_members": len(ens), "n_failed": 0, "n_batches": 0}
    acc = None
    bar = _member_bar(progress, len(ens))
    try:
        for index, batch_members, extra in batches:
            for key in ("nfev", "naccept", "nreject"):
                stats[key] += sum(int(m.stats[key]) for m in batch_members)
            stats["n_batches"] += 1
            for key, value in extra.items():
                stats[key] = value
            statuses[index] = [m.status for m in batch_members]
            if reduction is not None:
                acc = reduction(acc, _batch_solution(index, batch_members, saveat))
            else:
                for i, m in zip(index, batch_members):
                    members[i] = m
            if bar is not None:
                bar.update(len(index))
    finally:
        batches.close()  # stops an executor's workers at once if a reduction raised
        if bar is not None:
            bar.close()
    stats["n_failed"] = int(sum(s not in SUCCESS_STATUSES for s in statuses))
    return EnsembleSolution(np.arange(len(ens)), list(statuses), members, saveat, stats, acc)


def _member_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="member", desc="ensemble", mininterval=0.1)
