"""Deferred writes: a buffer's content as boxes that tile it, joined only when read.

Translated literally, a stencil written in place,

.. code-block:: python

    np.multiply(a, -4.0, out=out)
    out[1:] += a[:-1]; out[:1] += a[-1:]; out[:-1] += a[1:]; out[-1:] += a[:1]

is a chain of functional window updates (``lax.dynamic_update_slice``), one per write.
XLA performs each update in place but does not fuse it with the arithmetic that
produces the next one, so every write costs a pass over memory; the same Laplacian
written with ``jnp.roll`` (slices joined by ``concatenate``) fuses into one loop.

A :class:`Tiling` keeps the content instead as *pieces*: disjoint boxes that cover the
buffer, each a window of some source array. A box write only cuts the pieces it
overlaps (their remainders keep pointing into their old sources) and adds one piece for
the new value; nothing is computed. Reading a box slices the pieces it meets and joins
them with ``concatenate`` along guillotine cuts -- planes that cross no piece -- which
is what ``jnp.roll`` lowers to, so XLA sees the stencil as slices, elementwise
arithmetic and concatenations, and fuses them. In the example, reading ``out[:-1]``
after the first two writes gives ``concatenate([w0, w1[:-1]])`` where ``w0`` and ``w1``
are the values written to ``out[:1]`` and ``out[1:]``.

Increments (``out[1:] += a[:-1]``, ``np.add(out, work, out=out)``) are deferred as well,
so that a chain of them becomes one expression. On the next read or write they are
applied in *layers*: an increment goes one layer above the highest earlier increment it
overlaps, so increments of one layer are disjoint and every element receives its
increments in program order (the additions NumPy makes, in its order). A
layer whose boxes tile their bounding box is added at once, its boxes joined like
pieces: the four edge increments of the Laplacian above become two layers,
``concatenate([a[-1:], a[:-1]])`` and ``concatenate([a[1:], a[:1]])``, which is
``-4 a + roll(a, 1) + roll(a, -1)``. Other increments are added box by box.

Pieces whose sources are all NumPy data stay NumPy (trace-time constants). A set of
pieces with no guillotine cut (a "pinwheel" of four boxes around a fifth) is joined by
window updates into a zero array instead.

References
----------
Guillotine cuts (cuts straight through a rectangle, splitting it into two):
P. C. Gilmore and R. E. Gomory, "Multistage cutting stock problems of two and more
dimensions", Operations Research 13 (1965) 94-120.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._views import is_concrete, jax, jnp

MAX_PARTS = 64  # pieces or pending increments kept before joining: bounds the trace-time
# bookkeeping (quadratic in their number) of loops that write a buffer row by row


class _Piece(NamedTuple):
    """The box ``[lo, hi)`` of a buffer, holding ``source[lo - origin : hi - origin]``."""

    lo: tuple[int, ...]
    hi: tuple[int, ...]
    source: Any
    origin: tuple[int, ...]
    sign: int = 1  # of an increment: added (1) or subtracted (-1)

    def meets(self, lo, hi) -> bool:
        return all(a < d and c < b for a, b, c, d in zip(self.lo, self.hi, lo, hi))

    def clip(self, lo, hi) -> _Piece:
        return self._replace(lo=tuple(map(max, self.lo, lo)), hi=tuple(map(min, self.hi, hi)))

    def take(self):
        """The content of the box: a slice of the source (the source itself if it fits)."""
        start = tuple(a - o for a, o in zip(self.lo, self.origin))
        stop = tuple(b - o for b, o in zip(self.hi, self.origin))
        if not any(start) and stop == tuple(self.source.shape):
            return self.source
        if is_concrete(self.source):
            return self.source[tuple(map(slice, start, stop))]
        return traced_slice(self.source, start, stop)


_SLICES: dict = {}  # (id(source), start, stop) -> (source, slice), for one trace


def traced_slice(source, start: tuple[int, ...], stop: tuple[int, ...]):
    """``lax.slice(source, start, stop)``, the same value each time within a trace.

    NumPy code reads the same window many times (``u[0]`` in every term); one slice per
    window makes reverse mode add the cotangents of its uses before padding them back
    into the source (a transposed slice is a full-size ``pad``), instead of padding each.
    """
    key = (id(source), start, stop)
    hit = _SLICES.get(key)
    if hit is not None and hit[0] is source:
        return hit[1]
    partial = [axis for axis, (a, b, n) in enumerate(zip(start, stop, source.shape)) if (a, b) != (0, n)]
    if len(partial) > 1 and stop[partial[0]] - start[partial[0]] == 1:
        # a window of one field (u[0, 1:, :]): slice the field first, shared by all the
        # windows of that field, so that their transposes pad into the field, not into u
        axis = partial[0]
        outer_start = tuple(a if i == axis else 0 for i, a in enumerate(start))
        outer_stop = tuple(b if i == axis else n for i, (b, n) in enumerate(zip(stop, source.shape)))
        field = traced_slice(source, outer_start, outer_stop)
        inner_start = tuple(0 if i == axis else a for i, a in enumerate(start))
        inner_stop = tuple(1 if i == axis else b for i, b in enumerate(stop))
        value = traced_slice(field, inner_start, inner_stop)
    else:
        value = jax.lax.slice(source, start, stop)
    _SLICES[key] = (source, value)
    return value


def forget_slices() -> None:
    """Drop the slices of the trace that ended (they hold its tracers)."""
    _SLICES.clear()


def fit(value, shape: tuple[int, ...], dtype, box) -> Any:
    """``value`` as the content of ``box = (lo, hi)``, written through a view of ``shape``.

    Cast to ``dtype``, broadcast to ``shape`` as NumPy assignment does (leading unit
    dimensions of ``value`` dropped), reshaped to ``hi - lo``. NumPy data is copied, so
    that later changes of the caller's array do not reach the buffer.
    """
    xp = np if is_concrete(value) else jnp
    value = xp.asarray(value).astype(dtype)
    extra = value.ndim - len(shape)
    if extra > 0 and all(n == 1 for n in value.shape[:extra]):
        value = value.reshape(value.shape[extra:])
    return xp.broadcast_to(value, shape).reshape(tuple(b - a for a, b in zip(*box)))


def _outside(piece: _Piece, lo, hi) -> list[_Piece]:
    """The part of ``piece`` outside the box ``[lo, hi)``, as at most ``2 ndim`` boxes."""
    rest = []
    p_lo, p_hi = list(piece.lo), list(piece.hi)
    for axis, (a, b) in enumerate(zip(lo, hi)):
        if p_lo[axis] < a:
            below = p_hi[:axis] + [a] + p_hi[axis + 1:]
            rest.append(piece._replace(lo=tuple(p_lo), hi=tuple(below)))
            p_lo[axis] = a
        if p_hi[axis] > b:
            above = p_lo[:axis] + [b] + p_lo[axis + 1:]
            rest.append(piece._replace(lo=tuple(above), hi=tuple(p_hi)))
            p_hi[axis] = b
    return rest


def _volume(lo, hi) -> int:
    return int(np.prod(np.subtract(hi, lo)))


def _combine(a, b, sign: int):
    """``a + b`` or ``a - b`` (NumPy if both are NumPy data)."""
    if is_concrete(a) and is_concrete(b):
        return a + b if sign > 0 else a - b
    return jnp.add(a, b) if sign > 0 else jnp.subtract(a, b)


def _concatenate(blocks: list, axis: int):
    if all(is_concrete(b) for b in blocks):
        return np.concatenate(blocks, axis)
    return jax.lax.concatenate([jnp.asarray(b) for b in blocks], axis)


def _overlay(lo, hi, parts: list[_Piece], dtype):
    """The box ``[lo, hi)`` from pieces that tile it without a guillotine cut."""
    shape = tuple(b - a for a, b in zip(lo, hi))
    if all(is_concrete(p.source) for p in parts):
        out = np.zeros(shape, dtype)
        for p in parts:
            out[tuple(slice(a - o, b - o) for a, b, o in zip(p.lo, p.hi, lo))] = p.take()
        return out
    out = jnp.zeros(shape, dtype)
    for p in parts:
        out = jax.lax.dynamic_update_slice(out, jnp.asarray(p.take()), tuple(a - o for a, o in zip(p.lo, lo)))
    return out


def _join(lo, hi, parts: list[_Piece], dtype):
    """The box ``[lo, hi)`` from ``parts``, pieces that tile it exactly."""
    if len(parts) == 1:
        return parts[0].take()
    for axis, (start, stop) in enumerate(zip(lo, hi)):
        cuts = sorted({p.hi[axis] for p in parts} - {stop})
        cuts = [c for c in cuts if not any(p.lo[axis] < c < p.hi[axis] for p in parts)]
        if not cuts:
            continue
        bounds = [start, *cuts, stop]
        blocks = []
        for a, b in zip(bounds, bounds[1:]):
            slab = [p for p in parts if a <= p.lo[axis] < b]
            slab_lo = lo[:axis] + (a,) + lo[axis + 1:]
            slab_hi = hi[:axis] + (b,) + hi[axis + 1:]
            blocks.append(_join(slab_lo, slab_hi, slab, dtype))
        return _concatenate(blocks, axis)
    return _overlay(lo, hi, parts, dtype)


class Tiling:
    """The content of a buffer as pieces (boxes with values) that tile it.

    Parameters
    ----------
    value : numpy.ndarray or jax.Array
        The initial content, one piece.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    """

    __slots__ = ("shape", "dtype", "_pieces", "_increments")

    def __init__(self, value):
        self.shape = tuple(value.shape)
        self.dtype = np.dtype(value.dtype)
        zero = (0,) * len(self.shape)
        self._pieces = [_Piece(zero, self.shape, value, zero)]
        self._increments: list[_Piece] = []

    @property
    def concrete(self) -> bool:
        """Whether the content is NumPy data only (a trace-time constant)."""
        return all(is_concrete(p.source) for p in self._pieces + self._increments)

    def read(self, lo: tuple[int, ...], hi: tuple[int, ...]):
        """The content of the box ``[lo, hi)`` (non-empty, inside the buffer)."""
        self._apply_increments()
        return self._read(lo, hi)

    def value(self):
        """The whole content, joined; the tiling then holds it as a single piece."""
        self._apply_increments()
        if len(self._pieces) > 1:
            self.__init__(self._read((0,) * len(self.shape), self.shape))
        return self._pieces[0].take()

    def write(self, lo: tuple[int, ...], hi: tuple[int, ...], value) -> None:
        """Replace the box ``[lo, hi)`` by ``value`` (shape ``hi - lo``, the buffer's dtype)."""
        self._apply_increments()
        self._write(lo, hi, value)

    def increment(self, lo: tuple[int, ...], hi: tuple[int, ...], value, sign: int = 1) -> None:
        """Add (``sign`` 1) or subtract (-1) ``value`` (shape ``hi - lo``, the buffer's dtype)."""
        self._increments.append(_Piece(lo, hi, value, lo, sign))
        if len(self._increments) > MAX_PARTS:
            self._apply_increments()

    def _read(self, lo, hi):
        parts = [p.clip(lo, hi) for p in self._pieces if p.meets(lo, hi)]
        return _join(lo, hi, parts, self.dtype)

    def _write(self, lo, hi, value) -> None:
        pieces = []
        for piece in self._pieces:
            pieces.extend(_outside(piece, lo, hi) if piece.meets(lo, hi) else (piece,))
        pieces.append(_Piece(lo, hi, value, lo))
        self._pieces = pieces
        if len(pieces) > MAX_PARTS:
            self.__init__(self._read((0,) * len(self.shape), self.shape))

    def _apply_increments(self) -> None:
        """Add the deferred increments, layer by layer (see the module docstring)."""
        layers: list[list[_Piece]] = []
        levels: list[int] = []
        for i, inc in enumerate(self._increments):
            below = [levels[j] for j in range(i) if self._increments[j].meets(inc.lo, inc.hi)]
            level = max(below, default=-1) + 1
            levels.append(level)
            if level == len(layers):
                layers.append([])
            layers[level].append(inc)
        self._increments = []
        for layer in layers:
            lo = tuple(map(min, *(p.lo for p in layer))) if len(layer) > 1 else layer[0].lo
            hi = tuple(map(max, *(p.hi for p in layer))) if len(layer) > 1 else layer[0].hi
            if sum(_volume(p.lo, p.hi) for p in layer) == _volume(lo, hi):
                sign = -1 if all(p.sign < 0 for p in layer) else 1
                terms = [p if p.sign == sign else p._replace(source=-p.source, sign=sign) for p in layer]
                self._write(lo, hi, _combine(self._read(lo, hi), _join(lo, hi, terms, self.dtype), sign))
                continue
            for p in layer:
                self._write(p.lo, p.hi, _combine(self._read(p.lo, p.hi), p.source, p.sign))
