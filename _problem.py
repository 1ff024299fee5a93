"""``ODEProblem``: the right-hand side, initial state, time span and parameters."""

from __future__ import annotations

import inspect
import math
import numbers
import types
from typing import Any, Callable

import numpy as np

from .solvers._controller import STEP_FLOOR

_UNSET = object()


_SIGNATURES: dict = {}  # (bound, code, number of defaults) -> positional_parameters(f)


def positional_parameters(f: Callable) -> tuple[int, int] | None:
    """``(required, total)`` positional parameters of ``f`` (those without and with
    defaults); None for ``*args`` or a signature that cannot be inspected.

    Memoised for functions and bound methods by their code and number of defaults (what
    the answer depends on): ``inspect.signature`` costs tens of microseconds per call.
    """
    bound = isinstance(f, types.MethodType)
    fn = f.__func__ if bound else f
    key = (bound, fn.__code__, len(fn.__defaults__ or ())) if isinstance(fn, types.FunctionType) else None
    if key is not None and key in _SIGNATURES:
        return _SIGNATURES[key]
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        counts = None
    else:
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        counts = None if any(p.kind == p.VAR_POSITIONAL for p in parameters) else (
            sum(p.default is p.empty for p in positional), len(positional))
    if key is not None:
        _SIGNATURES[key] = counts
    return counts


def check_positional(fn: Callable, n: int, message: str) -> None:
    """A ``TypeError`` (``message``, and what ``fn`` takes) unless ``fn`` can be called with
    ``n`` positional arguments; functions whose signature cannot be read pass."""
    counts = positional_parameters(fn)
    if counts is not None and not counts[0] <= n <= counts[1]:
        raise TypeError(f"{message}; {getattr(fn, '__name__', type(fn).__name__)} takes {counts[1]}")


def is_inplace(f: Callable) -> bool:
    """Whether ``f`` is ``f(du, u, p, t)`` (True) or ``f(u, p, t)`` (False).

    Parameters with defaults may follow (work buffers passed as default arguments);
    a signature that cannot be inspected, or ``*args``, counts as in place.

    Raises
    ------
    TypeError
        If ``f`` cannot be called with 4 or 3 positional arguments.
    """
    counts = positional_parameters(f)
    if counts is None:
        return True
    required, total = counts
    if required <= 4 <= total:
        return True
    if required <= 3 <= total:
        return False
    raise TypeError(
        f"f must take 4 positional parameters f(du, u, p, t) (in place) or 3 f(u, p, t) "
        f"(out of place); {getattr(f, '__name__', f)!s} takes {total}"
    )


def as_state(u0: Any, name: str = "u0") -> np.ndarray:
    """Copy ``u0`` to a contiguous floating array (float64 unless already float32/complex)."""
    try:
        u = np.array(u0, copy=True, order="C")
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers, got {type(u0).__name__}") from err
    if u.dtype == object or u.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be an array of numbers, got dtype {u.dtype}")
    if u.dtype.kind in "biu":
        u = u.astype(np.float64)
    elif u.dtype == np.float16:
        u = u.astype(np.float32)
    if u.size == 0:
        raise ValueError(f"{name} is empty; an ODE needs at least one state variable")
    if not np.all(np.isfinite(u)):
        bad = np.flatnonzero(~np.isfinite(u.ravel()))[:5]
        raise ValueError(f"{name} contains non-finite values (nan/inf) at flat indices {bad.tolist()}")
    return u


def real_times(value: Any, name: str) -> np.ndarray:
    """``value`` as a float64 array of times (a copy). Booleans, complex numbers, strings
    and ``None`` are refused with a ``TypeError`` naming ``name``: NumPy would read them
    as times (``True`` as 1.0, ``"0.5"`` as 0.5, ``0.5+1j`` as 0.5), silently."""
    arr = None if value is None or isinstance(value, (str, bytes)) else np.asarray(value)
    if arr is not None and arr.dtype.kind == "O":  # e.g. Fractions, or a list mixing None in
        elements = arr.ravel().tolist()
        if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in elements):
            arr = None
    if arr is None or arr.dtype.kind not in "iufO":
        shown = repr(value) if len(repr(value)) <= 60 else type(value).__name__ + ("" if arr is None else
                                                                                     f" of {arr.dtype}")
        raise TypeError(f"{name} must be real times (a number or an array of floats), got {shown}")
    return arr.astype(np.float64)


def as_tspan(tspan: Any) -> tuple[float, float]:
    """Validate ``tspan = (t0, t1)`` with finite ends at least one step floor apart.

    A span shorter than the solvers' :data:`~dxdt.solvers._controller.STEP_FLOOR` times ``max(|t0|, |t1|)`` holds no step the
    solvers accept: the NumPy backend reported ``"dt_min"`` for it with no rows and a
    message about singularities, the JAX backend ``"dt_min"`` or ``"success"``
    depending on a few ulps; both now refuse it here, naming the floor."""
    try:
        times = real_times(tspan, "tspan")
    except (TypeError, ValueError) as err:
        raise ValueError(f"tspan must be a pair (t0, t1) of real numbers, got {tspan!r}") from err
    if times.shape != (2,):
        raise ValueError(f"tspan must be a pair (t0, t1) of real numbers, got an array of shape {times.shape}")
    t0, t1 = times.tolist()
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"tspan must be finite, got ({t0}, {t1})")
    if t0 == t1:
        raise ValueError(f"tspan has zero length (t0 == t1 == {t0}); give t1 != t0")
    floor = STEP_FLOOR * max(abs(t0), abs(t1))
    if abs(t1 - t0) < floor:
        raise ValueError(f"tspan ({t0!r}, {t1!r}) is shorter than the smallest step the solvers take "
                         f"at that time (16 machine epsilons of |t|: {floor:.3g}); give a longer span, "
                         "or shift time so that t0 is nearer 0")
    return t0, t1


class ODEProblem:
    """An initial value problem ``du/dt = f(u, p, t)``, ``u(t0) = u0``.

    Parameters
    ----------
    f : callable
        In place ``f(du, u, p, t)`` writing the derivative into ``du`` (4 positional
        parameters), or out of place ``f(u, p, t)`` returning it (3 parameters).
    u0 : array_like
        Initial state of any shape; copied. Integer input becomes float64, float32
        stays float32.
    tspan : (float, float)
        ``(t0, t1)``; ``t1 < t0`` integrates backwards.
    p : optional
        Parameters passed to ``f`` as given: None, a scalar, an array, a tuple/list or
        a dict of arrays/scalars.

    Raises
    ------
    TypeError
        ``f`` is not callable or does not take 3 or 4 positional parameters.
    ValueError
        ``u0`` is empty or not finite, ``tspan`` is not a finite pair with ``t0 != t1``,
        or its span is shorter than ``16 eps max(|t0|, |t1|)`` (the solvers' smallest
        step: at ``t0 = 1e8`` about 3.6e-7).
    """

    __slots__ = ("_f", "_u0", "_tspan", "_p", "_inplace")

    def __init__(self, f: Callable, u0: Any, tspan: tuple[float, float], p: Any = None):
        if not callable(f):
            raise TypeError(f"f must be callable as f(du, u, p, t) or f(u, p, t), got {type(f).__name__}")
        self._inplace = is_inplace(f)
        self._f = f
        self._u0 = as_state(u0)
        self._u0.setflags(write=False)
        self._tspan = as_tspan(tspan)
        self._p = p

    f = property(lambda self: self._f, doc="The right-hand side as given.")
    u0 = property(lambda self: self._u0, doc="Initial state (a read-only copy).")
    tspan = property(lambda self: self._tspan, doc="``(t0, t1)`` as floats.")
    p = property(lambda self: self._p, doc="Parameters, as given.")
    inplace = property(lambda self: self._inplace, doc="True for ``f(du, u, p, t)``.")

    def remake(self, *, u0: Any = _UNSET, p: Any = _UNSET, tspan: Any = _UNSET, f: Any = _UNSET) -> "ODEProblem":
        """A new problem with some fields replaced (the others are shared)."""
        return ODEProblem(
            self._f if f is _UNSET else f,
            self._u0 if u0 is _UNSET else u0,
            self._tspan if tspan is _UNSET else tspan,
            self._p if p is _UNSET else p,
        )

    def __repr__(self) -> str:
        name = getattr(self._f, "__name__", type(self._f).__name__)
        return (
            f"ODEProblem(f={name}, u0 shape={self._u0.shape} {self._u0.dtype}, "
            f"tspan={self._tspan}, inplace={self._inplace})"
        )
