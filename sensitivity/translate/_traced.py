"""``TracedArray``: the stand-in for NumPy arrays while an in-place ``f`` is translated.

A traced array holds its content as a JAX value (or as NumPy data while it is still a
trace-time constant) in a :class:`Buffer`; views share the buffer and add steps (see
:mod:`._views`). Every in-place write becomes a functional update of the buffer, so
writes through views land in the base and reads of any view see the latest content.
A view whose elements are a box of the buffer (``out[1:]``, ``du[0]``, ``a[:, -1]``)
reads and writes that box directly; box writes are deferred as pieces of the buffer
(:mod:`._tiling`) and joined by concatenation when read, which XLA fuses.
Arithmetic, ufuncs and NumPy functions reach :mod:`._dispatch` through NumPy's own
override protocols (``__array_ufunc__``, ``__array_function__``).
"""

from __future__ import annotations

import math

import numpy as np

from . import _dispatch
from ._buffer import DU, FROZEN, INPUT, Buffer
from ._errors import conversion_error, translation_error, user_source_line
from ._tiling import fit
from ._views import ComponentStep, IndexStep, infer_step, is_concrete, jnp, read_through, write_through

_UNKNOWN = object()  # a view's box, not yet computed


def wrap(value) -> TracedArray:
    """A new traced array owning ``value``."""
    return TracedArray(Buffer(value))


def unwrap(obj):
    """``obj`` with every traced array (also inside tuples, lists, dicts) read as its value."""
    if isinstance(obj, TracedArray):
        return obj._read()
    if type(obj) in (tuple, list):
        return type(obj)(unwrap(item) for item in obj)
    if type(obj) is dict:
        return {key: unwrap(item) for key, item in obj.items()}
    return obj


def contains_traced(obj) -> bool:
    """Whether ``obj`` is, or nests in tuples/lists, a traced array."""
    if isinstance(obj, TracedArray):
        return True
    return type(obj) in (tuple, list) and any(contains_traced(item) for item in obj)


def all_concrete(obj) -> bool:
    """Whether the unwrapped ``obj`` holds no JAX value (so NumPy can compute with it)."""
    if type(obj) in (tuple, list):
        return all(all_concrete(item) for item in obj)
    if type(obj) is dict:
        return all(all_concrete(item) for item in obj.values())
    return is_concrete(obj)


def operand(obj):
    """The array value of ``obj``: traced arrays are read, nested sequences are stacked."""
    if isinstance(obj, TracedArray):
        return obj._read()
    if not contains_traced(obj):
        return obj
    value = unwrap(obj)
    return np.array(value) if all_concrete(value) else jnp.array(value)


def normalize_key(key):
    """``(key, static)``: an index with traced parts replaced by values.

    ``static`` is true when the key is known at trace time, so NumPy can apply it to
    the positions of a view (to find which elements are read or written).
    """
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    static = True
    for part in parts:
        if isinstance(part, slice):
            out.append(slice(*(_static_int(b) for b in (part.start, part.stop, part.step))))
            continue
        if isinstance(part, (TracedArray, list)):
            part = operand(part)
            part = np.asarray(part) if is_concrete(part) else part
        if not is_concrete(part) and jnp.issubdtype(part.dtype, jnp.inexact):
            raise translation_error(
                "indexing with a floating array that depends on u, p or t (an integer index "
                "array held in p arrives as floats: a derivative with respect to p takes p's "
                "leaves as real numbers)",
                "Keep index arrays out of p: in f's closure, a global or an attribute of f's "
                "object (p holds the values to differentiate).",
            )
        static = static and is_concrete(part)
        out.append(part)
    return (tuple(out) if isinstance(key, tuple) else out[0]), static


def _static_int(bound):
    if isinstance(bound, TracedArray):
        value = bound._read()
        if not is_concrete(value):
            raise translation_error(
                "a slice bound that depends on u, p or t",
                "Slice bounds set shapes, which must be known when f is traced: compute "
                "them from shapes or constants, or select with np.where instead.",
            )
        return int(value)
    return bound


def _has_traced_mask(key) -> bool:
    """Whether ``key`` holds a boolean mask that depends on u, p or t."""
    parts = key if isinstance(key, tuple) else (key,)
    return any(not is_concrete(part) and jnp.issubdtype(part.dtype, jnp.bool_) for part in parts)


def _defers(other) -> bool:
    """NumPy's rule: binary operators give way to operands with ``__array_ufunc__ = None``."""
    return getattr(type(other), "__array_ufunc__", False) is None


class TracedArray:
    """An array standing in for a NumPy array while ``f`` is translated to JAX.

    Supports NumPy's array protocols, indexing and assignment (ints, slices, ``None``,
    ``Ellipsis``, boolean masks, integer index arrays), views (basic slices, reshapes,
    transposes, views of views), in-place operators and the usual ndarray methods.
    Conversions to Python scalars raise :class:`TranslationError` unless the value is a
    trace-time constant.
    """

    __slots__ = ("_buf", "_steps", "_pos", "_box")
    __array_priority__ = 1000.0

    def __hash__(self) -> int:
        """A scalar trace-time constant hashes as its value (as a NumPy scalar does); a
        traced value (``t`` as a memo key: ``if t not in cache``) is refused by name, an
        array as NumPy refuses it."""
        if self.shape:
            raise TypeError("unhashable type: 'numpy.ndarray'")
        return hash(self._constant("hash", "using it as a dict key or set member (hashing)").item())

    def __init__(self, buf: Buffer, steps: tuple = (), pos: np.ndarray | None = None):
        self._buf = buf
        self._steps = steps
        self._pos = pos
        self._box = _UNKNOWN

    # -- structure -------------------------------------------------------------------
    @property
    def buffer(self) -> Buffer:
        """The storage this array (a view, possibly) reads from and writes to."""
        return self._buf

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._pos.shape) if self._steps else self._buf.shape

    @shape.setter
    def shape(self, shape) -> None:
        """``a.shape = s``: NumPy reshapes ``a`` in place, as a view of the same memory (its
        error where that needs a copy); here ``a`` becomes that view (a view of its positions
        always shares their memory: :meth:`_derived` gives a view of the same buffer)."""
        def in_place(positions):
            view = positions.view()
            view.shape = shape  # NumPy's rule (AttributeError where a copy would be needed)
            return view

        reshaped = self._derive(in_place)
        self._steps, self._pos, self._box = reshaped._steps, reshaped._pos, _UNKNOWN

    @property
    def dtype(self) -> np.dtype:
        if self._is_component():
            return np.empty(0, self._buf.dtype).real.dtype
        return self._buf.dtype

    def _is_component(self) -> bool:
        """Whether this is a view of the real or imaginary part of a complex buffer."""
        return any(type(step) is ComponentStep for step in self._steps)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def T(self) -> TracedArray:
        return self._derive(np.transpose)

    @property
    def real(self) -> TracedArray:
        """A view of the real part (as NumPy's, writable); the array itself if it is real."""
        return self._component("real") if self.dtype.kind == "c" else self

    @real.setter
    def real(self, value) -> None:
        self.real[...] = value

    @property
    def imag(self) -> TracedArray:
        """A view of the imaginary part; zeros (a copy) if the array is real."""
        return self._component("imag") if self.dtype.kind == "c" else wrap(jnp.zeros(self.shape, self.dtype))

    @imag.setter
    def imag(self, value) -> None:
        if self.dtype.kind != "c":
            raise TypeError("array does not have imaginary part to set")
        self.imag[...] = value

    def _component(self, part: str) -> TracedArray:
        return TracedArray(self._buf, self._steps + (ComponentStep(part),), self._positions())

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        return f"TracedArray(shape={self.shape}, dtype={self.dtype}, role={self._buf.role})"

    # -- reading and writing -----------------------------------------------------------
    def _positions(self) -> np.ndarray:
        return self._pos if self._steps else self._buf.positions

    def _region(self):
        """``(lo, hi)`` if this view is the box ``[lo, hi)`` of its buffer, else None."""
        if self._box is _UNKNOWN:
            shape = self._buf.shape
            self._box = self._box_of(self._positions()) if self._steps else ((0,) * len(shape), shape)
        return self._box

    def _raw(self):
        """The value, without recording a read (for read-modify-write internals)."""
        if not self._steps:
            return self._buf.value
        box = self._region()
        if box is None:
            return read_through(self._buf.value, self._steps)
        value = self._buf.read_box(*box)
        return value if tuple(value.shape) == self.shape else value.reshape(self.shape)

    def _read(self):
        """The value, recording that ``f`` read it."""
        self._note_read()
        return self._raw()

    def _note_read(self, key=None) -> None:
        buf = self._buf
        if buf.written is None:
            return
        pos = self._positions() if key is None else self._positions()[key]
        pos = np.ravel(pos)
        unwritten = ~buf.written.reshape(-1)[pos]
        if not unwritten.any():
            return
        if buf.role == DU:
            first = np.unravel_index(pos[unwritten][0], buf.written.shape)
            raise translation_error(
                f"reading du[{', '.join(map(str, first))}] before f has written it",
                "On entry du holds undefined values: write every element before reading "
                "it (e.g. start with du[:] = 0.0).",
            )
        buf.stale.reshape(-1)[pos[unwritten]] = True

    def _mark_written(self, value, marked) -> None:
        """Check that ``value`` may be written here; record the positions ``marked``."""
        buf = self._buf
        if buf.role == INPUT and buf.label == "u":
            raise translation_error(
                "writing into u, the state f is given",
                "f must not change u (the solver's state; on the NumPy backend the write would "
                "change the solution): copy it first (v = u.copy()) and change the copy.",
            )
        if buf.role == INPUT and buf.label == "p":
            raise translation_error(
                "writing into p, the parameters f is given",
                "f must not change p (the problem's parameters; on the NumPy backend every call "
                "would change them again): copy first (k = p.copy()) or write k = p * 2.",
            )
        if buf.role == FROZEN and not is_concrete(value):
            raise translation_error(
                f"writing a value that depends on u, p or t into {buf.label}",
                "With duplicate_closure=False closure arrays are constants; use "
                "duplicate_closure=True (the default) so that work buffers are duplicated "
                "and derivatives flow through them.",
            )
        if buf.written is not None:
            if marked is None:
                buf.partial = True
            else:
                buf.written.reshape(-1)[np.ravel(marked)] = True

    def _store(self, key, value, marked) -> None:
        """Write ``value`` into ``self[key]``; ``marked``: positions written (None: unknown)."""
        buf = self._buf
        self._mark_written(value, marked)
        box, shape = self._target(key)
        if box is None or (buf.concrete and is_concrete(value)):
            buf.value = write_through(buf.value, self._steps, key, value)
        else:
            buf.write_box(*box, fit(value, shape, buf.dtype, box))

    def _increment(self, value, sign: int) -> bool:
        """``self += sign * value``, deferred (see :mod:`._tiling`), if this view is a box.

        Returns False, having done nothing, when it is not a box, when ``value`` and the
        buffer are both trace-time constants, or when ``self + value`` would not keep
        ``self``'s dtype: the caller then computes the sum and stores it.
        """
        box = self._region()
        value = operand(value)
        if box is None or self.dtype.kind not in "iufc" or (self._buf.concrete and all_concrete(value)):
            return False
        if jnp.result_type(self.dtype, value) != self.dtype:
            return False
        self._note_read()
        self._mark_written(value, self._positions())
        self._buf.increment_box(*box, fit(value, self.shape, self.dtype, box), sign)
        return True

    def _same_view(self, other) -> bool:
        """Whether ``other`` is a view of the same elements of the same buffer, same shape."""
        return (
            isinstance(other, TracedArray)
            and other._buf is self._buf
            and other.shape == self.shape
            and self._region() is not None
            and other._region() == self._region()
        )

    def _holds_view(self, key, value) -> bool:
        """Whether ``value`` is the view ``self[key]`` (same buffer, elements and shape)."""
        if not isinstance(value, TracedArray) or value._buf is not self._buf:
            return False
        box, shape = self._target(key)
        return box is not None and value.shape == shape and value._region() == box

    def _target(self, key):
        """``(box, shape)``: the box of the buffer ``self[key]`` is (or None) and its shape."""
        if key is Ellipsis:
            return self._region(), self.shape
        parts = key if isinstance(key, tuple) else (key,)
        if not all(is_concrete(part) for part in parts):
            return None, None
        positions = self._positions()[key]
        return self._box_of(positions), np.shape(positions)

    def _box_of(self, positions):
        """The box of the buffer holding ``positions`` (None if they are no box, or if this
        is a real or imaginary part: its elements are not the buffer's)."""
        return None if self._is_component() else self._buf.box(positions)

    def _assign(self, value, where=True) -> None:
        """``self[...] = value`` where ``where`` holds (the ``out=`` of ufuncs and functions)."""
        if where is True:
            self._store(Ellipsis, value, self._positions())
            return
        mask = operand(where)
        old = self._raw()
        if all_concrete(mask):  # a constant mask: the elements written are known
            mask = np.broadcast_to(np.asarray(mask, bool), self.shape)
            select = np.where if all_concrete((value, old)) else jnp.where
            self._store(Ellipsis, select(mask, value, old), self._positions()[mask])
        else:
            self._store(Ellipsis, jnp.where(mask, value, old), None)

    def __getitem__(self, key) -> TracedArray:
        key, static = normalize_key(key)
        if not static:
            if _has_traced_mask(key):
                raise translation_error(
                    "indexing with a boolean mask that depends on u, p or t "
                    "(the result's size would depend on values)",
                    "Select elementwise with np.where(mask, a, b) instead.",
                )
            return wrap(jnp.asarray(self._read())[key])
        pos = self._positions()[key]
        if isinstance(pos, np.ndarray) and np.may_share_memory(pos, self._buf.positions):
            return TracedArray(self._buf, self._steps + (IndexStep(key),), pos)
        self._note_read(key)
        box = None if self._buf.concrete else self._box_of(pos)
        if box is None:
            return wrap(self._raw()[key])
        return wrap(self._buf.read_box(*box).reshape(np.shape(pos)))  # e.g. an element

    def __setitem__(self, key, value) -> None:
        key, static = normalize_key(key)
        if static and self._holds_view(key, value):  # the write-back of ``a[key] += b``
            value._note_read()
            self._mark_written(value, self._positions()[key])
            return
        value = operand(value)
        if static:
            self._store(key, value, self._positions()[key])
        elif _has_traced_mask(key):
            if isinstance(key, tuple) or np.ndim(value) != 0:
                raise translation_error(
                    "assigning an array, or with further indices, through a boolean mask "
                    "that depends on u, p or t",
                    "Write a[:] = np.where(mask, values, a) instead.",
                )
            self._store(Ellipsis, jnp.where(key, value, self._raw()), None)
        else:
            self._store(key, value, None)

    def _derive(self, numpy_function) -> TracedArray | list:
        """The result of a NumPy view function (reshape, transpose, ...) applied to self.

        NumPy, applied to the positions, decides whether the result is a view.
        """
        pos = self._positions()
        result = numpy_function(pos)
        local = numpy_function(np.arange(pos.size).reshape(pos.shape))
        if isinstance(result, (list, tuple)):
            return type(result)(self._derived(r, lo) for r, lo in zip(result, local))
        return self._derived(result, local)

    def _derived(self, pos, local) -> TracedArray:
        step = infer_step(self.shape, np.asarray(local))
        if isinstance(pos, np.ndarray) and np.may_share_memory(pos, self._buf.positions):
            return TracedArray(self._buf, self._steps + (step,), pos)
        return wrap(step.get(self._read()))

    # -- NumPy protocols ----------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _dispatch.apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _dispatch.apply_function(func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        value = self._read()
        if self._buf.role == INPUT or not is_concrete(value):
            fix = (
                "Draw random numbers outside f and pass them in p."
                if "random" in user_source_line()
                else "Keep it a traced array: use NumPy functions on it, and write results "
                "into du or into arrays created with np.zeros/np.empty or reachable from f. "
                "A list or tuple of traced values given to a NumPy function (np.mean([a, b]), "
                "np.maximum.reduce([u, v])) is converted this way too: make it an array first, "
                "np.array([a, b]) or np.stack([u, v])."
            )
            raise translation_error(
                "converting a value that depends on u, p or t to a NumPy array (np.asarray, "
                "np.random, writing it into a NumPy array that is not a buffer reachable "
                "from f, or passing it to a non-NumPy library)",
                fix,
            )
        return np.array(value, dtype=dtype, copy=True)

    def _constant(self, kind: str, operation: str):
        value = self._read()
        if self._buf.role == INPUT or not is_concrete(value):
            raise conversion_error(kind, operation)
        return value

    def __format__(self, spec: str) -> str:
        """A trace-time constant formats as NumPy would; a traced value (e.g. ``t`` in a
        debugging ``print(f"{t:.3f}")``, run once when ``f`` is traced) as its description."""
        value = self._raw()
        if is_concrete(value) and self._buf.role != INPUT:
            self._note_read()  # a constant read: the cache checks it before reuse
            return format(value.item() if np.ndim(value) == 0 else value, spec)
        return repr(self)

    def __str__(self) -> str:
        """As :meth:`__format__`: a constant as NumPy prints it (``float(str(c[0]))`` of a
        closure constant read its description), a traced value as its description."""
        return self.__format__("")

    def __bool__(self) -> bool:
        return bool(self._constant("bool", "Python if/while/and/or/not (or the builtins max, min, sorted over "
                                           "array elements)"))

    def __float__(self) -> float:
        return float(self._constant("float", "float() (which math.* functions call)"))

    def __complex__(self) -> complex:
        return complex(self._constant("float", "complex()"))

    def __int__(self) -> int:
        return int(self._constant("int", "int()"))

    def __round__(self, ndigits=None):
        """``round(x[, n])``, ``math.floor``, ``math.ceil``, ``math.trunc``: Python's on a
        trace-time constant, else NumPy's (a traced array: no Python number can hold it)."""
        value = self._raw()
        if is_concrete(value) and self._buf.role != INPUT:
            self._note_read()
            return round(value.item() if np.ndim(value) == 0 else value, ndigits)
        return np.round(self, ndigits or 0)

    def __floor__(self):
        return self._rounded(np.floor, math.floor)

    def __ceil__(self):
        return self._rounded(np.ceil, math.ceil)

    def __trunc__(self):
        return self._rounded(np.trunc, math.trunc)

    def _rounded(self, traced, python):
        value = self._raw()
        if is_concrete(value) and self._buf.role != INPUT and np.ndim(value) == 0:
            self._note_read()
            return python(value.item())
        return traced(self)

    def __index__(self) -> int:
        return self._constant("int", "use as an index, size or range bound").__index__()

    def item(self, *args):
        """The element as a Python scalar (trace-time constants only)."""
        return self._constant("float", ".item()").item(*args)

    def tolist(self):
        """The content as nested lists: of Python scalars for a trace-time constant, else of
        the elements as 0-d traced arrays (``a, b = u.tolist()``, then arithmetic on them)."""
        value = self._raw()
        if is_concrete(value) and self._buf.role != INPUT:
            self._note_read()  # a constant read: the cache checks it before reuse
            return value.tolist()
        if self.ndim == 0:
            return self
        return [self[i].tolist() for i in range(self.shape[0])]

    @property
    def flat(self) -> _Flat:
        """``a.flat[i]``, read and written: the elements in C order, by flat index or slice."""
        return _Flat(self)

    @flat.setter
    def flat(self, value) -> None:
        """``a.flat = value``: every element, from ``value``'s repeated in C order."""
        _Flat(self)[:] = value

    # -- methods ------------------------------------------------------------------------
    def copy(self, order="C") -> TracedArray:
        return wrap(self._read())

    __copy__ = copy

    def __deepcopy__(self, memo) -> TracedArray:
        return self.copy()

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True) -> TracedArray:
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        return wrap(self._read().astype(dtype))

    def fill(self, value) -> None:
        self[...] = value

    def flatten(self, order="C") -> TracedArray:
        return self._derive(lambda a: a.flatten(order))

    def ravel(self, order="C") -> TracedArray:
        return self._derive(lambda a: a.ravel(order))

    def reshape(self, *shape, order="C") -> TracedArray:
        return self._derive(lambda a: a.reshape(*shape, order=order))

    def transpose(self, *axes) -> TracedArray:
        return self._derive(lambda a: a.transpose(*axes))

    def view(self, dtype=None, type=None) -> TracedArray:
        """``a.view()``: a view of the whole array (writes go through); a view as another
        dtype (a reinterpretation of the bytes) has no counterpart in JAX."""
        if (dtype is None or np.dtype(dtype) == self.dtype) and type is None:
            return self._derive(lambda a: a.view())
        raise translation_error(
            f"ndarray.view as {np.dtype(dtype) if type is None else type.__name__} (a reinterpretation of the memory)",
            "Memory layout does not exist in the translation: for the real and imaginary parts of a "
            "complex array use z.real and z.imag (views that can be written), or np.stack / np.concatenate.",
        )

    def sort(self, axis=-1, kind=None, order=None) -> None:
        self[...] = np.sort(self, axis=axis)

    def __getattr__(self, name):
        if not name.startswith("_") and hasattr(np.ndarray, name):
            raise translation_error(
                f"ndarray.{name} (not supported by the translation)",
                "Use the equivalent np.* function, or rewrite without it.",
            )
        raise AttributeError(f"'TracedArray' object has no attribute {name!r}")


class _Flat:
    """:attr:`TracedArray.flat`: a flat index or slice mapped to the array's own indices (so
    a write goes into the array, whatever its strides)."""

    def __init__(self, array: TracedArray):
        self._array = array

    def _indices(self, key):
        return np.unravel_index(np.arange(self._array.size)[key], self._array.shape)

    def __getitem__(self, key):
        return self._array[self._indices(key)]

    def __setitem__(self, key, value) -> None:
        """As NumPy's, a value with fewer elements than ``key`` selects is repeated."""
        indices = self._indices(key)
        value = operand(value)
        if np.ndim(value) and np.size(value) != np.size(indices[0]):
            value = _dispatch._cycled(value, np.size(indices[0])).reshape(np.shape(indices[0]))
        self._array[indices] = value

    def __len__(self) -> int:
        return self._array.size

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _binary(ufunc):
    def forward(self, other):
        return NotImplemented if _defers(other) else ufunc(self, other)

    def reflected(self, other):
        return NotImplemented if _defers(other) else ufunc(other, self)

    def inplace(self, other):
        ufunc(self, other, out=(self,))
        return self

    return forward, reflected, inplace


def _method(function):
    def method(self, *args, **kwargs):
        return function(self, *args, **kwargs)

    method.__name__ = function.__name__
    return method


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "matmul": np.matmul,
    "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
    "lshift": np.left_shift, "rshift": np.right_shift,
}  # fmt: skip
_COMPARISONS = {
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
    "eq": np.equal, "ne": np.not_equal,
}  # fmt: skip
_UNARY = {"neg": np.negative, "pos": np.positive, "abs": np.absolute, "invert": np.invert}
_METHODS = (
    "all", "any", "argmax", "argmin", "argsort", "choose", "clip", "compress", "conj",
    "conjugate", "cumprod", "cumsum", "diagonal", "dot", "max", "mean", "min", "nonzero",
    "prod", "repeat", "round", "searchsorted", "squeeze", "std", "sum", "swapaxes", "take",
    "trace", "var",
)  # fmt: skip

for _name, _ufunc in _BINARY.items():
    _fwd, _refl, _inpl = _binary(_ufunc)
    setattr(TracedArray, f"__{_name}__", _fwd)
    setattr(TracedArray, f"__r{_name}__", _refl)
    setattr(TracedArray, f"__i{_name}__", _inpl)
for _name, _ufunc in _COMPARISONS.items():
    setattr(TracedArray, f"__{_name}__", _binary(_ufunc)[0])
for _name, _ufunc in _UNARY.items():
    setattr(TracedArray, f"__{_name}__", _method(_ufunc))
for _name in _METHODS:
    setattr(TracedArray, _name, _method(getattr(np, _name)))
TracedArray.__divmod__, TracedArray.__rdivmod__, _ = _binary(np.divmod)
del _name, _ufunc, _fwd, _refl, _inpl, _
