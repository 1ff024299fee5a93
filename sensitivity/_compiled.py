"""Compiled programs, reused within a process and across processes.

Every compiled JAX program dxdt builds (``solve(backend="jax")``, each sensitivity
operator) goes through :func:`lookup`. A program is found again under a key that covers
everything its result depends on:

- what it is and its static options (operator, strategy, method, tolerances, shapes,
  dtypes and container structure of ``u0`` and ``p``, number of save times ...);
- the code of ``f``, of the loss and of every helper they reach, and the Python values
  they read (:func:`._fingerprint.reach` walks them as the translation does);
- dxdt, JAX, jaxlib, diffrax, equinox and NumPy versions and the platform, and the
  size and modification time of each of dxdt's own modules (an edited checkout of dxdt
  misses even when its version number did not change);

and, checked after the key matches, the content of the closure arrays the trace read
before writing (:class:`ConstantRead`): an array the user changed in place misses, so
the next call traces again and never sees a stale constant.

Programs live in memory (the last :data:`MEMORY_SIZE`) and on disk, as serialised XLA
executables (``jax.experimental.serialize_executable``), so that a rerun script skips
tracing and compiling. The disk cache:

- lives in ``DXDT_CACHE_DIR`` or the user's cache directory (``~/.cache/dxdt`` on
  Linux, ``~/Library/Caches/dxdt`` on macOS, ``%LOCALAPPDATA%\\dxdt\\Cache`` on Windows);
  ``DXDT_CACHE=0`` turns it off; :func:`clear_cache` empties it;
- holds at most ``DXDT_CACHE_MAX_MB`` megabytes (default 1024), least recently used
  entries evicted first;
- writes each entry to a temporary file renamed into place, so two processes writing the
  same entry are safe; an entry that cannot be read (truncated, corrupt, from another
  version) is ignored with a warning and removed.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import platform
import re
import sys
import tempfile
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._jax import xla_defaults_requested
from .translate._fingerprint import Reach, reach

MEMORY_SIZE = 64  # compiled programs kept in memory (least recently used dropped first)
FORMAT = 1  # version of the on-disk layout
_MAGIC = b"DXDTPRG1"
DEFAULT_MAX_MB = 1024


@dataclass
class Program:
    """A compiled program and what its reuse depends on.

    Attributes
    ----------
    executable : callable
        The compiled XLA executable (``jax.stages.Compiled``).
    reads : tuple of ConstantRead
        Closure-array content the trace baked in.
    meta : dict
        Small, picklable facts about the build (e.g. the dense step buffer size).
    traces : int
        Executions of ``f`` that built it (1, also when loaded from disk).
    key : str
        The cache key (set by :func:`lookup`).
    """

    executable: Any
    reads: tuple = ()
    meta: dict = field(default_factory=dict)
    traces: int = 1
    key: str = ""
    from_disk: bool = False
    shown: dict = field(default_factory=dict, repr=False)  # warnings registry of replay_warnings

    def replay_warnings(self) -> None:
        """Emit again the warnings its build raised (``meta["warnings"]``, e.g. a closure
        buffer that carries state from call to call): a program found in a cache skips the
        trace that raised them. Through the user's filters; once per program and process
        under the ``"default"`` action."""
        for name, message, filename, lineno in self.meta.get("warnings", ()):
            category = getattr(builtins, name, UserWarning)
            warnings.warn_explicit(message, category, filename, lineno, registry=self.shown)

    def matches(self, reaches: Sequence[Reach]) -> bool:
        return not self.reads or all(read.matches(reaches) for read in self.reads)

    def __call__(self, *args):
        """Run on NumPy arguments; NumPy results (one transfer each way when flat)."""
        inputs = self.meta.get("inputs")
        if inputs is None:
            import jax

            return jax.device_get(self.executable(*args))
        return self.meta["outputs"].unpack(np.asarray(self.executable(inputs.pack(args))))

    def bind(self, *tail) -> Callable:
        """``run(*head)``: the program called as ``self(*head, *tail)``, ``tail`` packed now.

        For a prepared operator, whose context (``u0``, ``p``, times) is fixed: a call then
        writes only the target into a copy of the packed input vector (and later changes
        of the arrays in ``tail`` are not seen).
        """
        inputs = self.meta.get("inputs")
        if inputs is None:
            import copy

            tail = copy.deepcopy(tail)
            return lambda *head: self(*head, *tail)
        import jax

        tail_leaves = jax.tree_util.tree_leaves(tail)
        n_head = len(inputs.bounds) - len(tail_leaves)
        packed = _fill(np.zeros(inputs.bounds[-1][1], inputs.dtype), inputs.bounds[n_head:], tail_leaves)
        head_bounds = inputs.bounds[:n_head]
        outputs = self.meta["outputs"]

        def run(*head):
            flat = _fill(packed.copy(), head_bounds, jax.tree_util.tree_leaves(head))
            return outputs.unpack(np.asarray(self.executable(flat)))
        return run


_MEMORY: OrderedDict[str, list[Program]] = OrderedDict()
MEMORY_CACHES: list = []  # other modules' in-memory caches of compiled code, emptied with _MEMORY
_COUNTS = {"memory_hits": 0, "disk_hits": 0, "builds": 0}
_LAST_BUILD: dict = {}


def count(what: str) -> None:
    """Count a ``"memory_hits"`` or ``"builds"`` of a cache kept elsewhere (the operators
    through events), so that :func:`cache_info` tells of them too."""
    _COUNTS[what] += 1


def cache_info() -> dict:
    """What the compiled-code cache has done in this process.

    Returns
    -------
    dict
        ``memory_hits``, ``disk_hits``, ``builds`` (programs traced and compiled),
        ``in_memory`` (programs held), ``directory`` (of the disk cache, None when off)
        and ``last_build`` (``kind`` and the seconds of ``trace_s`` and ``compile_s``).
    """
    directory = _directory_setting()
    return {**_COUNTS, "in_memory": sum(len(v) for v in _MEMORY.values()),
            "directory": None if directory is None else str(directory), "last_build": dict(_LAST_BUILD)}


def lookup(kind: str, static: tuple, callables: Sequence[Callable], build: Callable[[], Program], *,
           constant_arrays: Sequence[bool] | None = None, disk: bool = True) -> Program:
    """The program for ``(kind, static, callables)``: from memory, from disk, or ``build()``.

    Parameters
    ----------
    kind : str
        What the program is (``"solve"``, ``"operator"``).
    static : tuple
        Every option the program was compiled for (hashable, with a stable ``repr``).
    callables : sequence of callable
        The user's functions traced into it (``f``, then the loss).
    build : callable
        Traces and compiles; returns a :class:`Program` with its ``reads``.
    constant_arrays : sequence of bool, optional
        Per callable: read all of its arrays as constants (a loss in ``jax.numpy``).
    disk : bool
        Use the disk cache (programs with host callbacks cannot be serialised).
    """
    flags = constant_arrays or [False] * len(callables)
    reaches = [reach(fn, constant_arrays=flag) for fn, flag in zip(callables, flags)]
    key = _key(kind, static, reaches)
    for program in _MEMORY.get(key, ()):
        if program.matches(reaches):
            _MEMORY.move_to_end(key)
            _COUNTS["memory_hits"] += 1
            return program
    directory = cache_dir() if disk and all(r.portable for r in reaches) else None
    program = _load(directory, key, reaches) if directory is not None else None
    if program is not None:
        _COUNTS["disk_hits"] += 1
    else:
        with without_host_callbacks():
            program = _build_recording_warnings(build)
        _COUNTS["builds"] += 1
        _LAST_BUILD.clear()
        _LAST_BUILD.update(kind=kind, trace_s=program.meta.get("trace_s"), compile_s=program.meta.get("compile_s"))
        program.key = key
        if directory is not None:
            _store(directory, program)
    remember(program)
    program.replay_warnings()
    return program


def _build_recording_warnings(build: Callable[[], Program]) -> Program:
    """``build()``, its warnings of builtin categories kept in ``meta["warnings"]`` for
    :meth:`Program.replay_warnings` (which emits them); the others are emitted here."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            program = build()
    except BaseException:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        raise
    kept = []
    for w in caught:
        if getattr(builtins, w.category.__name__, None) is w.category:
            kept.append((w.category.__name__, str(w.message), w.filename, w.lineno))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if kept:
        program.meta["warnings"] = kept
    return program


@dataclass(frozen=True)
class FlatLayout:
    """A pytree of arrays as one flat vector: one host transfer instead of one per leaf.

    Leaves are raveled and cast to a common dtype (float64, or complex128 when a leaf is
    complex; integers and booleans are exact in float64 up to 2**53), and cast back when
    unpacked.
    """

    treedef: Any
    shapes: tuple
    dtypes: tuple
    dtype: str

    @classmethod
    def of(cls, tree) -> FlatLayout:
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(tree)
        dtypes = tuple(np.dtype(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype).str for leaf in leaves)
        complex_ = any(np.dtype(d).kind == "c" for d in dtypes)
        return cls(treedef, tuple(tuple(np.shape(leaf)) for leaf in leaves), dtypes,
                   "<c16" if complex_ else "<f8")

    @cached_property
    def bounds(self) -> tuple:
        """``(start, stop)`` of each leaf in the vector."""
        import math

        bounds, start = [], 0
        for shape in self.shapes:
            bounds.append((start, start + math.prod(shape)))
            start += math.prod(shape)
        return tuple(bounds)

    def pack(self, tree):
        """The leaves of ``tree`` (NumPy) as one vector."""
        bounds = self.bounds
        return _fill(np.empty(bounds[-1][1] if bounds else 0, self.dtype), bounds, self._leaves(tree))

    def _leaves(self, tree) -> Sequence:
        """``tree``'s leaves; a tuple of leaves is its own (no flattening: a call of
        ``solve(backend="jax")`` passes one, and flattening costs 2 us of the 50 us a call may
        spend in Python)."""
        if self._flat_tuple and type(tree) is tuple:
            return tree
        import jax

        return jax.tree_util.tree_leaves(tree)

    @cached_property
    def _flat_tuple(self) -> bool:
        """Whether the tree is a tuple of leaves."""
        import jax

        n = len(self.shapes)
        return self.treedef == jax.tree_util.tree_structure((0,) * n)

    def pack_traced(self, tree):
        import jax
        import jax.numpy as jnp

        leaves = jax.tree_util.tree_leaves(tree)
        return jnp.concatenate([jnp.ravel(leaf).astype(self.dtype) for leaf in leaves]) \
            if leaves else jnp.zeros(0, self.dtype)

    def unpack(self, flat):
        """The tree back from its vector (NumPy on the host, ``jax.numpy`` inside a trace)."""
        leaves = []
        for start, stop, shape, real, cast in self._unpacking:
            leaf = flat[start:stop].reshape(shape)
            if real:
                leaf = leaf.real
            leaves.append(leaf if cast is None else leaf.astype(cast, copy=False))
        if self._flat_tuple:
            return tuple(leaves)
        import jax

        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    @cached_property
    def _unpacking(self) -> tuple:
        """Per leaf ``(start, stop, shape, take the real part, dtype to cast to or None)``:
        decided once, not on every call of a prepared operator (a dozen leaves cost 30 us
        when each call parsed the dtype strings)."""
        vector = np.dtype(self.dtype)
        plan = []
        for (start, stop), shape, dtype in zip(self.bounds, self.shapes, self.dtypes):
            dtype = np.dtype(dtype)
            real = vector.kind == "c" and dtype.kind != "c"
            plan.append((start, stop, shape, real, None if dtype == (vector if not real else np.dtype(float))
                         else dtype))
        return tuple(plan)


def _fill(flat: np.ndarray, bounds, leaves) -> np.ndarray:
    """``flat`` with each leaf (raveled) written at its ``(start, stop)``."""
    if len(leaves) != len(bounds):
        raise ValueError(f"expected {len(bounds)} arrays, got {len(leaves)}")
    for (start, stop), leaf in zip(bounds, leaves):
        if isinstance(leaf, float):  # a time or tolerance (np.float64 is a float too)
            flat[start] = leaf
        else:
            flat[start:stop] = leaf.reshape(-1) if type(leaf) is np.ndarray else np.ravel(leaf)
    return flat


def compile_function(fn: Callable, *example, flat: bool = True) -> tuple[Any, dict]:
    """``jax.jit(fn)`` traced, lowered and compiled for the example arguments.

    With ``flat=True`` the executable takes and returns one vector each
    (:class:`FlatLayout`, kept in the metadata as ``"inputs"``/``"outputs"``; call it
    through :meth:`Program.__call__`). Returns the executable and the metadata, with the
    seconds spent tracing and lowering (``"trace_s"``) and in XLA's compiler
    (``"compile_s"``).
    """
    import time

    import jax

    start = time.perf_counter()
    meta: dict = {}
    if flat:
        inputs = FlatLayout.of(example)

        def flat_fn(vector):  # the output layout is read off the one trace (not a second one)
            out = fn(*inputs.unpack(vector))
            meta["outputs"] = FlatLayout.of(out)
            return meta["outputs"].pack_traced(out)

        lowered = jax.jit(flat_fn).lower(inputs.pack(example))
        meta["inputs"] = inputs
    else:
        lowered = jax.jit(fn).lower(*example)
    traced = time.perf_counter()
    executable = _compile(lowered)
    meta.update(trace_s=traced - start, compile_s=time.perf_counter() - traced)
    return executable, meta


# XLA:CPU's fusion emitters (its default code generator in jaxlib 0.10) take a third
# more time to compile dxdt's programs than the classic elemental emitters, and the code
# runs no faster (docs/compiled.md, "Compile options"): dxdt compiles its own programs with
# the classic ones. A program inside the user's jax.jit (jax_solve) compiles with the
# user's options.
#
# jaxlib 0.10 also hands reductions to YNNPACK ("ynn_fusion"), each a library call that
# costs far more than the reduction on an ODE's state: the p-cotangent of Gray-Scott 64's
# field (four sums over the grid) took 132 us against 34 us without, and the interpolating
# adjoint's gradient 33.8 ms against 17.3 ms. dxdt keeps YNNPACK for dots only.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False,
                       "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
_OPTIONS_REFUSED: list = []  # set when this jaxlib does not know an option: compile without


@cache
def compiler_options() -> dict | None:
    """XLA options for dxdt's own programs on this process's default backend (None: XLA's
    defaults, on other backends or with ``DXDT_XLA_DEFAULTS=1``). Part of the cache key."""
    import jax

    if jax.default_backend() != "cpu" or xla_defaults_requested():
        return None
    return dict(CPU_COMPILER_OPTIONS)


def _compile(lowered):
    """``lowered.compile`` with :func:`compiler_options`, or with XLA's defaults where this
    jaxlib refuses an option (once per process; the key still names the options, as it
    does in every process with this jaxlib)."""
    options = None if _OPTIONS_REFUSED else compiler_options()
    if options is None:
        return lowered.compile()
    try:
        return lowered.compile(options)
    except Exception as err:  # jaxlib's JaxRuntimeError: "No such compile option: ...", or
        # "While setting option ..., '...' is not a valid enum value"
        if "compile option" not in str(err) and "While setting option" not in str(err):
            raise
        _OPTIONS_REFUSED.append(str(err))
        return lowered.compile()


@cache
def _nan_checks():
    """equinox's jitted runtime check with an error mode of ``"nan"`` and its own trace cache."""
    import equinox as eqx
    import equinox._errors as errors

    def checked(x, pred, index, msgs, *, on_error):
        return errors.branched_error_if_impl(x, pred, index, msgs,
                                             on_error="nan" if on_error == "default" else on_error)
    return eqx.filter_jit(checked)


_NAN_MODE = threading.local()  # .depth > 0: this thread traces equinox's checks as NaNs
_INSTALL_LOCK = threading.Lock()


def _install_check_dispatch() -> None:
    """Route equinox's jitted runtime check through a function that picks, per thread,
    equinox's own (host callbacks) or :func:`_nan_checks` (installed once; the user's
    traces, on every thread outside :func:`without_host_callbacks`, are unchanged)."""
    from ._jax import load_diffrax

    load_diffrax()
    import equinox._errors as errors

    with _INSTALL_LOCK:
        if getattr(errors.branched_error_if_impl_jit, "_dxdt_dispatch", False):
            return
        original, nan = errors.branched_error_if_impl_jit, _nan_checks()

        def dispatch(*args, **kwargs):
            return (nan if getattr(_NAN_MODE, "depth", 0) else original)(*args, **kwargs)
        dispatch._dxdt_dispatch = True
        errors.branched_error_if_impl_jit = dispatch


@contextmanager
def without_host_callbacks():
    """Trace equinox's runtime checks (diffrax's checks of ``saveat.ts``) as NaN outputs,
    on this thread only.

    By default they are host callbacks, which make an executable impossible to
    serialise, and which, anywhere inside a loop, keep XLA:CPU from compiling that loop
    into one kernel; dxdt's own inputs never trip them (save times are checked
    beforehand), and :func:`~dxdt.sensitivity._ode.odeint` traces every solve inside
    this context.
    equinox caches the trace of a check by its arguments, not by the error mode it was
    traced in, so a check traced earlier in the process (the user's own diffrax code, a
    ``jax_solve`` pass) would bring its callback back and keep the program off the disk
    cache: inside this context the checks go through a cache of their own, which holds
    NaN versions only (and the user's cache never receives one). The mode is per thread
    (an earlier version swapped equinox's globals, and two compiles on two threads could
    leave the user's checks returning NaN for the rest of the process).
    """
    _install_check_dispatch()
    _NAN_MODE.depth = getattr(_NAN_MODE, "depth", 0) + 1
    try:
        yield
    finally:
        _NAN_MODE.depth -= 1


def remember(program: Program, *, disk: bool = False) -> None:
    """Keep ``program`` in memory in front of older programs of its key (and on disk)."""
    programs = _MEMORY.setdefault(program.key, [])
    programs.insert(0, program)
    del programs[4:]
    _MEMORY.move_to_end(program.key)
    while len(_MEMORY) > MEMORY_SIZE:
        _MEMORY.popitem(last=False)
    directory = cache_dir() if disk else None
    if directory is not None:
        _store(directory, program)


def clear_cache(*, memory: bool = True, disk: bool = True) -> None:
    """Forget compiled programs.

    Parameters
    ----------
    memory : bool
        Drop the programs held in this process.
    disk : bool
        Delete the entries of the disk cache (``DXDT_CACHE_DIR`` or the user's cache
        directory); other processes then rebuild what they need.
    """
    if memory:
        _MEMORY.clear()
        for held in MEMORY_CACHES:
            held.clear()
    directory = _directory_setting()
    if disk and directory is not None and directory.exists():
        for path in directory.glob("*.dxdt"):
            _remove(path)


def _directory_setting() -> Path | None:
    if os.environ.get("DXDT_CACHE", "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    explicit = os.environ.get("DXDT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "dxdt" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dxdt"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dxdt"


def cache_dir() -> Path | None:
    """The disk cache's directory (created), or None when it is off or cannot be made."""
    directory = _directory_setting()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _warn_once(f"dxdt: the compiled-code cache directory {directory} cannot be created "
                   f"({err}); set DXDT_CACHE_DIR to a writable directory or DXDT_CACHE=0")
        return None
    return directory


@cache
def _environment() -> tuple:
    """Versions and platform: a program compiled under others is never loaded."""
    from importlib.metadata import version

    import jax

    from .. import __version__

    device = jax.devices()[0]
    packages = tuple((name, version(name)) for name in ("jax", "jaxlib", "diffrax", "equinox", "numpy"))
    return (FORMAT, __version__, _source_stamp(), packages, sys.version_info[:2], platform.machine(),
            device.platform, getattr(device, "device_kind", ""), jax.config.jax_enable_x64,
            sorted((compiler_options() or {}).items()), os.environ.get("XLA_FLAGS", ""))


def _source_stamp() -> str:
    """A digest of the name, size and modification time of every module of dxdt's packages
    (a ``stat`` each, not a read)."""
    stamp = hashlib.blake2b(digest_size=16)
    folders = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                    folders.append(entry.path)
                elif entry.name.endswith(".py"):
                    info = entry.stat()
                    stamp.update(f"{entry.path}:{info.st_size}:{info.st_mtime_ns};".encode())
    return stamp.hexdigest()


_KEYS: dict = {}  # (kind, static, digests) -> key, so that a warm call hashes no text
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _key(kind: str, static: tuple, reaches: Sequence[Reach]) -> str:
    memo_key = (kind, static, tuple(r.digest for r in reaches))
    try:
        return _KEYS[memo_key]
    except (KeyError, TypeError):  # TypeError: an unhashable static option
        pass
    text = repr((kind, static, [r.digest for r in reaches], _environment()))
    # no memory addresses (a method's repr shows its callable eigen_est's): they differ in
    # every process, and the callables themselves are keyed by what they reach (reaches)
    text = _ADDRESS.sub("", text)
    key = hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
    if len(_KEYS) > 4096:
        _KEYS.clear()
    try:
        _KEYS[memo_key] = key
    except TypeError:
        pass
    return key


def _variant(reads) -> str:
    text = repr([(r.owner, r.label, None if r.index is None else r.index.tolist(), r.digest) for r in reads])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _store(directory: Path, program: Program) -> None:
    """Serialise ``program`` into ``directory`` (silently skipped if it cannot be)."""
    try:
        from jax.experimental import serialize_executable

        payload = pickle.dumps(serialize_executable.serialize(program.executable), protocol=5)
    except Exception:  # e.g. host callbacks (a progress bar): memory cache only
        return
    try:
        header = pickle.dumps({
            "format": FORMAT, "key": program.key, "reads": [r.for_disk() for r in program.reads],
            "meta": program.meta, "traces": program.traces,
            "payload_digest": hashlib.blake2b(payload, digest_size=16).hexdigest(),
        }, protocol=5)
    except Exception:  # e.g. p's layout holds a class defined in a function: memory cache only
        return
    final = directory / f"{program.key}-{_variant(program.reads)}.dxdt"
    written = None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", delete=False) as tmp:
            written = Path(tmp.name)
            tmp.write(_MAGIC + len(header).to_bytes(8, "little") + header + payload)
        os.replace(written, final)
    except OSError as err:  # (the directory may refuse even the temporary file: then nothing to remove)
        if written is not None:
            _remove(written)
        _warn_once(f"dxdt: could not write to the compiled-code cache {directory} ({err}); "
                   "compiled code is kept in memory only")
        return
    _evict(directory)


def _load(directory: Path, key: str, reaches: Sequence[Reach]) -> Program | None:
    for path in sorted(directory.glob(f"{key}-*.dxdt")):
        try:
            with open(path, "rb") as stream:
                header = _read_header(stream)
                if header["key"] != key:
                    raise ValueError("its key does not match its file name")
                if not all(read.matches(reaches) for read in header["reads"]):
                    continue
                payload = stream.read()
            if hashlib.blake2b(payload, digest_size=16).hexdigest() != header["payload_digest"]:
                raise ValueError("its content is truncated or corrupt")
            from jax.experimental import serialize_executable

            _initialize_lapack()
            executable = serialize_executable.deserialize_and_load(*pickle.loads(payload))
        except FileNotFoundError:
            continue  # removed meanwhile by another process
        except Exception as err:
            warnings.warn(f"dxdt: ignoring the unreadable compiled-code cache entry {path} "
                          f"({type(err).__name__}: {err}); it is removed and rebuilt.",
                          RuntimeWarning, stacklevel=4)
            _remove(path)
            continue
        try:
            os.utime(path)  # least recently used eviction reads the modification time
        except OSError:
            pass
        return Program(executable, tuple(header["reads"]), header["meta"], header["traces"], key, True)
    return None


@cache
def _initialize_lapack() -> None:
    """Load jaxlib's LAPACK kernels before an executable that may call them is loaded.

    jaxlib resolves its CPU LAPACK functions when it lowers a linear-algebra operation
    (``np.linalg.solve`` in ``f``, say); an executable loaded from disk skips lowering, so
    in a fresh process it called unresolved functions and crashed the interpreter (a
    segmentation fault on the second run of a script; JAX issue 28908). Idempotent."""
    try:
        from jax._src.lax.linalg import initialize_lapack
    except ImportError:  # another jaxlib layout: its own lowering resolves them, or it has none
        return
    initialize_lapack()


_HEADER_LIMIT = 16 * 2**20  # bytes: a header holds keys and constant reads, far below this


def _read_header(stream: io.BufferedReader) -> dict:
    if stream.read(len(_MAGIC)) != _MAGIC:
        raise ValueError("it is not a dxdt cache entry of this format")
    size = int.from_bytes(stream.read(8), "little")
    if size > _HEADER_LIMIT:  # a damaged length: never allocated
        raise ValueError(f"its header claims {size} bytes")
    header = pickle.loads(stream.read(size))
    if header.get("format") != FORMAT:
        raise ValueError("it has another format")
    return header


def _evict(directory: Path) -> None:
    """Remove least recently used entries until the cache fits ``DXDT_CACHE_MAX_MB``."""
    try:
        limit = float(os.environ.get("DXDT_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 2**20
    except ValueError:
        limit = DEFAULT_MAX_MB * 2**20
    entries = []
    for path in directory.glob("*.dxdt"):
        try:
            info = path.stat()
        except OSError:
            continue
        entries.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        _remove(path)
        total -= size


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
