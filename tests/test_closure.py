"""Tests of closure duplication: structural copies of ``f`` and ``sens.duplicate``.

Scenarios: state carried between calls is reported by name; nothing in the corpus
warns; aliasing (one array reached by two paths, views of one buffer) and cycles survive
the copy; class attributes, slots, frozen dataclasses, recursive helpers and nested
closures are followed; copies see module names defined after they were made; the user's
objects are never mutated; and ``duplicate(f)`` copies run concurrently in threads give
the serial results.
"""

import collections
import threading
import types
import typing
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

import dxdt
import idioms
from dxdt import sensitivity as sens
from dxdt.sensitivity import duplicate, to_jax
from dxdt.sensitivity._jax import load_jax

jax, jnp = load_jax()


def _jacobian_u(f, u, p=None):
    return np.asarray(jax.jacfwd(to_jax(f, u, p))(u, p, 0.0))


# ----------------------------------------------------------------- state carried across calls
def _make_differencer():
    cache = np.zeros(3)

    def f(du, u, p, t):
        du[:] = u - cache
        cache[:] = u

    return f


_calls = np.zeros(1)


def _counting_rhs(du, u, p, t):
    _calls[0] += 1.0
    du[:] = _calls[0] * u


class _Remembering:
    def __init__(self):
        self.prev = np.zeros(2)

    def __call__(self, du, u, p, t):
        du[:] = -u + 0.1 * self.prev
        self.prev = u.copy()


def test_state_carried_by_rebinding_warns_as_the_in_place_form_does():
    """``prev = u.copy()`` after reading ``prev`` (an attribute, a nonlocal) carries state
    between calls as ``prev[:] = u`` does, which warned; the rebinding forms did not, and
    the JAX solve differed silently (6.4e-2 at t = 1). Rebinding without reading the old
    array (a result kept for inspection) does not warn."""
    def make():
        prev = np.zeros(2)

        def f(du, u, p, t):
            nonlocal prev
            du[:] = -u + 0.1 * prev
            prev = u.copy()
        return f

    def make_quiet():
        last = np.zeros(2)

        def f(du, u, p, t):
            nonlocal last
            du[:] = -u
            last = du.copy()
        return f

    u = np.ones(2)
    for f, where in ((_Remembering(), r"attribute 'self\.prev'"), (make(), r"closure variable 'prev'")):
        with pytest.warns(UserWarning, match=where + r".*rebound to another array"):
            to_jax(f, u, None)(u, None, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_jax(make_quiet(), u, None)(u, None, 0.0)


def test_reading_a_buffer_before_writing_it_warns_with_its_name():
    f = _make_differencer()
    with pytest.warns(UserWarning, match=r"closure variable 'cache' of _make_differencer.f is read before it is written"):
        to_jax(f, np.ones(3), None)(np.ones(3), None, 0.0)
    with pytest.warns(UserWarning, match=r"global variable '_calls' of _counting_rhs is read before"):
        to_jax(_counting_rhs, np.ones(2), None)(np.ones(2), None, 0.0)


@pytest.mark.parametrize("name", idioms.NAMES)
def test_corpus_does_not_warn(name):
    idiom = idioms.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_jax(idiom.f, idiom.u0, idiom.p)(idiom.u0, idiom.p, idiom.t)


# ------------------------------------------------------------------------ aliasing and cycles
class _Node:
    pass


def _make_aliased():
    shared = np.zeros(3)
    node = _Node()
    node.buf = shared
    node.me = node
    node.items = [shared, {"x": shared}]

    def f(du, u, p, t):
        node.buf[:] = u
        du[:] = node.items[0] * node.items[1]["x"] + node.me.buf

    return f, node, shared


def test_one_array_reached_by_several_paths_stays_one_array():
    f, node, shared = _make_aliased()
    u = np.array([1.0, 2.0, 3.0])
    assert np.allclose(_jacobian_u(f, u), np.diag(2 * u + 1))
    copy = duplicate(f)
    copied = copy.__closure__[0].cell_contents
    assert copied is not node and copied.me is copied
    assert copied.buf is copied.items[0] is copied.items[1]["x"] and copied.buf is not shared
    du = np.zeros(3)
    copy(du, u, None, 0.0)
    assert np.array_equal(du, u * u + u) and not shared.any() and node.buf is shared


def _make_views():
    flux = np.zeros(5)
    interior, right, left = flux[1:-1], flux[1:], flux[:-1]

    def f(du, u, p, t):
        np.subtract(u[1:], u[:-1], out=interior)
        np.subtract(right, left, out=du)

    return f, flux


def test_closure_views_of_one_buffer_stay_views():
    f, flux = _make_views()
    u = np.array([1.0, 3.0, 2.0, 5.0])
    reference = np.array([[1, -1, 0, 0], [-1, 2, -1, 0], [0, -1, 2, -1], [0, 0, -1, 1]]) * -1.0
    assert np.allclose(_jacobian_u(f, u), reference)
    copy = duplicate(f)
    cells = [c.cell_contents for c in copy.__closure__]
    assert all(np.shares_memory(cells[0], c) for c in cells[1:])
    assert not any(np.shares_memory(flux, c) for c in cells)


def test_a_duplicate_of_a_duplicate_keeps_its_views():
    """``duplicate`` builds its views with ``as_strided``, whose arrays hold their memory
    through an object that is not an array (as ``sliding_window_view``'s do): a second
    ``duplicate`` (and ``to_jax`` of a copy) must still see them as views of one buffer.
    Before, the copy of a copy wrote into a buffer its other views no longer shared and
    returned zeros (``jax_solve`` sized its adjoint's buffer from such a copy's solve)."""
    f, flux = _make_views()
    u = np.array([1.0, 3.0, 2.0, 5.0])
    expected = np.zeros(4)
    f(expected, u, None, 0.0)
    twice = duplicate(duplicate(f))
    du = np.zeros(4)
    twice(du, u, None, 0.0)
    np.testing.assert_array_equal(du, expected)
    cells = [c.cell_contents for c in twice.__closure__]
    assert all(np.shares_memory(cells[0], c) for c in cells[1:])
    assert np.allclose(_jacobian_u(duplicate(f), u), _jacobian_u(f, u))


def test_closure_views_made_with_as_strided_stay_views():
    """A user's work buffer with windows made by ``sliding_window_view``/``as_strided``:
    the translation writes through them into the one buffer, the copy too."""
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.zeros(6)
    windows = sliding_window_view(padded, 3)  # (4, 3): each row a neighbourhood

    def f(du, u, p, t):
        padded[1:-1] = u
        du[:] = windows @ np.array([1.0, -2.0, 1.0])

    u = np.array([1.0, 3.0, 2.0, 5.0])
    expected = np.array([1.0, -3.0, 4.0, -8.0])
    g = to_jax(f, u, None)
    np.testing.assert_allclose(g(u, None, 0.0), expected, rtol=1e-14)
    laplacian = np.diag([-2.0] * 4) + np.diag([1.0] * 3, 1) + np.diag([1.0] * 3, -1)
    np.testing.assert_allclose(jax.jacfwd(g)(u, None, 0.0), laplacian, rtol=1e-14)
    du = np.zeros(4)
    duplicate(f)(du, u, None, 0.0)
    np.testing.assert_allclose(du, expected, rtol=1e-14)
    assert not padded.any()


def _make_fortran_views():
    r = np.zeros((3, 2), order="F")  # as ported from Julia: columns are contiguous
    first, second = r[:, 0], r[:, 1]
    flat = r.T.reshape(-1)  # a view, because r is Fortran-ordered

    def f(du, u, p, t):
        first[:] = u[:3] * p
        second[:] = u[3:] ** 2
        du[:] = flat * u

    return f, r


def test_views_of_a_fortran_ordered_buffer_stay_views():
    f, r = _make_fortran_views()
    u, p = np.linspace(0.5, 1.0, 6), 2.0
    g = to_jax(f, u, p)
    expected = np.concatenate([u[:3] * p, u[3:] ** 2]) * u
    assert np.allclose(g(u, p, 0.0), expected, rtol=1e-14)
    assert np.allclose(jax.jacfwd(g, argnums=1)(u, p, 0.0), np.concatenate([u[:3], 0 * u[3:]]) * u)
    copy = duplicate(f)
    du = np.zeros(6)
    copy(du, u, p, 0.0)
    assert np.allclose(du, expected) and not r.any()


# ------------------------------------------------------------------ what the walk follows
class _ClassBuffer:
    work = np.zeros(3)

    def rhs(self, du, u, p, t):
        self.work[:] = p * u
        du[:] = self.work * u


class _Slotted:
    __slots__ = ("work",)

    def __init__(self):
        self.work = np.zeros(3)


@dataclass(frozen=True)
class _Frozen:
    work: np.ndarray


_acc = np.zeros(3)


def _accumulate(u, k):
    if k:
        _acc[:] += u
        _accumulate(u, k - 1)


def _recursive_rhs(du, u, p, t):
    _acc[:] = 0.0
    _accumulate(u * p, 3)
    du[:] = _acc


def _make_nested():
    work = np.zeros(3)

    def inner(u, p):
        def innermost():
            work[:] = p * u

        innermost()
        return work

    def f(du, u, p, t):
        du[:] = inner(u, p) * u

    return f


def _slotted_rhs(du, u, p, t, holder=_Slotted(), frozen=_Frozen(np.zeros(3))):
    holder.work[:] = p * u
    frozen.work[:] = holder.work * u
    du[:] = frozen.work


@pytest.mark.parametrize(
    "f",
    [_ClassBuffer().rhs, _recursive_rhs, _make_nested(), _slotted_rhs],
    ids=["class attribute", "recursive helper", "nested closures", "slots and frozen defaults"],
)
def test_buffers_are_followed_everywhere(f):
    u, p = np.array([1.0, 2.0, 3.0]), np.array(0.5)
    g = to_jax(f, u, p)
    dp = np.asarray(jax.jacfwd(g, argnums=1)(u, p, 0.0))
    assert np.allclose(dp, 3 * u if f is _recursive_rhs else u**2, rtol=1e-14)


class _Meta(type):
    pass


class _WithMetaclass(metaclass=_Meta):
    def __init__(self):
        self.work = np.zeros(3)

    def rhs(self, du, u, p, t):
        self.work[:] = p * u
        du[:] = self.work * u


class _Model(typing.Protocol):
    def rhs(self, du, u, p, t): ...


class _FromProtocol(_Model):  # its metaclass is typing's _ProtocolMeta
    def __init__(self):
        self.work = np.zeros(3)

    def rhs(self, du, u, p, t):
        self.work[:] = p * u
        du[:] = self.work * u


def _held_in(container, buffer):
    def f(du, u, p, t):
        where = container[0] if not isinstance(container, types.MappingProxyType) else container["w"]
        where[:] = p * u
        du[:] = where * u
    return f, buffer


def _in_containers():
    deque_buffer, proxy_buffer, object_buffer = np.zeros(3), np.zeros(3), np.zeros(3)
    held = np.empty(2, dtype=object)
    held[0], held[1] = object_buffer, "label"
    metaclass, protocol = _WithMetaclass(), _FromProtocol()
    return {
        "user metaclass": (metaclass.rhs, metaclass.work),
        "Protocol subclass": (protocol.rhs, protocol.work),
        "deque": _held_in(collections.deque([deque_buffer], maxlen=4), deque_buffer),
        "mapping proxy": _held_in(types.MappingProxyType({"w": proxy_buffer}), proxy_buffer),
        "object array": _held_in(held, object_buffer),
    }


@pytest.mark.parametrize("where", list(_in_containers()))
def test_buffers_in_more_places_are_private_to_duplicates(where):
    """Objects of a class with a metaclass of the user's or of typing's (a Protocol
    subclass), a deque, a mapping proxy, an object array: the walk did not enter them, so
    a duplicate wrote the user's buffer (threads raced: 1e-9 off the serial ensemble) and
    to_jax refused it as "not a buffer reachable from f"."""
    f, buffer = _in_containers()[where]
    u, p = np.array([1.0, 2.0, 3.0]), np.array(0.5)
    du = np.zeros(3)
    duplicate(f)(du, u, p, 0.0)
    np.testing.assert_allclose(du, p * u**2, rtol=1e-15)
    np.testing.assert_array_equal(buffer, 0.0)
    dp = np.asarray(jax.jacfwd(to_jax(f, u, p), argnums=1)(u, p, 0.0))
    np.testing.assert_allclose(dp, u**2, rtol=1e-14)
    np.testing.assert_array_equal(buffer, 0.0)


def test_the_users_objects_are_not_mutated():
    model = idioms.Diffusion(4)
    flux, cls, attributes = model.flux, type(model), dict(vars(model))
    reactor = idioms.Reactor(4)
    work, method_globals = reactor.work, idioms.Reactor.rhs.__globals__
    for f in (model, reactor.rhs):
        to_jax(f, np.ones(4), 0.5)(np.ones(4), 0.5, 0.0)
        duplicate(f)(np.zeros(4), np.ones(4), 0.5, 0.0)
    assert type(model) is cls and model.flux is flux and vars(model) == attributes
    assert not flux.any() and not work.any() and reactor.work is work
    assert idioms.Reactor.rhs.__globals__ is method_globals and "__call__" not in vars(idioms.Reactor)


def test_a_nonlocal_counter_is_private_to_the_copies():
    """``nonlocal n; n += 1`` rebound the user's own cell from the copies: each JAX solve
    added 2 to the user's counter (its check at t0 and the trace), where a counter in a
    list stays as it was. The NumPy backend runs the user's f itself: it counts there."""
    def make():
        n = 0

        def f(du, u, p, t):
            nonlocal n
            n += 1

            def helper():  # rebinding from nested code too
                nonlocal n
                n += 0
            helper()
            du[:] = -p * u
        return f, lambda: n

    f, count = make()
    prob = dxdt.ODEProblem(f, np.ones(2), (0.0, 1.0), 0.5)
    duplicate(f)(np.zeros(2), np.ones(2), 0.5, 0.0)
    to_jax(f, np.ones(2), 0.5)(np.ones(2), 0.5, 0.0)
    sol = dxdt.solve(prob, backend="jax", saveat=[1.0])
    assert count() == 0
    np.testing.assert_allclose(sol.u[-1], np.exp(-0.5), rtol=1e-6)
    numpy_sol = dxdt.solve(prob, saveat=[1.0])
    assert count() == numpy_sol.stats["nfev"]


_late_buffer = np.zeros(2)


def _late_rhs(du, u, p, t):
    _late_buffer[:] = u
    du[:] = _LATE_FACTOR * _late_buffer  # noqa: F821 -- defined after the copy is made


def test_copies_see_module_names_defined_later():
    copy = duplicate(_late_rhs)
    globals()["_LATE_FACTOR"] = 3.0
    try:
        du = np.zeros(2)
        copy(du, np.array([1.0, 2.0]), None, 0.0)
        assert np.array_equal(du, [3.0, 6.0]) and not _late_buffer.any()
    finally:
        del globals()["_LATE_FACTOR"]


# ----------------------------------------------------------------------------- threads
def test_duplicates_run_concurrently_give_serial_results():
    idiom = idioms.gierer_meinhardt()
    f, p = idiom.f, idiom.p
    inputs = [[idiom.u0 * (1.0 + 0.01 * (k + 7 * worker)) for k in range(40)] for worker in range(4)]
    arrays = [a.copy() for a in idiom.arrays]

    def serial(u):
        du = np.empty_like(u)
        f(du, u, p, 0.0)
        return du

    expected = [[serial(u) for u in batch] for batch in inputs]
    for a, snapshot in zip(idiom.arrays, [a.copy() for a in idiom.arrays]):
        a[...] = snapshot
    copies = [duplicate(f) for _ in range(4)]
    assert all(c is not f for c in copies)
    results = [[None] * 40 for _ in range(4)]
    start = threading.Barrier(4)

    def work(worker):
        start.wait()
        for repeat in range(5):
            for k, u in enumerate(inputs[worker]):
                du = np.empty_like(u)
                copies[worker](du, u, p, 0.0)
                results[worker][k] = du

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(r, e) for rs, es in zip(results, expected) for r, e in zip(rs, es))
    assert all(np.array_equal(a, s) for a, s in zip(idiom.arrays[:2], arrays[:2]))


def test_buffers_and_constants_of_a_user_module_are_duplicated():
    """Work buffers and constants kept as attributes of a user module (``import bufs;
    bufs.WORK[:] = ...``, ``bufs.A.dot(u)``): the JAX solve and the gradient equal the
    NumPy ones, the module's arrays stay bitwise unchanged, and a constant changed in
    place is seen by the next solve (writes and ndarray methods were refused before)."""
    import sys
    import types

    bufs = types.ModuleType("dxdt_test_user_buffers")
    bufs.WORK = np.zeros(3)
    bufs.A = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 1.0]])
    sys.modules[bufs.__name__] = bufs
    try:
        namespace = {"np": np, "bufs": bufs}
        exec("def f(du, u, p, t):\n"
             "    bufs.WORK[:] = u * p[0]\n"
             "    du[:] = np.exp(-bufs.WORK) - bufs.A.dot(u)\n", namespace)
        f = namespace["f"]
        prob = dxdt.ODEProblem(f, np.array([0.5, 0.7, 0.9]), (0.0, 1.0), np.array([0.4]))
        kept = [bufs.WORK.copy(), bufs.A.copy()]
        numpy_end = dxdt.solve(prob, rtol=1e-10, atol=1e-12).u[-1]
        bufs.WORK[:] = kept[0] = np.array([7.0, 8.0, 9.0])  # whatever the NumPy solve left
        jax_end = dxdt.solve(prob, rtol=1e-10, atol=1e-12, backend="jax").u[-1]
        np.testing.assert_allclose(jax_end, numpy_end, rtol=1e-9)
        grad = sens.gradient(lambda U: np.sum(U[-1] ** 2), prob, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(bufs.WORK, kept[0])
        np.testing.assert_array_equal(bufs.A, kept[1])

        def loss(q):
            return np.sum(dxdt.solve(prob.remake(p=q), rtol=1e-12, atol=1e-14).u[-1] ** 2)

        h = 1e-6
        np.testing.assert_allclose(grad, [(loss(prob.p + h) - loss(prob.p - h)) / (2 * h)], rtol=1e-6)
        bufs.A *= 2.0  # a constant of the trace changed in place: the next solve sees it
        np.testing.assert_allclose(dxdt.solve(prob, rtol=1e-10, atol=1e-12, backend="jax").u[-1],
                                   dxdt.solve(prob, rtol=1e-10, atol=1e-12).u[-1], rtol=1e-9)
    finally:
        del sys.modules[bufs.__name__]
