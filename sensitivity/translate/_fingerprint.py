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

import collections
import collections.abc
import enum
import functools
import hashlib
import itertools
import pickle
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._closure import (Label, _entered_object, _global_names, _is_library, _name, _root_label, _slot_names,
                       _StructuralCopy, _object_array, _user_class, _user_function, memoised_by_identity,
                       subclass_attributes)
from ._replace import AbstractArrayReplacer, is_sparse, owning_array

_PICKLE_LIMIT = 1 << 20  # library objects larger than this are keyed by identity
_SCALARS = (int, float, complex, bool, str, bytes, type(None))
_WALKED = (types.CellType, types.MethodType, functools.partial, tuple, list, dict, staticmethod,
           classmethod, property, type, functools._lru_cache_wrapper, collections.deque,
           types.MappingProxyType)  # what _closure._children enters (and object arrays)


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


@memoised_by_identity
def _code_digest(code: types.CodeType) -> str:
    """A digest of a code object and the code nested in it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(code.co_code)
    for const in code.co_consts:
        h.update((_code_digest(const) if isinstance(const, types.CodeType) else repr(const)).encode())
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount,
                   code.co_kwonlyargcount, code.co_flags, code.co_qualname)).encode())
    return h.hexdigest()


class _Recorder(AbstractArrayReplacer):
    """Walk policy: note every leaf (arrays by root, numbers, library objects) in order."""

    def __init__(self, constant_arrays: bool):
        super().__init__()
        self.items: list = []
        self.roots: dict[str, np.ndarray] = {}
        self.constant_arrays = constant_arrays
        self.names: set[str] = set()  # every name the user code reached uses
        self.modules: list = []  # user modules reached: their attributes are read as they are
        self.libraries: list = []  # library modules reached: their data attributes are read too
        self.content_keyed = False  # some item is a content digest (then no snapshot)

    def replace_root(self, array, label):
        where = str(label)
        self.roots[where] = array
        summary = content_digest(array) if self.constant_arrays else None
        self.items.append(("array", where, array.shape, array.dtype.str, summary))
        return array

    def replace_view(self, root, offset, strides, shape):
        self.items.append(("view", offset, strides, shape))
        return root

    def revisit(self, label, first_label):
        self.items.append(("same object", str(label), str(first_label)))

    def replace_other(self, obj, label):
        if isinstance(obj, _WALKED) or _object_array(obj):
            return None
        if isinstance(obj, np.vectorize):  # walked into its pyfunc (code, globals, closure)
            self.items.append(("vectorize", str(label), obj.otypes, sorted(map(str, obj.excluded)), obj.signature))
            return None
        if isinstance(obj, types.FunctionType) and isinstance(getattr(obj, "registry", None), types.MappingProxyType):
            self.items.append(("singledispatch", str(label), [_name(kind) for kind in obj.registry]))
            return None  # walked into its implementations
        if isinstance(obj, types.FunctionType):
            if _user_function(obj):
                self.items.append(("function", str(label), _code_digest(obj.__code__)))
                self.names.update(_global_names(obj.__code__))
                for name in _imported_names(obj.__code__):  # import config, inside the function
                    self._add_module(_import(name), Label("imported module", name, label.owner))
                return None
            return self._library(obj, label)
        if isinstance(obj, _SCALARS):  # a subclass by its built-in value (its repr may hide it)
            plain = obj if type(obj) in _SCALARS else next(t for t in _SCALARS if isinstance(obj, t))(obj)
            self.items.append(("value", str(label), type(obj).__name__, repr(plain)))
            return obj
        if is_sparse(obj):
            digests = [content_digest(a) for a in sparse_arrays(obj)]
            self.items.append(("sparse", str(label), type(obj).__name__, digests))
            return obj
        if type(obj).__module__.startswith(("jax", "jaxlib")) and hasattr(obj, "shape"):
            self.items.append(("jax", str(label), content_digest(np.asarray(obj))))
            return obj
        if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
            self.items.append(("value", str(label), repr(np.asarray(obj).tolist()), _dtype(obj)))
            return obj
        if isinstance(obj, types.ModuleType) and not _is_library(obj.__name__):
            self._add_module(obj, label)
        elif isinstance(obj, types.ModuleType) and all(m is not obj for m, _ in self.libraries):
            self.libraries.append((obj, label))
        if isinstance(obj, (types.ModuleType, types.BuiltinFunctionType, np.ufunc)):
            return self._library(obj, label)
        module = getattr(type(obj), "__module__", "") or ""
        if _is_library(module) and not isinstance(obj, (tuple, list, dict, type)):
            return self._library(obj, label)
        if not _entered_object(obj):  # an object the walk does not enter (its class has its own
            return self._library(obj, label)  # metaclass, e.g. an Enum member): keyed by its pickle
        return None

    def module_attributes(self) -> None:
        """Digest the attributes of user modules that the code names (``config.K``).

        The translation reads them as they are (constants of the trace, not shadowed), so
        their content is part of what a compiled program depends on: an array changed in
        place or rebound must miss.
        """
        done: set = set()
        while True:  # what a module's functions name may lead to further attributes, modules
            pending = [(module, label, name) for module, label in self.modules for name in sorted(self.names)
                       if (id(module), name) not in done]
            if not pending:
                break
            for module, label, name in pending:
                done.add((id(module), name))
                self._module_attribute(getattr(module, name, _MISSING), f"{label}.{name}", label.owner)
        self.library_reads = [(module, self._library_data(module, label)) for module, label in self.libraries]

    def _library_data(self, module, label) -> tuple:
        """Digest the data attributes of a library module that the code names (``sys.argv``,
        ``os.environ``, ``math.pi``): the trace reads them as constants. Its functions and
        classes are keyed by name (a library's code is its version); returns the names of
        the scalars, whose identity a snapshot re-checks."""
        scalars = []
        for name in sorted(self.names):
            value = vars(module).get(name, _MISSING)  # (no module __getattr__: numpy's is slow)
            if isinstance(value, _SCALARS + (np.generic,)):
                self.items.append(("library value", f"{label}.{name}", type(value).__name__, repr(value)))
                scalars.append(name)
            elif isinstance(value, (list, tuple, dict, collections.abc.Mapping)) and _plain_data(value):
                self.items.append(("library data", f"{label}.{name}", repr(dict(value) if isinstance(
                    value, collections.abc.Mapping) else value)))
                self.content_keyed = True  # changed in place: walked every time
        return tuple(scalars)

    def _module_attribute(self, value, where: str, owner: str) -> None:
        """One attribute of a user module. Whatever it leads to (a function's globals and
        callees, a dict's entries, an object's attributes) is walked too, arrays by content:
        the translation does not enter modules, so the trace reads them as constants."""
        if value is _MISSING or isinstance(value, (types.BuiltinFunctionType, np.ufunc)):
            return
        if isinstance(value, np.ndarray):
            self.items.append(("module array", where, content_digest(value)))
        elif isinstance(value, _SCALARS) or isinstance(value, np.generic):
            self.items.append(("module value", where, type(value).__name__, repr(value), _dtype(value)))
        elif isinstance(value, types.ModuleType):
            if not _is_library(value.__name__):
                self._add_module(value, Label("module", where, owner))
        elif not (isinstance(value, type) and _is_library(value.__module__)):
            inner = _Recorder(constant_arrays=True)
            _StructuralCopy(inner).explore(value, Label("module attribute", where, owner))
            self.items.append(("module object", where, inner.items))
            self.names.update(inner.names)
            for module, label in inner.modules:
                self._add_module(module, label)
            self.content_keyed = True

    def _add_module(self, module, label) -> None:
        """Note a user module whose named attributes are read (once; None: nothing)."""
        if module is not None and all(m is not module for m, _ in self.modules):
            self.modules.append((module, label))

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


def _plain_data(value, budget: int = 1000) -> bool:
    """Whether ``value`` is (nested lists, tuples and mappings of) numbers, strings and
    None, of at most ``budget`` items: data a function may read, not a registry of
    modules or functions."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return False
        if isinstance(item, collections.abc.Mapping):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += item
        elif not isinstance(item, _SCALARS + (np.generic,)):
            return False
    return True


@memoised_by_identity
def _imported_names(code: types.CodeType) -> tuple[str, ...]:
    """The modules a code object (and the code nested in it) imports (``import config``,
    ``from config import K``)."""
    import dis

    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname == "IMPORT_NAME"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_imported_names(const))
    return tuple(sorted(names))


def _import(name: str):
    """The user module ``name`` (imported now if ``f`` has not run yet: its first call would
    import it, and what it holds is part of the key), or None for a library module or one
    that cannot be imported."""
    module = sys.modules.get(name)
    if module is None:
        import importlib

        try:
            module = importlib.import_module(name)
        except Exception:
            return None
    return None if _is_library(name) else module


def _dtype(value) -> str | None:
    """The dtype of a NumPy scalar or array (``np.int8(100)`` is not ``np.int64(100)``)."""
    return value.dtype.str if isinstance(value, (np.ndarray, np.generic)) else None


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

    A warm call (the same ``fn`` as the last walk) first re-reads the state of every
    object that walk visited (:class:`_Snapshot`): when nothing was rebound, added or
    reshaped, the walk would find the same items, and its result is reused (3.5 us instead
    of 12.5 us for Lotka-Volterra's ``f``, 13-18 us instead of 80 us for Gray-Scott's).
    """
    memo = _LAST.get((id(fn), constant_arrays))
    if memo is not None and memo.fn is not fn:
        memo = None
    if memo is not None and memo.snapshot is not None and memo.snapshot.unchanged():
        return memo.reach
    label = _root_label(fn) if memo is None else memo.label
    recorder = _Recorder(constant_arrays)
    walk = _StructuralCopy(recorder)
    walk.explore(fn, label)
    recorder.module_attributes()
    if memo is not None and memo.items == recorder.items:  # the same walk: the same digest
        result = Reach(memo.reach.digest, recorder.roots, memo.reach.portable)
    else:
        text = repr(recorder.items).encode()
        result = Reach(hashlib.blake2b(text, digest_size=20).hexdigest(), recorder.roots, b"'id:" not in text)
    if len(_LAST) > 256:
        _LAST.clear()
    snapshot = None if constant_arrays else _Snapshot.of(walk, recorder)
    _LAST[(id(fn), constant_arrays)] = _Memo(fn, label, recorder.items, result, snapshot)
    return result


@dataclass
class _Memo:
    """The last walk of ``fn``: its items, its result and a snapshot to re-check it by."""

    fn: Any
    label: Any
    items: list
    reach: Reach
    snapshot: _Snapshot | None


# (id(fn), constant_arrays) -> the last walk of fn (it holds fn, so the id is not reused)
_LAST: dict[tuple, _Memo] = {}
_MISSING = object()
_IMMUTABLE_LEAVES = _SCALARS + (np.generic, types.ModuleType, types.BuiltinFunctionType, types.FunctionType,
                                np.ufunc, enum.Enum)


def _function_state(fn) -> tuple:
    kw, names = fn.__kwdefaults__, _global_names(fn.__code__)
    state = (fn.__code__, fn.__defaults__)
    if kw:
        state += (*kw, *kw.values())
    if fn.__dict__:  # function attributes (f.k = 3.0)
        state += (*fn.__dict__, *fn.__dict__.values())
    return state + tuple(map(fn.__globals__.get, names, itertools.repeat(_MISSING))) if names else state


def _cell_state(cell) -> tuple:
    try:
        return (cell.cell_contents,)
    except ValueError:
        return (_MISSING,)


def _state(obj) -> tuple:
    """The objects that :func:`._closure._children` reads from ``obj`` (which the walk
    entered), by identity: if each is the same object, ``obj`` has the same children.
    A superset is fine (a spurious difference only costs a full walk)."""
    exact = _STATE_OF_TYPE.get(type(obj))  # the common nodes first, by their exact type
    if exact is not None:
        return exact(obj)
    if isinstance(obj, types.FunctionType):
        return _function_state(obj)
    if isinstance(obj, types.CellType):
        return _cell_state(obj)
    if isinstance(obj, (list, collections.deque)):
        return (*obj, *_subclass_state(obj))
    if _object_array(obj):  # its elements, which f may rebind
        return (obj.shape, *obj.ravel())
    if isinstance(obj, (dict, types.MappingProxyType)):  # (a proxy: the dict behind it may change)
        return (*obj, *obj.values(), *_subclass_state(obj))
    if isinstance(obj, functools.partial):
        return (*obj.keywords, *obj.keywords.values())
    if isinstance(obj, (tuple, types.MethodType, staticmethod, classmethod, property)):
        return ()  # immutable: their children are fixed
    if isinstance(obj, type):
        return (obj.__mro__, *[x for klass in obj.__mro__ if _user_class(klass)
                               for items in (vars(klass),) for x in (*items, *items.values())])
    if _entered_object(obj):
        d = getattr(obj, "__dict__", {})
        return (type(obj), *d, *d.values(), *[getattr(obj, name, _MISSING) for name in _slot_names(type(obj))])
    return ()  # nothing the walk enters


def _subclass_state(obj) -> tuple:
    """A user's container subclass: its class and instance attributes (see
    :func:`._closure.subclass_attributes`)."""
    if not _user_class(type(obj)):
        return ()
    attributes = subclass_attributes(obj)
    return (type(obj), *attributes, *attributes.values())


_STATE_OF_TYPE = {types.FunctionType: _function_state, types.CellType: _cell_state, list: tuple}


def _geometry(array: np.ndarray) -> tuple:
    """What the walk's item of a numeric array depends on besides its identity (shape,
    strides and dtype can be set in place), with those of the array owning its memory
    (:func:`._replace.owning_array`)."""
    root = owning_array(array)
    if root is array:
        return (array.shape, array.strides, array.dtype)
    return (array.shape, array.strides, array.dtype, root.shape, root.strides, root.dtype)


@dataclass
class _Snapshot:
    """What one walk read, re-read cheaply: the identity of every object its visited
    containers, cells, functions and objects held, and the geometry of its arrays.

    Unchanged identities and geometries mean a new walk would visit the same graph in the
    same order and record the same items. A walk that met a leaf whose content, not its
    identity, makes its item (a library object keyed by its pickle, a sparse matrix, a
    non-numeric array, a user module's array) has no snapshot: it is walked every time.
    """

    nodes: tuple  # the objects the walk entered
    ids: tuple  # per node, the ids of _state(node)
    states: tuple  # per node, _state(node): keeps those objects alive (their ids not reused)
    arrays: tuple
    geometries: tuple
    modules: tuple  # (module, names): the user module attributes the recorder read

    @classmethod
    def of(cls, walk: _StructuralCopy, recorder: _Recorder) -> _Snapshot | None:
        arrays, nodes = [], []
        for key, obj in walk._objects.items():
            if key not in walk._leaves:
                nodes.append(obj)
            elif isinstance(obj, np.ndarray) and obj.dtype.kind in "biufc":
                arrays.append(obj)
            elif not isinstance(obj, _IMMUTABLE_LEAVES) and not (
                    type(obj).__module__.startswith(("jax", "jaxlib")) and hasattr(obj, "shape")):
                return None  # keyed by content
        if recorder.content_keyed:
            return None
        names = tuple(sorted(recorder.names))
        modules = tuple((module, names) for module, _ in recorder.modules) + tuple(
            (module, scalars) for module, scalars in recorder.library_reads if scalars)
        if any(isinstance(getattr(m, n, None), np.ndarray) for m, _ in recorder.modules for n in names):
            return None
        states = tuple(_state(obj) for obj in nodes) + tuple(
            tuple(getattr(m, n, _MISSING) for n in ns) for m, ns in modules)
        return cls(tuple(nodes), tuple(tuple(map(id, s)) for s in states), states, tuple(arrays),
                   tuple(map(_geometry, arrays)), modules)

    def unchanged(self) -> bool:
        ids = self.ids
        for i, obj in enumerate(self.nodes):
            if tuple(map(id, _state(obj))) != ids[i]:
                return False
        for i, (module, names) in enumerate(self.modules, len(self.nodes)):
            if tuple(id(getattr(module, n, _MISSING)) for n in names) != ids[i]:
                return False
        return tuple(map(_geometry, self.arrays)) == self.geometries


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
        if self.values is not None:  # bit for bit: -0.0 is not 0.0 (np.copysign(1.0, s) tells them apart)
            return (current.shape == self.values.shape and current.dtype == self.values.dtype
                    and current.tobytes() == self.values.tobytes())
        return content_digest(current) == self.digest

    def for_disk(self) -> ConstantRead:
        return ConstantRead(self.owner, self.label, self.index, None, self.digest)
