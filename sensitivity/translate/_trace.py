"""One execution of the user's NumPy ``f`` on traced arrays, giving ``du`` as a JAX value."""

from __future__ import annotations

import types
import warnings
from collections import OrderedDict

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _numpy_proxy
from ._buffer import DU, FROZEN, INPUT, SHADOW, Buffer
from ._closure import Label, copy_structure
from ._errors import TranslationError
from ._fingerprint import ConstantRead
from ._interpolants import Interpolant, is_interpolant
from ._replace import AbstractArrayReplacer, is_sparse
from ._sparse import Factorization, SparseOperator, is_factorization
from ._tiling import forget_slices
from ._traced import TracedArray, operand
from ._views import jax, jnp, view_step


class _Shadows(AbstractArrayReplacer):
    """The replacement policy for tracing: closure arrays become traced buffers."""

    def __init__(self, role: str):
        super().__init__()
        self.role = role
        self.buffers: list[Buffer] = []
        self.sources: list[tuple[Buffer, np.ndarray]] = []  # (shadow, the user's array)

    def replace_root(self, array, label: Label) -> TracedArray:
        positions = np.empty(array.shape, np.int64, order="F" if _fortran(array) else "C")
        positions[...] = np.arange(array.size).reshape(array.shape)
        buffer = Buffer(np.array(array, copy=True), self.role, str(label), positions)
        self.buffers.append(buffer)
        self.sources.append((buffer, array))
        return TracedArray(buffer)

    def constant_reads(self, owner: int) -> list[ConstantRead]:
        """The closure arrays whose content the trace read before writing (baked in)."""
        return [ConstantRead.record(owner, buffer.label, array, buffer.stale)
                for buffer, array in self.sources if buffer.stale is not None and buffer.stale.any()]

    def replace_view(self, root: TracedArray, offset, strides, shape) -> TracedArray:
        positions = root.buffer.positions
        flat = positions.ravel(order="K")[offset:]
        pos = as_strided(flat, shape, tuple(s * positions.itemsize for s in strides), writeable=False)
        return TracedArray(root.buffer, (view_step(positions.shape, pos),), pos)

    def replace_other(self, obj, label: Label):
        if is_sparse(obj):
            return SparseOperator(obj)
        if is_factorization(obj):
            return Factorization(obj)
        if is_interpolant(obj):
            return Interpolant(obj)
        return _numpy_proxy.replacement(obj)


def _fortran(array: np.ndarray) -> bool:
    return array.flags.f_contiguous and not array.flags.c_contiguous


def _input(value, label: str | None = None) -> TracedArray:
    return TracedArray(Buffer(jnp.asarray(value), INPUT, label))


def _unwritten(buffer: Buffer) -> str:
    missing = np.argwhere(~buffer.written)
    shown = ", ".join(f"du[{', '.join(map(str, index))}]" for index in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    note = (
        " (writes through masks or indices that depend on u, p or t are not counted: "
        "write those with np.where)"
        if buffer.partial
        else ""
    )
    return f"{shown}{more}{note}"


def _warn_stale(buffers: list[Buffer], name: str) -> None:
    for buffer in buffers:
        if buffer.stale is None:
            continue
        carried = buffer.stale & buffer.written
        if carried.any():
            warnings.warn(
                f"{buffer.label} is read before it is written in a call of {name}: it "
                f"carries state from one call to the next ({int(carried.sum())} element(s)). "
                "The JAX translation freezes that state at the array's value when f was "
                "traced and no derivative flows through it; write the buffer before reading "
                "it, or carry the state in u.",
                UserWarning,
                stacklevel=4,
            )


def _holders(copies: list) -> list:
    """``(shadow, now)`` for every place of the copies that holds a shadow buffer: an
    object's attribute, a cell, a dict entry (globals too); ``now()`` reads it again."""
    found = []
    for obj in copies:
        if isinstance(obj, types.CellType):
            try:
                value = obj.cell_contents
            except ValueError:  # an empty cell (a name f assigns later)
                continue
            if isinstance(value, TracedArray):
                found.append((value, lambda obj=obj: obj.cell_contents))
        elif isinstance(obj, dict):
            found += [(v, lambda obj=obj, k=k: dict.get(obj, k)) for k, v in dict.items(obj)
                      if isinstance(v, TracedArray)]
        elif not isinstance(obj, (types.FunctionType, type, types.ModuleType)) and hasattr(obj, "__dict__"):
            found += [(v, lambda obj=obj, k=k: vars(obj).get(k)) for k, v in vars(obj).items()
                      if isinstance(v, TracedArray)]
    return found


def _warn_rebound(holders: list, name: str) -> None:
    """Warn, as :func:`_warn_stale` does, for a buffer that ``f`` read and then replaced by
    another array (``prev = u.copy()`` as an attribute, a ``nonlocal`` or a global): state
    carried between calls by rebinding, which the in-place spelling ``prev[:] = u`` warns of."""
    for shadow, now in holders:
        buffer = shadow._buf
        if now() is shadow or buffer.stale is None or not buffer.stale.any() or buffer.written.any():
            continue
        warnings.warn(
            f"{buffer.label} is read in a call of {name} and then rebound to another array: it "
            "carries state from one call to the next. The JAX translation freezes that state at the "
            "array's value when f was traced and no derivative flows through it; carry the state in u.",
            UserWarning,
            stacklevel=4,
        )


def in_order_of(tree, like):
    """``tree`` (shaped like ``like``, possibly with more leading axes per leaf) with its
    dicts in the key order of ``like``'s: JAX flattens dicts in sorted key order and
    rebuilds them so (every ``jit`` boundary, every ``tree_map``), but ``f`` and a loss get
    ``p`` as the user gave it (``rate, amp = p.values()`` read them swapped, silently), and
    a gradient is read in the order the user wrote ``p``."""
    if isinstance(tree, dict) and isinstance(like, dict) and tree.keys() == like.keys():
        ordered = ((k, in_order_of(tree[k], like[k])) for k in like)
        return type(tree)(ordered) if type(tree) is OrderedDict else dict(ordered)
    if isinstance(tree, (tuple, list)) and isinstance(like, (tuple, list)) and len(tree) == len(like):
        items = [in_order_of(a, b) for a, b in zip(tree, like)]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def run(f, u, p, t, *, inplace: bool, duplicate_closure: bool, reads: list | None = None, p_like=None):
    """Execute ``f`` once on traced ``u``, ``p``, ``t``; return ``du`` as a JAX array.

    Parameters
    ----------
    f : callable
        ``f(du, u, p, t)`` (``inplace``) or ``f(u, p, t)`` returning the derivative.
    u, p, t
        JAX values (or tracers); ``p`` is a pytree whose leaves become traced arrays.
    inplace : bool
        Whether ``f`` writes ``du`` in place.
    duplicate_closure : bool
        Shadow closure arrays with private traced buffers (True) or keep them as
        read-only constants (False).
    reads : list, optional
        Extended with the :class:`ConstantRead` records of this trace.
    p_like : optional
        ``p`` as the user gave it: ``f`` gets its dicts in that key order (:func:`in_order_of`).

    Returns
    -------
    jax.Array
        ``du``, with the shape and dtype of ``u``.

    Raises
    ------
    TranslationError
        If ``f`` does something that cannot be translated, or leaves part of ``du``
        unwritten.
    """
    from ..._checks import shape_errors_named

    try:
        with shape_errors_named(np.shape(u), p, getattr(f, "role", "f")):
            return _run(f, u, p, t, inplace, duplicate_closure, reads, p_like)
    finally:
        forget_slices()


def _run(f, u, p, t, inplace, duplicate_closure, reads, p_like=None):
    shadows = _Shadows(SHADOW if duplicate_closure else FROZEN)
    # a function is always copied (its globals become an overlay, so that `global x; x = ...`
    # in f stores the traced value there, not in the user's module), and so are the dicts
    # and lists it reaches (a buffer allocated lazily into one stays in the copy)
    copies = []
    g = copy_structure(f, shadows, copy_root=isinstance(f, types.FunctionType), copy_containers=True, copies=copies)
    holders = _holders(copies)
    u_traced = _input(u, "u")
    p_traced = in_order_of(jax.tree_util.tree_map(lambda leaf: _input(leaf, "p"), p), p_like)
    t_traced = _input(t)
    name = getattr(f, "__qualname__", type(f).__qualname__).replace("<locals>.", "")
    if inplace:
        du = Buffer(np.zeros(u_traced.shape, u_traced.dtype), DU, "du")
        g(TracedArray(du), u_traced, p_traced, t_traced)
        if not du.written.all():
            code = getattr(getattr(f, "__func__", f), "__code__", None)
            where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
            raise TranslationError(
                f"{name}{where} did not write {_unwritten(du)}.\n  How to fix: Write "
                "every element of du on every call (e.g. du[:] = 0.0 first for the entries "
                "that are zero)."
            )
        result = du.value
    else:
        result = operand(g(u_traced, p_traced, t_traced))
        if np.shape(result) != u_traced.shape:
            raise TranslationError(
                f"{name} returned an array of shape {np.shape(result)}; the state u has "
                f"shape {u_traced.shape}"
            )
    _warn_stale(shadows.buffers, name)
    _warn_rebound(holders, name)
    if reads is not None:
        reads.extend(shadows.constant_reads(0))
    return jnp.asarray(result, dtype=u_traced.dtype)


def call(fn, args: tuple, *, duplicate_closure: bool = True, reads: list | None = None,
         owner: int = 1, likes: tuple | None = None):
    """Execute a NumPy function (a loss) on traced stand-ins for the JAX ``args``.

    Closure arrays are shadowed as for :func:`run`; returns the result as a JAX value.
    ``reads`` is extended with the constants read (as callable number ``owner``).
    ``likes``: the arguments as the user gave them, one per argument (None: as they come),
    whose dicts' key order the arguments get (:func:`in_order_of`).
    """
    shadows = _Shadows(SHADOW if duplicate_closure else FROZEN)
    inputs = jax.tree_util.tree_map(_input, args)
    if likes is not None:
        inputs = tuple(in_order_of(a, like) for a, like in zip(inputs, likes))
    try:
        result = operand(copy_structure(fn, shadows)(*inputs))
    finally:
        forget_slices()
    _warn_stale(shadows.buffers, getattr(fn, "__qualname__", type(fn).__qualname__))
    if reads is not None:
        reads.extend(shadows.constant_reads(owner))
    return result
