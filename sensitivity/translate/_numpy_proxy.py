"""A stand-in for the ``numpy`` module inside the traced copy of ``f``.

NumPy's array constructors (``np.array``, ``np.zeros`` ...) do not take part in NumPy's
override protocols, so arrays they make inside ``f`` would be plain NumPy arrays that
cannot hold traced values. In the structural copy of ``f`` made for tracing, names bound
to the ``numpy`` module, or to these constructors, are replaced by the versions here:
they return traced arrays. Everything else is NumPy itself.
"""

from __future__ import annotations

import types

import numpy as np

from ._traced import TracedArray, all_concrete, contains_traced, operand, wrap
from ._views import jnp


def _array(obj, dtype=None, *, copy=True, order="K", subok=False, ndmin=0, like=None):
    if isinstance(obj, TracedArray) and not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    if not contains_traced(obj):
        result = np.array(obj, dtype=dtype, copy=copy, order=order, subok=subok, ndmin=ndmin)
        return wrap(result) if result.dtype.kind in "biufc" else result
    value = operand(obj)
    value = value.astype(dtype) if dtype is not None else value
    value = value.reshape((1,) * (ndmin - value.ndim) + value.shape) if value.ndim < ndmin else value
    return wrap(value)


def _asarray(obj, dtype=None, order=None, *, copy=None, like=None, device=None):
    return _array(obj, dtype, copy=bool(copy))


def _ascontiguousarray(obj, dtype=None, *, like=None):
    return _array(obj, dtype, copy=False)


def _constructor(fill):
    def make(shape, dtype=float, order="C", *, like=None, device=None):
        return wrap(np.full(shape, fill, dtype))

    return make


def _full(shape, fill_value, dtype=None, order="C", *, like=None, device=None):
    fill = operand(fill_value)
    if all_concrete(fill):
        return wrap(np.full(shape, fill, dtype))
    return wrap(jnp.full(shape, fill, dtype))


# np.empty gives zeros: its content is undefined in NumPy, and zeros keep runs reproducible.
CONSTRUCTORS = {
    "array": _array, "asarray": _asarray, "asanyarray": _asarray,
    "ascontiguousarray": _ascontiguousarray, "zeros": _constructor(0), "empty": _constructor(0),
    "ones": _constructor(1), "full": _full,
}  # fmt: skip
_REPLACED = {id(getattr(np, name)): function for name, function in CONSTRUCTORS.items()}


class _RandomRefused(types.ModuleType):
    """``numpy.random`` inside the traced copy of ``f``: every function refuses, since a
    number drawn while tracing would be one constant of the compiled program (the same
    "random" forcing at every step and every call), never a fresh draw."""

    def __init__(self):
        super().__init__("numpy.random")

    def __getattr__(self, name):
        from ._errors import translation_error

        def refused(*args, **kwargs):
            raise translation_error(
                f"np.random.{name} inside f (a draw while tracing becomes a constant of the "
                "compiled program)",
                "Draw the random numbers outside f and pass them in (in p, or as a closure "
                "array), or use a fixed forcing.")
        return refused


class _NumpyProxy(types.ModuleType):
    """``numpy`` with array constructors that return traced arrays, and ``numpy.random``
    refused (see :class:`_RandomRefused`)."""

    def __init__(self):
        super().__init__("numpy", np.__doc__)
        self.__dict__.update(CONSTRUCTORS)
        self.random = _RandomRefused()

    def __getattr__(self, name):
        return getattr(np, name)


NUMPY = _NumpyProxy()


def replacement(obj):
    """The stand-in for ``obj`` (the numpy module or one of its constructors), or None."""
    if obj is np:
        return NUMPY
    return _REPLACED.get(id(obj))
