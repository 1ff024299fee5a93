"""What a traced program depends on, so that compiled code can be reused safely.

A compiled translation of ``f`` (or of a loss) depends on

1. the code of ``f`` and of every helper it reaches, and the Python values (numbers,
   strings, library objects) it reads from closures, globals, ``self`` and defaults --
   all baked into the trace: :func:`reach` digests them;
2. the content of the closure arrays that the trace *read before writing* (a constant
   table, a matrix, the data in a loss): work buffers that ``f`` fills before reading do
   not matter. The trace records those reads (:class:`ConstantRead`, made by
   :mod:`._trace`); :meth:`ConstantRead.matches` checks them against the arrays the user
   holds now, element by element, so an array changed in place misses.

The walk is the one of :mod:`._closure` (same objects, same labels), so a label recorded
while tracing names the same array in a later walk, in this process or another.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import types
from dataclasses import dataclass, field

import numpy as np

from ._closure import _global_names, _is_library, _root_label, _StructuralCopy, _user_function
from ._replace import AbstractArrayReplacer, is_sparse

_PICKLE_LIMIT = 1 << 20  # library objects larger than this are keyed by identity
_SCALARS = (int, float, complex, bool, str, bytes, type(None))
_WALKED = (types.CellType, types.MethodType, functools.partial, tuple, list, dict, staticmethod,
           classmethod, property, type)  # containers the walk enters (see _closure._children)


def content_digest(array) -> str:
    """A digest of an array's content (shape, dtype and values)."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((array.shape, array.dtype.str)).encode())
    h.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    return h.hexdigest()


def sparse_arrays(matrix) -> tuple:
    """The arrays that define a SciPy sparse matrix (CSR form)."""
    csr = matrix.tocsr()
    return (np.asarray(csr.shape), csr.data, csr.indices, csr.indptr)


_CODE_DIGESTS: dict[int, tuple] = {}


def _code_digest(code: types.CodeType) -> str:
    """A digest of a code object and the code nested in it (memoised per object)."""
    memo = _CODE_DIGESTS.get(id(code))
    if memo is not None and memo[0] is code:
        return memo[1]
    h = hashlib.blake2b(digest_size=16)
    h.update(code.co_code)
    for const in code.co_consts:
        h.update((_code_digest(const) if isinstance(const, types.CodeType) else repr(const)).encode())
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount,
                   code.co_kwonlyargcount, code.co_flags, code.co_qualname)).encode())
    digest = h.hexdigest()
    _CODE_DIGESTS[id(code)] = (code, digest)
    return digest


class _Recorder(AbstractArrayReplacer):
    """Walk policy: note every leaf (arrays by root, numbers, library objects) in order."""

    def __init__(self, constant_arrays: bool):
        super().__init__()
        self.items: list = []
        self.roots: dict[str, np.ndarray] = {}
        self.constant_arrays = constant_arrays
        self.names: set[str] = set()  # every name the user code reached uses
        self.modules: list = []  # user modules reached: their attributes are read as they are

    def replace_root(self, array, label):
        where = str(label)
        self.roots[where] = array
        summary = content_digest(array) if self.constant_arrays else None
        self.items.append(("array", where, array.shape, array.dtype.str, summary))
        return array

    def replace_view(self, root, offset, strides, shape):
        self.items.append(("view", offset, strides, shape))
        return root

    def replace_other(self, obj, label):
        if isinstance(obj, _WALKED):
            return None
        if isinstance(obj, types.FunctionType):
            if _user_function(obj):
                self.items.append(("function", str(label), _code_digest(obj.__code__)))
                self.names.update(_global_names(obj.__code__))
                return None
            return self._library(obj, label)
        if isinstance(obj, _SCALARS):
            self.items.append(("value", str(label), type(obj).__name__, repr(obj)))
            return obj
        if is_sparse(obj):
            digests = [content_digest(a) for a in sparse_arrays(obj)]
            self.items.append(("sparse", str(label), type(obj).__name__, digests))
            return obj
        if type(obj).__module__.startswith(("jax", "jaxlib")) and hasattr(obj, "shape"):
            self.items.append(("jax", str(label), content_digest(np.asarray(obj))))
            return obj
        if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
            self.items.append(("value", str(label), repr(np.asarray(obj).tolist())))
            return obj
        if isinstance(obj, types.ModuleType) and not _is_library(obj.__name__):
            self.modules.append((obj, label))
        if isinstance(obj, (types.ModuleType, types.BuiltinFunctionType, np.ufunc)):
            return self._library(obj, label)
        module = getattr(type(obj), "__module__", "") or ""
        if _is_library(module) and not isinstance(obj, (tuple, list, dict, type)):
            return self._library(obj, label)
        return None

    def module_attributes(self) -> None:
        """Digest the attributes of user modules that the code names (``config.K``).

        The translation reads them as they are (constants of the trace, not shadowed), so
        their content is part of what a compiled program depends on: an array changed in
        place or rebound must miss.
        """
        for module, label in self.modules:
            for name in sorted(self.names):
                value = getattr(module, name, None)
                where = f"{label}.{name}"
                if isinstance(value, np.ndarray):
                    self.items.append(("module array", where, content_digest(value)))
                elif isinstance(value, _SCALARS) or isinstance(value, np.generic):
                    self.items.append(("module value", where, type(value).__name__, repr(value)))
                elif isinstance(value, types.FunctionType) and _user_function(value):
                    self.items.append(("module function", where, _code_digest(value.__code__)))
                    self.names.update(_global_names(value.__code__))

    def _library(self, obj, label):
        # a module's name directly: numpy's module __getattr__ makes a failed lookup slow
        name = obj.__name__ if isinstance(obj, types.ModuleType) else \
            getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(obj, (types.ModuleType, types.BuiltinFunctionType, types.FunctionType, np.ufunc)):
            self.items.append(("library", str(label), getattr(obj, "__module__", None), name))
            return obj
        try:  # a library object's state may be baked into the trace: key it by content
            data = pickle.dumps(obj, protocol=5)
            summary = hashlib.blake2b(data, digest_size=16).hexdigest() if len(data) <= _PICKLE_LIMIT else None
        except Exception:
            summary = None
        self.items.append(("object", str(label), type(obj).__qualname__,
                           summary if summary is not None else f"id:{id(obj)}"))
        return obj


@dataclass
class Reach:
    """What a callable reaches: a digest of its code and values, and its arrays by label."""

    digest: str
    roots: dict = field(repr=False)  # label -> the user's array (a root owning its memory)
    portable: bool  # False when some object could only be keyed by identity


def reach(fn, *, constant_arrays: bool = False) -> Reach:
    """Walk ``fn`` as the translation does and digest what the trace would bake in.

    ``constant_arrays=True`` puts the content of every reachable array in the digest (for
    a loss written in ``jax.numpy``, which reads its closure arrays as constants without
    the translation seeing it).
    """
    memo = _LAST.get(id(fn))
    if memo is None or memo[0] is not fn:
        memo = None
    label = _root_label(fn) if memo is None else memo[1]
    recorder = _Recorder(constant_arrays)
    _StructuralCopy(recorder).explore(fn, label)
    recorder.module_attributes()
    if memo is not None and memo[2] == recorder.items:  # the warm path: the same walk
        return Reach(memo[3], recorder.roots, memo[4])
    text = repr(recorder.items).encode()
    digest, portable = hashlib.blake2b(text, digest_size=20).hexdigest(), b"'id:" not in text
    if len(_LAST) > 256:
        _LAST.clear()
    _LAST[id(fn)] = (fn, label, recorder.items, digest, portable)
    return Reach(digest, recorder.roots, portable)


# id(fn) -> (fn, its root label, the items of its last walk, their digest, portable): a walk
# that found the same items (compared, not printed and hashed) has the same digest
_LAST: dict[int, tuple] = {}


@dataclass(frozen=True)
class ConstantRead:
    """Elements of a closure array that a trace read before writing them (so baked in).

    ``index`` holds flat C-order positions (None: the whole array); ``values`` the
    elements read (kept in memory) and ``digest`` their digest (kept on disk).
    """

    owner: int  # which traced callable: 0 for f, 1 for the loss
    label: str
    index: np.ndarray | None
    values: np.ndarray | None
    digest: str

    @classmethod
    def record(cls, owner: int, label: str, array: np.ndarray, mask: np.ndarray | None) -> ConstantRead:
        index = None if mask is None or mask.all() else np.flatnonzero(mask)
        values = cls._select(array, index)
        return cls(owner, label, index, values, content_digest(values))

    @staticmethod
    def _select(array, index):
        flat = np.asarray(array).reshape(-1)
        return flat.copy() if index is None else flat[index]

    def matches(self, reaches) -> bool:
        """Whether the user's array at ``label`` still holds the values that were read."""
        array = reaches[self.owner].roots.get(self.label) if self.owner < len(reaches) else None
        if array is None:
            return False
        current = self._select(array, self.index)
        if self.values is not None:
            return current.shape == self.values.shape and np.array_equal(
                current, self.values, equal_nan=current.dtype.kind in "fc")
        return content_digest(current) == self.digest

    def for_disk(self) -> ConstantRead:
        return ConstantRead(self.owner, self.label, self.index, None, self.digest)
