"""Timing helpers shared by the benchmark scripts in ``benchmarks/``.

Everything here is plain standard library + NumPy so that every benchmark script
(NumPy solvers, JAX backend, sensitivities) measures the same way:

- :func:`time_median` / :func:`time_interleaved`: wall time of a whole call, one warm-up
  call first, then the median of repeats (garbage collector off while timing, as
  :mod:`timeit` does). ``time_interleaved`` runs the candidates round-robin so a change of
  machine load during the run hits all of them alike.
- :func:`time_per_call`: :mod:`timeit`-style loop for cheap calls (an RHS evaluation):
  calibrate the loop count to ~``min_loop_s`` per loop, report the median per-call time.
- :class:`CallCounter`: counts calls of a function (use it in an untimed run only).
- :func:`load_average`, :func:`wait_for_low_load`, :func:`machine_info`: record and
  control the noise; :func:`write_json` stores records plus that metadata.
- :func:`format_table`, :func:`fmt_time`, :func:`fmt_float`: fixed-width tables.
- :func:`blas_threads_from_argv`: pin the BLAS thread count *before NumPy is imported*.
  On a small shared machine a multi-threaded OpenBLAS ``gemv`` that has to wait for a busy
  core makes large-state solves several times slower and wildly noisy, so the scripts
  default to one BLAS thread (``--blas-threads``; 0 keeps the library default).

This module imports NumPy lazily, so importing it does not load BLAS.

Run a script with the repository's venv, e.g.
``.venv/bin/python benchmarks/bench_solvers.py``; scripts import this module as
``from _common import ...`` (the script's own folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import timeit
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


# --------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """Repeated wall-clock measurements of one callable (seconds)."""

    times: list[float] = field(default_factory=list)
    warmup: float | None = None  # the first (untimed-for-statistics) call

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def iqr(self) -> float:
        """Inter-quartile range (0 with fewer than 4 samples)."""
        if len(self.times) < 4:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    def summary(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "iqr_s": self.iqr,
                "n": len(self.times), "warmup_s": self.warmup, "times_s": list(self.times)}


@contextmanager
def gc_disabled():
    """Switch the cyclic garbage collector off for a timed region (as :mod:`timeit` does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    with gc_disabled():
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
    return elapsed, result


def time_median(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
                min_total_s: float = 0.0, max_repeats: int = 200) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` calls; the median is ``.median``.

    With ``min_total_s > 0`` the repeat count grows (up to ``max_repeats``) so that cheap
    calls are sampled for about that long in total.
    """
    timing = Timing()
    for _ in range(max(warmup, 0)):
        timing.warmup, _ = _time_once(fn)
    n = _n_repeats(repeats, timing.warmup, min_total_s, max_repeats)
    for _ in range(n):
        elapsed, _ = _time_once(fn)
        timing.times.append(elapsed)
    return timing


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                     min_total_s: float = 0.0, max_repeats: int = 200) -> dict[str, Timing]:
    """Like :func:`time_median` for several callables, run round-robin.

    Each candidate gets ``warmup`` calls first; then rounds of one call of each, so that
    slow drifts of the machine load affect all candidates alike. The number of rounds is
    ``repeats``, raised (up to ``max_repeats``) until the slowest candidate's warm-up time
    times the rounds reaches ``min_total_s``: cheap cells get more samples, and the total
    run time stays about ``len(fns) * max(min_total_s, repeats * slowest)``.
    """
    timings = {name: Timing() for name in fns}
    for name, fn in fns.items():
        for _ in range(max(warmup, 0)):
            timings[name].warmup, _ = _time_once(fn)
    slowest = max((t.warmup or 0.0) for t in timings.values()) if fns else 0.0
    n = _n_repeats(repeats, slowest, min_total_s, max_repeats)
    for _ in range(n):
        for name, fn in fns.items():
            elapsed, _ = _time_once(fn)
            timings[name].times.append(elapsed)
    return timings


def _n_repeats(repeats: int, one_call_s: float | None, min_total_s: float, max_repeats: int) -> int:
    n = max(int(repeats), 1)
    if min_total_s > 0 and one_call_s:
        n = max(n, min(max_repeats, math.ceil(min_total_s / one_call_s)))
    return n


def time_per_call(stmt: Callable[..., Any] | str, *, args: Sequence[Any] = (),
                  setup_globals: Mapping[str, Any] | None = None, repeats: int = 7,
                  min_loop_s: float = 0.2) -> Timing:
    """Per-call time of a cheap call, :mod:`timeit`-style; ``.median`` is seconds per call.

    ``stmt`` is either a callable, timed as ``stmt(*args)`` without a wrapping lambda (its
    call overhead is part of what is measured, as it is when a solver calls it), or a
    statement string evaluated with ``setup_globals``. The loop count is calibrated so
    one loop takes at least ``min_loop_s``; ``repeats`` loops are timed (GC off).
    """
    if callable(stmt):
        names = [f"_a{i}" for i in range(len(args))]
        glb = {"_fn": stmt, **dict(zip(names, args))}
        code = f"_fn({', '.join(names)})"
    else:
        glb, code = dict(setup_globals or {}), stmt
    timer = timeit.Timer(code, globals=glb)
    number, total = timer.autorange()  # first loop count with total >= 0.2 s
    if total < min_loop_s:
        number = max(1, math.ceil(number * min_loop_s / max(total, 1e-9)))
    loops = timer.repeat(repeat=repeats, number=number)
    timing = Timing(times=[x / number for x in loops], warmup=total / number)
    return timing


class CallCounter:
    """Wrap ``f`` and count its calls (the wrapper adds overhead: use it in untimed runs)."""

    def __init__(self, f: Callable[..., Any]):
        self.f = f
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.f(*args, **kwargs)


# --------------------------------------------------------------------------- BLAS threads

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def set_blas_threads(n: int) -> None:
    """Limit BLAS/OpenMP to ``n`` threads via the environment (effective only before NumPy loads)."""
    if "numpy" in sys.modules:
        print("warning: set_blas_threads() after NumPy was imported has no effect on its BLAS",
              file=sys.stderr)
    for var in BLAS_THREAD_VARS:
        os.environ[var] = str(int(n))


def blas_threads_from_argv(argv: Sequence[str] | None = None, default: int = 1) -> int:
    """Read ``--blas-threads N`` from the command line and apply it; call before ``import numpy``.

    Returns N (0: leave the library default). The script's own parser should declare the
    option too (see :func:`add_blas_threads_option`) so it shows in ``--help``.
    """
    pre = argparse.ArgumentParser(add_help=False)
    add_blas_threads_option(pre, default)
    ns, _ = pre.parse_known_args(argv)
    if ns.blas_threads > 0:
        set_blas_threads(ns.blas_threads)
    return ns.blas_threads


def add_blas_threads_option(parser: argparse.ArgumentParser, default: int = 1) -> None:
    parser.add_argument("--blas-threads", type=int, default=default, metavar="N",
                        help=f"BLAS/OpenMP threads (default {default}; 0 = library default). "
                             "One thread keeps timings stable on a shared machine.")


# --------------------------------------------------------------------------- machine state

def load_average() -> list[float] | None:
    """``[1 min, 5 min, 15 min]`` load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def wait_for_low_load(threshold: float, max_wait_s: float = 300.0, poll_s: float = 5.0,
                      stream=sys.stderr) -> list[float] | None:
    """Wait (up to ``max_wait_s``) until the 1-minute load average is below ``threshold``.

    Returns the load average when starting. Noisy neighbours (test runs) inflate timings,
    so scripts call this before measuring when asked to (``--wait-load``).
    """
    deadline = time.monotonic() + max_wait_s
    load = load_average()
    announced = False
    while load is not None and load[0] >= threshold and time.monotonic() < deadline:
        if not announced:
            print(f"waiting for 1-min load < {threshold} (now {load[0]}) ...", file=stream, flush=True)
            announced = True
        time.sleep(poll_s)
        load = load_average()
    if load is not None and load[0] >= threshold:
        print(f"warning: load still {load[0]} after {max_wait_s:.0f} s; measuring anyway",
              file=stream, flush=True)
    return load


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(extra_packages: Iterable[str] = ()) -> dict[str, Any]:
    """Platform, CPU count, Python and package versions, load average and date (UTC)."""
    packages = ["numpy", "scipy", "dxdt", *extra_packages]
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in packages},
        "numpy_config_blas": _blas_name(),
        "blas_thread_env": {var: os.environ.get(var) for var in BLAS_THREAD_VARS},
        "load_average": load_average(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return info


def _blas_name() -> str | None:
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")  # NumPy >= 1.25
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name')} {blas.get('version', '')}".strip() or None
    except Exception:  # noqa: BLE001 - purely informational
        return None


# --------------------------------------------------------------------------- output

def _jsonable(x: Any) -> Any:
    np = sys.modules.get("numpy")
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "__dataclass_fields__"):
        return _jsonable(asdict(x))
    if np is not None and isinstance(x, (np.ndarray, np.generic)):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str | os.PathLike, records: Sequence[Mapping[str, Any]], *,
               benchmark: str, settings: Mapping[str, Any] | None = None,
               meta: Mapping[str, Any] | None = None, **extra: Any) -> Path:
    """Write ``{"benchmark", "meta", "settings", "records", ...extra}`` to ``path``.

    ``meta`` defaults to :func:`machine_info` taken now; the load average at the start of
    the run is worth passing in ``extra`` (e.g. ``load_start=...``). The file is written
    to ``path.tmp`` first and then renamed, so an interrupted run leaves no half file.
    Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": benchmark,
        "meta": dict(meta) if meta is not None else machine_info(),
        "settings": dict(settings or {}),
        **extra,
        "records": list(records),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def fmt_time(seconds: float | None) -> str:
    """``1.23 s``, ``45.6 ms``, ``789 us`` (3 significant digits)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale or unit == "ns":
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def fmt_float(x: float | None, spec: str = ".2e") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-" if x is None else str(x)
    return format(x, spec)


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str],
                 align: str | None = None) -> str:
    """A fixed-width text table; ``align`` has one ``l``/``r`` per column (default: first l)."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    ncol = len(header)
    align = align or ("l" + "r" * (ncol - 1))
    widths = [max(len(r[i]) for r in cells) for i in range(ncol)]

    def line(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
