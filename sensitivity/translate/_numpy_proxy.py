"""A stand-in for the ``numpy`` module inside the traced copy of ``f``.

NumPy's array constructors (``np.array``, ``np.zeros`` ...) do not take part in NumPy's
override protocols, so arrays they make inside ``f`` would be plain NumPy arrays that
cannot hold traced values. In the structural copy of ``f`` made for tracing, names bound
to the ``numpy`` module, or to these constructors, are replaced by the versions here:
they return traced arrays. Everything else is NumPy itself.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import types

import numpy as np

from . import _ndimage
from ._traced import TracedArray, all_concrete, contains_traced, operand, unwrap, wrap
from ._views import jax, jnp


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


class _Concatenator:
    """``np.r_`` / ``np.c_`` inside the traced copy of ``f``. On items that may depend on
    ``u``, ``p`` or ``t``: a slice becomes its range (``np.r_[0:3]``), a scalar a 1-d
    array, and the items are joined along the first axis (``r_``), or, 1-d items as
    columns, along the last (``c_``, NumPy's ``r_['-1,2,0', ...]``); the string directives
    (``np.r_['0,2', ...]``) are refused there. NumPy's own on constants."""

    def __init__(self, original, columns: bool):
        self._original, self._columns = original, columns

    def __getitem__(self, key):
        items = key if isinstance(key, tuple) else (key,)
        if not contains_traced(items):
            result = self._original[key]
            return wrap(result) if isinstance(result, np.ndarray) and result.dtype.kind in "biufc" else result
        if any(isinstance(item, str) for item in items):
            from ._errors import translation_error

            raise translation_error("np.r_/np.c_ with a string directive on values that depend on u, p or t",
                                    "Join the arrays with np.concatenate or np.stack.")
        parts = []
        for item in items:
            part = jnp.asarray(np.r_[item] if isinstance(item, slice) else operand(item))
            part = part.reshape(-1) if part.ndim == 0 else part
            parts.append(part[:, None] if self._columns and part.ndim == 1 else part)
        dtype = jnp.result_type(*parts)
        return wrap(jnp.concatenate([part.astype(dtype) for part in parts], axis=-1 if self._columns else 0))


def _piecewise(x, condlist, funclist, *args, **kw):
    """``np.piecewise`` inside the traced copy of ``f``: NumPy's own on constants without
    functions; else :func:`._dispatch._piecewise` (NumPy dispatches only on ``x`` and the
    conditions, and writes the functions' values, or a constant of ``p``, into a NumPy
    array)."""
    if not contains_traced((x, condlist, list(funclist))) and not any(map(callable, funclist)):
        return np.piecewise(x, condlist, funclist, *args, **kw)
    from ._dispatch import _piecewise as traced_piecewise

    return traced_piecewise(np.piecewise, "piecewise", (x, condlist, funclist, *args), kw)


class _ScalarTypeMeta(type):
    """The metaclass of the scalar-type stand-ins (:func:`_scalar_type`): calling one
    converts like NumPy's type, and ``isinstance``/``issubclass`` answer for NumPy's."""

    def __call__(cls, *args, **kwargs):
        if not args or all_concrete(unwrap(args[0])):
            return cls.numpy_type(*unwrap(args), **kwargs)
        return wrap(jnp.asarray(operand(args[0])).astype(cls.numpy_type))

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls.numpy_type)

    def __subclasscheck__(cls, subclass):
        return issubclass(subclass, cls.numpy_type)


def _scalar_type(numpy_type: type) -> type:
    """``np.float64`` (and the other numeric scalar types) inside the traced copy of ``f``:
    ``np.float64(p[0])`` converts a value of ``u``, ``p`` or ``t`` (a traced array of that
    dtype), and constants as NumPy does. A subclass of NumPy's type, so that it still
    works as a dtype (``np.zeros(n, np.float64)``, ``x.astype(np.float32)``,
    ``x.dtype == np.float64``, ``np.issubdtype``)."""
    return _ScalarTypeMeta(numpy_type.__name__, (numpy_type,),
                           {"numpy_type": numpy_type, "__module__": "numpy", "__doc__": numpy_type.__doc__})


_SCALAR_TYPES = {name: _scalar_type(getattr(np, name)) for name in (
    "float16", "float32", "float64", "complex64", "complex128",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "intc", "intp", "uintp")}

# np.empty gives zeros: its content is undefined in NumPy, and zeros keep runs reproducible.
CONSTRUCTORS = {
    "array": _array, "asarray": _asarray, "asanyarray": _asarray,
    "ascontiguousarray": _ascontiguousarray, "zeros": _constructor(0), "empty": _constructor(0),
    "ones": _constructor(1), "full": _full, "fromiter": _fromiter,
    **{name: _made_by(getattr(np, name)) for name in ("eye", "identity", "arange", "linspace", "logspace",
                                                      "geomspace", "tri", "fromfunction")},
    "piecewise": _piecewise, "r_": _Concatenator(np.r_, columns=False), "c_": _Concatenator(np.c_, columns=True),
    **_SCALAR_TYPES,
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
        self.vectorize = lambda *args, **kwargs: _Vectorized(np.vectorize(*args, **kwargs))  # made in f

    def __getattr__(self, name):
        return getattr(np, name)


NUMPY = _NumpyProxy()


def _all_axes(axis, x):
    return tuple(range(jnp.ndim(x))) if axis is None else axis


def _jax_module(name: str):
    import importlib

    return importlib.import_module(name)


def _solve_banded(l_and_u, ab, b, overwrite_ab=False, overwrite_b=False, check_finite=True):
    """``scipy.linalg.solve_banded``: tridiagonal systems by ``lax.linalg.tridiagonal_solve``,
    other bands through the dense matrix (``ab[u + i - j, j] = a[i, j]``)."""
    lower, upper = l_and_u
    ab, b = jnp.asarray(ab), jnp.asarray(b)
    n = ab.shape[1]
    if (lower, upper) == (1, 1):
        zero = jnp.zeros(1, ab.dtype)
        below, diagonal, above = jnp.concatenate([zero, ab[2, :-1]]), ab[1], jnp.concatenate([ab[0, 1:], zero])
        rhs = b.reshape(n, -1).astype(jnp.result_type(ab, b))
        return jax.lax.linalg.tridiagonal_solve(below, diagonal, above, rhs).reshape(b.shape)
    rows, cols = np.indices((n, n))
    band = rows - cols
    inside = (band >= -upper) & (band <= lower)
    dense = jnp.where(inside, ab[np.clip(upper + band, 0, lower + upper), cols], 0.0)
    return jnp.linalg.solve(dense, b)


def _scipy_linalg():
    linalg = _jax_module("jax.scipy.linalg")
    import scipy.linalg

    names = [n for n in dir(linalg) if not n.startswith("_") and hasattr(scipy.linalg, n)]
    return {**{n: (lambda n=n: getattr(linalg, n)) for n in names}, "solve_banded": lambda: _solve_banded,
            "norm": lambda: jnp.linalg.norm, "pinv": lambda: jnp.linalg.pinv,
            "svdvals": lambda: lambda a: jnp.linalg.svd(a, compute_uv=False)}


def _cumulative_trapezoid(y, x=None, dx=1.0, axis=-1, initial=None):
    """``scipy.integrate.cumulative_trapezoid``: the running sums of the trapezoids."""
    y = jnp.moveaxis(jnp.asarray(y), axis, -1)
    steps = dx if x is None else jnp.diff(jnp.asarray(x))
    total = jnp.cumsum(0.5 * steps * (y[..., 1:] + y[..., :-1]), axis=-1)
    if initial is not None:
        total = jnp.concatenate([jnp.full(total.shape[:-1] + (1,), initial, total.dtype), total], axis=-1)
    return jnp.moveaxis(total, -1, axis)


# SciPy's Python-level functions (scipy.special's ufuncs are translated like NumPy's): the
# jax counterpart on traced values, by module (softmax over all axes by default, as SciPy's)
_SCIPY = {
    "scipy.special": lambda: {
        **{name: (lambda name=name: getattr(_jax_module("jax.scipy.special"), name))
           for name in ("polygamma", "factorial", "comb")},
        "logsumexp": lambda: _jax_module("jax.scipy.special").logsumexp,
        "softmax": lambda: lambda x, axis=None: _jax_module("jax.nn").softmax(x, axis=_all_axes(axis, x)),
        "log_softmax": lambda: lambda x, axis=None: _jax_module("jax.nn").log_softmax(x, axis=_all_axes(axis, x)),
    },
    "scipy.linalg": _scipy_linalg,
    "scipy.ndimage": lambda: {name: (lambda name=name: getattr(_ndimage, name)) for name in _ndimage.FUNCTIONS},
    "scipy.stats": lambda: _distributions(),
    "scipy.integrate": lambda: {"trapezoid": lambda: _jax_module("jax.scipy.integrate").trapezoid,
                                "cumulative_trapezoid": lambda: _cumulative_trapezoid},
    # none translated (sparse matrices in f's closure are, see _sparse): the functions
    # refuse traced values by name (spsolve, diags(u)), constant ones run as SciPy's
    "scipy.sparse": lambda: {},
    "scipy.sparse.linalg": lambda: {},
}
_DROPPED = ("check_finite", "overwrite_a", "overwrite_b", "overwrite_ab")  # SciPy-only options


@functools.lru_cache(maxsize=None)
def _output_position(original) -> int | None:
    """Where ``original`` (a SciPy function) takes ``output`` positionally, or None."""
    try:
        names = list(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("output") if "output" in names else None


def _scipy_function(original, counterpart):
    def call(*args, **kwargs):
        # scipy.ndimage's output: an array to write, or a dtype; by keyword or by position
        # (laplace(U, L, mode="wrap")), where the counterpart gets None (a new array)
        output, at = kwargs.pop("output", None), _output_position(original)
        if at is not None and len(args) > at:
            output, args = args[at], args[:at] + (None,) + args[at + 1:]
        values = unwrap((args, kwargs))
        if all_concrete(values):
            result = original(*values[0], **values[1])
        else:
            function = counterpart()
            keywords = {k: v for k, v in values[1].items() if k not in _DROPPED or function is _solve_banded}
            result = function(*values[0], **keywords)
        if isinstance(result, tuple):
            return tuple(map(wrap, result))
        if not (isinstance(result, (np.ndarray, np.generic)) or hasattr(result, "shape")):
            return result
        if output is None:
            return wrap(result)
        if isinstance(output, (TracedArray, np.ndarray)):
            output[...] = wrap(result)
            return output
        return wrap(jnp.asarray(result).astype(output))
    return call


class _Distribution:
    """A ``scipy.stats`` distribution (``norm``, ``poisson``, ``t``, ...) inside the traced
    copy of a loss or ``f``: its methods that ``jax.scipy.stats`` also has (``logpdf``,
    ``logpmf``, ``pdf``, ``cdf``, ``sf``, ...) take values of ``u``, ``p`` or ``t``
    (a likelihood ``-np.sum(norm.logpdf(data, u[:, 0], sigma))``); on constants, and its
    other methods, are SciPy's. Called with parameters it is the frozen distribution
    (``norm(mu, sigma).logpdf(x)``): they follow the point, as in SciPy."""

    def __init__(self, original, name: str, bound: tuple = ((), {})):
        self._original, self._name, self._bound = original, name, bound

    def __call__(self, *args, **kwargs):
        return _Distribution(self._original, self._name, (args, kwargs))

    def _scipy(self, bound: tuple):
        """SciPy's distribution, frozen with ``bound`` if it has parameters."""
        args, kwargs = bound
        return self._original(*args, **kwargs) if args or kwargs else self._original

    def __getattr__(self, method):
        counterpart = getattr(getattr(_jax_module("jax.scipy.stats"), self._name, None), method, None)
        if counterpart is None:
            found = getattr(self._scipy(self._bound), method)
            return _untranslated(found, f"scipy.stats.{self._name}.{method}") if callable(found) else found

        def call(*args, **kwargs):
            (values, keywords), (bound, bound_keywords) = unwrap((args, kwargs)), unwrap(self._bound)
            if all_concrete((values, keywords, bound, bound_keywords)):
                result = getattr(self._scipy((bound, bound_keywords)), method)(*values, **keywords)
                return wrap(result) if isinstance(result, np.ndarray) else result
            return wrap(counterpart(*values, *bound, **{**bound_keywords, **keywords}))
        return call


def _distributions() -> dict:
    """The ``scipy.stats`` distributions that ``jax.scipy.stats`` has too, as stand-ins."""
    import scipy.stats

    ours = _jax_module("jax.scipy.stats")
    return {name: _Distribution(getattr(scipy.stats, name), name) for name in dir(ours)
            if isinstance(getattr(scipy.stats, name, None), (scipy.stats.rv_continuous, scipy.stats.rv_discrete))}


def _untranslated(original, qualified: str):
    """A SciPy function with no JAX counterpart: SciPy's own, which may work on traced
    values through the NumPy it calls (``scipy.special.zeta`` calls a ufunc); where it
    converts one to a NumPy array or a float instead, a :class:`TranslationError` naming
    it, not the conversion."""
    from ._errors import TranslationError, translation_error
    from ._replace import is_sparse
    from ._sparse import SparseOperator

    def refused():
        return translation_error(
            f"{qualified} on values that depend on u, p or t (it has no JAX translation)",
            "Rewrite it with NumPy functions (they are translated), or compute it outside f.")

    def call(*args, **kwargs):
        values = unwrap((args, kwargs))
        if all_concrete(values):  # constants: SciPy's own, given the sparse matrices as SciPy's
            def scipy_value(x):
                return x.matrix if isinstance(x, SparseOperator) else x
            result = original(*map(scipy_value, values[0]), **{k: scipy_value(v) for k, v in values[1].items()})
            return SparseOperator(result) if is_sparse(result) else result  # (sp.diags(w) @ u)
        try:
            return original(*args, **kwargs)
        except TranslationError as error:
            if "converting a value" not in str(error) and "on a value that depends" not in str(error):
                raise
            raise refused() from error
        except Exception as error:  # SciPy's own checks of a traced value (spsolve, sparse.diags)
            raise refused() from error
    return call


def _stand_in_of(module, name: str, original):
    """The stand-in for ``module.name`` (``original``) that a :class:`_ScipyModuleProxy` has
    no translation for: a distribution or a Python function refusing traced values by name
    (ufuncs are translated like NumPy's, classes and constants are SciPy's)."""
    import scipy.stats

    if isinstance(original, (scipy.stats.rv_continuous, scipy.stats.rv_discrete)):
        return _Distribution(original, name)
    if isinstance(original, types.FunctionType):
        return _untranslated(original, f"{module.__name__}.{name}")
    return original


class _ScipyModuleProxy(types.ModuleType):
    """A SciPy module inside the traced copy of ``f``: its :data:`_SCIPY` functions replaced
    (a :class:`_Distribution` as it is)."""

    def __init__(self, module, functions: dict):
        super().__init__(module.__name__, module.__doc__)
        self._module = module
        for name, counterpart in functions.items():
            stand_in = counterpart if isinstance(counterpart, _Distribution) else _scipy_function(
                getattr(module, name), counterpart)
            setattr(self, name, stand_in)

    def __getattr__(self, name):
        original = getattr(self._module, name)
        if isinstance(original, types.ModuleType):  # a proxied submodule (scipy.sparse.linalg) as its proxy
            return replacement(original) or original
        return _stand_in_of(self._module, name, original)


class _ScipyProxy(types.ModuleType):
    """``scipy`` inside the traced copy of ``f``: its modules of :data:`_SCIPY` proxied."""

    def __init__(self, scipy, proxies: dict):
        super().__init__("scipy", scipy.__doc__)
        self._scipy = scipy
        for name, proxy in proxies.items():
            if name.count(".") == 1:  # (scipy.sparse.linalg is reached through scipy.sparse's proxy)
                setattr(self, name.rpartition(".")[2], proxy)

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


class _Series:
    """A ``numpy.polynomial`` series (``Polynomial.fit(t_data, y_data, 4)``, a
    ``Chebyshev``, ...) inside the traced copy of ``f``. Called on a value of ``u``, ``p``
    or ``t`` it maps its domain by arithmetic (NumPy's ``mapdomain`` converts to a NumPy
    array) and runs its own recurrence, ``_val`` (Horner, Clenshaw), on the traced value;
    its methods that return a series (``deriv``, ``integ``, ``convert``, ...) return one
    of these."""

    def __init__(self, series):
        self._series = series

    def __call__(self, x):
        if not contains_traced(x):
            return self._series(x)
        offset, scale = self._series.mapparms()
        return self._series._val(offset + scale * x, self._series.coef)

    def __getattr__(self, name):
        attribute = getattr(self._series, name)
        if not callable(attribute):
            return attribute

        def method(*args, **kwargs):
            result = attribute(*args, **kwargs)
            return _Series(result) if isinstance(result, np.polynomial.polynomial.ABCPolyBase) else result
        return method


# the math module's functions of one or two reals and their NumPy (or scipy.special) names
_MATH = {name: name for name in ("exp", "expm1", "log1p", "log2", "log10", "sqrt", "sin", "cos", "tan",
                                  "sinh", "cosh", "tanh", "hypot", "copysign", "degrees", "radians", "floor",
                                  "ceil", "trunc", "fmod", "exp2", "cbrt")}
_MATH.update(asin="arcsin", acos="arccos", atan="arctan", atan2="arctan2", asinh="arcsinh", acosh="arccosh",
             atanh="arctanh", fabs="abs", pow="power", erf="special.erf", erfc="special.erfc",
             gamma="special.gamma", lgamma="special.gammaln")


def _math_function(original, name: str):
    """``math.<f>`` inside the traced copy of ``f``: on a value of ``u``, ``p`` or ``t`` the
    NumPy (``scipy.special``) function of the same meaning, whose result is a 0-d traced
    array instead of a float (an Arrhenius rate ``math.exp(-E / (R * u[1]))``); Python's
    own on numbers. ``math.log(x, base)`` divides by ``log(base)``."""
    def call(*args):
        values = unwrap(list(args))
        if all_concrete(values):  # (a closure constant too: math.floor(K[0]) stays an int)
            return original(*values)
        if name.startswith("special."):
            import scipy.special

            return getattr(scipy.special, name[len("special."):])(*args)
        return getattr(np, name)(*args)
    return call


def _math_log(x, base=None):
    values = unwrap([x, base])
    if all_concrete(values):
        return math.log(values[0]) if base is None else math.log(*values)
    return np.log(x) if base is None else np.log(x) / np.log(base)


class _MathProxy(types.ModuleType):
    """``math`` inside the traced copy of ``f``: its functions of reals take values of ``u``,
    ``p`` or ``t`` (:func:`_math_function`); constants and the rest are ``math``'s own."""

    def __init__(self):
        super().__init__("math", math.__doc__)
        for name, numpy_name in _MATH.items():
            if hasattr(math, name):
                setattr(self, name, _math_function(getattr(math, name), numpy_name))
        self.log = _math_log

    def __getattr__(self, name):
        return getattr(math, name)


MATH = _MathProxy()
_REPLACED.update({id(getattr(math, name)): getattr(MATH, name) for name in (*_MATH, "log") if hasattr(math, name)})


def _extremum(builtin, later_wins):
    """Python's ``max``/``min`` of scalars, one of which depends on ``u``, ``p`` or ``t``
    (``max(u[0], 0.0)``): pairwise from the left with ``np.where``, as Python compares
    (the first of equal values, and a NaN only where Python would keep it); arrays,
    ``key=`` and ``default=`` go to the builtin (which refuses traced arrays)."""
    def extremum(*args, **kwargs):
        items = args[0] if len(args) == 1 else args
        if kwargs or not isinstance(items, (tuple, list)) or not contains_traced(list(items)):
            return builtin(*args, **kwargs)
        if any(np.size(operand(item)) != 1 for item in items):
            return builtin(*args, **kwargs)
        result = items[0]
        for item in items[1:]:
            result = NUMPY.where(later_wins(item, result), item, result)
        return result
    return extremum


_BUILTINS: dict = {}  # id of a builtins dict or module -> (it, its translated copy)


def _importing(builtin_import):
    """``__import__`` inside the traced copy of ``f``: ``import numpy as np``, ``from
    scipy.special import expit`` or ``import scipy.linalg`` run in ``f`` itself bind the
    stand-ins (:func:`replacement`), as names from its module do."""
    def importing(name, globals=None, locals=None, fromlist=(), level=0):
        module = builtin_import(name, globals, locals, fromlist, level)
        if level == 0 and (name in ("numpy", "scipy", "math") or name.startswith(("numpy.", "scipy."))):
            stand_in = replacement(module)
            return module if stand_in is None else stand_in
        return module
    return importing


def translated_builtins(builtins) -> dict:
    """The builtins of the traced copy of ``f``: ``max`` and ``min`` take values of ``u``,
    ``p`` or ``t`` (:func:`_extremum`), and imports inside ``f`` bind the stand-ins
    (:func:`_importing`)."""
    found = _BUILTINS.get(id(builtins))
    if found is None or found[0] is not builtins:
        names = dict(builtins if isinstance(builtins, dict) else vars(builtins))
        names["max"] = _extremum(names["max"], lambda a, b: a > b)
        names["min"] = _extremum(names["min"], lambda a, b: a < b)
        names["__import__"] = _importing(names["__import__"])
        found = _BUILTINS[id(builtins)] = (builtins, names)
    return found[1]


def replacement(obj):
    """The stand-in for ``obj`` (the numpy or math module or one of their functions it
    replaces, a ``np.vectorize``, a ``numpy.polynomial`` series, a SciPy module of
    :data:`_SCIPY` or one of its functions and distributions), or None."""
    if obj is np:
        return NUMPY
    if obj is math:
        return MATH
    if isinstance(obj, np.vectorize):
        return _Vectorized(obj)
    if isinstance(obj, np.polynomial.polynomial.ABCPolyBase):
        return _Series(obj)
    found = _REPLACED.get(id(obj))
    if found is not None or not (isinstance(obj, (types.ModuleType, types.FunctionType))
                                 or type(obj).__module__.startswith("scipy.stats")):  # (a distribution)
        return found
    proxies = _scipy_proxies()
    for name, (proxy, stand_ins) in proxies.items():
        if obj is sys.modules[name]:
            return proxy
        if id(obj) in stand_ins:
            return stand_ins[id(obj)]
    # imported from a proxied module, with no translation (from scipy.integrate import simpson)
    attribute = getattr(obj, "__name__", None) or getattr(obj, "name", None)  # (a distribution's)
    for name in proxies if isinstance(attribute, str) else ():
        module = sys.modules[name]
        if getattr(module, attribute, None) is obj:
            return _stand_in_of(module, attribute, obj)
    if proxies and obj is sys.modules.get("scipy"):
        return _ScipyProxy(obj, {name: proxy for name, (proxy, _) in proxies.items()})
    return None


_PROXIES: dict = {}  # id of an imported SciPy module -> (its proxy, {id of a function: its stand-in})


def _scipy_proxies() -> dict:
    """``{name: (proxy, stand-ins by the id of the function)}`` of the SciPy modules of
    :data:`_SCIPY` that are imported (built once per module)."""
    out = {}
    for name, functions in _SCIPY.items():
        module = sys.modules.get(name)
        if module is None:
            continue
        if id(module) not in _PROXIES:
            counterparts = functions()
            proxy = _ScipyModuleProxy(module, counterparts)
            stand_ins = {id(getattr(module, attribute)): getattr(proxy, attribute) for attribute in counterparts}
            _PROXIES[id(module)] = (proxy, stand_ins)
        out[name] = _PROXIES[id(module)]
    return out
