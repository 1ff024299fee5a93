"""Structural copies of a callable, with every NumPy array it can reach replaced.

A NumPy right-hand side reaches its work buffers through closure cells, module globals
(by the names its code uses), ``self`` of a bound method or callable object, the class
of that object, ``functools.partial`` arguments, default arguments, containers (tuple,
list, deque, dict, mapping proxies, object arrays, dataclasses, plain objects) and the
Python helper functions it calls through any of these. :func:`copy_structure` finds all
of them and rebuilds exactly the part of that graph that leads to a replaced leaf: new
functions (new cells, and a globals dict that overrides the replaced names and reads
every other name from the live module), new containers, shallow copies of objects (their
class replaced by a subclass whose methods are the copies), so the user's functions,
cells, objects and arrays are never mutated.
One object reached by two paths becomes one copy (aliasing is preserved); cycles end.

This module does not import JAX; what replaces a leaf is decided by the caller.
"""

from __future__ import annotations

import abc
import collections
import copy
import dis
import functools
import os
import sys
import sysconfig
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ._errors import TranslationError

_LIBRARIES = frozenset({
    "numpy", "scipy", "jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "optax",
    "flax", "torch", "tensorflow", "pandas", "matplotlib", "sympy", "numba", "sklearn",
    "pytest", "_pytest", "tqdm",
})  # fmt: skip
_STDLIB = os.path.normcase(os.path.abspath(sysconfig.get_paths()["stdlib"])) + os.sep


@functools.lru_cache(maxsize=None)
def _is_library(module: str | None) -> bool:
    """Whether code of ``module`` is library code, which the walk does not enter.

    Libraries are the array/AD packages above, the standard library (by location, so a
    user module named like a standard one is still user code), and dxdt itself except
    ``dxdt.problems``, whose right-hand sides are written like user code, and
    ``dxdt._ensemble_sensitivity``, whose wrappers of the user's ``f`` and loss must be
    walked through (else the translation and the cache key would not reach them).
    """
    if not module:
        return False
    if module == "dxdt" or module.startswith("dxdt."):
        return not module.startswith(("dxdt.problems", "dxdt._ensemble_sensitivity"))
    top = module.partition(".")[0]
    if top in _LIBRARIES or top in sys.builtin_module_names:
        return True
    path = getattr(sys.modules.get(top), "__file__", None)
    if not path:
        return False
    path = os.path.normcase(os.path.abspath(path))
    return path.startswith(_STDLIB) and "site-packages" not in path


@dataclass(frozen=True)
class Label:
    """How a reachable object is named in messages: ``closure variable 'cache' of f``."""

    kind: str
    expr: str
    owner: str

    def extend(self, suffix: str) -> Label:
        return Label(self.kind, self.expr + suffix, self.owner)

    def __str__(self) -> str:
        return f"{self.kind} '{self.expr}' of {self.owner}"


class _OverlayGlobals(dict):
    """A function's globals: replaced names here, every other name read from the module."""

    __slots__ = ("_module",)

    def __init__(self, module: dict):
        from ._numpy_proxy import translated_builtins  # (imports JAX: only ever called while translating)

        super().__init__(__builtins__=translated_builtins(module.get("__builtins__", __builtins__)))
        self["__name__"] = module.get("__name__")
        self._module = module

    def __missing__(self, name: str):
        return self._module[name]

    # the walk asks ``name in fn.__globals__`` and ``.get``: a copy of a copy (``f`` already
    # duplicated) must see the module's names too, or its ``np`` would not be replaced
    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self._module

    def get(self, name, default=None):
        return self[name] if name in self else default


def memoised_by_identity(fn: Callable) -> Callable:
    """``fn(obj)`` memoised per object by identity, not by hash (hashing a code object hashes
    its bytecode: 2 us). The memo holds ``obj``, so its id is not reused; at most 4096."""
    memo: dict[int, tuple] = {}

    @functools.wraps(fn)
    def memoised(obj):
        hit = memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = fn(obj)
        if len(memo) > 4096:
            memo.clear()
        memo[id(obj)] = (obj, value)
        return value
    return memoised


@memoised_by_identity
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names a code object (and the code nested in it) uses, sorted: the globals it may
    look up and the attributes it reads (``co_names`` holds both)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


@functools.lru_cache(maxsize=None)
def _rebound_names(code: types.CodeType) -> frozenset:
    """Closure variables a code object (or the code nested in it) rebinds: ``nonlocal n;
    n += 1``. A copy of the function needs cells of its own for them, or the copy's calls
    (dxdt's checks, the trace) would change the user's counter."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("STORE_DEREF", "DELETE_DEREF")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _rebound_names(const)
    return frozenset(names)


_TRANSLATED_BUILTINS = frozenset({"max", "min"})  # and imports of these modules:
_IMPORTED_STAND_INS = frozenset({"numpy", "scipy", "math"})  # see _numpy_proxy.translated_builtins


def _uses_translated_builtins(code: types.CodeType) -> bool:
    """Whether a code object names a builtin or imports a module that the traced copy
    replaces (``co_names`` holds globals, attributes and imported modules alike, so a
    ``u.max()`` counts too: a copy more, which is harmless)."""
    return any(name in _TRANSLATED_BUILTINS or name.partition(".")[0] in _IMPORTED_STAND_INS
               for name in _global_names(code))


def _user_function(obj) -> bool:
    return isinstance(obj, types.FunctionType) and not _is_library(obj.__globals__.get("__name__"))


def _module_attributes(fn: types.FunctionType):
    """``(global name, module, attribute, value)`` for the attributes of user modules that
    ``fn``'s code may read (``import helpers; helpers.WORK[:] = ...``): the names of its
    code that are attributes of a user module among its globals."""
    names = _global_names(fn.__code__)
    for name in names:
        module = fn.__globals__.get(name)
        if isinstance(module, types.ModuleType) and not _is_library(module.__name__):
            attributes = vars(module)
            for attribute in names:
                if attribute in attributes and not attribute.startswith("__"):
                    yield name, module, attribute, attributes[attribute]


class _ModuleOverlay(types.ModuleType):
    """A user module in a copied function's globals: its replaced attributes here, every
    other attribute read from the module."""

    def __init__(self, module: types.ModuleType):
        super().__init__(module.__name__, module.__doc__)
        self.__dict__["_module"] = module

    def __getattr__(self, name):
        return getattr(self.__dict__["_module"], name)


def _user_class(cls) -> bool:
    return (
        isinstance(cls, type)
        and _plain_metaclass(type(cls))
        and cls is not object
        and not _is_library(cls.__module__)
    )


def _plain_metaclass(meta: type) -> bool:
    """Metaclasses whose classes the walk enters: ``type``, ``abc.ABCMeta`` and its
    ``typing`` subclasses (a class deriving from a ``typing.Protocol``), and a metaclass
    of the user's own; not a library's (an ``enum``, a ``ctypes`` structure, ...)."""
    if meta in (type, abc.ABCMeta):
        return True
    if meta.__module__ == "typing":
        return issubclass(meta, abc.ABCMeta)
    return not _is_library(meta.__module__)


def subclass_attributes(obj) -> dict:
    """The instance attributes of a user's subclass of a container (``class Params(dict)``
    with ``cfg.scale = 2.0``); empty for the builtin containers."""
    return vars(obj) if _user_class(type(obj)) and hasattr(obj, "__dict__") else {}


def _subclass_children(obj, label: Label):
    """A user's container subclass: its class (methods and class attributes, a NamedTuple's
    too) and its instance attributes, which ``f`` may read besides the items."""
    if _user_class(type(obj)):
        yield type(obj), label
        for name, value in subclass_attributes(obj).items():
            yield value, label.extend(f".{name}")


def _object_array(obj) -> bool:
    """A NumPy array of Python objects (its elements may be buffers)."""
    return isinstance(obj, np.ndarray) and obj.dtype == object


def _entered_object(obj) -> bool:
    """Whether the walk enters ``obj``'s attributes: an instance of a user class, or a
    ``types.SimpleNamespace`` (a namespace of parameters and buffers)."""
    return _user_class(type(obj)) or type(obj) is types.SimpleNamespace


def _slot_names(cls) -> list[str]:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]
    return names


_METHODS = (types.FunctionType, staticmethod, classmethod, property)


def _own_attributes(cls):
    """``(name, value)`` of the attributes a user class defines itself (its special
    methods too, ``__getitem__``, ``__getattr__``, ...; not its other dunders)."""
    for name, value in vars(cls).items():
        dunder = name.startswith("__") and name.endswith("__")
        if not dunder or isinstance(value, _METHODS):
            yield name, value


def _class_attributes(cls):
    """``(name, value)`` of the attributes a user class resolves from its user bases."""
    seen = set()
    for klass in cls.__mro__:
        if _user_class(klass):
            for name, value in _own_attributes(klass):
                if name not in seen:
                    seen.add(name)
                    yield name, value


def same_sequence(seq, items):
    """A sequence of ``seq``'s type holding ``items`` (a NamedTuple is built from fields)."""
    return seq._make(items) if hasattr(seq, "_fields") else type(seq)(items)


def _name(obj) -> str:
    """A readable qualified name: ``make_model.rhs`` rather than ``make_model.<locals>.rhs``."""
    return getattr(obj, "__qualname__", repr(obj)).replace("<locals>.", "")


def _children(obj, label: Label):
    """``(child, label)`` pairs of everything ``obj`` refers to that may lead to an array."""
    if isinstance(obj, types.FunctionType):
        if not _user_function(obj):
            if isinstance(getattr(obj, "registry", None), types.MappingProxyType):  # functools.singledispatch
                for kind, implementation in obj.registry.items():
                    yield implementation, Label("singledispatch implementation", _name(kind), _name(obj))
            return
        code, owner = obj.__code__, _name(obj)
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            yield cell, Label("closure variable", name, owner)
        for name in _global_names(code):
            if name in obj.__globals__:
                yield obj.__globals__[name], Label("global variable", name, owner)
        for name, module, attribute, value in _module_attributes(obj):  # helpers.WORK
            yield value, Label("module attribute", f"{name}.{attribute}", owner)
        for name, value in vars(obj).items():  # function attributes (f.k = 3.0)
            yield value, Label("attribute", f"{owner}.{name}", owner)
        defaults = obj.__defaults__ or ()
        names = code.co_varnames[code.co_argcount - len(defaults) : code.co_argcount]
        for name, value in zip(names, defaults):
            yield value, Label("default argument", name, owner)
        for name, value in (obj.__kwdefaults__ or {}).items():
            yield value, Label("default argument", name, owner)
    elif isinstance(obj, types.CellType):
        try:
            yield obj.cell_contents, label
        except ValueError:
            return
    elif isinstance(obj, np.vectorize):
        yield obj.pyfunc, label
    elif isinstance(obj, types.MethodType):
        yield obj.__func__, label
        yield obj.__self__, Label("attribute", "self", _name(obj.__func__))
    elif isinstance(obj, functools.partial):
        owner = f"functools.partial({_name(obj.func)})"
        yield obj.func, label
        for i, value in enumerate(obj.args):
            yield value, Label("partial argument", f"args[{i}]", owner)
        for name, value in obj.keywords.items():
            yield value, Label("partial argument", name, owner)
    elif isinstance(obj, (tuple, list, collections.deque)):
        for i, value in enumerate(obj):
            yield value, label.extend(f"[{i}]")
        yield from _subclass_children(obj, label)
    elif isinstance(obj, (dict, types.MappingProxyType)):
        for key, value in obj.items():
            yield value, label.extend(f"[{key!r}]")
        yield from _subclass_children(obj, label)
    elif _object_array(obj):
        for index, value in np.ndenumerate(obj):
            yield value, label.extend(str(list(index)) if obj.ndim != 1 else f"[{index[0]}]")
    elif isinstance(obj, (staticmethod, classmethod)):
        yield obj.__func__, label
    elif isinstance(obj, functools._lru_cache_wrapper):
        yield obj.__wrapped__, label
    elif isinstance(obj, property):
        yield from ((f, label) for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
    elif isinstance(obj, type):
        if _user_class(obj):
            for name, value in _own_attributes(obj):
                yield value, Label("class attribute", f"{_name(obj)}.{name}", _name(obj))
            for base in obj.__bases__:
                if _user_class(base):
                    yield base, Label("base class", _name(base), _name(obj))
    elif _entered_object(obj):
        yield type(obj), label
        for name, value in getattr(obj, "__dict__", {}).items():
            yield value, label.extend(f".{name}")
        for name in _slot_names(type(obj)):
            if hasattr(obj, name):
                yield getattr(obj, name), label.extend(f".{name}")


class _StructuralCopy:
    """One structural copy: explore the reachable graph, mark what changes, rebuild it."""

    def __init__(self, replace: Callable[[Any, Label], Any]):
        self._replace = replace
        self._objects: dict[int, Any] = {}
        self._parents: dict[int, list[int]] = {}
        self._leaves: dict[int, Any] = {}
        self._changed: set[int] = set()
        self._memo: dict[int, Any] = {}

    def explore(self, root, label: Label) -> None:
        """Visit everything reachable from ``root``, asking ``replace`` about each object.

        An object met again by another path is not entered again; a policy with a
        ``revisit(label, first_label)`` method is told (a fingerprint must see which paths
        share an object: rebinding one of them to an object another path holds changes
        what ``f`` reads without changing the objects visited).
        """
        revisit = getattr(self._replace, "revisit", None)
        labels: dict[int, Label] = {}
        stack = [(root, label)]
        while stack:
            obj, label = stack.pop()
            if id(obj) in self._objects:
                if revisit is not None:
                    revisit(label, labels[id(obj)])
                continue
            labels[id(obj)] = label
            self._objects[id(obj)] = obj
            replacement = self._replace(obj, label)
            if replacement is not None:
                self._leaves[id(obj)] = replacement
                continue
            for child, child_label in _children(obj, label):
                self._parents.setdefault(id(child), []).append(id(obj))
                stack.append((child, child_label))

    def mark(self, forced=()) -> None:
        """Everything from which a replaced leaf (or a ``forced`` object) is reachable changes."""
        pending = list(self._leaves) + [id(obj) for obj in forced]
        while pending:
            key = pending.pop()
            if key not in self._changed:
                self._changed.add(key)
                pending += self._parents.get(key, [])
                obj = self._objects.get(key)
                if isinstance(obj, type):  # a copied class has its user bases copied (see _class)
                    pending += [id(base) for base in obj.__bases__ if _user_class(base) and id(base) in self._objects]

    def _changes(self, obj) -> bool:
        return id(obj) in self._changed

    def rebuild(self, obj):
        key = id(obj)
        if key in self._leaves:
            return self._leaves[key]
        if key not in self._changed:
            return obj
        if key in self._memo:
            return self._memo[key]
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, types.CellType):
            new = self._memo[key] = types.CellType()
            new.cell_contents = self.rebuild(obj.cell_contents)
            return new
        if isinstance(obj, list):
            new = self._memo[key] = copy.copy(obj)
            new[:] = [self.rebuild(item) for item in obj]
            return self._with_attributes(obj, new)
        if isinstance(obj, dict):
            new = self._memo[key] = copy.copy(obj)
            new.update({k: self.rebuild(v) for k, v in obj.items() if self._changes(v)})
            return self._with_attributes(obj, new)
        if isinstance(obj, collections.deque):
            new = self._memo[key] = copy.copy(obj)  # (its maxlen)
            new.clear()
            new.extend(self.rebuild(item) for item in obj)
            return new
        if _object_array(obj):
            new = self._memo[key] = obj.copy()  # (references to the same objects)
            for index, value in np.ndenumerate(obj):
                if self._changes(value):
                    new[index] = self.rebuild(value)
            return new
        if isinstance(obj, types.MappingProxyType):
            return self._memo.setdefault(key, types.MappingProxyType({k: self.rebuild(v) for k, v in obj.items()}))
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, tuple):  # a NamedTuple too (rebuilt from its items, not copied)
            return self._immutable(obj)
        if _entered_object(obj):
            return self._instance(obj)
        return self._immutable(obj)

    def _with_attributes(self, obj, new):
        """``new``, a copy of a user's container subclass ``obj``, with its changed instance
        attributes rebuilt."""
        for name, value in subclass_attributes(obj).items():
            if self._changes(value):
                new.__dict__[name] = self.rebuild(value)
        return new

    def _immutable(self, obj):
        """Objects built from their rebuilt parts (which may have built this one already)."""
        if isinstance(obj, types.MethodType):
            new = types.MethodType(self.rebuild(obj.__func__), self.rebuild(obj.__self__))
        elif isinstance(obj, functools.partial):
            args = [self.rebuild(a) for a in obj.args]
            keywords = {k: self.rebuild(v) for k, v in obj.keywords.items()}
            new = type(obj)(self.rebuild(obj.func), *args, **keywords)
        elif isinstance(obj, (staticmethod, classmethod)):
            new = type(obj)(self.rebuild(obj.__func__))
        elif isinstance(obj, property):
            parts = [None if f is None else self.rebuild(f) for f in (obj.fget, obj.fset, obj.fdel)]
            new = property(*parts, obj.__doc__)
        elif isinstance(obj, np.vectorize):
            new = np.vectorize(self.rebuild(obj.pyfunc), otypes=obj.otypes or None, doc=obj.__doc__,
                               excluded=obj.excluded, cache=obj.cache, signature=obj.signature)
        elif isinstance(obj, functools._lru_cache_wrapper):
            parameters = obj.cache_parameters()
            cached = functools.lru_cache(parameters["maxsize"], parameters["typed"])
            new = functools.update_wrapper(cached(self.rebuild(obj.__wrapped__)), obj.__wrapped__)
        else:
            new = same_sequence(obj, [self.rebuild(item) for item in obj])
        return self._memo.setdefault(id(obj), new)

    def _globals(self, module: dict) -> _OverlayGlobals:
        key = id(module)
        if key not in self._memo:
            self._memo[key] = _OverlayGlobals(module)
        return self._memo[key]

    def _function(self, fn: types.FunctionType) -> types.FunctionType:
        cells = tuple(self.rebuild(cell) for cell in fn.__closure__ or ())
        if id(fn) in self._memo:  # built while rebuilding its own cells (recursion)
            return self._memo[id(fn)]
        overlay = self._globals(fn.__globals__)
        new = types.FunctionType(fn.__code__, overlay, fn.__name__, None, cells or None)
        self._memo[id(fn)] = new
        for name in _global_names(fn.__code__):
            value = fn.__globals__.get(name)
            if name in fn.__globals__ and self._changes(value):
                overlay[name] = self.rebuild(value)
        for name, module, attribute, value in _module_attributes(fn):
            if self._changes(value):
                key = ("module", id(module))
                if key not in self._memo:
                    self._memo[key] = _ModuleOverlay(module)
                setattr(self._memo[key], attribute, self.rebuild(value))
                overlay[name] = self._memo[key]
        new.__defaults__ = tuple(self.rebuild(v) for v in fn.__defaults__) if fn.__defaults__ else None
        new.__kwdefaults__ = {k: self.rebuild(v) for k, v in (fn.__kwdefaults__ or {}).items()} or None
        new.__qualname__, new.__module__, new.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
        new.__dict__.update({k: self.rebuild(v) for k, v in fn.__dict__.items()})
        return new

    def _class(self, cls: type) -> type:
        """A subclass of ``cls`` holding its changed attributes, rebuilt, and subclassing
        first the copies of ``cls``'s user bases (copied with it, see :meth:`mark`): for
        ``class C(B)``, ``class B(A)`` the order of resolution is

        ``[C', B', A', C, B, A, object]``,

        so that ``super()`` in a copied method of ``C`` (whose ``__class__`` cell holds
        ``C'``, as a global ``C`` in ``super(C, self)`` or ``C.method(self)`` now names
        ``C'``) reaches the copy of ``B``'s method, never the user's own (which ran the rest
        of ``C``'s method a second time); cooperative multiple inheritance keeps its order.
        Each copy holds all its class's own attributes (the unchanged as they are), so that
        no lookup passes a copy to reach an original.
        Where no such order exists (C3 fails), one flat subclass holds every changed
        attribute ``cls`` resolves.
        """
        copies = tuple(self.rebuild(base) for base in cls.__bases__ if _user_class(base) and self._changes(base))
        if id(cls) in self._memo:  # built while rebuilding its bases (a method naming cls)
            return self._memo[id(cls)]
        namespace = {"__slots__": (), "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        try:
            new = type(cls)(cls.__name__, (*copies, cls), namespace)
            every = True  # all of cls's own attributes: a lookup never falls through to cls's
        except TypeError:  # no consistent order of resolution (or of instance layouts)
            new = type(cls)(cls.__name__, (cls,), namespace)
            every = False
        self._memo[id(cls)] = new
        for name, value in _own_attributes(cls) if every else _class_attributes(cls):
            if every or self._changes(value):
                setattr(new, name, self.rebuild(value))
        return new

    def _instance(self, obj):
        try:
            new = copy.copy(obj)
        except Exception as err:
            raise TranslationError(
                f"cannot copy the {type(obj).__qualname__} object reachable from f ({err}); "
                "give its class a working __copy__, or pass duplicate_closure=False"
            ) from err
        if new is obj:
            raise TranslationError(
                f"copy.copy returns the same {type(obj).__qualname__} object reachable from f, "
                "so its arrays cannot be duplicated; pass duplicate_closure=False"
            )
        self._memo[id(obj)] = new
        if self._changes(type(obj)):
            object.__setattr__(new, "__class__", self.rebuild(type(obj)))
        for name, value in getattr(obj, "__dict__", {}).items():
            if self._changes(value):
                new.__dict__[name] = self.rebuild(value)
        for name in _slot_names(type(obj)):
            if hasattr(obj, name) and self._changes(getattr(obj, name)):
                object.__setattr__(new, name, self.rebuild(getattr(obj, name)))
        return new


def _root_label(root) -> Label:
    owner = _name(root) if hasattr(root, "__qualname__") else f"{_name(type(root))}.__call__"
    return Label("attribute", "self", owner)


def copy_structure(root, replace: Callable[[Any, Label], Any], *, copy_root: bool = False,
                   copy_containers: bool = False, copies: list | None = None):
    """A structural copy of ``root`` in which ``replace`` decides the leaves.

    Parameters
    ----------
    root : callable
        A function, bound method, ``functools.partial``, or callable object.
    replace : callable
        ``replace(obj, label)`` returns the stand-in for a leaf ``obj`` (e.g. a NumPy
        array), or None to keep walking into ``obj``. ``label`` names the path by which
        ``obj`` was first reached, e.g. ``closure variable 'cache' of f``.
    copy_root : bool
        Copy ``root`` even if nothing it reaches is replaced.
    copy_containers : bool
        Copy every dict and list ``root`` reaches (and what leads to them), so that what
        ``root`` stores in them (a lazily allocated buffer) stays in the copies.
    copies : list, optional
        Extended with every copy made (objects, cells, containers, overlays of globals).

    Returns
    -------
    callable
        ``root`` itself if nothing changed, else the copy.
    """
    walk = _StructuralCopy(replace)
    walk.explore(root, _root_label(root))
    copyable = _user_function(root) or _user_class(type(root)) or isinstance(
        root, (types.MethodType, functools.partial)
    )
    forced = [root] if copy_root and copyable else []
    # a user function calling max/min or importing inside itself needs the copy's builtins
    forced += [obj for obj in walk._objects.values() if _user_function(obj) and _uses_translated_builtins(obj.__code__)]
    forced += [cell for obj in walk._objects.values() if _user_function(obj)
               for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ())
               if name in _rebound_names(obj.__code__)]
    if copy_containers:
        forced += [obj for obj in walk._objects.values() if type(obj) in (dict, list)]
    walk.mark(forced)
    copy = walk.rebuild(root)
    if copies is not None:
        copies.extend(walk._memo.values())
    return copy
