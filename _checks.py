"""Input validation shared by ``solve`` and the sensitivity operators.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument and says what to do.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Callable

import numpy as np

from ._ensemble import tree_leaves
from ._problem import ODEProblem, real_times
from .solvers import AbstractRungeKutta, AbstractStabilized
from .solvers._controller import EPS as _EPS


def check_problem(prob: Any) -> ODEProblem:
    if not isinstance(prob, ODEProblem):
        raise TypeError(f"prob must be a dxdt.ODEProblem, got {type(prob).__name__}")
    return prob


def check_method(method: Any) -> AbstractRungeKutta | AbstractStabilized:
    if isinstance(method, type) and issubclass(method, (AbstractRungeKutta, AbstractStabilized)):
        return method()
    if not isinstance(method, (AbstractRungeKutta, AbstractStabilized)):
        raise TypeError(
            f"method must be a solver from dxdt.solvers such as Tsit5(), got {method!r}"
        )
    return method


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]  # a 0-d array (np.asarray(1e-8)) is a number
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


_TINY = float(np.finfo(np.float64).tiny)
MAX_STEPS_LIMIT = 2**62  # larger max_steps are read as this (see check_max_steps)


def check_tolerances(rtol: Any, atol: Any, shape: tuple[int, ...]):
    """``rtol`` a positive float; ``atol`` a non-negative float or array broadcastable to u0."""
    rtol = check_positive("rtol", rtol)
    if rtol < 10 * _EPS:
        raise ValueError(f"rtol={rtol} is below 10 machine epsilons; use rtol >= 1e-14")
    if type(atol) is float or isinstance(atol, numbers.Real) or np.ndim(atol) == 0:
        atol = check_positive("atol", atol, allow_zero=True)
        return rtol, atol if atol > 0 else _TINY
    try:
        values = None if isinstance(atol, (str, bytes)) else np.asarray(atol)
    except ValueError:  # ragged nesting
        values = None
    if values is None or values.dtype.kind not in "iuf":  # (strings, booleans, complex numbers)
        got = type(atol).__name__ + ("" if values is None else f" of dtype {values.dtype}")
        raise TypeError(f"atol must be a non-negative number or an array of them (one per entry of u0), "
                        f"got {got}")
    atol = values.astype(np.float64)
    try:
        np.broadcast_to(atol, shape)
    except ValueError:
        raise ValueError(f"atol of shape {atol.shape} does not broadcast to u0's shape {shape}") from None
    if not np.all(np.isfinite(atol)) or np.any(atol < 0):
        raise ValueError("atol must be finite and >= 0 everywhere")
    return rtol, np.maximum(atol, _TINY)


def check_jax_dtype(u0: np.ndarray, what: str) -> None:
    """JAX computes in at most float64 / complex128: a longer ``u0`` is refused by name."""
    if u0.dtype.kind in "fc" and u0.dtype.itemsize > (8 if u0.dtype.kind == "f" else 16):
        raise TypeError(f"{what} computes in at most float64 (complex128); u0 has dtype {u0.dtype}: "
                        "convert it (u0.astype(np.float64)) or solve with backend='numpy'")


def check_max_steps(max_steps: Any) -> int:
    if type(max_steps) is not int and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral)) \
            or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    # a budget no solve reaches (sys.maxsize as "no limit"): kept within the compiled
    # solves' 64-bit step counters, where 2**63 overflowed the JAX backend's arguments
    return min(int(max_steps), MAX_STEPS_LIMIT)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_saveat(saveat: Any, tspan: tuple[float, float]) -> np.ndarray | None:
    """``saveat`` as a float64 1-D array inside ``tspan``, ordered in the direction of time."""
    if saveat is None:
        return None
    try:
        ts = np.atleast_1d(real_times(saveat, "saveat"))
    except ValueError as err:  # ragged nesting
        raise TypeError(f"saveat must be an array of times, got {type(saveat).__name__}") from err
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"saveat must be a non-empty 1-D array of times, got shape {ts.shape}")
    t0, t1 = tspan
    # the common case in two NumPy calls: ends inside tspan, sorted (a NaN fails a comparison)
    first, last = float(ts[0]), float(ts[-1])
    if t0 <= first <= last <= t1 if t1 > t0 else t0 >= first >= last >= t1:
        order = np.less_equal if t1 > t0 else np.greater_equal
        if ts.size < 3 or order(ts[:-1], ts[1:]).all():
            return ts
    first, last = ts.min(), ts.max()  # NaN if any time is NaN
    if not (math.isfinite(first) and math.isfinite(last)):
        raise ValueError("saveat contains non-finite times")
    lo, hi = min(t0, t1), max(t0, t1)
    slack = 1e-12 * max(abs(lo), abs(hi), hi - lo)
    if first < lo - slack or last > hi + slack:
        bad = ts[(ts < lo - slack) | (ts > hi + slack)][0]
        raise ValueError(f"saveat time {bad} is outside tspan {tspan}; all saveat times must lie in tspan")
    if first < lo or last > hi:
        ts = np.clip(ts, lo, hi)
    steps = ts[1:] - ts[:-1]
    if ((steps < 0) if t1 > t0 else (steps > 0)).any():
        order = "increasing" if t1 > t0 else "decreasing (t1 < t0)"
        raise ValueError(f"saveat must be sorted in the direction of integration ({order})")
    return ts


def check_dt(dt: Any, tspan: tuple[float, float]) -> float | None:
    """``|dt|``: the step's size; its sign follows ``tspan`` (a positive ``dt`` serves a
    backward solve too). A negative ``dt`` on a forward ``tspan`` points away from ``t1``."""
    if dt is None:
        return None
    if isinstance(dt, np.ndarray) and dt.ndim == 0 and dt.dtype.kind in "iuf":
        dt = dt[()]  # a 0-d array is a number (as for rtol and atol)
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
        raise TypeError(f"dt must be a real number, got {type(dt).__name__}")
    dt = float(dt)
    t0, t1 = tspan
    if not math.isfinite(dt) or dt == 0:
        raise ValueError(f"dt must be finite and nonzero, got {dt}")
    if dt < 0 < t1 - t0:
        raise ValueError(
            f"dt={dt} points away from t1={t1}; give a positive dt (its sign follows tspan)"
        )
    return abs(dt)


def inplace_rhs(prob: ODEProblem) -> Callable:
    """The problem's right-hand side as ``f(du, u, p, t)``, wrapping an out-of-place ``f``."""
    if prob.inplace:
        return prob.f
    f, shape = prob.f, prob.u0.shape

    def f_inplace(du, u, p, t):
        value = f(u, p, t)
        if value is None:
            raise TypeError(
                "f(u, p, t) returned None: an out-of-place f must return du; "
                "or write it in place as f(du, u, p, t)"
            )
        if np.shape(value) != shape:
            raise ValueError(f"f(u, p, t) returned shape {np.shape(value)}, expected u0's shape {shape}")
        du[...] = value

    return f_inplace


_SHAPE_ERRORS = ("could not broadcast", "could not be broadcast", "too many indices", "out of bounds",
                 "values to unpack", "invalid index to scalar variable", "cannot unpack non-iterable",
                 "iteration over a 0-d array")


@contextlib.contextmanager
def shape_errors_named(u_shape: tuple, p, who: str = "f"):
    """Around a call of ``f`` (or of the function ``who`` names: an event's condition or
    affect): an index, broadcast or unpacking error it raises (``u0`` or ``p`` not of the
    shape it indexes) becomes a ``ValueError`` naming it, ``u0`` and ``p`` with their shapes;
    any other error passes as it is."""
    try:
        yield
    except (IndexError, ValueError, TypeError) as error:
        if not any(text in str(error) for text in _SHAPE_ERRORS):
            raise
        p_text = (f"p of shape {np.shape(p)}" if isinstance(p, (float, int)) or hasattr(p, "shape")
                  else "p=None" if p is None else f"p a {type(p).__name__}")
        raise ValueError(
            f"{who} raised {type(error).__name__} ({error}) with u0 of shape {tuple(u_shape)} and {p_text}: check "
            f"that u0 and p have the shapes {'f' if who == 'f' else 'it'} indexes (an ensemble's u0 or p batch "
            "holds the members on its first axis, each member's value after it)") from error


def first_derivative_on_duplicate(f: Callable, prob: ODEProblem) -> None:
    """The checks of :func:`first_derivative`, on a duplicate of ``f``: never writing the
    user's closure buffers (which a NumPy solve in another thread may be using), for the
    paths that evaluate ``f`` only to check it (the JAX backend's solves)."""
    from .sensitivity.translate import duplicate

    first_derivative(duplicate(f), prob)


def first_derivative(f: Callable, prob: ODEProblem) -> np.ndarray:
    """Evaluate ``f(u0)`` once, checking that ``f`` writes every entry of ``du``.

    ``du`` starts filled with NaN; entries still NaN afterwards are retried with a
    second sentinel, so a legitimate NaN is told apart from an entry ``f`` never wrote.
    """
    u0, t0 = prob.u0, prob.tspan[0]
    if u0.dtype.kind != "c" and _holds_complex(prob.p):
        _check_real_derivative(f, prob)
    du = np.full(u0.shape, np.nan, dtype=u0.dtype)
    u = u0.copy()
    p_snapshot = snapshot_p(prob.p)
    with shape_errors_named(u0.shape, prob.p):
        result = f(du, u, prob.p, t0)
    if not np.array_equal(u, u0, equal_nan=True):
        raise ValueError(
            "f changed its argument u (the solver's state) at t0: an in-place f(du, u, p, t) "
            "must only write du (and its own work buffers); copy u first (v = u.copy()) to "
            "modify it")
    if restored_p(p_snapshot):
        raise ValueError(
            "f changed its argument p (the problem's parameters) at t0: every call would change "
            "them again (k = p; k *= 2 writes into p); copy first (k = p.copy()) or write "
            "k = p * 2")
    missing = np.isnan(du)
    if np.any(missing):
        sentinel = np.asarray(1.2345e30, dtype=u0.dtype)
        du2 = np.full(u0.shape, sentinel, dtype=u0.dtype)
        f(du2, u0.copy(), prob.p, t0)
        never = missing & (du2 == sentinel)
        if np.any(never):
            where = np.argwhere(never)[:5].tolist() if never.ndim else []
            hint = (
                " f returned a value instead: write into du (du[:] = ...) or use an "
                "out-of-place f(u, p, t)." if result is not None else ""
            )
            raise ValueError(
                f"f never writes du at indices {where}{' ...' if never.sum() > 5 else ''}; "
                f"an in-place f(du, u, p, t) must assign every entry of du (du's content is undefined "
                f"on entry, so du += ... before du[:] = ... reads garbage).{hint}"
            )
    return du


def snapshot_p(p) -> list:
    """``(array, copy)`` of each writable array of ``p``, for :func:`restored_p`."""
    return [(a, a.copy()) for a in _array_leaves(p)]


def restored_p(snapshot: list) -> bool:
    """Whether a user's function wrote into ``p`` since :func:`snapshot_p`; if so ``p`` is
    restored (the problem's parameters as they were), and the caller raises."""
    if all(_unchanged(a, before) for a, before in snapshot):
        return False
    for a, before in snapshot:
        np.copyto(a, before)
    return True


def _unchanged(a: np.ndarray, before: np.ndarray) -> bool:
    """Whether ``a`` still equals its copy ``before`` (NaN equal to NaN; an object array
    entry by identity, its copy being shallow)."""
    if a.dtype.kind == "O":
        return a.shape == before.shape and all(x is y for x, y in zip(a.flat, before.flat))
    return np.array_equal(a, before, equal_nan=a.dtype.kind in "fc")


def _array_leaves(p) -> list:
    """The writable NumPy arrays in ``p`` (an array, or containers of them)."""
    return [leaf for _, leaf in tree_leaves(p) if isinstance(leaf, np.ndarray) and leaf.flags.writeable]


def _holds_complex(p) -> bool:
    """Whether ``p`` (an array, a number, or containers of them) holds a complex value."""
    return any(isinstance(leaf, (complex, np.ndarray, np.generic)) and np.iscomplexobj(leaf)
               for _, leaf in tree_leaves(p))


def _check_real_derivative(f: Callable, prob: ODEProblem) -> None:
    """A real ``u0`` with a complex ``p``: ``f`` evaluated into a complex ``du`` must give a
    real derivative, else writing it into the solver's real ``du`` would drop the imaginary
    parts silently (NumPy only warns)."""
    du = np.zeros(prob.u0.shape, complex)
    try:
        f(du, prob.u0.copy(), prob.p, prob.tspan[0])
    except Exception:  # noqa: BLE001 (f may need a real du: nothing to tell then)
        return
    if np.any(du.imag != 0):
        raise TypeError(
            "u0 is real but f(du, u0, p, t0) is complex (p holds complex values): solving in "
            "real arithmetic would drop the imaginary parts. Pass a complex u0 "
            "(u0.astype(complex)), or take the real part in f (np.real) if that is meant.")
