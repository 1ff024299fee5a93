"""The one place where dxdt imports JAX.

``import dxdt`` and ``import dxdt.sensitivity`` stay light; every JAX code path calls
:func:`load_jax` first, which imports JAX and switches on 64-bit floats so that float64
problems give float64 results.

Before JAX's CPU backend starts, :func:`load_jax` also raises XLA:CPU's threshold for
compiling a small ``while`` loop into one kernel (:data:`SMALL_WHILE_LOOP_BYTES`, see
``docs/compiled.md``, "Small loops"): above the threshold XLA runs every operation of
every iteration of a loop as a separate task, which on the small states of an ODE step
cost more than the arithmetic (a Lotka-Volterra gradient 4.8x slower). The setting is
one option in ``XLA_FLAGS`` (process-wide: JAX programs of your own compiled afterwards
get it too); ``DXDT_XLA_DEFAULTS=1``, or a threshold of your own in ``XLA_FLAGS``, keeps
XLA's.

It also runs CPU programs on the calling thread (``jax_cpu_enable_async_dispatch``
off, see ``docs/compiled.md``, "The cost of a call"): XLA:CPU otherwise hands every
program of more than 1000 flops to a worker thread, a hop that costs 50-70 us a call on
a small machine, as much as a whole Lotka-Volterra gradient. Hand-written diffrax
programs run inline already (their error checks are host callbacks, which XLA runs
synchronously); dxdt's have none (so they can be cached on disk). Calls on several
threads still run in parallel (the GIL is released while a program runs).
``DXDT_XLA_DEFAULTS=1`` keeps JAX's asynchronous dispatch.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from types import ModuleType

SMALL_WHILE_LOOP_BYTES = 4 * 2**20
_OPTION = "xla_cpu_small_while_loop_byte_threshold"


def xla_flags_with_small_loops(flags: str) -> str:
    """``flags`` (the value of ``XLA_FLAGS``) with :data:`SMALL_WHILE_LOOP_BYTES` among its
    ``--xla_backend_extra_options`` (unchanged if it already sets the threshold)."""
    if _OPTION in flags:
        return flags
    option = f"{_OPTION}={SMALL_WHILE_LOOP_BYTES}"
    extra = re.search(r"--xla_backend_extra_options=(\S*)", flags)
    if extra is None:
        return f"{flags} --xla_backend_extra_options={option}".strip()
    merged = f"{extra.group(1)},{option}" if extra.group(1) else option
    return flags[:extra.start()] + f"--xla_backend_extra_options={merged}" + flags[extra.end():]


def xla_defaults_requested() -> bool:
    """``DXDT_XLA_DEFAULTS=1``: XLA's own settings, none of dxdt's (the threshold here,
    the compile options of :mod:`._compiled`)."""
    return os.environ.get("DXDT_XLA_DEFAULTS") == "1"


def _backend_started() -> bool:
    """Whether JAX has created its backends (after which ``XLA_FLAGS`` is not read again)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


_LOADED: list = []  # [(jax, jnp)] once loaded
_DIFFRAX: list = []  # [diffrax] once loaded
_LOAD_LOCK = threading.RLock()


def load_jax() -> tuple[ModuleType, ModuleType]:
    """Import JAX with 64-bit floats enabled (and XLA:CPU's small-loop threshold and
    inline execution, see the module's docstring).

    Thread-safe: the first calls of several threads wait for one import, which otherwise
    could meet each other half-imported ("partially initialized module"); likewise
    :func:`load_diffrax`.

    Returns
    -------
    jax, jnp : module
        The ``jax`` and ``jax.numpy`` modules.
    """
    if _LOADED:
        return _LOADED[0]
    with _LOAD_LOCK:
        if not _LOADED:
            _LOADED.append(_import_jax())
    return _LOADED[0]


def load_diffrax() -> ModuleType:
    """Import diffrax (with equinox and optimistix) once, under :func:`load_jax`'s lock.

    Every module of dxdt that imports them calls this first. Not part of
    :func:`load_jax`: a program loaded from the disk cache runs without them (0.3 s of
    imports saved on a warm first call).
    """
    if _DIFFRAX:
        return _DIFFRAX[0]
    with _LOAD_LOCK:
        if not _DIFFRAX:
            load_jax()
            import diffrax
            import equinox  # noqa: F401
            import equinox.internal  # noqa: F401
            import optimistix  # noqa: F401

            _DIFFRAX.append(diffrax)
    return _DIFFRAX[0]


def _import_jax() -> tuple[ModuleType, ModuleType]:
    configure = not xla_defaults_requested() and not _backend_started()
    if configure:
        os.environ["XLA_FLAGS"] = xla_flags_with_small_loops(os.environ.get("XLA_FLAGS", ""))
    import jax

    if configure:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    jax.config.update("jax_enable_x64", True)
    import jax.flatten_util  # noqa: F401  (imported here, under the lock)
    import jax.numpy as jnp

    return jax, jnp
