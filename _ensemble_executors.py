"""Where ensemble batches run: serially, in threads, in processes, on any executor or Dask.

Every executor solves each member with ``dxdt.solve(member, method, **options)`` and
yields ``(indices, members, {})`` per batch, in member order, with at most a window of
batches in flight (so a ``reduction`` keeps memory bounded).

- threads: each worker thread solves with its own ``duplicate`` of ``f`` (private work
  buffers), made once per thread and right-hand side;
- processes: the pickled ensemble, method and options go to each worker once (pool
  initializer; cloudpickle, when installed, pickles closures and local functions by
  value); tasks carry member indices only. A worker that dies breaks the pool: its
  in-flight batches are rerun alone in fresh pools, halved until the members that kill
  their worker are found; those get the status ``"worker_died"``, the others complete;
- any ``concurrent.futures.Executor`` and a ``dask.distributed.Client``: the pickled
  payload travels with the tasks (scattered once to every Dask worker) and is unpickled
  once per worker thread, which gives each thread private copies of ``f``'s arrays.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import threading
import uuid
import warnings
from collections import OrderedDict, deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

from ._ensemble import LostMember, default_workers, make_batches

EXECUTORS = (None, "threads", "processes")  # or a concurrent.futures.Executor / dask Client
WINDOW_PER_WORKER = 2  # batches in flight per worker: one running, one queued
PAYLOAD_CACHE = 4  # ensembles kept unpickled per worker thread
_LOCAL = threading.local()

LOST_MESSAGE = (
    "the worker process solving this member died (killed, out of memory, or a crash inside f); "
    "the other members completed. Solve this member alone to see the cause."
)


def run_batches(ens, method, options: dict, executor: Any, max_workers: int | None,
                batch_size: int | None) -> Iterator:
    """Solve the members of ``ens`` in batches on ``executor``; yields ``(indices, members, {})``."""
    if executor is None:
        batches = make_batches(len(ens), batch_size, 1)
        return ((idx, [_solve_member(ens, i, method, options) for i in idx], {}) for idx in batches)
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be None, 'threads', 'processes', a concurrent.futures.Executor "
                             f"or a dask.distributed.Client, got {executor!r}")
        workers = max_workers or default_workers()
        batches = make_batches(len(ens), batch_size, workers)
        if executor == "threads":
            return _threads(ThreadPoolExecutor(workers), ens, method, options, batches, workers, own=True)
        return _processes(_payload(ens, method, options), ens, batches, workers)
    if isinstance(executor, ThreadPoolExecutor):
        workers = max_workers or executor._max_workers
        batches = make_batches(len(ens), batch_size, workers)
        return _threads(executor, ens, method, options, batches, workers, own=False)
    if isinstance(executor, Executor):
        workers = max_workers or getattr(executor, "_max_workers", None) or default_workers()
        batches = make_batches(len(ens), batch_size, workers)
        token, blob = _payload(ens, method, options)
        submit = lambda idx: executor.submit(_payload_batch, token, blob, idx)  # noqa: E731
        return _ordered(submit, batches, WINDOW_PER_WORKER * workers, ens, ((token, blob), workers))
    if _is_dask_client(executor):
        return _dask(executor, _payload(ens, method, options), ens, max_workers, batch_size)
    raise TypeError(f"executor must be None, 'threads', 'processes', a concurrent.futures.Executor or a "
                    f"dask.distributed.Client, got {type(executor).__name__}")


def _solve_member(ens, i: int, method, options: dict, copy_f: Callable | None = None):
    """``dxdt.solve`` of member ``i`` (with ``copy_f(f)`` as its right-hand side when given)."""
    from ._solve import solve

    member = ens.member(int(i))
    if copy_f is not None:
        member = member.remake(f=copy_f(member.f))
    try:
        return solve(member, method, **options)
    except Exception as err:
        err.add_note(f"raised while solving ensemble member {int(i)}")
        raise


def _thread_copy(f: Callable) -> Callable:
    """This thread's private ``duplicate`` of ``f`` for the current run (made on first use)."""
    from .sensitivity import duplicate

    copies = _LOCAL.copies
    if id(f) not in copies:
        copies[id(f)] = (f, duplicate(f))  # f kept alive so its id is not reused
    return copies[id(f)][1]


def _thread_batch(token: str, ens, idx, method, options: dict) -> list:
    """Solve a batch in a worker thread; copies of ``f`` live as long as the run ``token``."""
    if getattr(_LOCAL, "copies_token", None) != token:
        _LOCAL.copies_token, _LOCAL.copies = token, {}  # a new run sees f's current arrays
    return [_solve_member(ens, i, method, options, _thread_copy) for i in idx]


def _threads(pool: ThreadPoolExecutor, ens, method, options, batches, workers: int, own: bool):
    token = uuid.uuid4().hex
    try:
        submit = lambda idx: pool.submit(_thread_batch, token, ens, idx, method, options)  # noqa: E731
        yield from _ordered(submit, batches, WINDOW_PER_WORKER * workers, ens)
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)


def _ordered(submit: Callable, batches: list, window: int, ens, recovery: tuple | None = None) -> Iterator:
    """Submit batches keeping ``window`` in flight; yield results in batch order.

    A broken process pool we do not own cannot be restarted. With ``recovery = (payload,
    workers)`` its unfinished batches go on in pools of our own, as ``executor="processes"``
    runs them: the in-flight ones alone (halved until the members that kill their worker
    are found), the rest on a fresh pool; without, they are reported lost.
    """
    pending, inflight = deque(batches), deque()
    while pending or inflight:
        while pending and len(inflight) < window:
            idx = pending.popleft()
            inflight.append((idx, submit(idx)))
        idx, future = inflight.popleft()
        try:
            members = future.result()
        except BrokenProcessPool:
            if recovery is None:
                for idx in [idx, *(i for i, _ in inflight), *pending]:
                    yield idx, [LostMember(ens.member(int(i)), LOST_MESSAGE) for i in idx], {}
                return
            payload, workers = recovery
            _check_workers_start(payload)
            for idx in [idx, *(i for i, _ in inflight)]:
                yield idx, _isolate(payload, ens, idx), {}
            if pending:
                yield from _processes(payload, ens, list(pending), workers)
            return
        yield idx, members, {}


def _rebuild_view(root, offset: int, shape: tuple, strides: tuple, dtype, writeable: bool):
    """A view of ``root`` as it was pickled (see :func:`_reduce_view`)."""
    import numpy as np

    view = np.ndarray(shape, dtype, buffer=root, offset=offset, strides=strides)
    view.flags.writeable = writeable and root.flags.writeable
    return view


def _reduce_view(array):
    """``array``, a view, as a view of its root array (through ``as_strided``'s views too),
    which the pickle memo shares: work
    buffers that are views of one array (``flux[1:-1]``, ``flux[1:]`` in ``heat_1d``)
    stay views of one array in the worker (plain pickling copies each view, and a write
    into one no longer reaches the others: a silently wrong ``f``). None where the root
    does not own contiguous memory."""
    from .sensitivity.translate._replace import owning_array

    root = owning_array(array)
    if root.base is not None or not root.flags.c_contiguous:
        return None
    offset = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return _rebuild_view, (root, offset, array.shape, array.strides, array.dtype, bool(array.flags.writeable))


def _dumps(obj, pickler) -> bytes:
    """``obj`` pickled by ``pickler`` (``cloudpickle`` or ``pickle``), keeping the arrays
    that are views of one array views of one array (:func:`_reduce_view`)."""
    import io

    import numpy as np

    class ViewKeeping(pickler.Pickler):
        def reducer_override(self, obj):
            if type(obj) is np.ndarray and obj.base is not None:
                reduced = _reduce_view(obj)
                if reduced is not None:
                    return reduced
            parent = getattr(super(), "reducer_override", None)
            return NotImplemented if parent is None else parent(obj)

    buffer = io.BytesIO()
    ViewKeeping(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _payload(ens, method, options: dict) -> tuple[str, bytes]:
    """The ensemble, method and options pickled once, with a token naming them."""
    try:
        import cloudpickle as pickler  # closures and local functions by value (installed with Dask)
    except ImportError:
        pickler = pickle
    try:
        blob = _dumps((ens, method, options), pickler)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(
            "executor='processes' (and other process or cluster executors) need a picklable f, "
            f"prob_func and problem; pickling failed with: {err}") from err
    return uuid.uuid4().hex, blob


def _install(token: str, blob: bytes) -> None:
    """Unpickle a payload into this thread's cache (pool initializer, or first task)."""
    cache = _LOCAL.__dict__.setdefault("payloads", OrderedDict())
    cache[token] = pickle.loads(blob)
    while len(cache) > PAYLOAD_CACHE:
        cache.popitem(last=False)


def _payload_batch(token: str, blob: bytes | None, idx) -> list:
    """Solve members ``idx`` of the payload ``token`` in a worker."""
    cache = _LOCAL.__dict__.get("payloads", {})
    if token not in cache:
        _install(token, blob)
        cache = _LOCAL.payloads
    ens, method, options = cache[token]
    return [_solve_member(ens, i, method, options) for i in idx]


def _process_batch(token: str, idx) -> list:
    """:func:`_payload_batch` in a worker process of our own pool (one thread), each member's
    warnings recorded with it (``_warnings``) for the parent to emit: a worker's own go
    nowhere."""
    members = []
    for i in idx:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            member, = _payload_batch(token, None, [i])
        member._warnings = [(w.category, f"ensemble member {int(i)}: {w.message}") for w in record]
        members.append(member)
    return members


def _emit_warnings(members: list) -> list:
    """Emit the warnings recorded with ``members`` in their worker process."""
    for member in members:
        for category, message in member.__dict__.pop("_warnings", ()):
            warnings.warn(message, category, stacklevel=2)
    return members


def _process_pool(payload: tuple[str, bytes], workers: int) -> ProcessPoolExecutor:
    """Workers forked when that is safe (one thread, JAX not loaded: starts in milliseconds),
    else from a forkserver with dxdt preloaded (or spawned where there is none)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and "jax" not in sys.modules:
        context = multiprocessing.get_context("fork")
    elif "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["dxdt"])  # workers fork with NumPy and dxdt imported
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_install, initargs=payload)


def _processes(payload, ens, batches: list, workers: int) -> Iterator:
    """Batches on our own process pool; a dead worker's members are found and marked lost."""
    token = payload[0]
    pending, inflight = deque(batches), deque()
    pool = _process_pool(payload, workers)
    try:
        while pending or inflight:
            while pending and len(inflight) < WINDOW_PER_WORKER * workers:
                idx = pending.popleft()
                inflight.append((idx, pool.submit(_process_batch, token, idx)))
            idx, future = inflight[0]
            try:
                members = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                _check_workers_start(payload)
                suspects = [i for i, _ in inflight]
                inflight.clear()
                for idx in suspects:
                    yield idx, _isolate(payload, ens, idx), {}
                pool = _process_pool(payload, workers)
                continue
            inflight.popleft()
            yield idx, _emit_warnings(members), {}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _probe() -> None:
    """A task that does nothing: tells whether workers start and load the payload."""


def _check_workers_start(payload) -> None:
    """Raise if a fresh worker cannot even start and unpickle the ensemble."""
    pool = _process_pool(payload, 1)
    try:
        pool.submit(_probe).result()
    except BrokenProcessPool as err:
        raise RuntimeError(
            "executor='processes': worker processes could not start or could not load the ensemble "
            "(f, prob_func, p). Define f in an importable module, and run scripts that start "
            "processes under `if __name__ == '__main__':`.") from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _isolate(payload, ens, idx) -> list:
    """Rerun a batch alone in a fresh one-worker pool, halving it while its worker dies."""
    pool = _process_pool(payload, 1)
    try:
        return _emit_warnings(pool.submit(_process_batch, payload[0], idx).result())
    except BrokenProcessPool:
        if len(idx) == 1:
            return [LostMember(ens.member(int(idx[0])), LOST_MESSAGE)]
        half = len(idx) // 2
        return _isolate(payload, ens, idx[:half]) + _isolate(payload, ens, idx[half:])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.split(".")[0] == "distributed" and hasattr(executor, "scatter")


def _dask(client, payload, ens, max_workers: int | None, batch_size: int | None) -> Iterator:
    """Batches as Dask tasks; the payload is scattered once to every worker.

    A task whose workers keep dying ends as ``KilledWorker`` (after Dask's own retries):
    its members are reported lost.
    """
    from distributed import KilledWorker

    workers = max_workers or max(1, sum(client.nthreads().values()))
    batches = make_batches(len(ens), batch_size, workers)
    token, blob = payload
    blob_future = client.scatter(blob, broadcast=True, hash=False)
    pending, inflight = deque(batches), deque()
    try:
        while pending or inflight:
            while pending and len(inflight) < WINDOW_PER_WORKER * workers:
                idx = pending.popleft()
                inflight.append((idx, client.submit(_payload_batch, token, blob_future, idx, pure=False)))
            idx, future = inflight.popleft()
            try:
                members = future.result()
            except KilledWorker:
                members = [LostMember(ens.member(int(i)), LOST_MESSAGE) for i in idx]
            yield idx, members, {}
    finally:
        for _, future in inflight:
            future.cancel()
        blob_future.release()
