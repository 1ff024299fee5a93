"""A stand-in for the ``numpy`` module inside the traced copy of ``f``.

NumPy's array constructors (``np.array``, ``np.zeros`` ...) do not take part in NumPy's
override protocols, so arrays they make inside ``f`` would be plain NumPy arrays that
cannot hold traced values. In the structural copy of ``f`` made for tracing, names bound
to the ``numpy`` module, or to these constructors, are replaced by the versions here:
they return traced arrays. Everything else is NumPy itself.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from ._traced import TracedArray, all_concrete, contains_traced, operand, unwrap, wrap
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


def _made_by(function):
    """A NumPy constructor whose numeric result comes back traced (``np.eye(n)``,
    ``np.arange(...)``, ``np.linspace(0.0, 1.0, n)``: arrays made inside ``f`` that may be
    written with values of ``u`` or ``p`` later). Traced arguments (``np.linspace(0, p[0],
    n)``) dispatch to the translation as usual."""
    def make(*args, **kwargs):
        result = function(*args, **kwargs)
        return wrap(result) if isinstance(result, np.ndarray) and result.dtype.kind in "biufc" else result
    return make


def _fromiter(iterable, dtype, count=-1, *, like=None):
    """``np.fromiter`` of an iterable that may yield values of ``u``, ``p`` or ``t``."""
    items = list(iterable) if count < 0 else [x for _, x in zip(range(count), iterable)]
    if not contains_traced(items):
        return wrap(np.fromiter(items, dtype, len(items)))
    return wrap(jnp.stack([jnp.asarray(operand(x)) for x in items]).astype(dtype))


# np.empty gives zeros: its content is undefined in NumPy, and zeros keep runs reproducible.
CONSTRUCTORS = {
    "array": _array, "asarray": _asarray, "asanyarray": _asarray,
    "ascontiguousarray": _ascontiguousarray, "zeros": _constructor(0), "empty": _constructor(0),
    "ones": _constructor(1), "full": _full, "fromiter": _fromiter,
    **{name: _made_by(getattr(np, name)) for name in ("eye", "identity", "arange", "linspace", "logspace",
                                                      "geomspace", "tri", "fromfunction")},
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


def _all_axes(axis, x):
    return tuple(range(jnp.ndim(x))) if axis is None else axis


# scipy.special's Python-level functions (its ufuncs are translated like NumPy's): the
# jax counterpart on traced values (softmax over all axes by default, as SciPy's)
_SPECIAL = {
    "logsumexp": lambda: __import__("jax.scipy.special").scipy.special.logsumexp,
    "softmax": lambda: lambda x, axis=None: jnp_nn().softmax(x, axis=_all_axes(axis, x)),
    "log_softmax": lambda: lambda x, axis=None: jnp_nn().log_softmax(x, axis=_all_axes(axis, x)),
}


def jnp_nn():
    import jax.nn

    return jax.nn


def _special_function(original, counterpart):
    def call(*args, **kwargs):
        values = unwrap((args, kwargs))
        if all_concrete(values):
            result = original(*values[0], **values[1])
        else:
            result = counterpart()(*values[0], **values[1])
        return tuple(map(wrap, result)) if isinstance(result, tuple) else wrap(result)
    return call


class _SpecialProxy(types.ModuleType):
    """``scipy.special`` inside the traced copy of ``f``: :data:`_SPECIAL` replaced."""

    def __init__(self, special):
        super().__init__("scipy.special", special.__doc__)
        self._special = special
        for name, counterpart in _SPECIAL.items():
            setattr(self, name, _special_function(getattr(special, name), counterpart))

    def __getattr__(self, name):
        return getattr(self._special, name)


class _ScipyProxy(types.ModuleType):
    """``scipy`` inside the traced copy of ``f``: its ``special`` is :class:`_SpecialProxy`."""

    def __init__(self, scipy, special):
        super().__init__("scipy", scipy.__doc__)
        self._scipy, self.special = scipy, special

    def __getattr__(self, name):
        return getattr(self._scipy, name)


class _Vectorized:
    """``np.vectorize(pyfunc)`` inside the traced copy of ``f``: on values of ``u``, ``p``
    or ``t`` it calls ``pyfunc`` once on the whole (broadcast) arrays. ``vectorize``
    promises an elementwise ``pyfunc``, and one written with NumPy operations gives the
    same values on arrays; one that branches in Python (``if s > 0:``) gets the
    translation's error naming the line and ``np.where``."""

    def __init__(self, vectorized: np.vectorize):
        self._vectorized = vectorized

    def __call__(self, *args, **kwargs):
        if not contains_traced((args, list(kwargs.values()))):
            return self._vectorized(*args, **kwargs)
        vectorized = self._vectorized
        if vectorized.signature is not None or vectorized.excluded:
            from ._errors import translation_error

            raise translation_error("np.vectorize with signature= or excluded= on values that depend on u, p or t",
                                    "Call the function on the arrays directly, written with NumPy operations.")
        shape = np.broadcast_shapes(*(np.shape(operand(a)) for a in (*args, *kwargs.values())))
        result = operand(vectorized.pyfunc(*args, **kwargs))
        result = jnp.broadcast_to(result, shape)
        return wrap(result.astype(vectorized.otypes[0]) if vectorized.otypes else result)


def replacement(obj):
    """The stand-in for ``obj`` (the numpy module or one of its constructors, scipy.special
    or one of its :data:`_SPECIAL` functions), or None."""
    if obj is np:
        return NUMPY
    if isinstance(obj, np.vectorize):
        return _Vectorized(obj)
    found = _REPLACED.get(id(obj))
    if found is not None or not isinstance(obj, (types.ModuleType, types.FunctionType)):
        return found
    special = sys.modules.get("scipy.special")
    if special is None:
        return None
    proxy = _special_proxy(special)
    if obj is special:
        return proxy
    if obj is sys.modules.get("scipy"):
        return _ScipyProxy(obj, proxy)
    return next((getattr(proxy, name) for name in _SPECIAL if getattr(special, name, None) is obj), None)


_PROXIES: dict = {}


def _special_proxy(special) -> _SpecialProxy:
    if id(special) not in _PROXIES:
        _PROXIES[id(special)] = _SpecialProxy(special)
    return _PROXIES[id(special)]
