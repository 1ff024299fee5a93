"""The translation lowers stencil-style in-place code to ops XLA fuses (``_tiling``).

Window writes (``out[1:] = ...``) and increments (``out[1:] += a[:-1]``) are deferred as
pieces of their buffer and joined with ``concatenate`` when read, as ``jnp.roll`` is:
the jaxprs of the translated Gray-Scott and of a Laplacian written by window increments
hold no ``dynamic_update_slice`` or ``scatter`` and no more concatenations than the
``jnp.roll`` version, and XLA compiles them to as many fusions, without copies. Values
are checked against the NumPy functions themselves (bitwise where the translation
promises NumPy's order of additions), derivatives against central finite differences,
and the bookkeeping of ``Buffer`` (reads of unwritten ``du``, stale closure reads,
written elements) on the deferred paths.
"""

import collections
import warnings

import numpy as np
import pytest

import dxdt
from dxdt.sensitivity import TranslationError, to_jax
from dxdt.sensitivity._jax import load_jax

jax, jnp = load_jax()
RNG = np.random.default_rng(11)
N = 12
WRITE_CHAINS = ("dynamic_update_slice", "scatter", "scatter-add")


def primitives(fn, *args) -> collections.Counter:
    """How often each primitive occurs in the jaxpr of ``fn(*args)`` (sub-jaxprs included)."""
    counts = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


def hlo_ops(jitted, *args) -> dict[str, int]:
    """Fusions, window updates, scatters and copies in the optimized HLO of ``jitted(*args)``."""
    lines = [line for line in jitted.lower(*args).compile().as_text().splitlines() if " = " in line]
    return {op: sum(f" {op}(" in line for line in lines)
            for op in ("fusion", "dynamic-update-slice", "scatter", "copy")}


def roll_laplacian(a):
    """The hand-written reference: five-point periodic Laplacian by ``jnp.roll``."""
    return (jnp.roll(a, 1, axis=0) + jnp.roll(a, -1, axis=0)
            + jnp.roll(a, 1, axis=1) + jnp.roll(a, -1, axis=1) - 4.0 * a)


def make_window_laplacian(n):
    """A user-written Gray-Scott: the Laplacian by window increments into closure buffers."""
    lap_u, lap_v, uvv = np.empty((n, n)), np.empty((n, n)), np.empty((n, n))

    def laplacian(a, out):
        np.multiply(a, -4, out=out)
        out[1:] += a[:-1]
        out[0] += a[-1]
        out[:-1] += a[1:]
        out[-1] += a[0]
        out[:, 1:] += a[:, :-1]
        out[:, 0] += a[:, -1]
        out[:, :-1] += a[:, 1:]
        out[:, -1] += a[:, 0]

    def f(du, u, p, t):
        Du, Dv, F, k = p
        U, V = u[0], u[1]
        laplacian(U, lap_u)
        laplacian(V, lap_v)
        np.multiply(V, V, out=uvv)
        np.multiply(uvv, U, out=uvv)
        du[0] = Du * lap_u - uvv + F * (1.0 - U)
        du[1] = Dv * lap_v + uvv - (F + k) * V

    return f


def numpy_value(f, u, p=None, t=0.0):
    du = np.full(np.shape(u), np.nan)
    f(du, np.array(u), p, t)
    return du


@pytest.fixture(scope="module")
def gray_scott():
    prob = dxdt.problems.gray_scott(n=N)
    return prob.f, prob.u0, prob.p


@pytest.fixture(scope="module")
def window_laplacian():
    u0 = dxdt.problems.gray_scott(n=N).u0
    return make_window_laplacian(N), u0, np.array([0.16, 0.08, 0.035, 0.065])


@pytest.mark.parametrize("model", ["gray_scott", "window_laplacian"])
def test_stencils_lower_to_slices_and_concatenations(model, request):
    f, u0, p = request.getfixturevalue(model)
    g = to_jax(f, u0, p)
    counts = primitives(lambda u: g(u, p, 0.0), u0)
    hand = primitives(lambda a: roll_laplacian(a[0]) + roll_laplacian(a[1]), u0)
    assert not any(counts[name] for name in WRITE_CHAINS), counts
    assert counts["concatenate"] <= hand["concatenate"] + 1  # + 1: du from its two halves
    assert counts["select_n"] == counts["pad"] == 0
    compiled = hlo_ops(jax.jit(lambda u: g(u, p, 0.0)), u0)
    compiled_hand = hlo_ops(jax.jit(lambda a: jnp.stack([roll_laplacian(a[0]), roll_laplacian(a[1])])), u0)
    assert compiled["dynamic-update-slice"] == compiled["scatter"] == compiled["copy"] == 0, compiled
    assert compiled["fusion"] == compiled_hand["fusion"], (compiled, compiled_hand)


@pytest.mark.parametrize("model", ["gray_scott", "window_laplacian"])
def test_stencil_values_match_numpy_and_the_roll_laplacian(model, request):
    f, u0, p = request.getfixturevalue(model)
    expected = numpy_value(f, u0, p)
    actual = np.asarray(jax.jit(to_jax(f, u0, p))(u0, p, 0.0))
    assert np.max(np.abs(actual - expected)) <= 1e-13 * np.max(np.abs(expected))
    U, V = u0
    Du, Dv, F, k = p
    reference = np.stack([
        Du * np.asarray(roll_laplacian(U)) - U * V * V + F * (1 - U),
        Dv * np.asarray(roll_laplacian(V)) + U * V * V - (F + k) * V,
    ])
    assert np.max(np.abs(actual - reference)) <= 1e-13 * np.max(np.abs(reference))


def test_window_laplacian_derivatives_match_finite_differences(window_laplacian):
    f, u0, p = window_laplacian
    g = to_jax(f, u0, p)
    du_dir = RNG.standard_normal(u0.shape)
    dp_dir = RNG.standard_normal(p.shape)
    field = lambda u, q: g(u, q, 0.0)  # noqa: E731
    tangent = jax.jit(lambda *a: jax.jvp(field, a[:2], a[2:])[1])(u0, p, du_dir, dp_dir)
    h = 1e-6
    central = (numpy_value(f, u0 + h * du_dir, p + h * dp_dir)
               - numpy_value(f, u0 - h * du_dir, p - h * dp_dir)) / (2 * h)
    assert np.max(np.abs(np.asarray(tangent) - central)) <= 1e-7 * np.max(np.abs(central))
    cotangent = RNG.standard_normal(u0.shape)
    bar_u, bar_p = jax.jit(lambda u, q, c: jax.vjp(field, u, q)[1](c))(u0, p, cotangent)
    lhs = float(np.vdot(np.asarray(bar_u), du_dir) + np.vdot(np.asarray(bar_p), dp_dir))
    assert abs(lhs - float(np.vdot(cotangent, central))) <= 1e-7 * abs(lhs)


def _translate(f, u0, p=None):
    """One call of the translation, op by op (jit may contract ``a * b + c`` into FMAs)."""
    return np.asarray(to_jax(f, u0, p)(u0, p, 0.0))


def test_increments_are_added_in_numpy_order_bitwise():
    """Overlapping increments of one buffer: every element gets its sums in program order."""
    b, c, d, e = (RNG.standard_normal(9) for _ in range(4))

    def f(du, u, p, t):
        out = np.empty(9)
        np.multiply(u, 1.5, out=out)
        out[1:] += u[:-1] * b[1:]
        out[:3] += c[:3] * u[0]
        out[2:5] -= d[2:5] * u[8]
        np.add(e * u, out, out=out)
        np.subtract(out[4:], u[:5], out=out[4:])
        du[:] = out

    u0 = RNG.standard_normal(9)
    assert np.array_equal(_translate(f, u0), numpy_value(f, u0))


def test_reads_between_increments_see_them():
    def f(du, u, p, t):
        out = np.zeros(8)
        out[1:] += u[:-1]
        head = out[:3] * 2.0  # reads a box that spans the increment and the zeros
        out[:3] = head
        out[5:] += out[:3]  # the increment reads the buffer it increments
        out[::2] += u[::2]  # a strided view: not a box
        out.T[2:4] += 1.0
        du[:] = out

    u0 = RNG.standard_normal(8)
    assert np.array_equal(_translate(f, u0), numpy_value(f, u0))


def test_increments_that_do_not_tile_their_bounding_box():
    def f(du, u, p, t):
        out = u.reshape(3, 4) * 1.0
        out[0, :2] += u[:2]
        out[2, 2:] += u[2:4]  # same layer, with a gap between the two boxes
        out[1] -= u[4:8]
        du[:] = out.reshape(-1)

    u0 = RNG.standard_normal(12)
    assert np.array_equal(_translate(f, u0), numpy_value(f, u0))


def test_pinwheel_writes_without_a_guillotine_cut():
    """Four boxes around a fifth tile a 3 x 3 buffer with no cut through it."""
    boxes = [(slice(0, 2), slice(0, 1)), (slice(0, 1), slice(1, 3)), (slice(1, 3), slice(2, 3)),
             (slice(2, 3), slice(0, 2)), (slice(1, 2), slice(1, 2))]

    def f(du, u, p, t):
        out = np.empty((3, 3))
        for i, box in enumerate(boxes):
            out[box] = u[box] * (i + 1.0)
        du[:] = out

    u0 = RNG.standard_normal((3, 3))
    g = to_jax(f, u0)
    assert np.array_equal(np.asarray(g(u0, None, 0.0)), numpy_value(f, u0))
    assert primitives(lambda u: g(u, None, 0.0), u0)["dynamic_update_slice"] == len(boxes)


def test_constant_buffers_stay_numpy_constants():
    """Writes of constants into constants stay NumPy: usable as indices and sizes."""
    def f(du, u, p, t):
        index = np.zeros(3, dtype=int)
        index[1:] += np.array([1, 1])
        index[2] += 1
        du[:] = u[index]

    u0 = RNG.standard_normal(3)
    assert np.array_equal(_translate(f, u0), u0[[0, 1, 2]])


def test_dtype_changing_increment_takes_the_general_path():
    def f(du, u, p, t):
        out = np.zeros(4, dtype=np.float32)
        out[1:] += u[:3].astype(np.float32)
        out += 0.5
        du[:] = out

    u0 = RNG.standard_normal(4).astype(np.float32)
    assert np.array_equal(_translate(f, u0), numpy_value(f, u0).astype(np.float32))


def test_increment_of_unwritten_du_is_an_error():
    def f(du, u, p, t):
        du[1:] += u[:-1]
        du[0] = u[0]

    with pytest.raises(TranslationError, match=r"reading du\[1\] before f has written it"):
        to_jax(f, np.ones(4))(np.ones(4), None, 0.0)


def test_du_written_by_increments_counts_as_written():
    def f(du, u, p, t):
        du[:2] = u[:2]
        du[2:] = 0.0
        du[1:] += u[:-1]

    u0 = RNG.standard_normal(5)
    assert np.array_equal(_translate(f, u0), numpy_value(f, u0))


def test_increment_of_a_closure_buffer_read_before_written_warns():
    state = np.zeros(4)

    def f(du, u, p, t):
        state[1:] += u[:3]
        du[:] = state

    with pytest.warns(UserWarning, match="closure variable 'state' of .* is read before it is written"):
        to_jax(f, np.ones(4))(np.ones(4), None, 0.0)
    assert np.array_equal(state, np.zeros(4))


def test_written_closure_buffer_does_not_warn():
    work = np.zeros(4)

    def f(du, u, p, t):
        work[:] = u
        work[1:] += u[:3]
        du[:] = work

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = _translate(f, np.arange(4.0))
    assert np.array_equal(value, [0.0, 1.0, 3.0, 5.0])


def test_row_by_row_loops_are_joined_in_bounded_pieces():
    """More writes and increments than the tiling keeps apart (MAX_PARTS) still add up."""
    n = 70

    def f(du, u, p, t):
        out = np.empty(n)
        for i in range(n):
            out[i] = u[i] * i
        for i in range(n - 1):
            out[i + 1] += u[i]
        du[:] = out

    u0 = RNG.standard_normal(n)
    expected = numpy_value(f, u0)
    actual = np.asarray(jax.jit(to_jax(f, u0))(u0, None, 0.0))
    assert np.max(np.abs(actual - expected)) <= 1e-13 * np.max(np.abs(expected))
