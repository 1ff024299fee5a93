"""``to_jax`` and ``duplicate``: the public face of the in-place NumPy translation."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..._problem import is_inplace
from ._closure import copy_structure
from .._jax import load_jax
from ._replace import AbstractArrayReplacer, is_sparse


def check_parameters(p: Any) -> None:
    """Raise TypeError unless every leaf of the pytree ``p`` is a number or numeric array."""
    if p is None:
        return
    if isinstance(p, (tuple, list)):
        for item in p:
            check_parameters(item)
    elif isinstance(p, dict):
        for item in p.values():
            check_parameters(item)
    else:
        try:
            kind = np.asarray(p).dtype.kind
        except Exception:  # e.g. a ragged sequence
            kind = "O"
        if kind not in "biufc":
            if isinstance(p, np.ndarray):  # (an object array: a list mixing types, say)
                got, hint = f"an array of dtype {p.dtype}", ": convert it with np.asarray(p, dtype=float)"
            else:
                got = type(p).__name__
                hint = (": pass its fields as a dict (dataclasses.asdict(p) or vars(p)) and read them in f "
                        "as p['name'], or as a NamedTuple"
                        if hasattr(p, "__dict__") or hasattr(p, "__dataclass_fields__") else "")
            raise TypeError(f"p must be None, a number, an array, or a tuple, list, dict or NamedTuple of "
                            f"them (a pytree) for the JAX backend and the sensitivities; got {got}{hint}")


class TranslatedFunction:
    """``g(u, p, t) -> du``: the JAX translation of an in-place NumPy right-hand side.

    Each call executes the user's ``f`` on traced arrays (under ``jax.jit`` that happens
    once per compilation); :attr:`n_traces` counts those executions.

    Attributes
    ----------
    f : callable
        The user's function (never modified).
    inplace : bool
        Whether ``f`` writes ``du`` in place (4 parameters) or returns it (3).
    shape, dtype
        Shape and dtype of the state, from ``u0``.
    duplicate_closure : bool
        Whether closure arrays are duplicated as private traced buffers.
    n_traces : int
        Number of times ``f`` has been executed by this function.
    constant_reads : list of ConstantRead
        The closure arrays whose content the traces read before writing (baked into
        the compiled code; compiled-code caches check them before reuse).
    """

    def __init__(self, f, inplace: bool, shape, dtype, duplicate_closure: bool, p_like=None):
        self.f = f
        self.p_like = p_like  # the example p: f gets p's dicts in its key order (JAX sorts them)
        self.inplace = inplace
        self.shape = shape
        self.dtype = dtype
        self.duplicate_closure = duplicate_closure
        self.n_traces = 0
        self.constant_reads: list = []
        self._lock = threading.Lock()

    def __call__(self, u, p, t):
        """The derivative ``du`` at ``(u, p, t)``, as a JAX array shaped like ``u``."""
        from . import _trace

        if tuple(np.shape(u)) != self.shape:
            raise ValueError(f"u has shape {tuple(np.shape(u))}; f was translated for shape {self.shape}")
        with self._lock:
            self.n_traces += 1
        return _trace.run(
            self.f, u, p, t, inplace=self.inplace, duplicate_closure=self.duplicate_closure,
            reads=self.constant_reads, p_like=self.p_like,
        )

    def __repr__(self) -> str:
        name = getattr(self.f, "__qualname__", type(self.f).__qualname__)
        return f"TranslatedFunction({name}, shape={self.shape}, n_traces={self.n_traces})"


def to_jax(f: Callable, u0: Any, p: Any = None, *, duplicate_closure: bool = True) -> TranslatedFunction:
    """Translate an in-place NumPy right-hand side to a pure JAX function.

    Parameters
    ----------
    f : callable
        ``f(du, u, p, t)`` writing the derivative into ``du``, or ``f(u, p, t)``
        returning it. It may use NumPy freely (indexing, views, in-place operators,
        ufuncs with ``out=``, ``np.matmul``/``np.dot``/``np.einsum`` with ``out=``,
        ``np.copyto``, reductions, ...), work buffers and SciPy sparse matrices from its
        closure, and helper functions.
    u0 : array_like
        An example state: gives the shape and dtype of ``u``.
    p : pytree, optional
        Example parameters (None, scalar, array, tuple, list or dict of those).
    duplicate_closure : bool, default True
        Replace every NumPy array ``f`` can reach (closure cells, referenced globals,
        ``self``, ``functools.partial`` arguments, containers, helpers) by a private
        traced buffer while tracing, so derivatives flow through work buffers. With
        False those arrays are read-only constants and writing a traced value into one
        raises :class:`TranslationError`.

    Returns
    -------
    TranslatedFunction
        ``g(u, p, t) -> du``, a pure function of JAX arrays usable under ``jax.jit``,
        ``jax.grad``, ``jax.jvp`` and ``jax.vmap``. ``p`` keeps its container structure;
        ``f`` receives it with traced arrays as leaves. ``g.n_traces`` counts executions
        of ``f``.

    Raises
    ------
    TypeError
        If ``f`` does not take 3 or 4 positional parameters, or ``p`` is not numeric.
    TranslationError
        When ``g`` is called, if ``f`` cannot be translated; the message names the
        operation and the line of ``f`` and says how to write it instead.

    Notes
    -----
    ``to_jax`` loads JAX (with 64-bit floats enabled) but does not trace; ``f`` runs on
    the first call of ``g``. A closure array whose previous content ``f`` reads and then
    overwrites in the same call (state carried between calls, e.g. a counter or a cached
    previous value) triggers a ``UserWarning`` naming it.

    Inside ``f``, NumPy functions and ufuncs map by name to ``jax.numpy``
    (:data:`dxdt.sensitivity.translate._dispatch.FUNCTIONS`); functions whose result size depends
    on values (``np.nonzero``, ``np.unique``, one-argument ``np.where``, indexing with a
    mask that depends on ``u``), that call Python functions on slices
    (``np.apply_along_axis``), ``np.place``, memory queries, ``np.random``, and conversions of
    traced values to Python scalars (``float()``, ``math.fsum``, ``if``/``while`` on array
    values) raise :class:`TranslationError`.
    """
    from ..._checks import check_flag

    if not callable(f):
        raise TypeError(f"f must be callable as f(du, u, p, t) or f(u, p, t), got {type(f).__name__}")
    duplicate_closure = check_flag("duplicate_closure", duplicate_closure)
    load_jax()
    check_parameters(p)
    u0 = np.asarray(u0)
    if u0.dtype.kind not in "iufc":
        raise TypeError(f"u0 must be an example state (a numeric array), got {type(u0).__name__} of dtype {u0.dtype}")
    return TranslatedFunction(f, is_inplace(f), tuple(u0.shape), u0.dtype, duplicate_closure, p)


class _PrivateCopies(AbstractArrayReplacer):
    """The replacement policy of :func:`duplicate`: private NumPy (and SciPy) copies."""

    def replace_root(self, array, label):
        return array.copy(order="K")

    def replace_view(self, root, offset, strides, shape):
        flat = root.ravel(order="K")[offset:]
        return as_strided(flat, shape, tuple(s * root.itemsize for s in strides))

    def replace_other(self, obj, label):
        return obj.copy() if is_sparse(obj) else None


def duplicate(f: Callable) -> Callable:
    """A copy of ``f`` that owns private copies of every NumPy array it can reach.

    Arrays reachable through closure cells, referenced module globals, ``self`` of a
    bound method or callable object, ``functools.partial`` arguments, default
    arguments, containers and helper functions are copied (SciPy sparse matrices too);
    functions, cells, containers and objects on the way are copied structurally, and so
    is every dict and list it reaches (what ``f`` stores in them stays in the copy). Calls
    of different copies never interfere, so copies can run concurrently in threads.

    Parameters
    ----------
    f : callable
        A NumPy function, bound method, ``functools.partial`` or callable object.

    Returns
    -------
    callable
        The copy (``f`` itself only if it cannot be copied, e.g. a builtin).
    """
    return copy_structure(f, _PrivateCopies(), copy_root=True, copy_containers=True)
