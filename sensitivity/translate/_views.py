"""Views as steps: how a view reads from its parent and how a write lands back in it.

A traced view is a base buffer plus a chain of steps (basic index, reshape, axis
permutation, or a general gather). Reading applies the steps to the base value; writing
rebuilds the base functionally, step by step from the innermost view outwards, with
``.at[...].set`` (slice updates, which XLA lowers to in-place window updates). Views
whose elements form a box of the base (``out[1:]``, ``du[0]``) skip the steps: their
reads and writes go to the box directly (see :mod:`._tiling`).

Which operations make views, and which make copies, is decided by NumPy itself: every
traced view keeps an integer array of the flat positions of its elements in the base,
and the same NumPy operation applied to that array is a view exactly when it would be
one on the user's array (see :func:`infer_step`).
"""

from __future__ import annotations

import numpy as np

from .._jax import load_jax

jax, jnp = load_jax()


def is_concrete(value) -> bool:
    """Whether ``value`` is known at trace time (NumPy data, not a JAX value)."""
    return not isinstance(value, jax.Array)


def _covers(key, shape: tuple[int, ...]) -> bool:
    """Whether indexing with ``key`` selects every element, in order, with the same shape."""
    parts = key if isinstance(key, tuple) else (key,)
    if not any(part is Ellipsis for part in parts) and len(parts) != len(shape):
        return False
    return all(p is Ellipsis or (isinstance(p, slice) and p == slice(None)) for p in parts)


def set_at(x, key, value):
    """``x`` with ``x[key] = value`` applied, without modifying ``x``.

    Concrete operands stay NumPy (a copy is written); otherwise the update is a JAX
    ``.at[key].set``, cast to the dtype of ``x`` as NumPy assignment does.
    """
    parts = key if isinstance(key, tuple) else (key,)
    if is_concrete(x) and is_concrete(value) and all(map(is_concrete, parts)):  # a traced index: onehot[argmax(u)]
        y = np.array(x, copy=True)
        y[key] = value
        return y
    x = jnp.asarray(x)
    value = jnp.asarray(value)
    if _covers(key, x.shape):
        return jnp.broadcast_to(value.astype(x.dtype), x.shape)
    window = _static_window(key, x.shape)
    if window is not None:  # a box: an in-place window update, cheaper than a scatter
        starts, sizes = window
        block = jnp.broadcast_to(value.astype(x.dtype), np.empty(x.shape)[key].shape)
        return jax.lax.dynamic_update_slice(x, block.reshape(sizes), starts)
    return x.at[key].set(value.astype(x.dtype))


def _static_window(key, shape: tuple[int, ...]):
    """``(starts, sizes)`` if ``x[key]`` is a box (ints and unit-step slices), else None."""
    parts = key if isinstance(key, tuple) else (key,)
    if len(parts) > len(shape):
        return None
    starts, sizes = [], []
    for part, n in zip(parts, shape):
        if isinstance(part, (int, np.integer)) and not isinstance(part, bool):
            index = int(part) + n if part < 0 else int(part)
            if not 0 <= index < n:
                return None
            starts.append(index)
            sizes.append(1)
        elif isinstance(part, slice) and part.step in (None, 1):
            start, stop, _ = part.indices(n)
            if stop <= start:
                return None
            starts.append(start)
            sizes.append(stop - start)
        else:
            return None
    rest = shape[len(parts):]
    return tuple(starts) + (0,) * len(rest), tuple(sizes) + tuple(rest)


class IndexStep:
    """A basic index (ints, slices, ``None``, ``Ellipsis``)."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def get(self, x):
        return x[self.key]

    def put(self, x, sub):
        return set_at(x, self.key, sub)


class ReshapeStep:
    """A C-order reshape (``reshape``, ``ravel``, ``squeeze``, ``expand_dims`` ...)."""

    __slots__ = ("shape",)

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def get(self, x):
        return x.reshape(self.shape)

    def put(self, x, sub):
        return sub.reshape(x.shape)


class TransposeStep:
    """An axis permutation (``.T``, ``transpose``, ``swapaxes``, ``moveaxis``)."""

    __slots__ = ("axes",)

    def __init__(self, axes: tuple[int, ...]):
        self.axes = axes

    def get(self, x):
        return x.transpose(self.axes)

    def put(self, x, sub):
        return sub.transpose(tuple(np.argsort(self.axes)))


class GatherStep:
    """Any other view: the flat positions of its elements in the parent."""

    __slots__ = ("local",)

    def __init__(self, local: np.ndarray):
        self.local = local

    def get(self, x):
        return x.reshape(-1)[self.local]

    def put(self, x, sub):
        return set_at(x.reshape(-1), self.local.reshape(-1), sub.reshape(-1)).reshape(x.shape)


class ComponentStep:
    """The real or imaginary part of a complex array (``z.real``, ``np.imag(z)``): a view
    of another dtype. Writing it replaces that part of the parent and keeps the other."""

    __slots__ = ("part",)

    def __init__(self, part: str):
        self.part = part

    def get(self, x):
        return x.real if self.part == "real" else x.imag

    def put(self, x, sub):
        new = sub + 1j * x.imag if self.part == "real" else x.real + 1j * sub
        return new.astype(x.dtype)


def read_through(value, steps):
    """The value of the view ``steps`` of a base whose value is ``value``."""
    for step in steps:
        value = step.get(value)
    return value


def write_through(value, steps, key, new):
    """The base value after ``view[key] = new``, for the view ``steps`` of ``value``."""
    if not steps:
        return set_at(value, key, new)
    head, rest = steps[0], steps[1:]
    return head.put(value, write_through(head.get(value), rest, key, new))


def _basic_key(shape: tuple[int, ...], view: np.ndarray):
    """A basic index ``key`` with ``arange(prod(shape)).reshape(shape)[key] == view``, or None.

    ``view`` is a strided view of that position grid (e.g. made with ``as_strided``).
    """
    if view.size == 0:
        return None
    grid = np.arange(int(np.prod(shape))).reshape(shape)
    grid_strides = [s // grid.itemsize for s in grid.strides]
    key: list = [int(i) for i in np.unravel_index(int(view.flat[0]), shape)]
    axis = 0
    for length, stride in zip(view.shape, (s // view.itemsize for s in view.strides)):
        for a in range(axis, len(shape)):
            step = stride // grid_strides[a] if stride % grid_strides[a] == 0 else 0
            stop = key[a] + step * length
            if step and -1 <= stop <= shape[a]:
                key[a] = slice(key[a], None if stop < 0 else stop, step)
                axis = a + 1
                break
        else:
            return None
    key = tuple(key)
    return key if np.array_equal(grid[key], view) else None


def view_step(shape: tuple[int, ...], view: np.ndarray):
    """The step that maps a base of ``shape`` to ``view``, a strided view of its positions."""
    key = _basic_key(shape, view)
    return GatherStep(np.array(view)) if key is None else IndexStep(key)


def infer_step(shape: tuple[int, ...], local: np.ndarray):
    """The cheapest step that maps an array of ``shape`` to its view ``local``.

    ``local`` is the view, computed by NumPy, of ``arange(prod(shape)).reshape(shape)``.
    """
    grid = np.arange(int(np.prod(shape))).reshape(shape)
    if local.size == grid.size and np.array_equal(local.reshape(-1), grid.reshape(-1)):
        return ReshapeStep(local.shape)
    if local.ndim == grid.ndim and local.size == grid.size and local.size > 1:
        axes = [grid.strides.index(s) if s in grid.strides else -1 for s in local.strides]
        if sorted(axes) == list(range(grid.ndim)) and np.array_equal(grid.transpose(axes), local):
            return TransposeStep(tuple(axes))
    return GatherStep(local)
