"""``Buffer``: the storage behind a traced array and all of its views, and its roles."""

from __future__ import annotations

import numpy as np

from ._tiling import Tiling
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

    Notes
    -----
    The content is held as a :class:`~._tiling.Tiling`: writes to boxes (see
    :meth:`write_box`) and increments of boxes (:meth:`increment_box`) are deferred and
    joined when read, so that a chain of window writes reaches XLA as slices and
    concatenations it can fuse. Reading :attr:`value` joins everything into one array.
    """

    __slots__ = ("_tiling", "role", "label", "written", "stale", "partial", "_positions")

    def __init__(self, value, role: str = LOCAL, label: str | None = None, positions=None):
        self.value = value
        self.role = role
        self.label = label
        shape = self.shape
        self.written = np.zeros(shape, bool) if role in (DU, SHADOW, FROZEN) else None
        self.stale = np.zeros(shape, bool) if role in (SHADOW, FROZEN) else None  # read unwritten
        self.partial = False
        self._positions = positions

    @property
    def value(self):
        """The whole content (NumPy data while it is a trace-time constant)."""
        return self._tiling.value()

    @value.setter
    def value(self, value) -> None:
        self._tiling = Tiling(np.asarray(value) if is_concrete(value) else value)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._tiling.shape

    @property
    def dtype(self) -> np.dtype:
        return self._tiling.dtype

    @property
    def concrete(self) -> bool:
        """Whether the content is a trace-time constant (no JAX value in it)."""
        return self._tiling.concrete

    @property
    def positions(self) -> np.ndarray:
        """Flat position of every element; views of it mirror views of the buffer."""
        if self._positions is None:
            self._positions = np.arange(int(np.prod(self.shape))).reshape(self.shape)
        return self._positions

    def box(self, positions) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """``(lo, hi)`` if ``positions`` (of a view) are the box ``[lo, hi)`` in C order.

        That is, if the view's elements, read in C order, are the elements of a box of
        the buffer, read in C order: then the view's content is that box reshaped.
        """
        positions = np.asarray(positions)
        if positions.size == 0:
            return None
        lo = np.unravel_index(int(positions.flat[0]), self.shape)
        hi = tuple(int(i) + 1 for i in np.unravel_index(int(positions.flat[-1]), self.shape))
        lo = tuple(int(i) for i in lo)
        if any(b <= a for a, b in zip(lo, hi)) or int(np.prod(np.subtract(hi, lo))) != positions.size:
            return None
        box = self.positions[tuple(map(slice, lo, hi))]
        return (lo, hi) if np.array_equal(box.reshape(-1), positions.reshape(-1)) else None

    def read_box(self, lo: tuple[int, ...], hi: tuple[int, ...]):
        """The content of the box ``[lo, hi)``."""
        return self._tiling.read(lo, hi)

    def write_box(self, lo: tuple[int, ...], hi: tuple[int, ...], value) -> None:
        """Set the box ``[lo, hi)`` to ``value`` (shaped ``hi - lo``, of the buffer's dtype)."""
        self._tiling.write(lo, hi, value)

    def increment_box(self, lo: tuple[int, ...], hi: tuple[int, ...], value, sign: int = 1) -> None:
        """Add (``sign`` 1) or subtract (-1) ``value`` (shaped ``hi - lo``) to the box ``[lo, hi)``."""
        self._tiling.increment(lo, hi, value, sign)
