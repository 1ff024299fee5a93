"""``Buffer``: the storage behind a traced array and all of its views, and its roles."""

from __future__ import annotations

import numpy as np

from ._views import is_concrete

INPUT = "input"  # u, p, t: always traced, writable (functionally)
DU = "du"  # the output: writes tracked, reading an unwritten element is an error
SHADOW = "shadow"  # private copy of a closure array: stale reads tracked
FROZEN = "frozen"  # closure array with duplicate_closure=False: traced writes refused
LOCAL = "local"  # anything created while f runs


class Buffer:
    """The storage shared by a traced array and all of its views.

    Parameters
    ----------
    value : numpy.ndarray or jax.Array
        The content. NumPy data is a trace-time constant; it is never modified in place.
    role : str
        One of ``INPUT``, ``DU``, ``SHADOW``, ``FROZEN``, ``LOCAL``.
    label : str, optional
        How error messages and warnings name the buffer.
    positions : numpy.ndarray, optional
        The flat (C-order) position of every element, laid out in memory like the NumPy
        array the buffer stands for, so that NumPy's view-or-copy decisions on it are
        those on that array. Default: C order.
    """

    __slots__ = ("value", "role", "label", "written", "stale", "partial", "_positions")

    def __init__(self, value, role: str = LOCAL, label: str | None = None, positions=None):
        self.value = np.asarray(value) if is_concrete(value) else value
        self.role = role
        self.label = label
        shape = tuple(self.value.shape)
        self.written = np.zeros(shape, bool) if role in (DU, SHADOW) else None
        self.stale = np.zeros(shape, bool) if role == SHADOW else None
        self.partial = False
        self._positions = positions

    @property
    def positions(self) -> np.ndarray:
        """Flat position of every element; views of it mirror views of the buffer."""
        if self._positions is None:
            shape = tuple(self.value.shape)
            self._positions = np.arange(int(np.prod(shape))).reshape(shape)
        return self._positions
