"""Events: ``Event`` (a condition crossing zero) and ``TimeEvent`` (given times), and their checks.

An :class:`Event` fires where ``condition(u(t), p, t)`` crosses zero; a
:class:`TimeEvent` fires at given times (dosing schedules). Either may change the
state in place with ``affect(u, p, t)``. Locating them during a NumPy solve is the
job of :mod:`._events_numpy`; differentiating through them, of
:mod:`.sensitivity._events`.

References
----------
L. F. Shampine, S. Thompson, "Event location for ordinary differential equations",
Comput. Math. Appl. 39 (2000) 43-54; C. Rackauckas, Q. Nie, "DifferentialEquations.jl",
J. Open Res. Softw. 5 (2017) 15 (continuous, discrete and preset-time callbacks).
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from typing import Any, Callable, Sequence

import numpy as np

from ._problem import check_positional, real_times


class Event:
    """A state event: fires where ``condition(u, p, t)`` crosses zero.

    Parameters
    ----------
    condition : callable
        ``condition(u, p, t) -> float``, a continuous scalar function of the state.
    affect : callable, optional
        ``affect(u, p, t)`` changes ``u`` in place (NumPy style, like ``f``) and returns
        None. ``None`` (default) only records the event.
    direction : {0, 1, -1}
        ``+1`` fires on upward crossings only (``condition`` going from negative to
        non-negative), ``-1`` on downward ones, ``0`` on both.
    terminal : bool or int
        ``True`` stops the solve at the first occurrence (status ``"event"``), an
        integer ``n`` at the ``n``-th; ``False`` never stops.
    name : str, optional
        Used in messages; defaults to the condition's ``__name__``.

    Raises
    ------
    TypeError, ValueError
        A non-callable condition or affect, a direction outside ``{-1, 0, 1}``, or a
        terminal count below 1; the message names the event.
    """

    __slots__ = ("condition", "affect", "direction", "terminal", "name")

    def __init__(self, condition: Callable, affect: Callable | None = None, *, direction: int = 0,
                 terminal: bool | int = False, name: str | None = None):
        self.name = _name(name, condition)
        if not callable(condition):
            raise TypeError(f"{self._label()}: condition must be callable as condition(u, p, t), "
                            f"got {type(condition).__name__}")
        check_positional(condition, 3, f"{self._label()}: condition must take 3 positional parameters "
                                        "condition(u, p, t)")
        self.condition = condition
        self.affect = _check_affect(affect, self._label())
        if isinstance(direction, bool) or not isinstance(direction, numbers.Real) or direction not in (-1, 0, 1):
            raise ValueError(f"{self._label()}: direction must be -1, 0 or +1, got {direction!r}")
        self.direction = int(direction)
        self.terminal = _check_terminal(terminal, self._label())

    def _label(self) -> str:
        return f"Event {self.name!r}"

    def __repr__(self) -> str:
        return (f"Event(name={self.name!r}, direction={self.direction}, terminal={self.terminal}, "
                f"affect={'None' if self.affect is None else 'yes'})")


class TimeEvent:
    """An event at given times: ``affect(u, p, t)`` applied exactly there (dosing).

    Parameters
    ----------
    times : array_like or callable
        The event times, or ``times(p) -> array`` (dose times that depend on the
        parameters, differentiable with the sensitivity operators). Times outside
        ``tspan`` are ignored; a time equal to ``t0`` fires once, before the first step.
    affect : callable, optional
        ``affect(u, p, t)`` changes ``u`` in place and returns None; ``None`` records.
    name : str, optional
        Used in messages; defaults to the affect's ``__name__``.

    Notes
    -----
    The solver steps exactly to every time (no root finding).
    """

    __slots__ = ("times", "affect", "name", "direction", "terminal")

    def __init__(self, times: Any, affect: Callable | None = None, *, name: str | None = None):
        self.name = _name(name, affect if affect is not None else times)
        self.affect = _check_affect(affect, self._label())
        if not callable(times):
            times = _check_times(times, self._label())
        else:
            check_positional(times, 1, f"{self._label()}: times must be an array or callable as times(p)")
        self.times = times
        self.direction, self.terminal = 0, False

    def _label(self) -> str:
        return f"TimeEvent {self.name!r}"

    def resolve_times(self, p) -> np.ndarray:
        """The event times as a sorted float64 array (calling ``times(p)`` if needed)."""
        if callable(self.times):
            return _check_times(self.times(p), self._label())
        return self.times

    def __repr__(self) -> str:
        times = "times(p)" if callable(self.times) else f"{len(self.times)} times"
        return f"TimeEvent(name={self.name!r}, {times})"


def _name(name, fallback) -> str:
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"event name must be a string, got {type(name).__name__}")
        return name
    return getattr(fallback, "__name__", type(fallback).__name__)


def _check_affect(affect, label: str):
    if affect is not None and not callable(affect):
        raise TypeError(f"{label}: affect must be None or callable as affect(u, p, t), "
                        f"got {type(affect).__name__}")
    if affect is not None:
        check_positional(affect, 3, f"{label}: affect must take 3 positional parameters affect(u, p, t) "
                                     "and change u in place")
    return affect


def _check_terminal(terminal, label: str) -> int:
    """``terminal`` as the occurrence count that stops the solve (0: never)."""
    if isinstance(terminal, bool):
        return int(terminal)
    if not isinstance(terminal, numbers.Integral) or terminal < 1:
        raise ValueError(f"{label}: terminal must be True, False or a count >= 1, got {terminal!r}")
    return int(terminal)


def _check_times(times, label: str) -> np.ndarray:
    """``times`` as a sorted float64 array; a ``ValueError`` naming the event for times
    that are not a 1-D array of distinct finite numbers."""
    try:
        ts = real_times(times, "times")
    except (TypeError, ValueError) as err:
        raise TypeError(f"{label}: times must be an array of real numbers, got {type(times).__name__}") from err
    if ts.ndim > 1:
        raise ValueError(f"{label}: times must be a 1-D array of times, got shape {ts.shape}")
    ts = np.sort(ts.reshape(-1))
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"{label}: times contain non-finite values")
    repeated = ts[1:][np.diff(ts) == 0]
    if repeated.size:
        raise ValueError(f"{label}: times repeat t={repeated[0]:.6g}, where the affect would apply once: "
                         "give each time once (add the amounts in the affect), or use another TimeEvent")
    return ts


def check_events(events: Any) -> tuple:
    """Validate ``events=`` of :func:`dxdt.solve`: a sequence of ``Event``/``TimeEvent``."""
    if events is None:
        return ()
    if isinstance(events, (Event, TimeEvent)):
        events = [events]
    if not isinstance(events, Sequence) or isinstance(events, str):
        raise TypeError(f"events must be a list of dxdt.Event / dxdt.TimeEvent, got {type(events).__name__}")
    for i, event in enumerate(events):
        if not isinstance(event, (Event, TimeEvent)):
            raise TypeError(f"events[{i}] must be a dxdt.Event or dxdt.TimeEvent, got {type(event).__name__}")
    return tuple(events)


def check_condition_value(event: Event, value) -> float:
    """``condition(...)``'s value as a float, or a ``TypeError`` naming the event."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{event._label()}: condition(u, p, t) must return a real number, got "
                        f"{type(value).__name__}")
    if np.ndim(value) != 0:
        raise TypeError(f"{event._label()}: condition(u, p, t) must return a scalar, "
                        f"got shape {np.shape(value)}")
    if np.iscomplexobj(value):
        raise TypeError(f"{event._label()}: condition(u, p, t) must return a real number, got "
                        f"{type(value).__name__} {value!r}")
    if _is_boolean(value):
        raise TypeError(_boolean_message(event._label()))
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{event._label()}: condition(u, p, t) must return a real number, "
                        f"got {type(value).__name__}") from err


def check_conditions(events, continuous, u: np.ndarray, p, t: float) -> None:
    """Evaluate the conditions ``events[i]``, ``i`` in ``continuous``, at ``(u, p, t)`` (on
    a copy of ``u``): a shape error or a value that is no real scalar is an error naming
    the event (bad input: the NumPy backend checks so at ``t0`` before solving)."""
    from ._checks import shape_errors_named

    for i in continuous:
        event = events[i]
        with named_in_errors(event, "condition", t), \
                shape_errors_named(u.shape, p, f"{event._label()}: condition"):
            check_condition_value(event, event.condition(u.copy(), p, t))


def nan_condition_message(event, t: float) -> str:
    """The failure (status ``"nonfinite"``, both backends) of a condition that is NaN at
    the start: no sign change can follow, so the event could never fire; solving on would
    miss it silently. (A failure, not an error: the NaN comes from ``p``, which a fit may
    move there.)"""
    return (f"{event._label()}: condition(u, p, t) is nan at t={t:.6g}: no sign change can follow, so the "
            "event could never fire; the solve stops there. Check the condition and p.")


def apply_affect(event, u: np.ndarray, buffer: np.ndarray, p, t: float) -> bool:
    """Apply ``event.affect`` in place to ``u`` through ``buffer`` (a private copy).

    The user's affect sees a copy, so a failed check leaves the solver state intact.
    Returns False, leaving ``u`` as it was, where the affect made the state non-finite
    (a failure of the solve, reported as ``"nonfinite"``: :func:`nonfinite_affect_message`).

    Raises
    ------
    TypeError, ValueError
        The affect returned a value, changed the shape or dtype, or wrote into ``p`` (bad
        input; ``p`` is restored).
    """
    from ._checks import restored_p, shape_errors_named, snapshot_p

    np.copyto(buffer, u)
    view = buffer.view()  # a shape or dtype the affect sets stays on this view
    p_snapshot = snapshot_p(p)
    with named_in_errors(event, "affect", t), shape_errors_named(u.shape, p, f"{event._label()}: affect"):
        result = event.affect(view, p, t)
    if restored_p(p_snapshot):
        raise ValueError(f"{event._label()}: affect(u, p, t) changed its argument p (the problem's parameters) "
                         f"at t={t:.10g}: every solve would change them again. Keep what an affect counts or "
                         "switches in a closure array or in the state u, not in p")
    if result is not None:
        raise TypeError(f"{event._label()}: affect(u, p, t) must change u in place and return None, "
                        f"got a {type(result).__name__}; write u[...] = ... instead of returning")
    if view.shape != u.shape or view.dtype != u.dtype:
        raise ValueError(f"{event._label()}: affect changed the state's shape/dtype to "
                         f"{view.shape} {view.dtype} (expected {u.shape} {u.dtype})")
    if not np.all(np.isfinite(buffer)):
        return False
    np.copyto(u, buffer)
    return True


@contextlib.contextmanager
def named_in_errors(event, role: str, t: float):
    """Around a call of an event's ``role`` (condition or affect) on the NumPy backend: an
    error it raises keeps its type and gains a note naming the event and the time (as the
    JAX backend's translation names them)."""
    try:
        yield
    except Exception as error:
        error.add_note(f"(raised by the {role} of {event._label()} at t={t:.10g})")
        raise


def nonfinite_affect_message(event, t: float) -> str:
    """The failure message of an affect that made the state non-finite (both backends)."""
    return (f"{event._label()}: affect at t={t:.6g} made the state non-finite (nan/inf); the "
            "solution stops there, before the affect. Check the affect and p.")


def inplace_condition(event: Event):
    """``event``'s condition as the in-place function :func:`to_jax` translates (a partial
    of :func:`condition_inplace`, not a closure: the closure walk of the translation and of
    the compiled-code cache key reaches the user's function and its arrays)."""
    translated = functools.partial(condition_inplace, event.condition, event._label())
    translated.role = f"{event._label()}: condition"  # (named in the translation's errors)
    return translated


def inplace_affect(event: Event | TimeEvent):
    """``event``'s affect as the in-place function :func:`to_jax` translates (see
    :func:`inplace_condition`)."""
    translated = functools.partial(affect_inplace, event.affect, event._label())
    translated.role = f"{event._label()}: affect"
    return translated


def condition_inplace(condition, label, out, u, p, t):
    """``condition`` as an in-place function writing its value into ``out`` (what the
    translation to JAX takes, as ``functools.partial(condition_inplace, condition, label)``: the
    closure walk then reaches the user's function), the value checked while tracing."""
    value = condition(u, p, t)
    if value is None or isinstance(value, (str, bytes)):  # as check_condition_value words it
        raise TypeError(f"{label}: condition(u, p, t) must return a real number, got {type(value).__name__}")
    if np.ndim(value) != 0:
        raise TypeError(f"{label}: condition(u, p, t) must return a scalar, got shape {np.shape(value)}")
    if _is_boolean(value):
        raise TypeError(_boolean_message(label))
    if isinstance(value, complex) or getattr(getattr(value, "dtype", None), "kind", "") == "c":
        raise TypeError(f"{label}: condition(u, p, t) must return a real number, got "
                        f"{getattr(value, 'dtype', type(value).__name__)}")  # (the real part was taken)
    out[...] = value


def _is_boolean(value) -> bool:
    return isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == np.bool_


def _boolean_message(label: str) -> str:
    return (f"{label}: condition(u, p, t) must return a real number that crosses zero (e.g. "
            "u[0] - threshold), got a boolean: a comparison such as u[0] > threshold never "
            "changes sign, so the event could never fire")


def affect_inplace(affect, label, out, u, p, t):
    """``affect`` as an in-place function for :func:`to_jax` writing ``u_new`` into ``out``."""
    out[...] = u
    shape = out.shape
    try:
        result = affect(out, p, t)
    except AttributeError as err:  # a traced state's dtype cannot be set
        if "shape" in str(err) or "dtype" in str(err):
            raise ValueError(f"{label}: affect cannot change the state's shape/dtype (expected "
                             f"{shape} {out.dtype}): {err}") from err
        raise
    if out.shape != shape:  # (u.shape = ... reshapes a traced array in place, as NumPy)
        raise ValueError(f"{label}: affect changed the state's shape/dtype to {out.shape} {out.dtype} "
                         f"(expected {shape} {out.dtype})")
    if result is not None:
        raise TypeError(f"{label}: affect(u, p, t) must change u in place and return None, "
                        f"got a {type(result).__name__}; write u[...] = ... instead of returning")
