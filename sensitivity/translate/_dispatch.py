"""NumPy functions and ufuncs on traced arrays, mapped to ``jax.numpy`` by one table.

:data:`FUNCTIONS` maps every public NumPy function and ufunc name (``"sum"``,
``"linalg.solve"``, ``"fft.rfft"``) to the ``jax.numpy`` function of the same name.
Three kinds of names are handled differently:

- :data:`UNSUPPORTED` -- names with a ``jax.numpy`` counterpart that cannot be translated
  faithfully (result shapes that depend on values, Python callbacks, in-place semantics,
  memory queries). Using one raises :class:`TranslationError` with a suggested rewrite.
- special handlers -- NumPy semantics beyond a name mapping: functions that return views
  (``reshape``, ``transpose``, ``split`` ...), functions that write in place
  (``copyto``, ``put``, ``putmask``, ``fill_diagonal``, ``put_along_axis``,
  ``ufunc.at``), shape queries, and ``*_like`` constructors.
- names absent from ``jax.numpy`` raise :class:`TranslationError`.

When every traced operand is still a trace-time constant the original NumPy function
runs, so constants keep NumPy semantics and stay usable as indices and sizes.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from . import _traced
from ._closure import same_sequence
from ._errors import translation_error
from ._views import is_concrete, jax, jnp

SymbolicZero = jax.custom_derivatives.SymbolicZero

_DYNAMIC = (
    "Its result's size depends on values, which JAX cannot compile: select elementwise "
    "with np.where(condition, a, b), or use constant index arrays."
)
UNSUPPORTED: dict[str, str] = {
    "nonzero": _DYNAMIC, "argwhere": _DYNAMIC, "flatnonzero": _DYNAMIC, "extract": _DYNAMIC,
    "compress": _DYNAMIC, "trim_zeros": _DYNAMIC, "unique": _DYNAMIC, "unique_all": _DYNAMIC,
    "unique_counts": _DYNAMIC, "unique_inverse": _DYNAMIC, "unique_values": _DYNAMIC,
    "setdiff1d": _DYNAMIC, "intersect1d": _DYNAMIC, "union1d": _DYNAMIC,
    "setxor1d": _DYNAMIC,
    "apply_along_axis": "It calls a Python function on slices: write the loop over slices "
    "in f itself, or vectorise with array operations.",
    "apply_over_axes": "It calls a Python function: apply the reduction directly.",
    "place": "Write a[:] = np.where(mask, values, a) (or np.putmask) instead.",
    "shares_memory": "Memory layout does not exist in the translation: restructure f.",
    "may_share_memory": "Memory layout does not exist in the translation: restructure f.",
}  # fmt: skip


def _build_table() -> dict:
    table = {}
    for namespace, jax_namespace, prefix in (
        (np, jnp, ""), (np.linalg, jnp.linalg, "linalg."), (np.fft, jnp.fft, "fft."),
    ):  # fmt: skip
        for name in dir(namespace):
            if name.startswith("_") or not hasattr(jax_namespace, name):
                continue
            if isinstance(getattr(namespace, name), (np.ufunc, type(np.sum))):
                table[prefix + name] = getattr(jax_namespace, name)
    return table


@jax.custom_jvp
def _real_power(x, y):
    return jnp.power(x, y)


def _real_power_jvp(primals, tangents):
    """``x ** y``'s derivatives, 0 where the value is NaN (a negative base with a fractional
    exponent: outside the reals, where the derivative is never used unless the NaN value
    is too). jax.numpy's are NaN there, which the transpose of a ``np.where(u > 0, u ** 1.5,
    0)`` multiplies by the unselected branch's zero cotangent: NaN gradients in reverse
    mode. ``d/dy`` is ``x ** y log x`` for ``x > 0`` and 0 elsewhere (as jax.numpy at 0)."""
    x, y = primals
    dx, dy = tangents
    value = jnp.power(x, y)
    out = jnp.zeros_like(value)
    if not isinstance(dx, SymbolicZero):
        outside = jnp.isnan(value) & ~jnp.isnan(y)  # (a NaN base too: see _integer_power)
        # through _power, whose own derivative is 0 where the exponent y - 1 is 0: jnp.power's
        # is 0 * 0 ** -1 = NaN at x = 0, which made second derivatives of u ** 1.0 NaN there
        out = out + jnp.where(outside, 0.0, y * _power(jnp.where(outside, 1.0, x), y - 1)) * dx
    if not isinstance(dy, SymbolicZero):  # (a constant exponent: no log computed)
        positive = x > 0
        out = out + jnp.where(positive, value * jnp.log(jnp.where(positive, x, 1.0)), 0.0) * dy
    return value, out


_real_power.defjvp(_real_power_jvp, symbolic_zeros=True)


def _real_floating(*values) -> bool:
    return all(jnp.issubdtype(jnp.result_type(v), jnp.floating) for v in values)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _integer_power(x, n):
    return jnp.power(x, n)


def _integer_power_jvp(n, primals, tangents):
    """``x ** n`` for a constant integer ``n`` (``(u - data) ** 2``), with jax.numpy's value
    and the derivative ``n x ** (n - 1)``, 0 where ``x`` is NaN: a loss that drops missing
    data after squaring the residuals (``np.nansum((u - data) ** 2)``) is finite, and its
    derivative was ``0 * NaN``. A NaN that is not dropped still makes the value NaN."""
    (x,), (dx,) = primals, tangents
    slope = jnp.where(jnp.isnan(x), 0.0, n * jnp.power(jnp.where(jnp.isnan(x), 1.0, x), n - 1))
    return jnp.power(x, n), slope * dx


_integer_power.defjvp(_integer_power_jvp)


def _pow(x, y):
    if isinstance(y, (int, np.integer)) and not isinstance(y, (bool, np.bool_)) and _real_floating(x):
        return _integer_power(jnp.asarray(x), int(y))
    if _real_floating(x) and jnp.issubdtype(jnp.result_type(y), jnp.integer):  # an integer array of orders
        y = jnp.asarray(y).astype(jnp.result_type(x))  # (its derivatives as a real exponent's, see _power)
    if _real_floating(x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        return _real_power(*jnp.broadcast_arrays(x, y)).astype(jnp.result_type(x, y))
    return jnp.power(x, y)


def _power(x, y):
    """``x ** y`` whose derivative in ``x`` is 0 where ``y == 0`` (``x ** 0`` is the constant 1,
    as NumPy computes it), also at ``x = 0``: ``jax.numpy.power``'s ``y x ** (y - 1)`` is
    ``0 * inf = NaN`` there (a mass-action rate ``u ** order`` with a zero order); and 0
    where the value is NaN (see :func:`_real_power_jvp`)."""
    if isinstance(y, (np.ndarray, np.generic, int, float)) and not np.any(np.asarray(y) == 0):
        return _pow(x, y)
    zero = jnp.asarray(y) == 0
    return jnp.where(zero, jnp.ones((), jnp.result_type(x, y)), _pow(jnp.where(zero, 1, x), y))


@jax.custom_jvp
def _sqrt(x):
    return jnp.sqrt(x)


@_sqrt.defjvp
def _sqrt_jvp(primals, tangents):
    """``sqrt``'s derivative ``1 / (2 sqrt x)``, 0 where the value is NaN (``x < 0``; see
    :func:`_real_power_jvp`), ``inf`` at 0 as it is."""
    (x,), (dx,) = primals, tangents
    value = jnp.sqrt(x)
    outside = jnp.isnan(value) & ~jnp.isnan(x)
    return value, jnp.where(outside, 0.0, 0.5 / jnp.where(outside, 1.0, value)) * dx


def _square_root(x):
    return _sqrt(jnp.asarray(x)) if _real_floating(x) else jnp.sqrt(x)


def _norm(x, ord=None, axis=None, keepdims=False):
    """``np.linalg.norm`` whose Euclidean and Frobenius norms have derivative 0 at ``x = 0``
    (a subgradient; ``jax.numpy``'s ``x / ||x||`` is ``0/0 = NaN`` there): a quadratic drag
    ``||v|| v`` from rest has the derivative 0, which NaN turned into a failed sensitivity.
    Other norms (matrix 2-norm, ``ord=1``, ...) are ``jax.numpy``'s."""
    x = jnp.asarray(x)
    vector = axis is None and x.ndim == 1 or isinstance(axis, (int, np.integer))
    if not (ord is None or ord == "fro" and not vector or ord == 2 and vector):
        return jnp.linalg.norm(x, ord, axis, keepdims)
    squares = jnp.sum(jnp.real(x * jnp.conj(x)), axis=axis, keepdims=keepdims)
    zero = squares == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, squares))).astype(squares.dtype)


def _sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    """``np.lib.stride_tricks.sliding_window_view`` as a gather (NumPy's is a read-only
    view, so a copy reads the same): per windowed axis, ``x[..., i + k, ...]`` for the
    ``n - w + 1`` starts ``i`` and offsets ``k < w``, the window axes appended in order."""
    x = jnp.asarray(x)
    windows = tuple(window_shape) if np.iterable(window_shape) else (window_shape,)
    axes = tuple(range(x.ndim)) if axis is None else tuple(axis) if np.iterable(axis) else (axis,)
    if len(axes) != len(windows):
        raise ValueError("sliding_window_view: window_shape and axis must have the same length")
    for ax, width in zip((a % x.ndim for a in axes), windows):
        starts = np.arange(x.shape[ax] - width + 1)
        x = jnp.moveaxis(jnp.take(x, starts[:, None] + np.arange(width), axis=ax), ax + 1, -1)
    return x


def _gradient(f, *varargs, axis=None, edge_order=1):
    """``np.gradient``: ``jax.numpy``'s for ``edge_order=1``; for ``edge_order=2`` with
    uniform spacings, NumPy's one-sided second-order edges ``(-3 f_0 + 4 f_1 - f_2) / 2h``
    (``jax.numpy.gradient`` has no ``edge_order``). Central differences inside."""
    if edge_order == 1:
        result = jnp.gradient(f, *varargs, axis=axis)
        return tuple(result) if isinstance(result, list) else result  # NumPy's tuple for several axes
    f = jnp.asarray(f)
    axes = tuple(range(f.ndim)) if axis is None else tuple(axis) if np.iterable(axis) else (axis,)
    spacing = varargs * len(axes) if len(varargs) <= 1 else varargs
    spacing = spacing or (1.0,) * len(axes)
    if edge_order != 2 or len(spacing) != len(axes) or any(np.ndim(h) != 0 for h in spacing):
        raise NotImplementedError("edge_order=2 with coordinate arrays (uniform spacings only)")
    out = []
    for ax, h in zip((a % f.ndim for a in axes), spacing):
        if f.shape[ax] < 3:
            raise ValueError("np.gradient: edge_order=2 needs at least 3 points along each axis")
        x = jnp.moveaxis(f, ax, 0)
        inner = (x[2:] - x[:-2]) / (2 * h)
        first = (-3 * x[0] + 4 * x[1] - x[2]) / (2 * h)
        last = (3 * x[-1] - 4 * x[-2] + x[-3]) / (2 * h)
        out.append(jnp.moveaxis(jnp.concatenate([first[None], inner, last[None]]), 0, ax))
    return out[0] if len(out) == 1 else tuple(out)


def _bincount(x, weights=None, minlength=0):
    """``np.bincount`` of constant bins (a particle-to-cell deposit with weights from
    ``u``): its length is then known, ``max(minlength, max(x) + 1)``."""
    if is_concrete(x):
        x = np.asarray(x)
        length = max(int(minlength), int(x.max()) + 1 if x.size else 0)
        return jnp.bincount(x, weights, minlength, length=length)
    return jnp.bincount(x, weights, minlength)


FUNCTIONS: dict = {**_build_table(), "power": _power, "square": lambda x: _power(x, 2),
                   "fix": jnp.trunc,  # (jax.numpy has no fix)
                   "bincount": _bincount,
                   "gradient": _gradient, "sqrt": _square_root,
                   "linalg.norm": _norm, "lib.stride_tricks.sliding_window_view": _sliding_window_view}


def function_name(func) -> str:
    """The table key of a NumPy function: ``"sum"``, ``"linalg.solve"``, ``"fft.fft"``."""
    module = getattr(func, "__module__", None) or "numpy"
    prefix = module[len("numpy.") :] + "." if module.startswith("numpy.") else ""
    return prefix + func.__name__


def _jax_call(name: str, function, args, kwargs):
    try:
        return function(*args, **kwargs)
    except jax.errors.ConcretizationTypeError as err:
        raise translation_error(f"np.{name} on values that depend on u, p or t", _DYNAMIC) from err
    except (TypeError, ValueError, NotImplementedError) as err:  # e.g. np.pad's end_values traced
        raise translation_error(
            f"np.{name} with these arguments",
            f"jax.numpy.{name} rejects them ({err}); drop NumPy-only options such as "
            "order=, casting= or subok=, or rewrite the call with supported arguments.",
        ) from err


def _wrap_result(result):
    if isinstance(result, (list, tuple)):
        return same_sequence(result, [_wrap_result(item) for item in result])
    if isinstance(result, jax.Array):
        return _traced.wrap(result)
    if isinstance(result, (np.ndarray, np.generic)) and result.dtype.kind in "biufc":
        return _traced.wrap(result)
    return result


def _foreign_output_error(array):
    return translation_error(
        f"writing into the NumPy array of shape {np.shape(array)} passed as out=",
        "This array is not a buffer reachable from f (it was created by a NumPy that dxdt "
        "does not see, or reached through an object dxdt does not copy), so writing into it "
        "would modify it: create it with np.zeros/np.empty in f, keep it in f's closure, or "
        "write into du.",
    )


def finish(result, out, where=True):
    """Return ``result`` wrapped, or written into ``out`` (an array or tuple) and ``out``."""
    if out is None:
        return _wrap_result(result)
    single = not isinstance(out, tuple)
    outs = (out,) if single else out
    results = result if isinstance(result, tuple) and not single else (result,)
    returned = []
    for target, value in zip(outs, results):
        if target is None:
            returned.append(_wrap_result(value))
            continue
        if not isinstance(target, _traced.TracedArray):
            raise _foreign_output_error(target)
        target._assign(value, where)
        returned.append(target)
    return returned[0] if len(returned) == 1 else tuple(returned)


def _list_to_array(arg):
    """A list of numbers as an array (jax.numpy takes no lists where NumPy takes array_like)."""
    if type(arg) is list and not any(isinstance(x, (list, tuple, np.ndarray, jax.Array)) for x in arg):
        return np.asarray(arg)
    return arg


def _generic(func, name: str, args, kwargs):
    if name in UNSUPPORTED:
        if UNSUPPORTED[name] is _DYNAMIC and _traced.all_concrete(_traced.unwrap((args, kwargs))):
            return finish(func(*_traced.unwrap(args), **_traced.unwrap(kwargs)), None)  # a size known now
        raise translation_error(f"np.{name} (not supported by the translation)", UNSUPPORTED[name])
    function = FUNCTIONS.get(name)
    if function is None:
        raise translation_error(
            f"np.{name} (it has no jax.numpy counterpart)",
            "Rewrite it with supported NumPy functions (ufuncs, reductions, linear algebra, "
            "indexing).",
        )
    args, kwargs = _out_by_keyword(func, args, dict(kwargs))
    out = kwargs.pop("out", None)
    args, kwargs = _traced.unwrap(args), _traced.unwrap(kwargs)
    if _traced.all_concrete((args, kwargs)):
        return finish(func(*args, **kwargs), out)
    args = tuple(_list_to_array(a) for a in args)
    if name in _SEQUENCE_FUNCTIONS and args and isinstance(args[0], (list, tuple)):  # [[p[1]], u]: lists inside
        args = ([jnp.asarray(a) if isinstance(a, (list, tuple)) else a for a in args[0]],) + args[1:]
    kwargs = {_KEYWORDS.get((name, k), k): _list_to_array(v) if k in ("prepend", "append") else v
              for k, v in kwargs.items()}
    return finish(_jax_call(name, function, args, kwargs), out)


@functools.lru_cache(maxsize=None)
def _positional_names(func) -> tuple:
    """The names of ``func``'s positional-or-keyword parameters (NumPy's signature)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD)


def _out_by_keyword(func, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``out`` given by position (``np.dot(a, b, du)``, ``np.clip(x, 0, 1, du)``) and the
    arguments after it, moved to keywords: ``out`` is written, not read."""
    names = _positional_names(func)
    if "out" in kwargs or "out" not in names or len(args) <= names.index("out"):
        return args, kwargs
    at = names.index("out")
    return args[:at], {**kwargs, **dict(zip(names[at:], args[at:]))}


# functions of a sequence of arrays, whose members NumPy also takes as nested lists
_SEQUENCE_FUNCTIONS = {"concatenate", "stack", "hstack", "vstack", "dstack", "column_stack", "row_stack",
                       "concat"}
# NumPy keyword names jax.numpy spells differently
_KEYWORDS = {("clip", "a_min"): "min", ("clip", "a_max"): "max"}


def apply_function(func, args, kwargs):
    """``__array_function__``: a NumPy function called with traced arguments."""
    name = function_name(func)
    special = _SPECIAL.get(name)
    if special is not None:
        return special(func, name, args, kwargs)
    return _generic(func, name, args, kwargs)


def _foreign(obj) -> bool:
    """An operand that handles ufuncs itself (e.g. a sparse operator): defer to it."""
    kind = type(obj)
    return hasattr(kind, "__array_ufunc__") and not issubclass(kind, (_traced.TracedArray, np.ndarray))


def apply_ufunc(ufunc, method: str, inputs, kwargs):
    """``__array_ufunc__``: a ufunc (or one of its methods) called with traced operands."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    if any(_foreign(x) for x in inputs + (out or ())):
        return NotImplemented
    name = ufunc.__name__
    if method == "at":
        return _ufunc_at(ufunc, name, inputs)
    if _deferred_increment(name, method, inputs, kwargs, out):
        return out[0]
    where = kwargs.pop("where", True)
    for ignored in ("casting", "order", "subok"):  # the layout and casting of out: no meaning here
        kwargs.pop(ignored, None)
    args = _traced.unwrap(inputs)
    mask = _traced.operand(where)
    if type(mask) in (list, tuple) and _traced.all_concrete(mask):  # where=[True, False, ...]
        where = mask = np.asarray(mask, bool)
    if _traced.all_concrete((args, kwargs, mask)):
        result = getattr(ufunc, method)(*args, **kwargs)
    else:
        function = FUNCTIONS.get(name) if getattr(np, name, None) is ufunc else None
        special = function is None and _scipy_special(ufunc)
        if special and method == "__call__":
            import jax.scipy.special

            function = getattr(jax.scipy.special, _SPECIAL_ALIASES.get(name, name), None)
            if function is None and name in _SPECIAL_IN_NUMPY:  # log1p, expm1, ...: jax.numpy's
                function = getattr(jnp, name)
        elif function is not None and method != "__call__":
            function = getattr(function, method, None)
            args = tuple(_list_to_array(a) for a in args)  # reduceat's indices as a list
        if function is None:
            where_from = f"scipy.special.{name}" if special else f"np.{name}"
            raise translation_error(
                f"{where_from}.{method} (it has no jax.numpy or jax.scipy.special counterpart)",
                "Rewrite it with supported NumPy functions.",
            )
        dtype = kwargs.pop("dtype", None) if method == "__call__" else None
        if where is not True and method == "__call__":
            args = _masked_operands(args, mask)
        result = _jax_call(name, function, args, kwargs)
        if dtype is not None:
            result = result.astype(dtype)
    if out is None and where is not True:
        xp = np if _traced.all_concrete((result, mask)) else jnp
        result = xp.where(mask, result, 0)
    return finish(result, out[0] if out is not None and len(out) == 1 else out, where)


def _masked_operands(args, mask):
    """The operands of ``ufunc(..., where=mask)`` with 0.5 where ``mask`` is False: the
    result there is discarded, but an operand outside the function's domain (``log(0)``,
    ``x / 0``) would still make its reverse-mode derivative ``0 * inf = NaN``. 0.5 lies
    inside the domain of every ufunc with a singular point (as ``_power`` does for ``0 ** a``)."""
    def safe(a):
        if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            return jnp.where(mask, a, jnp.asarray(0.5, jnp.result_type(a)))
        return a
    return tuple(safe(a) for a in args)


_SPECIAL_IN_NUMPY = ("log1p", "expm1", "cbrt", "exp2")  # scipy.special ufuncs that jax.numpy has
_SPECIAL_ALIASES = {"psi": "digamma", "_zeta": "zeta"}  # scipy.special ufuncs named otherwise in jax.scipy.special
# (scipy.special.zeta(x, q) calls the ufunc _zeta)


def _scipy_special(ufunc) -> bool:
    """Whether ``ufunc`` is one of ``scipy.special``'s (translated by ``jax.scipy.special``)."""
    import sys

    return any(module is not None and getattr(module, ufunc.__name__, None) is ufunc
               for module in (sys.modules.get("scipy.special"), sys.modules.get("scipy.special._ufuncs")))


def _deferred_increment(name: str, method: str, inputs, kwargs, out) -> bool:
    """``out += x`` or ``out -= x`` on a box view, deferred (see :mod:`._tiling`).

    Covers the operators and ``np.add(out, x, out=out)``, ``np.add(x, out, out=out)``,
    ``np.subtract(out, x, out=out)`` with ``out`` the same elements as the input.
    Returns False when the call is not one of these (or cannot be deferred).
    """
    if name not in ("add", "subtract") or method != "__call__" or kwargs or out is None or len(out) != 1:
        return False
    target = out[0]
    if not isinstance(target, _traced.TracedArray) or len(inputs) != 2:
        return False
    if target._same_view(inputs[0]):
        return target._increment(inputs[1], 1 if name == "add" else -1)
    if name == "add" and target._same_view(inputs[1]):
        return target._increment(inputs[0], 1)
    return False


def _target(array) -> _traced.TracedArray:
    if not isinstance(array, _traced.TracedArray):
        raise _foreign_output_error(array)
    return array


def _ufunc_at(ufunc, name: str, inputs) -> None:
    """``ufunc.at(a, indices, b)``: unbuffered in-place update of ``a``."""
    a = _target(inputs[0])
    key, static = _traced.normalize_key(inputs[1])
    rest = tuple(_traced.operand(x) for x in inputs[2:])
    a._note_read(key if static else None)
    old = a._raw()
    if static and _traced.all_concrete((old, rest)):
        new = np.array(old, copy=True)
        ufunc.at(new, key, *rest)
    elif static and name not in _ACCUMULATING:
        new = _at_in_rounds(FUNCTIONS[name], jnp.asarray(old), key, rest)
    elif name in _AT_METHODS and len(rest) == 1:  # x.at[key] also takes slices in the index
        b = -rest[0] if name == "subtract" else rest[0]
        new = getattr(jnp.asarray(old).at[key], _AT_METHODS[name])(b)
    else:
        raise translation_error(
            f"np.{name}.at with indices that depend on u, p or t",
            f"index with constant indices (arrays built outside f), or use np.add.at, np.subtract.at, "
            "np.minimum.at or np.maximum.at, which take indices computed in f.")
    a._store(Ellipsis, new, a._positions()[key] if static else None)


def _at_in_rounds(function, old, key, rest):
    """``ufunc.at(old, key, *rest)`` for constant indices and any ufunc: applied in rounds,
    the ``r``-th occurrence of every position in round ``r``, so that each round writes
    distinct positions (a gather and a scatter, differentiable) and repeated indices
    combine one after another, in NumPy's order. (JAX's ``x.at[].multiply`` has no
    derivative for indices it cannot prove distinct; other ufuncs have no ``at``.)"""
    positions = np.arange(old.size).reshape(old.shape)[key]
    flat_positions = positions.reshape(-1)
    values = [jnp.broadcast_to(x, positions.shape).reshape(-1) for x in rest]
    order = np.argsort(flat_positions, kind="stable")
    ranked = flat_positions[order]
    first = np.r_[0, np.flatnonzero(ranked[1:] != ranked[:-1]) + 1]  # where each position's run starts
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    flat = old.reshape(-1)
    for r in range(int(rank.max(initial=-1)) + 1):
        chosen = np.flatnonzero(rank == r)
        where = flat_positions[chosen]
        flat = flat.at[where].set(function(flat[where], *(v[chosen] for v in values)).astype(flat.dtype),
                                  unique_indices=True)
    return flat.reshape(old.shape)


# ufuncs whose unbuffered ``at`` is one of JAX's ``x.at[...]`` updates (repeated indices accumulate)
_AT_METHODS = {"add": "add", "subtract": "add", "multiply": "multiply", "minimum": "min", "maximum": "max"}
# ... of which these are differentiable with repeated indices (the others: _at_in_rounds)
_ACCUMULATING = ("add", "subtract", "minimum", "maximum")


def _view_function(func, name, args, kwargs):
    """Functions that return views of their (first) argument, as NumPy decides."""
    arrays = args if name.startswith("atleast_") else args[:1]
    if not all(isinstance(a, _traced.TracedArray) for a in arrays):
        return _generic(func, name, args, kwargs)
    rest = args[len(arrays) :]
    results = [a._derive(lambda x: func(x, *rest, **kwargs)) for a in arrays]
    return results[0] if len(results) == 1 else tuple(results)


def _part(func, name, args, kwargs):
    """``np.real``/``np.imag``: views of a complex array's parts, as NumPy's."""
    if isinstance(args[0], _traced.TracedArray) and len(args) + len(kwargs) == 1:
        return getattr(args[0], name)
    return _generic(func, name, args, kwargs)


def _copyto(func, name, args, kwargs):
    dst, src = args[0], args[1]
    where = kwargs.get("where", args[3] if len(args) > 3 else True)
    _target(dst)._assign(_traced.operand(src), where)


def _nan_to_num(func, name, args, kwargs):
    """``np.nan_to_num(x, copy=False)`` replaces in ``x`` itself (and returns ``x``); the
    jax.numpy counterpart ignores ``copy``, which left ``x`` with its inf and NaN."""
    copy = kwargs.get("copy", args[1] if len(args) > 1 else True)
    result = _generic(func, name, args, kwargs)
    if copy or not isinstance(args[0], _traced.TracedArray):
        return result
    target = _target(args[0])
    target._assign(_traced.operand(result), True)
    return target


def _put(func, name, args, kwargs):
    a = _target(args[0])
    indices, values = (_list_to_array(_traced.operand(x)) for x in args[1:3])
    mode = kwargs.get("mode", args[3] if len(args) > 3 else "raise")
    flat = jnp.put(
        jnp.asarray(a._raw()), indices, values, mode=None if mode == "raise" else mode, inplace=False
    )
    marked = None
    if _traced.all_concrete(indices):
        indices = np.asarray(indices)
        if mode == "wrap":
            indices = indices % a.size
        elif mode == "clip":
            indices = np.clip(indices, 0, a.size - 1)
        marked = a._positions().reshape(-1)[indices]
    a._store(Ellipsis, flat, marked)


def _cycled(values, n: int):
    """``values`` repeated in C order to ``n`` elements, as NumPy fills ``a.flat`` (a scalar
    stays a scalar)."""
    if np.ndim(values) == 0:
        return values
    xp = np if _traced.all_concrete(values) else jnp
    return xp.resize(xp.ravel(xp.asarray(values)), (n,))


def _putmask(func, name, args, kwargs):
    """``np.putmask(a, mask, values)``: ``a.flat[n] = values[n % len(values)]`` where the mask holds."""
    a = _target(args[0])
    mask, values = _traced.operand(args[1]), _traced.operand(args[2])
    if np.ndim(values) and np.size(values) != a.size:
        values = _cycled(values, a.size).reshape(a.shape)
    a._assign(values, mask)


def _fill_diagonal(func, name, args, kwargs):
    """``np.fill_diagonal(a, val)``: the diagonal's elements take ``val``'s, repeated in turn."""
    a = _target(args[0])
    diagonal = np.zeros(a.shape, bool)
    np.fill_diagonal(diagonal, True, wrap=kwargs.get("wrap", args[2] if len(args) > 2 else False))
    a[diagonal] = _cycled(_traced.operand(args[1]), int(diagonal.sum()))


def _einsum(func, name, args, kwargs):
    """``np.einsum``: with one operand and no summation (``'ii->i'``, ``'ij->ji'``) NumPy
    returns a writable view of it, and so does this, as NumPy decides on the positions.
    A contraction path from ``np.einsum_path`` (``optimize=['einsum_path', ...]``), which
    only orders the work, becomes ``optimize=True``: JAX's einsum takes no NumPy path."""
    if isinstance(kwargs.get("optimize"), (list, tuple)):
        kwargs = {**kwargs, "optimize": True}
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], _traced.TracedArray) \
            and kwargs.get("out") is None:
        probe = np.arange(args[1].size).reshape(args[1].shape)
        if np.shares_memory(np.einsum(args[0], probe, **kwargs), probe):
            return args[1]._derive(lambda x: np.einsum(args[0], x, **kwargs))
    return _generic(func, name, args, kwargs)


def _put_along_axis(func, name, args, kwargs):
    arr = _target(args[0])
    indices, values = _traced.operand(args[1]), _traced.operand(args[2])
    axis = kwargs.get("axis", args[3] if len(args) > 3 else None)
    new = jnp.put_along_axis(jnp.asarray(arr._raw()), indices, values, axis, inplace=False)
    static = _traced.all_concrete(indices)
    marked = np.take_along_axis(arr._positions(), indices, axis) if static else None
    arr._store(Ellipsis, new, marked)


def _where(func, name, args, kwargs):
    if len(args) + len(kwargs) == 1:
        if _traced.all_concrete(_traced.unwrap((args, kwargs))):  # a constant mask: np.nonzero's indices
            return finish(func(*_traced.unwrap(args), **_traced.unwrap(kwargs)), None)
        raise translation_error("np.where(condition) with one argument", _DYNAMIC)
    return _generic(func, name, args, kwargs)


def _piecewise(func, name, args, kwargs):
    """``np.piecewise(x, condlist, funclist, *args, **kw)``: each function of the whole
    ``x`` (NumPy passes it ``x[cond]``; the same values for elementwise functions), chosen
    with ``where`` in list order, so that a later condition wins where two hold (as NumPy
    writes them in order); a constant where it is not callable; 0 where no condition holds,
    unless ``funclist`` has one more entry, the ``otherwise`` value. A function's values
    where its condition does not hold are computed and discarded (a NaN there makes a
    reverse-mode derivative NaN, as for ``np.where``)."""
    x, condlist, funclist, *extra = args
    value = jnp.asarray(_traced.operand(x))
    if np.isscalar(condlist) or (not isinstance(condlist[0], (list, np.ndarray, _traced.TracedArray))
                                 and value.ndim != 0):
        condlist = [condlist]
    conditions = [jnp.broadcast_to(jnp.asarray(_traced.operand(c), bool), value.shape) for c in condlist]
    if len(funclist) == len(conditions) + 1:
        conditions.append(~jnp.any(jnp.stack(conditions), axis=0) if conditions else jnp.ones(value.shape, bool))
    elif len(funclist) != len(conditions):
        raise ValueError(f"with {len(conditions)} condition(s), either {len(conditions)} or "
                         f"{len(conditions) + 1} functions are expected")
    out = jnp.zeros_like(value)
    for condition, piece in zip(conditions, funclist):
        piece = _traced.operand(piece(x, *extra, **kwargs) if callable(piece) else piece)
        out = jnp.where(condition, jnp.asarray(piece).astype(out.dtype), out)
    return _traced.wrap(out)


def _shape_query(func, name, args, kwargs):
    """``np.shape``/``np.ndim``/``np.size``: static, and not a read of the array."""
    a = args[0]
    if not isinstance(a, _traced.TracedArray):
        return func(_traced.operand(a), *args[1:], **kwargs)
    if name == "shape":
        return a.shape
    if name == "ndim":
        return a.ndim
    axis = kwargs.get("axis", args[1] if len(args) > 1 else None)
    return a.size if axis is None else a.shape[axis]


def _like(func, name, args, kwargs):
    """``zeros_like`` & co: a new buffer, constant unless filled with a traced value."""
    names = ("a", "fill_value", "dtype") if name == "full_like" else ("a", "dtype")
    bound = {**dict(zip(names, args)), **kwargs}
    a = bound["a"]
    prototype = a
    if not isinstance(a, _traced.TracedArray):
        value = _traced.operand(a)
        prototype = np.asarray(value) if _traced.all_concrete(value) else value
    dtype = bound.get("dtype") or prototype.dtype
    shape = bound.get("shape") or prototype.shape
    fill = _traced.operand(bound.get("fill_value", 1 if name == "ones_like" else 0))
    if not _traced.all_concrete(fill):
        return _traced.wrap(jnp.full(shape, fill, dtype))
    return _traced.wrap(np.full(shape, fill, dtype))


_VIEW_FUNCTIONS = (
    "reshape", "ravel", "transpose", "permute_dims", "matrix_transpose", "swapaxes",
    "moveaxis", "rollaxis", "squeeze", "expand_dims", "atleast_1d", "atleast_2d",
    "atleast_3d", "split", "array_split", "hsplit", "vsplit", "dsplit", "unstack",
    "flip", "flipud", "fliplr", "rot90",
)  # fmt: skip
_SPECIAL = {
    **dict.fromkeys(_VIEW_FUNCTIONS, _view_function),
    **dict.fromkeys(("shape", "ndim", "size"), _shape_query),
    **dict.fromkeys(("zeros_like", "ones_like", "empty_like", "full_like"), _like),
    "real": _part,
    "imag": _part,
    "copyto": _copyto,
    "nan_to_num": _nan_to_num,
    "put": _put,
    "putmask": _putmask,
    "fill_diagonal": _fill_diagonal,
    "einsum": _einsum,
    "put_along_axis": _put_along_axis,
    "where": _where,
    "piecewise": _piecewise,
}
