"""Replacing the NumPy arrays a callable reaches, with views kept as views.

The policies given to :func:`._closure.copy_structure` derive from
:class:`AbstractArrayReplacer`: tracing replaces arrays by traced buffers
(:mod:`._trace`), :func:`duplicate` by private NumPy copies (:mod:`._to_jax`).
This module does not import JAX.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from ._closure import Label
from ._errors import TranslationError


def is_numeric_array(obj) -> bool:
    """Whether ``obj`` is a NumPy array of numbers (the arrays dxdt replaces)."""
    return isinstance(obj, np.ndarray) and obj.dtype.kind in "biufc"


def is_sparse(obj) -> bool:
    """Whether ``obj`` is a SciPy sparse matrix or array (without importing SciPy)."""
    return type(obj).__module__.startswith("scipy.sparse") and hasattr(obj, "tocsr")


def owning_array(array: np.ndarray) -> np.ndarray:
    """The array at the end of ``array``'s chain of bases (``array`` itself if it owns its
    memory)."""
    root = array
    while True:
        base = root.base
        if not isinstance(base, np.ndarray):  # as_strided's views (sliding_window_view's too,
            base = getattr(base, "base", None)  # and duplicate's) hold an object holding the array
        if not isinstance(base, np.ndarray):
            return root
        root = base


def _view_geometry(array: np.ndarray):
    """``(root, offset, strides)``: ``array`` as a strided view of the array owning its memory.

    Offset and strides count elements in the root's memory. None when ``array`` cannot
    be expressed that way (a different dtype, a root that is not contiguous).
    """
    root = owning_array(array)
    if root is array:
        return root, 0, None
    if root.dtype != array.dtype or not (root.flags.c_contiguous or root.flags.f_contiguous):
        return None
    offset = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    size = array.itemsize
    if offset % size or any(s % size for s in array.strides):
        return None
    return root, offset // size, tuple(s // size for s in array.strides)


def _check_plain(array: np.ndarray, label: Label) -> None:
    """Refuse array subclasses whose operators mean something else (the translation
    makes plain arrays of them: ``np.matrix``'s ``*`` would become elementwise, a masked
    array's reductions would count the masked entries)."""
    if type(array) is np.ndarray or not isinstance(array, (np.matrix, np.ma.MaskedArray)):
        return
    fix = ("np.asarray(m), and @ for its products" if isinstance(array, np.matrix)
           else "w.filled(value) or w.compressed()")
    raise TranslationError(
        f"{label} is a {type(array).__module__}.{type(array).__qualname__}, whose operations differ "
        f"from a plain array's: convert it outside f ({fix}) and write f with plain arrays.")


class AbstractArrayReplacer(abc.ABC):
    """Base of the ``replace`` policies: replaces NumPy arrays, keeping views as views.

    Closure arrays are often views of one another (``interior = flux[1:-1]``). Each
    array owning memory is replaced once, by :meth:`replace_root`; every view of it
    becomes the same view of that replacement (:meth:`replace_view`), so writes through
    one are seen through the others, as in NumPy.
    """

    def __init__(self):
        self._roots: dict[int, tuple[np.ndarray, Any]] = {}

    @abc.abstractmethod
    def replace_root(self, array: np.ndarray, label: Label):
        """The replacement of an array that owns its memory (keeping its memory layout)."""

    @abc.abstractmethod
    def replace_view(self, root, offset: int, strides: tuple[int, ...], shape: tuple[int, ...]):
        """The view ``as_strided(root.ravel("K")[offset:], shape, strides)`` of a replaced root."""

    @abc.abstractmethod
    def replace_other(self, obj, label: Label):
        """The replacement of any other object (sparse matrices, modules ...) or None."""

    def __call__(self, obj, label: Label):
        if not is_numeric_array(obj):
            return self.replace_other(obj, label)
        _check_plain(obj, label)
        geometry = _view_geometry(obj)
        if geometry is None:
            if owning_array(obj) is not obj:
                raise TranslationError(
                    f"{label} is a view of another array with a different dtype or layout "
                    f"({obj.dtype} of {owning_array(obj).dtype}: z.real, z.imag, w.view(...)): writes "
                    "through it could not reach that array in the translation. Take the view inside "
                    "f (zr = z.real), or keep separate arrays.")
            return self.replace_root(obj, label)
        root, offset, strides = geometry
        if id(root) not in self._roots:
            self._roots[id(root)] = (root, self.replace_root(root, label))
        new_root = self._roots[id(root)][1]
        return new_root if strides is None else self.replace_view(new_root, offset, strides, obj.shape)
