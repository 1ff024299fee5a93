"""The user's loss ``loss(u)`` or ``loss(u, p)`` as a pure JAX function ``L(U, p)``.

A loss that refers to JAX (``jnp.sum``, ``jax.nn``, ...) is called with JAX arrays as it
is; any other loss is translated exactly like ``f`` (NumPy calls on traced arrays, see
:mod:`dxdt.sensitivity.translate`).
"""

from __future__ import annotations

import inspect
import types
from typing import Callable

from .._problem import positional_parameters
from ._jax import load_jax
from .translate._closure import _global_names, _user_function
from .translate._trace import call, in_order_of

jax, jnp = load_jax()


class TranslatedLoss:
    """``L(U, p) -> scalar`` for ``loss(u)`` or ``loss(u, p)`` (``U``: the saved trajectory).

    Attributes
    ----------
    pure_jax : bool
        The loss names JAX itself and is called as written (its closure arrays are then
        constants of the trace, all of them).
    constant_reads : list of ConstantRead
        Closure arrays of a NumPy loss read by the traces (see ``TranslatedFunction``).
    """

    def __init__(self, loss: Callable, duplicate_closure: bool = True, p_like=None):
        n = _required_positional(loss)
        if n not in (1, 2):
            raise TypeError(
                f"loss must be loss(u) or loss(u, p); {getattr(loss, '__name__', loss)!s} takes "
                f"{'an unknown number of' if n is None else n} positional arguments"
            )
        if _takes_event_times(loss):  # (a loss of events is translated by sensitivity._events)
            raise TypeError("the loss takes t_events, the times of events, but no events were given: pass "
                            "events=[...] to the operator, or drop t_events from the loss")
        self.loss, self.n_args, self.duplicate_closure = loss, n, duplicate_closure
        self.p_like = p_like  # the problem's p: the loss gets p's dicts in its key order
        self.pure_jax = _refers_to_jax(loss)
        self.constant_reads: list = []

    def __call__(self, U, p):
        args = (U,) if self.n_args == 1 else (U, in_order_of(p, self.p_like))
        if self.pure_jax:
            value = self.loss(*args)
        else:
            value = call(self.loss, args, duplicate_closure=self.duplicate_closure,
                         reads=self.constant_reads, likes=(None, self.p_like))
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"loss must return a real scalar, got {type(value).__name__}")
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"loss must return a scalar, got shape {value.shape}")
        if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
                or value.dtype == bool):
            raise TypeError(f"loss must return a real scalar, got dtype {value.dtype}")
        return value


def translate_loss(loss: Callable, duplicate_closure: bool = True, p_like=None) -> TranslatedLoss:
    """``L(U, p) -> scalar`` for ``loss(u)`` or ``loss(u, p)`` (``U``: the saved trajectory;
    ``p_like``: the problem's ``p``, whose dicts' key order the loss gets)."""
    return TranslatedLoss(loss, duplicate_closure, p_like)


def _takes_event_times(fn: Callable) -> bool:
    """Whether ``fn`` has a keyword-only ``t_events`` parameter without a default."""
    try:
        parameter = inspect.signature(fn).parameters.get("t_events")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind == parameter.KEYWORD_ONLY and parameter.default is parameter.empty


def _required_positional(fn: Callable) -> int | None:
    """Positional parameters of ``fn`` without defaults (``loss(u, w=weights)`` is
    ``loss(u)``); ``None`` for ``*args`` or a signature that cannot be inspected."""
    counts = positional_parameters(fn)
    return None if counts is None else counts[0]


def _refers_to_jax(fn: Callable, _seen: set | None = None) -> bool:
    """Whether ``fn`` (a plain function) names a JAX module or function, directly or in a
    helper function of the user's that it names (``loss(u) = misfit(u)`` with ``jnp`` in
    ``misfit``: translated as NumPy, the helper's ``jnp`` call met a traced array)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    seen = set() if _seen is None else _seen
    seen.add(id(fn))
    values = [fn.__globals__.get(name) for name in _global_names(code)]
    values += [cell.cell_contents for cell in (fn.__closure__ or ()) if _filled(cell)]
    if any(_module_of(value).split(".")[0] in ("jax", "jaxlib") for value in values):
        return True
    return any(_refers_to_jax(value, seen) for value in values
               if isinstance(value, types.FunctionType) and _user_function(value) and id(value) not in seen)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _module_of(value) -> str:
    if isinstance(value, types.ModuleType):
        return value.__name__
    return getattr(value, "__module__", None) or ""
