"""A corpus of in-place NumPy right-hand sides, written the way scientists write them.

Each :class:`Idiom` holds ``f(du, u, p, t)`` (or ``f(u, p, t)``), an example state and
parameters, and the NumPy arrays ``f`` keeps outside its arguments (work buffers and
constants), so that tests can check that translating ``f`` never touches them.
Every idiom exercises one construct of the NumPy-to-JAX translation; the docstring of
each factory says which.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import scipy.linalg
import scipy.ndimage
import scipy.special
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import logsumexp, softmax

RNG = np.random.default_rng(20240611)


@dataclass
class Idiom:
    """One right-hand side with its example inputs and the arrays it owns."""

    name: str
    f: Callable
    u0: np.ndarray
    p: Any
    t: float = 0.3
    arrays: list = field(default_factory=list)


IDIOMS: list[Callable[[], Idiom]] = []
PROBLEMS = ("lotka_volterra", "lorenz", "gray_scott", "heat_1d", "linear")


def idiom(factory: Callable[[], Idiom]) -> Callable[[], Idiom]:
    """Register a factory; tests build a fresh idiom from it."""
    IDIOMS.append(factory)
    return factory


def _positive(*shape):
    return 0.5 + RNG.random(shape)


# --------------------------------------------------------------------- plain functions
@idiom
def lotka_volterra():
    """Unpacking ``a, b, c, d = p`` and scalar element writes."""

    def f(du, u, p, t):
        a, b, c, d = p
        du[0] = a * u[0] - b * u[0] * u[1]
        du[1] = -c * u[1] + d * u[0] * u[1]

    return Idiom("lotka_volterra", f, np.array([1.0, 2.0]), np.array([1.5, 1.0, 3.0, 1.0]))


@idiom
def slice_writes():
    """Second differences written through slices, boundaries through integer indices."""

    def f(du, u, p, t):
        du[1:-1] = p * (u[:-2] - 2.0 * u[1:-1] + u[2:])
        du[0] = p * (u[1] - u[0])
        du[-1] = p * (u[-2] - u[-1])

    return Idiom("slice_writes", f, _positive(9), 0.7)


@idiom
def views_of_views():
    """Writes through a view of a view of a reshaped view land in ``du``."""

    def f(du, u, p, t):
        grid = du.reshape(3, 4)
        top, rest = grid[0], grid[1:]
        inner = top[1:3]
        inner[:] = u[1:3] * p[0]
        top[::3] = u[[0, 3]] ** 2
        rest[...] = u.reshape(3, 4)[1:] * p[1]
        rest[:, -1] -= u[-1]

    return Idiom("views_of_views", f, _positive(12), np.array([2.0, -0.5]))


@idiom
def reshape_laplacian():
    """A 2-D Laplacian on ``u.reshape(n, n)`` written into ``du.reshape(n, n)`` and ``ravel``."""
    n = 5

    def f(du, u, p, t):
        U = u.reshape(n, n)
        dU = du.reshape(n, n)
        dU[:] = -4.0 * U
        dU[1:, :] += U[:-1, :]
        dU[:-1, :] += U[1:, :]
        dU[:, 1:] += U[:, :-1]
        dU[:, :-1] += U[:, 1:]
        flat = dU.ravel()
        flat *= p

    return Idiom("reshape_laplacian", f, _positive(n * n), 0.3)


@idiom
def ufunc_out():
    """Ufuncs with ``out=``: the output array, a strided view of it, and a tuple."""

    def f(du, u, p, t):
        np.multiply(u, p, out=du)
        np.exp(u[::2], out=du[::2])
        np.add(du[1::2], np.sin(t), out=(du[1::2],))
        np.negative(du, out=du, where=u > 1.2)

    return Idiom("ufunc_out", f, _positive(8), np.linspace(0.5, 1.5, 8))


@idiom
def matmul_out():
    """``np.matmul(A, u, out=work)`` with a constant matrix and a work buffer."""
    A = RNG.standard_normal((6, 6))
    R = np.eye(6) + 0.1 * RNG.standard_normal((6, 6))
    work = np.zeros(6)

    def f(du, u, p, t):
        np.matmul(A, u, out=work)
        np.multiply(work, p, out=du)
        du -= u**3
        du @= R

    return Idiom("matmul_out", f, _positive(6), 0.8, arrays=[A, R, work])


@idiom
def dot_and_einsum_out():
    """``np.dot(..., out=)``, ``np.einsum(..., out=)`` and ``.dot`` into closure buffers."""
    B = RNG.standard_normal((4, 4))
    Bu = np.zeros(4)
    quad = np.zeros(4)

    def f(du, u, p, t):
        np.dot(B, u, out=Bu)
        np.einsum("i,ij,j->i", u, B, u, out=quad)
        du[:] = p[0] * Bu + p[1] * quad + u.dot(Bu)

    return Idiom("dot_and_einsum_out", f, _positive(4), np.array([0.3, -0.2]), arrays=[B, Bu, quad])


@idiom
def copyto():
    """``np.copyto`` with and without ``where=``."""
    mask = np.array([True, False, True, False, False, True])

    def f(du, u, p, t):
        np.copyto(du, u * p)
        np.copyto(du, -(u**2), where=mask)

    return Idiom("copyto", f, _positive(6), 1.3, arrays=[mask])


@idiom
def nan_to_num_in_place():
    """``np.nan_to_num(buf, copy=False)`` (keyword and positional) cleans ``buf`` itself:
    the translation returned the cleaned copy and left ``buf`` with its inf and NaN."""
    buf, other = np.zeros(4), np.zeros(4)

    def f(du, u, p, t):
        np.multiply(u, p, out=buf)
        buf[1] = np.inf
        np.nan_to_num(buf, copy=False, posinf=0.5)
        other[:] = u
        other[2] = np.nan
        np.nan_to_num(other, False, 2.0)
        du[:] = -buf + 0.1 * other

    return Idiom("nan_to_num_in_place", f, _positive(4), 1.3, arrays=[buf, other])


@idiom
def inplace_operators():
    """``+=``, ``-=``, ``*=``, ``/=``, ``**=`` on ``du`` and on views of it."""

    def f(du, u, p, t):
        du[:] = u
        du += p[0]
        du[1:] -= u[:-1]
        du *= u
        du[::2] /= 1.0 + u[::2]
        du **= 2

    return Idiom("inplace_operators", f, _positive(5), np.array([0.4]))


@idiom
def boolean_masks():
    """A constant mask from the closure selecting writes, and a traced mask through ``np.where``."""
    interior = np.zeros(7, bool)
    interior[2:5] = True

    def f(du, u, p, t):
        du[~interior] = -p * u[~interior]
        du[interior] = p * u[interior] ** 2
        du[:] = np.where(u > 1.0, du, 2.0 * du)

    return Idiom("boolean_masks", f, np.linspace(0.55, 1.45, 7) + 0.01, 0.9, arrays=[interior])


@idiom
def index_arrays():
    """Integer index arrays from the closure for gathers, scatters and ``np.add.at``."""
    perm = np.array([3, 0, 4, 1, 2])
    pairs = np.array([0, 1, 1, 4])

    def f(du, u, p, t):
        du[perm] = u * p[perm]
        np.add.at(du, pairs, u[pairs] ** 2)

    return Idiom("index_arrays", f, _positive(5), np.linspace(1.0, 2.0, 5), arrays=[perm, pairs])


@idiom
def ufunc_at_beyond_add():
    """``np.multiply.at``, ``np.divide.at`` and ``np.power.at`` with repeated constant
    indices (applied one after another, as NumPy does): ``divide.at`` and ``power.at``
    failed with a raw AttributeError, ``multiply.at`` had no derivative (JAX's scatter-
    multiply needs indices it knows to be distinct)."""
    sites = np.array([0, 2, 2, 5, 0, 2])
    scale = np.empty(6)

    def f(du, u, p, t):
        scale[:] = 1.0
        np.multiply.at(scale, sites, u[sites] + p[0])
        np.divide.at(scale, sites[:3], 1.0 + p[1] * u[:3] ** 2)
        np.power.at(scale, [1, 3, 3], 1.5)
        du[:] = -scale * u

    return Idiom("ufunc_at_beyond_add", f, _positive(6), np.array([0.5, 0.3]), arrays=[sites, scale])


@idiom
def einsum_precomputed_path():
    """``np.einsum(..., optimize=path, out=du)`` with ``path`` from ``np.einsum_path``
    (computed once, outside ``f``): refused as arguments JAX's einsum rejects."""
    A, B = RNG.standard_normal((4, 3)), RNG.standard_normal((3, 4))
    path = np.einsum_path("ij,jk,k->i", A, B, np.ones(4), optimize="optimal")[0]

    def f(du, u, p, t):
        np.einsum("ij,jk,k->i", A, B, p * u, optimize=path, out=du)

    return Idiom("einsum_precomputed_path", f, _positive(4), 0.7, arrays=[A, B])


@idiom
def roll_periodic():
    """A periodic Laplacian with ``np.roll``."""

    def f(du, u, p, t):
        du[:] = p * (np.roll(u, 1) - 2.0 * u + np.roll(u, -1)) - u**3

    return Idiom("roll_periodic", f, _positive(8), 0.6)


@idiom
def where_and_clip():
    """``np.where``, ``np.maximum``, ``np.clip`` instead of Python branches (``np.clip``'s
    ``a_min``/``a_max`` too, and ``np.diff`` with a list ``prepend``)."""

    def f(du, u, p, t):
        rate = np.where(u > 1.0, p[0] * u, p[1] * u**2)
        du[:] = np.maximum(rate, 0.1 * u) - np.clip(u, 0.6, 1.3) + abs(u - 1.0) * -p[1]
        du += np.clip(u, a_min=0.7, a_max=1.2) - np.diff(u, prepend=[1.0])  # NumPy's keyword names, a list

    return Idiom("where_and_clip", f, np.linspace(0.52, 1.48, 6) + 0.013, np.array([2.0, 0.5]))


@idiom
def reductions():
    """``np.mean``, ``.sum()``, ``np.max``, ``np.linalg.norm`` coupling all states."""

    def f(du, u, p, t):
        mean = np.mean(u)
        du[:] = -p * (u - mean) + u.sum() * 0.01 - np.max(u) * 0.1
        du /= 1.0 + np.linalg.norm(u)

    return Idiom("reductions", f, _positive(6), 1.1)


@idiom
def tuple_parameters():
    """``p`` a tuple of an array and a scalar, unpacked."""

    def f(du, u, p, t):
        D, k = p
        du[:] = D * u - k * u**2

    return Idiom("tuple_parameters", f, _positive(4), (np.array([0.1, 0.2, 0.3, 0.4]), 0.7))


@idiom
def dict_parameters():
    """``p`` a dict of arrays and scalars."""

    def f(du, u, p, t):
        du[:] = p["D"] * (np.roll(u, 1) - u) + p["k"] * np.cos(t) * u

    return Idiom("dict_parameters", f, _positive(5), {"D": np.linspace(0.1, 0.5, 5), "k": -0.3})


@idiom
def list_parameters():
    """``p`` a list of scalars, indexed."""

    def f(du, u, p, t):
        du[0] = p[0] * u[1]
        du[1] = -p[1] * u[0] - p[2] * u[1]

    return Idiom("list_parameters", f, np.array([0.3, -0.8]), [1.0, 2.0, 0.1])


@idiom
def scalar_p_and_time():
    """A scalar ``p`` and ``t`` used as traced values."""

    def f(du, u, p, t):
        du[:] = -p * u * (1.0 + np.sin(t) ** 2) + t

    return Idiom("scalar_p_and_time", f, _positive(3), 0.25, t=0.7)


@idiom
def no_parameters():
    """``p`` is None; ``t`` enters through ``np.sin``; ``.astype`` and ``.min``."""

    def f(du, u, p, t):
        du[:] = -u.astype(np.float64) + np.sin(t) * u.min()

    return Idiom("no_parameters", f, _positive(3), None)


@idiom
def out_of_place():
    """An out-of-place ``f(u, p, t)`` returning ``np.array([...])`` of traced scalars."""

    def f(u, p, t):
        x, y, z = u
        s, r, b = p
        return np.array([s * (y - x), x * (r - z) - y, x * y - b * z])

    return Idiom("out_of_place", f, np.array([1.0, 2.0, 3.0]), np.array([10.0, 28.0, 8.0 / 3.0]))


@idiom
def local_arrays():
    """Arrays created inside ``f`` with ``np.zeros``, ``np.empty_like`` and ``np.zeros_like``."""

    def f(du, u, p, t):
        flux = np.zeros(len(u) + 1)
        flux[1:-1] = p * (u[1:] - u[:-1])
        work = np.empty_like(u)
        work[:] = flux[1:] - flux[:-1]
        out = np.zeros_like(u)
        out[...] = work
        du[:] = out

    return Idiom("local_arrays", f, _positive(6), 0.45)


@idiom
def loops_and_iteration():
    """Python loops over elements, ``enumerate`` and ``zip`` over traced arrays."""

    def f(du, u, p, t):
        for i, (ui, pi) in enumerate(zip(u, p)):
            du[i] = pi * ui - ui**2
        for i in range(1, len(u)):
            du[i] += 0.1 * u[i - 1]

    return Idiom("loops_and_iteration", f, _positive(4), np.array([0.5, 1.0, 1.5, 2.0]))


@idiom
def stacking_and_transpose():
    """``np.concatenate``, ``np.stack``, ``.T`` views and ``np.sum(axis=)``."""

    def f(du, u, p, t):
        grid = u.reshape(3, 2)
        both = np.stack([grid[:, 0], grid[:, 1] * p])
        dgrid = du.reshape(3, 2)
        dgrid.T[0] = both.sum(axis=0)
        dgrid.T[1] = np.concatenate([both[1, 1:], both[0, :1]]) - grid[:, 1]

    return Idiom("stacking_and_transpose", f, _positive(6), 0.8)


@idiom
def ghost_cells():
    """A padded work buffer whose ghost cells are set once and only read in ``f``."""
    n = 6
    padded = np.zeros(n + 2)

    def f(du, u, p, t):
        padded[1:-1] = u
        du[:] = p * (padded[:-2] - 2.0 * padded[1:-1] + padded[2:])

    return Idiom("ghost_cells", f, _positive(n), 0.9, arrays=[padded])


# ----------------------------------------------------------- buffers outside arguments
_WORK = np.zeros(5)
_SCALE = np.array([1.0, 0.5, 0.25, 0.125, 0.0625])


def _reaction_into_work(u, k):
    """A module-level helper writing into a module-global buffer."""
    np.multiply(u, u, out=_WORK)
    _WORK[:] *= k


def _helper_rhs(du, u, p, t):
    _reaction_into_work(u, p[0])
    du[:] = _SCALE * u - _WORK


@idiom
def helper_global_buffer():
    """``f`` calls a module-level helper that writes into a module-global buffer."""
    return Idiom("helper_global_buffer", _helper_rhs, _positive(5), np.array([0.7]), arrays=[_WORK, _SCALE])


_GLOBAL_A = np.zeros(4)
_GLOBAL_B = np.zeros(4)


def _globals_rhs(du, u, p, t):
    _GLOBAL_A[:] = p * u
    np.sin(_GLOBAL_A, out=_GLOBAL_B)
    du[:] = _GLOBAL_B * u + _GLOBAL_A


@idiom
def module_global_buffers():
    """``f`` writes module-global buffers directly."""
    return Idiom("module_global_buffers", _globals_rhs, _positive(4), 0.6, arrays=[_GLOBAL_A, _GLOBAL_B])


class Reactor:
    """A model object holding its work buffers; its method is the right-hand side."""

    def __init__(self, n):
        self.rates = np.linspace(0.2, 1.0, n)
        self.work = np.zeros(n)

    def _decay(self, u):
        np.multiply(self.rates, u, out=self.work)

    def rhs(self, du, u, p, t):
        self._decay(u)
        du[:] = p * u**2 - self.work


@idiom
def bound_method():
    """A bound method whose object holds buffers, calling another method."""
    model = Reactor(4)
    return Idiom("bound_method", model.rhs, _positive(4), 0.4, arrays=[model.rates, model.work])


class Diffusion:
    """A callable object: ``__call__`` is the right-hand side."""

    def __init__(self, n):
        self.flux = np.zeros(n + 1)

    def __call__(self, du, u, p, t):
        self.flux[1:-1] = p * np.diff(u)
        np.subtract(self.flux[1:], self.flux[:-1], out=du)


@idiom
def callable_object():
    """A callable object with a buffer attribute."""
    model = Diffusion(5)
    return Idiom("callable_object", model, _positive(5), 1.2, arrays=[model.flux])


_WEIGHTS = np.array([1.0, 0.5, 0.25])  # a module global a base class's method reads


class _Decay:
    def __init__(self, n):
        self.work = np.zeros(n)

    def __call__(self, du, u, p, t):
        self.work[:] = p[0] * u * max(_WEIGHTS[0], 0.5)  # (max: the method is copied for its builtins)
        du[:] = -self.work


class _Damped(_Decay):
    def __call__(self, du, u, p, t):
        super().__call__(du, u, p, t)
        du += 0.1 * self.work


class _Forced(_Damped):
    def __call__(self, du, u, p, t):
        super(_Forced, self).__call__(du, u, p, t)
        du += p[1] * _WEIGHTS[: len(du)]


@idiom
def super_chain():
    """``super().__call__`` three levels deep (zero- and two-argument forms), a base
    method reading a module global: each level's term once (the copied method of the
    child reached the user's own child method through ``super()`` and ran its term twice)."""
    model = _Forced(3)
    return Idiom("super_chain", model, _positive(3), np.array([0.8, 0.3]), arrays=[model.work, _WEIGHTS])


class _PlainBase:
    def __init__(self, n):
        self.work = np.zeros(n)

    def __call__(self, du, u, p, t):
        self.work[:] = p * u
        du[:] = -self.work


class _PlainDamped(_PlainBase):
    def __call__(self, du, u, p, t):
        super().__call__(du, u, p, t)
        du += 0.1 * self.work


@idiom
def super_call():
    """``super().__call__`` of a base whose method needs no copy of its own (only its
    ``__init__`` does, for ``np``): the copy of the class must still hold it, or the
    lookup fell through to the user's child method, which ran ``0.1 work`` twice."""
    model = _PlainDamped(2)
    return Idiom("super_call", model, _positive(2), 0.9, arrays=[model.work])


class _Mixture:
    __slots__ = ("rates", "out")

    def __init__(self, n):
        self.rates = np.linspace(0.5, 1.5, n)
        self.out = np.zeros(n)

    def terms(self, du, u, p):
        np.multiply(self.rates, u, out=self.out)
        du[:] = -self.out


class _Source(_Mixture):
    __slots__ = ()

    def terms(self, du, u, p):
        super().terms(du, u, p)
        du += p * min(self.rates)


class _Crowding(_Mixture):
    __slots__ = ()

    def terms(self, du, u, p):
        super().terms(du, u, p)
        du -= 0.1 * u * self.out


class _Both(_Source, _Crowding):
    __slots__ = ("calls",)

    def __init__(self, n):
        super().__init__(n)
        self.calls = np.zeros(1)

    def rhs(self, du, u, p, t):
        self.terms(du, u, p)


@idiom
def cooperative_super():
    """A diamond of ``__slots__`` classes whose ``super()`` chains are cooperative
    (``_Source`` -> ``_Crowding`` -> ``_Mixture``): each term once, in the MRO's order."""
    model = _Both(4)
    return Idiom("cooperative_super", model.rhs, _positive(4), 0.7, arrays=[model.rates, model.out, model.calls])


def _partial_rhs(du, u, p, t, work, weights):
    np.multiply(u, weights, out=work)
    du[:] = p * work - work**2


@idiom
def partial_buffer():
    """``functools.partial`` binding a positional buffer and a keyword constant."""
    work, weights = np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0])
    f = functools.partial(_partial_rhs, weights=weights, work=work)
    return Idiom("partial_buffer", f, _positive(4), 0.5, arrays=[work, weights])


@dataclass
class _Buffers:
    gradient: np.ndarray
    curvature: np.ndarray


@idiom
def dataclass_buffers():
    """A dataclass instance in the closure holds the buffers."""
    n = 6
    bufs = _Buffers(np.zeros(n), np.zeros(n))

    def f(du, u, p, t):
        bufs.gradient[:] = np.gradient(u)
        bufs.curvature[1:-1] = u[:-2] - 2 * u[1:-1] + u[2:]
        bufs.curvature[[0, -1]] = 0.0
        du[:] = p * bufs.curvature - bufs.gradient * u

    return Idiom("dataclass_buffers", f, _positive(n), 0.3, arrays=[bufs.gradient, bufs.curvature])


@idiom
def containers_in_closure():
    """A dict and a list of buffers in the closure, one buffer reachable through both."""
    shared = np.zeros(4)
    bufs = {"a": shared, "b": np.zeros(4)}
    stack = [shared, np.zeros(4)]

    def f(du, u, p, t):
        bufs["a"][:] = u * p
        np.square(stack[0], out=bufs["b"])
        stack[1][:] = bufs["b"] - u
        du[:] = stack[1] + shared

    return Idiom("containers_in_closure", f, _positive(4), 0.9, arrays=[shared, bufs["b"], stack[1]])


@idiom
def sparse_laplacian():
    """A SciPy sparse Laplacian from the closure: ``A @ u``, ``A.dot(u)``, ``u @ A``."""
    n = 10
    L = sp.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(n, n), format="csr")
    C = sp.random(n, n, density=0.3, random_state=1, format="csr")

    def f(du, u, p, t):
        du[:] = p[0] * (L @ u) + p[1] * L.dot(u**2) + (u @ C) * 0.1

    return Idiom("sparse_laplacian", f, _positive(n), np.array([0.5, 0.1]))


@idiom
def ghost_cells_from_parameters():
    """Boundary values from ``p`` joined to the state as nested lists:
    ``np.concatenate([[p[1]], u])``, ``np.hstack((u, [0.0, p[0]]))``, ``np.stack([[...], u[:2]])``
    (NumPy takes lists as members of the sequence; jax.numpy does not)."""
    n = 6

    def f(du, u, p, t):
        left = np.concatenate([[p[1]], u])  # the inflow value, then the cells
        right = np.hstack((u, [0.0, p[0]]))
        corner = np.stack([[p[0], p[1]], u[:2]])
        du[:] = -p[0] * n * (left[1:] - left[:-1]) + 0.01 * right[:-2] + corner[0, 1] * corner[1, 0]

    return Idiom("ghost_cells_from_parameters", f, _positive(n), np.array([0.7, 2.0]))


@idiom
def scipy_special_functions():
    """SciPy's Python-level special functions: ``logsumexp`` (imported by name and through
    the module), ``softmax`` and ``log_softmax`` (over all axes or one), with a ufunc."""
    W = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])

    def f(du, u, p, t):
        du[0] = -logsumexp(u * p[0]) + scipy.special.logsumexp(W * p[1], axis=1)[0]
        du[1:] = softmax(u[1:] * p[1]) - scipy.special.log_softmax(u[1:], axis=0) + scipy.special.expit(u[0])

    return Idiom("scipy_special_functions", f, np.array([0.3, 1.2, -0.4]), np.array([1.5, 0.7]), arrays=[W])


@idiom
def arrays_made_in_f():
    """Arrays made inside ``f`` by NumPy constructors that take no array (``np.eye``,
    ``np.arange``, ``np.linspace``, ``np.identity``, ``np.fromiter``), then written with
    values of ``u`` and ``p``: a mass matrix assembled per call, a scaled grid."""

    def f(du, u, p, t):
        M = np.eye(3)
        M[0, 1] = p[0]
        M[2, 2] = 1.0 + u[0] ** 2
        x = np.linspace(0.0, 1.0, 3)
        x *= p[1]
        a = np.arange(3, dtype=float).copy()
        a[1] = p[0] * u[1]
        r = np.fromiter((u[i] * p[0] for i in range(3)), dtype=float)
        du[:] = np.linalg.solve(M, u) + x + a + r + (np.identity(3) * 2.0) @ u + np.linspace(0.0, p[0], 3)

    return Idiom("arrays_made_in_f", f, np.array([0.3, 1.2, -0.4]), np.array([1.5, 0.7]))


@idiom
def sliding_windows():
    """A periodic stencil through ``sliding_window_view(np.pad(u, 1, mode="wrap"), 3)``
    (a read-only view in NumPy), and 2-D windows over a grid."""
    n = 8

    def f(du, u, p, t):
        w = sliding_window_view(np.pad(u, 1, mode="wrap"), 3)
        grid = np.lib.stride_tricks.sliding_window_view(u.reshape(2, 4), (2, 2))
        du[:] = p[0] * (w[:, 0] - 2.0 * w[:, 1] + w[:, 2]) + p[1] * grid.sum()

    return Idiom("sliding_windows", f, _positive(n), np.array([0.3, 0.01]))


@idiom
def second_order_gradient():
    """Advection through ``np.gradient(u, dx, edge_order=2)`` (one-sided second-order
    edges, which ``jax.numpy.gradient`` lacks) and a 2-D ``np.gradient`` pair."""
    n, dx = 8, 0.125

    def f(du, u, p, t):
        gy, gx = np.gradient(u.reshape(2, 4), 0.5, dx)
        du[:] = -p[0] * np.gradient(u, dx, edge_order=2) + p[1] * (gx + gy).ravel()

    return Idiom("second_order_gradient", f, _positive(n), np.array([0.7, 0.1]))


@idiom
def state_dependent_indices():
    """Writes at indices computed from ``u`` into arrays made in ``f``: a one-hot of the
    largest state (``onehot[np.argmax(u)] = 1``) and ranks from an inverse permutation
    (``ranks[np.argsort(u)] = np.arange(n)``)."""

    def f(du, u, p, t):
        onehot = np.zeros(3)
        onehot[np.argmax(u)] = 1.0
        order = np.argsort(u)
        ranks = np.empty_like(order)
        ranks[order] = np.arange(len(u))
        du[:] = -p[0] * u * (1.0 + ranks) + p[1] * onehot

    return Idiom("state_dependent_indices", f, np.array([0.3, 0.9, 0.5]), np.array([0.5, 0.2]))


@idiom
def particle_deposit():
    """A particle-to-cell deposit ``np.bincount(cells, weights=..., minlength=n)`` with
    constant cells and weights from ``u`` (its length is known: jax.numpy needs it)."""
    cells = np.array([0, 2, 2, 1, 0, 3])

    def f(du, u, p, t):
        deposit = np.bincount(cells, weights=p[0] * u[:6], minlength=5)
        du[:6] = -u[:6]
        du[6:] = deposit - u[6:]

    return Idiom("particle_deposit", f, _positive(11), np.array([0.7]), arrays=[cells])


def _michaelis_menten(s, vmax, km):
    return vmax * s / (km + s)


@idiom
def vectorized_rate_law():
    """A scalar rate law wrapped in ``np.vectorize`` (called once on the arrays, as its
    elementwise NumPy operations give the same values), and a constant one."""
    rate = np.vectorize(_michaelis_menten)
    baseline = np.vectorize(lambda x: 2.0)

    def f(du, u, p, t):
        du[:] = -rate(u, p[0], p[1]) + baseline(u) + rate(np.arange(3.0), 1.0, 1.0)

    return Idiom("vectorized_rate_law", f, _positive(3), np.array([1.5, 0.5]))


@idiom
def scipy_linear_algebra():
    """SciPy's Python-level linear algebra on values of ``u``: a compact finite-difference
    scheme through ``solve_banded`` (tridiagonal and pentadiagonal bands) and ``lu_solve``
    with a factorisation computed once outside ``f``, and ``scipy.linalg.solve``."""
    n = 6
    tri = np.array([[0.0] + [0.25] * (n - 1), [1.0] * n, [0.25] * (n - 1) + [0.0]])
    penta = np.array([[0.0, 0.0] + [0.05] * (n - 2), [0.0] + [0.2] * (n - 1), [1.0] * n,
                      [0.2] * (n - 1) + [0.0], [0.05] * (n - 2) + [0.0, 0.0]])
    M = np.eye(n) * 2.0 + np.diag(np.full(n - 1, 0.3), 1)
    factor = scipy.linalg.lu_factor(M)

    def f(du, u, p, t):
        du[:] = -p[0] * scipy.linalg.solve_banded((1, 1), tri, u) + scipy.linalg.solve_banded((2, 2), penta, u**2)
        du += scipy.linalg.lu_solve(factor, p[1] * u, check_finite=False) - scipy.linalg.solve(M, u)

    return Idiom("scipy_linear_algebra", f, _positive(n), np.array([0.7, 0.4]), arrays=[tri, penta, M, *factor])


@idiom
def view_method():
    """``buf.view()`` and ``du.view()``: NumPy's own whole-array views, written through."""
    work = np.zeros(4)

    def f(du, u, p, t):
        v = work.view()
        v[:] = u * p[0]
        out = du.view()
        out[:] = -v + work[::-1]

    return Idiom("view_method", f, _positive(4), np.array([0.5]), arrays=[work])


@idiom
def piecewise_rates():
    """``np.piecewise`` with callables, a constant and an ``otherwise`` value: a rate law
    that switches form at a threshold (a later condition wins where two hold)."""
    def f(du, u, p, t):
        rate = np.piecewise(u, [u < 0.5, u > 0.9, u > 1.2], [lambda x: p[0] * x, lambda x: p[1] * x**2, 0.25,
                                                             lambda x: np.sqrt(x) * p[0]])
        du[:] = -rate + np.piecewise(t, [t < 1.0], [p[1], 0.0])

    return Idiom("piecewise_rates", f, np.array([0.2, 0.7, 1.0, 1.3]), np.array([0.5, 0.3]))


@idiom
def polynomial_series_fits():
    """``numpy.polynomial`` fits of data evaluated at ``t`` and at ``u`` (and a derived
    series): their domains mapped and their recurrences run on traced values."""
    td = np.linspace(0.0, 5.0, 12)
    forcing = np.polynomial.Polynomial.fit(td, np.sin(td), 4)
    shape = np.polynomial.Chebyshev.fit(td / 5.0, np.cos(td), 5)

    def f(du, u, p, t):
        du[:] = -p[0] * u + forcing(t) + 0.1 * shape.deriv()(u) + np.polynomial.polynomial.polyval(t, [0.1, 0.2])

    return Idiom("polynomial_series_fits", f, _positive(3), np.array([0.5]))


@idiom
def python_max_min_of_values():
    """Python's ``max``/``min`` of scalar values of ``u`` and ``p`` (Monod kinetics with a
    clipped substrate, a capped rate), two arguments or a list."""
    def f(du, u, p, t):
        s = max(u[0], 0.0)
        du[0] = -p[0] * s / (p[1] + s)
        du[1] = p[0] * s / (p[1] + s) - 0.1 * min(p[1], u[1]) - max([0.01 * u[1], 0.0, 1e-3 * p[0]])

    return Idiom("python_max_min_of_values", f, np.array([1.0, 0.2]), np.array([0.8, 0.3]))


@idiom
def scipy_functions_with_jax_counterparts():
    """SciPy's Python-level functions whose JAX counterparts are spelled elsewhere:
    ``scipy.linalg.norm``/``pinv``/``svdvals`` (jax.numpy.linalg's),
    ``scipy.integrate.trapezoid``/``cumulative_trapezoid``, ``scipy.special.polygamma``/
    ``factorial``/``comb``, and the ``scipy.special`` ufuncs ``log1p``/``expm1`` that
    jax.scipy.special lacks but jax.numpy has."""
    import scipy.integrate
    from scipy.integrate import cumulative_trapezoid

    x = np.linspace(0.0, 1.0, 4)

    def f(du, u, p, t):
        M = np.outer(u, u[::-1]) + np.eye(4)
        du[:] = -p[0] * u * scipy.linalg.norm(u) * 0.1 + 0.01 * scipy.linalg.pinv(M) @ u
        du[0] += 0.01 * scipy.linalg.svdvals(M)[0] + 0.1 * scipy.integrate.trapezoid(u * u, x)
        du[1:] += 0.1 * cumulative_trapezoid(p[1] * u, x)
        du += 1e-2 * scipy.special.polygamma(1, u + 1.0) * scipy.special.comb(4, 2) / scipy.special.factorial(3)
        du += 1e-2 * (scipy.special.log1p(u * p[1]) - scipy.special.expm1(-u))

    return Idiom("scipy_functions_with_jax_counterparts", f, _positive(4), np.array([0.7, 0.5]), arrays=[x])


@idiom
def scipy_ndimage_filters():
    """A 2-D reaction-diffusion step with ``scipy.ndimage``: ``laplace`` written into a
    closure buffer (``output=``), a 5-point ``convolve``, a ``gaussian_filter`` (nonlocal
    coupling) and a ``correlate1d`` with another boundary mode."""
    import scipy.ndimage as ndi

    n = 5
    lap = np.zeros((n, n))
    stencil = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])

    def f(du, u, p, t):
        U = u.reshape(2, n, n)
        D = du.reshape(2, n, n)
        scipy.ndimage.laplace(U[0], output=lap, mode="wrap")
        D[0] = p[0] * lap - U[0] * U[1] ** 2 + 0.1 * ndi.gaussian_filter(U[1], 0.8, mode="nearest")
        D[1] = p[1] * ndi.convolve(U[1], stencil, mode="reflect") + U[0] * U[1] ** 2
        D[1] += 0.05 * ndi.correlate1d(U[0], [1.0, 0.0, -1.0], axis=0, mode="mirror")

    return Idiom("scipy_ndimage_filters", f, _positive(2 * 5 * 5), np.array([0.2, 0.1]), arrays=[lap, stencil])


@idiom
def scipy_ndimage_positional_output():
    """``scipy.ndimage``'s ``output`` given by position, as SciPy's signatures allow:
    ``laplace(U, L, mode="wrap")``, ``correlate1d(x, w, 0, C)``; the translation took only
    ``output=`` by keyword and silently left the buffer unwritten (stale, no derivative)."""
    import scipy.ndimage as ndi

    n = 4
    lap, corr = np.zeros((n, n)), np.zeros((n, n))

    def f(du, u, p, t):
        U = u.reshape(n, n)
        ndi.laplace(U, lap, mode="wrap")
        ndi.correlate1d(U, [1.0, 0.0, -1.0], 0, corr, "nearest")
        du[:] = (p[0] * lap + p[1] * corr - 0.1 * U).ravel()

    return Idiom("scipy_ndimage_positional_output", f, _positive(n * n), np.array([0.3, 0.2]), arrays=[lap, corr])


@idiom
def shape_set_in_place():
    """``D = du.view(); D.shape = (2, 3)`` (a view of du, reshaped in place, written
    through), and a work buffer and a local result reshaped the same way; setting
    ``.shape`` raised a bare AttributeError from the translation."""
    work = np.zeros(6)

    def f(du, u, p, t):
        D = du.view()
        D.shape = (2, 3)
        W = work.view()
        W.shape = (3, 2)
        W[:] = (u * p[0]).reshape(3, 2)
        x = u * u
        x.shape = (2, 3)
        D[:] = -W.T + p[1] * x

    return Idiom("shape_set_in_place", f, _positive(6), np.array([0.7, 0.2]), arrays=[work])


@idiom
def constant_masks_and_their_indices():
    """A constant mask from the closure: ``np.where(MASK)`` with one argument,
    ``np.nonzero``, ``np.flatnonzero`` (their sizes are known: they were refused as
    value-dependent), and ``np.copyto(du, a, where=MASK)`` then ``where=~MASK`` (du written
    in full: it was reported "did not write du[...]")."""
    mask = np.array([True, False, True, False, True])

    def f(du, u, p, t):
        np.copyto(du, -p[0] * u, where=mask)
        np.copyto(du, -p[1] * u**2, where=~mask)
        (odd,) = np.where(mask)
        du[odd] += p[1] * u[np.nonzero(~mask)[0]].sum()
        du[np.flatnonzero(~mask)] -= 0.1 * u[0]

    return Idiom("constant_masks_and_their_indices", f, _positive(5), np.array([0.6, 0.3]), arrays=[mask])


@idiom
def imports_inside_f():
    """``import numpy as np``, ``from scipy.special import expit`` and ``import scipy.linalg``
    run inside ``f``: they bind the translation's stand-ins (an array made by the local
    ``np.zeros`` is written with values of ``u``)."""
    M = np.array([[0.0, 1.0], [-1.0, 0.0]])

    def f(du, u, p, t):
        import numpy as np
        import scipy.linalg
        from scipy.special import expit

        work = np.zeros(2)
        work[:] = expit(u) * p[0]
        du[:] = -work + scipy.linalg.expm(0.1 * p[0] * M) @ u - u

    return Idiom("imports_inside_f", f, _positive(2), np.array([0.5]), arrays=[M])


@idiom
def math_module_on_values():
    """``math.exp``, ``math.log``, ``math.sqrt``, ``math.pow``, ``math.atan2`` (and
    ``from math import exp``) of values of ``u``, ``p`` and ``t``: an Arrhenius rate in a
    stirred-tank reactor, written as scalar code."""
    from math import exp

    def f(du, u, p, t):
        k = p[0] * math.exp(-p[1] / u[1])
        du[0] = -k * u[0] + 0.1 * (1.0 - u[0]) + 0.01 * math.sqrt(u[0] + 1.0) * exp(-t)
        du[1] = 0.5 * k * u[0] - 0.2 * (u[1] - 3.0) + 0.01 * math.log(u[1], 10) + 1e-3 * math.pow(u[0], 2)
        du[1] += 1e-3 * math.atan2(u[0], 1.0) + 1e-3 * math.erf(u[0]) + math.pi * 1e-4

    return Idiom("math_module_on_values", f, np.array([0.5, 3.2]), np.array([2.0, 4.0]))


@idiom
def flat_and_tolist():
    """``a.flat[i]`` read and written, also on a transposed view of ``du`` (C order of the
    view, not of the memory), and ``u.tolist()`` unpacked into scalars."""
    def f(du, u, p, t):
        a, b, c, d, e, g = u.tolist()
        view = du.reshape(2, 3).T  # (3, 2), strided
        for i in range(view.size):
            view.flat[i] = -p[0] * u.flat[i]
        du[0] += a * b - c
        du.flat[-1] = -g * (d + e)

    return Idiom("flat_and_tolist", f, _positive(6), np.array([0.5]))


@idiom
def r_and_c_concatenation():
    """``np.r_`` and ``np.c_`` of pieces of ``u``, constants and a range."""
    w = np.arange(3.0)

    def f(du, u, p, t):
        shifted = np.r_[u[1:], u[:1]]
        ends = np.r_[p[0], 0:2, w[:1]]  # a scalar, a range and a constant array
        pairs = np.c_[u, shifted]  # columns
        du[:] = -p[0] * u + 0.1 * pairs[:, 1] * pairs[:, 0] + ends.sum() * 1e-2

    return Idiom("r_and_c_concatenation", f, _positive(4), np.array([0.5]), arrays=[w])


@idiom
def numpy_scalar_types():
    """``np.float64(p[0])`` and ``np.float32(...)`` of values (a cast that looks free in
    NumPy), ``from numpy import float64``, and the same types used as dtypes and in
    ``isinstance``/``np.issubdtype`` inside ``f``."""
    from numpy import float64

    work = np.zeros(3, dtype=np.float64)

    def f(du, u, p, t):
        k = np.float64(p[0])
        rate = float64(p[1] * t)
        scale = np.zeros(3, dtype=np.float64) + np.float64("1.0")  # a constant, as in NumPy
        assert isinstance(np.float64(2.0), np.float64) and np.issubdtype(u.dtype, np.float64)
        work[:] = u.astype(np.float64) * scale
        du[:] = -k * work + rate * np.float64(u[::-1]) * 1e-1
        du[0] += np.int64(3) * 1e-2 + np.finfo(np.float64).eps

    return Idiom("numpy_scalar_types", f, _positive(3), np.array([0.7, 0.4]), arrays=[work])


@idiom
def einsum_views_and_positional_out():
    """``np.einsum('ii->i', M)`` and ``np.einsum('ij->ji', ...)`` written through (NumPy
    returns writable views when one operand is only re-indexed), and ``out`` given by
    position: ``np.dot(A, u, du)``, ``np.clip(x, lo, hi, out)``, ``np.cumsum(x, 0, None,
    out)``, ``np.sum(x, 0, None, out)``."""
    A = RNG.standard_normal((4, 4)) * 0.3
    work = np.zeros((4, 4))
    partial = np.zeros(4)
    total = np.zeros(())

    def f(du, u, p, t):
        work[:] = 0.1
        np.einsum("ii->i", work)[:] += p[0] * u  # the diagonal, in place
        np.einsum("ij->ji", work)[0, 1:] = u[1:] * p[1]  # a column, through the transpose
        np.dot(A, u, du)
        du += work @ u
        np.cumsum(u * p[1], 0, None, partial)
        np.clip(partial, 0.0, 1.5, partial)
        np.sum(u, 0, None, total)
        du -= partial * total * 0.1

    return Idiom("einsum_views_and_positional_out", f, _positive(4), np.array([0.6, 0.4]),
                 arrays=[A, work, partial, total])


@idiom
def values_repeated_to_fit():
    """NumPy repeating a shorter value array: ``np.fill_diagonal(M, u[:2])``,
    ``np.putmask(du, mask, v)`` with ``len(v) < du.size``, ``du.flat = v``; a ufunc's
    ``where=`` given as a list and ``casting=`` given explicitly."""
    M = np.zeros((4, 4))
    mask = np.array([True, False, True, True])

    def f(du, u, p, t):
        M[:] = 0.0
        np.fill_diagonal(M, -p[0] * u[:2])  # cycles: u0, u1, u0, u1
        du.flat = M @ u  # every element
        np.putmask(du, mask, p[1] * u[:2] ** 2)  # values 0, 1, 0, 1 by position: 0, 0, 1 at 0, 2, 3
        np.multiply(du, 1.0 + p[1], out=du, where=[True, True, False, True], casting="same_kind")

    return Idiom("values_repeated_to_fit", f, _positive(4), np.array([0.8, 0.3]), arrays=[M, mask])


def gierer_meinhardt_model(N: int):
    """The seed's Gierer-Meinhardt model (DiffEq tutorial ``gm3!``) with six closure buffers.

    ``r`` has shape ``(2, N, N)``: activator ``u = r[0]`` and inhibitor ``v = r[1]``;
    ``Ax``/``Ay`` are second-difference matrices with reflecting ends.
    """
    Ax = np.diag(np.full(N - 1, 1.0), -1) + np.diag(np.full(N, -2.0)) + np.diag(np.full(N - 1, 1.0), 1)
    Ax[1, 0] = 2.0
    Ax[-2, -1] = 2.0
    Ay = Ax.copy()
    Ayu, uAx, Du, Ayv, vAx, Dv = (np.zeros((N, N)) for _ in range(6))

    def gm3(dr, r, p, t):
        a, alpha, ubar, beta, D1, D2 = p
        u, v = r[0], r[1]
        du, dv = dr[0], dr[1]
        np.matmul(Ay, u, out=Ayu)
        np.matmul(u, Ax, out=uAx)
        np.matmul(Ay, v, out=Ayv)
        np.matmul(v, Ax, out=vAx)
        np.add(Ayu, uAx, out=Du)
        np.multiply(Du, D1, out=Du)
        np.add(Ayv, vAx, out=Dv)
        np.multiply(Dv, D2, out=Dv)
        du[...] = Du + a * u * u / v + ubar - alpha * u
        dv[...] = Dv + a * u * u - beta * v

    return gm3, [Ax, Ay, Ayu, uAx, Du, Ayv, vAx, Dv]


@idiom
def gierer_meinhardt():
    """Matrix-Laplacian reaction-diffusion with six ``mul!``-style closure buffers."""
    N = 6
    f, arrays = gierer_meinhardt_model(N)
    r0 = np.stack([1.0 + 0.1 * RNG.random((N, N)), np.full((N, N), 1.0)])
    p = (1.0, 1.0, 1.0, 10.0, 0.001, 100.0)
    return Idiom("gierer_meinhardt", f, r0, p, arrays=arrays)


@idiom
def gray_scott_2d():
    """2-D periodic Gray-Scott with a rolled Laplacian and closure buffers."""
    n = 6
    lap, uvv = np.zeros((2, n, n)), np.zeros((n, n))

    def laplacian(a, out):
        out[:] = np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1) - 4 * a

    def f(du, u, p, t):
        Du, Dv, F, k = p
        U, V = u
        laplacian(U, lap[0])
        laplacian(V, lap[1])
        np.multiply(U, V * V, out=uvv)
        du[0] = Du * lap[0] - uvv + F * (1.0 - U)
        du[1] = Dv * lap[1] + uvv - (F + k) * V

    u0 = np.stack([1.0 - 0.3 * RNG.random((n, n)), 0.25 + 0.2 * RNG.random((n, n))])
    return Idiom("gray_scott_2d", f, u0, np.array([0.16, 0.08, 0.035, 0.065]), arrays=[lap, uvv])


# --------------------------------------------------------------------- dxdt.problems
def problem(name: str) -> Idiom:
    """A problem of :mod:`dxdt.problems` (small size) as an idiom."""
    from dxdt import problems

    builders = {
        "lotka_volterra": problems.lotka_volterra,
        "lorenz": problems.lorenz,
        "gray_scott": lambda: problems.gray_scott(n=6),
        "heat_1d": lambda: problems.heat_1d(n=12),
        "linear": lambda: problems.linear(
            np.array([[-0.5, 1.0, 0.0], [-1.0, -0.1, 0.3], [0.2, 0.0, -1.0]]), np.ones(3), 1.0
        ),
    }
    prob = builders[name]()
    return Idiom(f"problems.{name}", prob.f, np.array(prob.u0), prob.p)


NAMES = [factory.__name__ for factory in IDIOMS] + [f"problems.{name}" for name in PROBLEMS]


def build(name: str) -> Idiom:
    """A fresh idiom by name (``"problems.<name>"`` for the problems of dxdt)."""
    if name.startswith("problems."):
        return problem(name.partition(".")[2])
    return globals()[name]()
