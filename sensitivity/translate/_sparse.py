"""SciPy sparse matrices from ``f``'s closure, as constant linear operators on traced arrays.

The product with a traced vector (or matrix) is computed in one of two ways, chosen per
matrix:

- banded matrices (finite-difference stencils: few distinct diagonals) use one shifted
  slice product per diagonal;
- other matrices use a gather of ``x`` at the column indices and a sorted
  ``segment_sum`` over rows.

Measured under ``jax.jit`` on 2 shared CPU cores, float64, best of 7x300 calls, in
microseconds (matvec / gradient of ``sum((A @ x)**2)``), for the kernels below and
``jax.experimental.sparse.BCOO``::

    matrix                  diagonals    BCOO         segment_sum  dense
    1-D Laplacian, n=4096   10.1 / 9.5   17.1 / 33.0  17.6 / 36.0  2958
    2-D Laplacian, 64x64     7.7 / 12.8  30.5 / 60.2  24.6 / 46.6  3119

Diagonals are 2-4x faster than either general format and are used for banded
matrices; BCOO and ``segment_sum`` are within noise of each other, and ``segment_sum``
is used for other matrices because it is core JAX API (BCOO lives in
``jax.experimental``). Dense products are 300x slower and never used.
"""

from __future__ import annotations

import numpy as np

from . import _dispatch
from ._errors import translation_error
from ._traced import TracedArray, operand, wrap
from ._views import is_concrete, jax, jnp

BANDED_FILL = 2.0  # use diagonals while (diagonals * rows) <= BANDED_FILL * nonzeros


def _banded_product(matrix):
    """``x -> A @ x`` as one slice product per diagonal of ``A``."""
    rows = matrix.shape[0]
    coo = matrix.tocoo()
    offsets = np.unique(coo.col - coo.row)
    bands = np.zeros((len(offsets), rows), dtype=coo.data.dtype)
    bands[np.searchsorted(offsets, coo.col - coo.row), coo.row] = coo.data

    def product(x):
        y = jnp.zeros((rows,) + x.shape[1:], jnp.result_type(bands.dtype, x.dtype))
        for band, offset in zip(bands, offsets.tolist()):
            lo, hi = max(0, -offset), min(rows, matrix.shape[1] - offset)
            if hi <= lo:
                continue
            weights = band[lo:hi].reshape((hi - lo,) + (1,) * (x.ndim - 1))
            y = y.at[lo:hi].add(weights * x[lo + offset : hi + offset])
        return y

    return product


def _segment_product(matrix):
    """``x -> A @ x`` as a gather at column indices and a sorted segment sum over rows."""
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, coo.row))
    rows, cols, data = coo.row[order], coo.col[order], coo.data[order]

    def product(x):
        weights = data.reshape((-1,) + (1,) * (x.ndim - 1))
        return jax.ops.segment_sum(
            weights * x[cols], rows, num_segments=matrix.shape[0], indices_are_sorted=True
        )

    return product


def _product(matrix):
    coo = matrix.tocoo()
    diagonals = len(np.unique(coo.col - coo.row))
    if diagonals * matrix.shape[0] <= BANDED_FILL * max(coo.nnz, 1):
        return _banded_product(matrix)
    return _segment_product(matrix)


class SparseOperator:
    """A SciPy sparse matrix, read from ``f``'s closure, applied as a constant.

    Supports ``A @ x``, ``x @ A``, ``A.dot(x)``, ``np.matmul(A, x, out=...)``, ``A * x``
    (matrix product for ``scipy.sparse`` matrices), ``A.T``, slicing ``A[i:j, k:l]``,
    ``A.shape``, ``A.dtype`` and ``A.toarray()``.

    Parameters
    ----------
    matrix : scipy.sparse matrix or array
        Copied; the user's matrix is never modified.
    """

    def __init__(self, matrix):
        self._matrix = matrix.tocsr(copy=True)
        self._star_is_product = type(matrix).__name__.endswith("_matrix")
        self._kernel = None
        self._transposed = None
        self.shape = matrix.shape
        self.dtype = matrix.dtype
        self.ndim = 2

    @property
    def T(self) -> SparseOperator:
        if self._transposed is None:
            self._transposed = SparseOperator(self._matrix.T)
            self._transposed._star_is_product = self._star_is_product
            self._transposed._transposed = self
        return self._transposed

    def __getitem__(self, key):
        part = self._matrix[key]
        return SparseOperator(part) if hasattr(part, "tocsr") else wrap(np.asarray(part))

    @property
    def matrix(self):
        """The (copied) SciPy matrix, for SciPy functions given constant values."""
        return self._matrix

    def toarray(self) -> TracedArray:
        return wrap(self._matrix.toarray())

    def _like(self, matrix) -> SparseOperator:
        """A constant sparse result (a product or scaling of constant matrices)."""
        result = SparseOperator(matrix)
        result._star_is_product = self._star_is_product
        return result

    def _apply(self, x) -> TracedArray:
        if isinstance(x, SparseOperator):  # a product of constant matrices stays sparse
            return self._like(self._matrix @ x._matrix)
        x = operand(x)
        if is_concrete(x):
            return wrap(np.asarray(self._matrix @ np.asarray(x)))
        if self._kernel is None:
            self._kernel = _product(self._matrix)
        return wrap(self._kernel(jnp.asarray(x)))

    def _apply_left(self, x) -> TracedArray:
        """``x @ A``."""
        transposed = self.T._apply(np.transpose(x))
        return transposed if transposed.ndim == 1 else transposed.T

    def __matmul__(self, other):
        return self._apply(other)

    def __rmatmul__(self, other):
        return self._apply_left(other)

    def dot(self, other):
        return self._apply(other)

    def __mul__(self, other):
        if isinstance(other, SparseOperator) and self._star_is_product:
            return self._apply(other)
        if np.ndim(other) == 0 and is_concrete(operand(other)):  # a constant scaling
            return self._like(self._matrix * np.asarray(operand(other)).item())
        if self._star_is_product and np.ndim(other) > 0:
            return self._apply(other)
        raise translation_error(
            "elementwise product with a SciPy sparse array", "Write A @ x for the matrix product."
        )

    def __rmul__(self, other):
        if np.ndim(other) == 0:
            return self.__mul__(other)
        return self._apply_left(other) if self._star_is_product else self.__mul__(other)

    def __neg__(self):
        return self._like(-self._matrix)

    def __pow__(self, exponent):
        """A constant power: SciPy's (the matrix power of a sparse matrix, elementwise for
        a sparse array)."""
        if np.ndim(exponent) == 0 and is_concrete(operand(exponent)):
            return self._like(self._matrix ** np.asarray(operand(exponent)).item())
        raise translation_error("a power of a SciPy sparse matrix by a value that depends on u, p or t",
                                "Raise it to a constant power, or apply it repeatedly (A @ (A @ x)).")

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if ufunc is not np.matmul or method != "__call__" or kwargs or len(inputs) != 2:
            raise translation_error(
                f"np.{ufunc.__name__} on a SciPy sparse matrix",
                "Only matrix products (A @ x, A.dot(x), np.matmul) are supported.",
            )
        left, right = inputs
        result = self._apply(right) if left is self else self._apply_left(left)
        target = out[0] if out is not None else None
        return result if target is None else _dispatch.finish(operand(result), target)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise translation_error(
            f"attribute {name!r} of a SciPy sparse matrix",
            "Inside f, sparse matrices support A @ x, A.dot(x), A.T, A[i:j, k:l], A.shape "
            "and A.toarray().",
        )


class Factorization:
    """A SciPy sparse LU factorization (``splu``, ``spilu``: a ``SuperLU``) read from
    ``f``'s closure: ``solve`` of a constant right-hand side is SciPy's; of one that depends
    on ``u``, ``p`` or ``t`` a :class:`TranslationError` naming it (SciPy's C code raised
    an unrelated TypeError)."""

    def __init__(self, lu):
        self._lu = lu

    def solve(self, rhs, trans="N"):
        value = operand(rhs)
        if is_concrete(value):
            return wrap(np.asarray(self._lu.solve(np.asarray(value), trans)))
        raise translation_error(
            "SuperLU.solve (a scipy.sparse.linalg.splu or spilu factorization) on values that depend on u, p or t",
            "Factorize a dense copy outside f with scipy.linalg.lu_factor and call scipy.linalg.lu_solve "
            "in f (translated), or call np.linalg.solve(A, b) with A dense.")

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._lu, name)


def is_factorization(obj) -> bool:
    """Whether ``obj`` is a SciPy ``SuperLU`` (a C type whose module reads "builtins")."""
    if type(obj).__name__ != "SuperLU":
        return False
    import scipy.sparse.linalg

    return isinstance(obj, scipy.sparse.linalg.SuperLU)
