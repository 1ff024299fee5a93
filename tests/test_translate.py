"""Tests of ``dxdt.sensitivity.to_jax``: the in-place NumPy to JAX translation.

Every idiom of the corpus (``idioms.py``) and every problem of ``dxdt.problems`` is
translated and checked against the NumPy function itself: values to 1e-13, ``jax.jvp``
and ``jax.vjp`` with respect to ``u`` and ``p`` against central finite differences of the
NumPy function, ``jax.jit`` and ``jax.vmap``, reproducibility, and that the user's
function and arrays are left bitwise unchanged. Then: why closure duplication matters,
every ``TranslationError`` path with its message, and the light import.
"""

import math
import subprocess
import sys
import types

import numpy as np
import scipy.special
import pytest
from numpy import zeros as numpy_zeros

import dxdt
import idioms
from dxdt import sensitivity as sens
from dxdt.sensitivity import TranslationError, to_jax
from dxdt.sensitivity._jax import load_jax

jax, jnp = load_jax()
tree_map = jax.tree_util.tree_map
RNG = np.random.default_rng(7)


def _inplace(idiom):
    return idiom.f.__code__.co_argcount != 3 if hasattr(idiom.f, "__code__") else True


def numpy_rhs(idiom, u, p, t=None):
    """The NumPy right-hand side as written, on a ``du`` full of NaN."""
    t = idiom.t if t is None else t
    if not _inplace(idiom):
        return np.asarray(idiom.f(np.array(u), p, t), dtype=float)
    du = np.full(np.shape(u), np.nan)
    idiom.f(du, np.array(u), p, t)
    return du


def _close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(np.max(np.abs(expected)), 1e-300)
    return np.max(np.abs(actual - expected)) <= rtol * scale


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _dot(a, b):
    return sum(float(np.vdot(np.asarray(x), np.asarray(y))) for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module", params=idioms.NAMES)
def case(request):
    """An idiom (or a problem of dxdt.problems) with its translation and NumPy value."""
    idiom = idioms.build(request.param)
    g = to_jax(idiom.f, idiom.u0, idiom.p)
    return idiom, g, numpy_rhs(idiom, idiom.u0, idiom.p)


def test_value_matches_numpy_and_is_reproducible(case):
    idiom, g, expected = case
    first = np.asarray(g(idiom.u0, idiom.p, idiom.t))
    assert first.dtype == np.float64
    assert _close(first, expected, 1e-13), np.max(np.abs(first - expected))
    again = np.asarray(to_jax(idiom.f, idiom.u0, idiom.p)(idiom.u0, idiom.p, idiom.t))
    assert np.array_equal(first, again)
    assert np.array_equal(first, np.asarray(g(idiom.u0, idiom.p, idiom.t)))


@pytest.mark.parametrize("wrt", ["u", "p"])
def test_jvp_and_vjp_match_finite_differences(case, wrt):
    idiom, g, _ = case
    u, p, t = idiom.u0, idiom.p, idiom.t
    if wrt == "p" and not _leaves(p):
        pytest.skip("no parameters")
    x = u if wrt == "u" else p
    v = tree_map(lambda leaf: RNG.standard_normal(np.shape(leaf)), x)
    h = 1e-6 * (1.0 + max(np.max(np.abs(leaf)) for leaf in _leaves(x)))

    def numpy_at(step):
        moved = tree_map(lambda leaf, d: leaf + step * d, x, v)
        return numpy_rhs(idiom, moved, p) if wrt == "u" else numpy_rhs(idiom, u, moved)

    fd = (numpy_at(h) - numpy_at(-h)) / (2 * h)

    xj = tree_map(lambda leaf: jnp.asarray(leaf, dtype=jnp.float64), x)
    vj = tree_map(lambda leaf: jnp.asarray(leaf, dtype=jnp.float64), v)
    g_of_x = jax.jit((lambda y: g(y, p, t)) if wrt == "u" else (lambda q: g(u, q, t)))
    value, tangent = jax.jit(lambda x, v: jax.jvp(g_of_x, (x,), (v,)))(xj, vj)
    scale = np.linalg.norm(fd) + 1e-9
    assert np.linalg.norm(np.asarray(tangent) - fd) <= 1e-6 * scale

    w = RNG.standard_normal(np.shape(value))
    (cotangent,) = jax.jit(lambda x, w: jax.vjp(g_of_x, x)[1](w))(xj, jnp.asarray(w))
    assert abs(_dot(cotangent, v) - float(np.vdot(w, fd))) <= 1e-6 * np.linalg.norm(w) * scale


def _reachable_arrays(f):
    """Arrays in ``f``'s closure cells, referenced globals, partial arguments and ``self``."""
    found = []

    def visit(obj, depth):
        if isinstance(obj, np.ndarray):
            found.append(obj)
        elif depth > 3 or isinstance(obj, (types.ModuleType, type, str, bytes)):
            return
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
        elif isinstance(obj, types.FunctionType):
            for cell in obj.__closure__ or ():
                visit(cell.cell_contents, depth + 1)
            for name in obj.__code__.co_names:
                if name in obj.__globals__:
                    visit(obj.__globals__[name], depth + 1)
        elif hasattr(obj, "__dict__") and not callable(getattr(obj, "tocsr", None)):
            visit(vars(obj), depth + 1)
            visit(getattr(obj, "__func__", None), depth + 1)
            visit(getattr(obj, "args", None), depth + 1)
            visit(getattr(obj, "keywords", None), depth + 1)

    visit(f, 0)
    return found


def _references(f):
    """The objects ``f``'s closure cells and referenced globals point to (by identity)."""
    fn = getattr(f, "__func__", f)
    if not isinstance(fn, types.FunctionType):
        return []
    refs = [cell.cell_contents for cell in fn.__closure__ or ()]
    return refs + [fn.__globals__[n] for n in fn.__code__.co_names if n in fn.__globals__]


def test_jit_vmap_and_user_state_unchanged(case):
    idiom, g, expected = case
    u, p, t = idiom.u0, idiom.p, idiom.t
    arrays = idiom.arrays + _reachable_arrays(idiom.f) + [u] + [x for x in _leaves(p) if isinstance(x, np.ndarray)]
    snapshots = [a.copy() for a in arrays]
    references = _references(idiom.f)
    closure = getattr(getattr(idiom.f, "__func__", idiom.f), "__closure__", None)

    assert _close(jax.jit(g)(u, p, t), expected, 1e-12)
    batch = np.stack([u * (1.0 + 0.01 * k) for k in range(3)])
    batched = jax.jit(jax.vmap(g, in_axes=(0, None, None)))(batch, p, t)
    jax.jit(jax.jacrev(g, argnums=(0, 1)))(u, tree_map(jnp.asarray, p), t)

    assert all(np.array_equal(a, s) for a, s in zip(arrays, snapshots))
    assert all(a is b for a, b in zip(_references(idiom.f), references))
    assert getattr(getattr(idiom.f, "__func__", idiom.f), "__closure__", None) is closure
    for k in range(3):
        assert _close(batched[k], numpy_rhs(idiom, batch[k], p), 1e-12)


# ------------------------------------------------- NumPy functions, methods and views
_A = np.arange(16.0).reshape(4, 4) / 10 + np.eye(4)
_S, _M = np.zeros(4), np.zeros((4, 4))


def _sum_out(du, u, p, t):
    np.sum(np.outer(u, u), axis=0, out=du)
    du += np.cumsum(u)


def _sort_method_and_fill(du, u, p, t):
    _S[:] = u
    _S.sort()
    du.fill(0.0)
    du[:] += _S * p


def _split_views(du, u, p, t):
    first, second = np.split(du, 2)
    first[:] = u[:2] * p
    second[...] = u[2:] ** 2


def _expand_and_squeeze_views(du, u, p, t):
    wide = np.expand_dims(du, 0)
    wide[0] = u
    np.squeeze(wide)[:] *= p


def _ufunc_methods(du, u, p, t):
    du[:] = np.maximum.accumulate(u) + np.add.reduce(u) + np.multiply.outer(u, u).sum(1)


def _linear_algebra(du, u, p, t):
    du[:] = np.linalg.solve(_A, u) + np.kron(u[:2], u[2:]) + np.interp(u, [0.0, 1.0, 2.0], [0.0, 2.0, 1.0])


def _inplace_functions(du, u, p, t):
    _M[:] = np.outer(u, u)
    np.fill_diagonal(_M, p)
    du[:] = _M @ u
    np.put(du, [0, 2], u[[1, 3]] * p)
    np.putmask(du, np.array([0, 1, 0, 1], bool), -u)


def _tuple_out(du, u, p, t):
    whole, rest = np.zeros(4), np.zeros(4)
    np.divmod(u * 3, 1.0, out=(whole, rest))
    fraction, _ = np.modf(u * 2.5)
    du[:] = rest * u + fraction + whole * p


def _constructors(du, u, p, t):
    filled, ones, blank = np.full_like(u, p), np.ones_like(u), np.empty_like(u)
    blank[:] = u
    du[:] = filled * ones * blank + np.full(4, p * 2)


def _copy_semantics(du, u, p, t):
    transposed = u.reshape(2, 2).T.ravel()  # not contiguous: ravel copies
    transposed[0] = 100.0
    gathered = u[[0, 1]]  # advanced indexing copies
    gathered[:] = 0.0
    du[:] = transposed * p + u + gathered.sum()
    du.reshape(2, 2).T[:] += u.reshape(2, 2)


def _traced_masks_and_indices(du, u, p, t):
    du[:] = u
    du[u > 0.7] = 0.5 * p
    du *= u[np.argmax(u)]


def _statistics(du, u, p, t):
    du[:] = (u - u.mean()) / u.std() + u.var() + u.clip(0.3, 0.8) + np.prod(u) + u.max() * p


_F = np.zeros((2, 2))


def _flip_views(du, u, p, t):
    """np.flip/flipud/fliplr/rot90 are views: writes through them land in the base (they
    were once copies, and the writes were silently dropped)."""
    np.flip(_S)[:] = u
    np.rot90(_F)[...] = u.reshape(2, 2)
    np.fliplr(_F)[0] *= p
    du[:] = 0.0
    np.flipud(du)[:2] = p * u[:2]
    du += _S * _F.ravel()


def _named_tuple_results(du, u, p, t):
    """np.linalg results that are named tuples (slogdet, eigh, qr)."""
    sign, logdet = np.linalg.slogdet(_A + np.diag(u))
    values, _ = np.linalg.eigh(np.outer(u, u) + np.eye(4))
    q, r = np.linalg.qr(_A + np.diag(u))
    du[:] = sign * logdet * p + values + np.diag(r) * np.abs(q[0])


def _put_modes(du, u, p, t):
    du[:] = 0.0
    np.put(du, [5, -6], p * u[:2], mode="wrap")  # positions 1, 2
    np.put(du, [9], u[3], mode="clip")  # position 3


def _rounding_and_segment_sums(du, u, p, t):
    """np.fix (jax.numpy has none: jnp.trunc), ufunc.reduceat with indices as a list, and
    scipy.special.zeta(x, q) (a Python function calling the private ufunc _zeta)."""
    segments = np.add.reduceat(u * u, [0, 2])
    du[:] = np.fix(3 * u) * u + segments.sum() * p + scipy.special.zeta(2.0 + u, 1.0 + u)


@pytest.mark.parametrize(
    "f",
    [_sum_out, _sort_method_and_fill, _split_views, _expand_and_squeeze_views, _ufunc_methods,
     _linear_algebra, _inplace_functions, _tuple_out, _constructors, _copy_semantics,
     _traced_masks_and_indices, _statistics, _flip_views, _named_tuple_results, _put_modes,
     _rounding_and_segment_sums],
    ids=lambda f: f.__name__.strip("_"),
)  # fmt: skip
def test_numpy_functions_methods_and_views(f):
    u, p = np.array([0.3, 0.9, 0.5, 0.75]), 1.3
    idiom = idioms.Idiom(f.__name__, f, u, p, t=0.0)
    g = to_jax(f, u, p)
    assert _close(g(u, p, 0.0), numpy_rhs(idiom, u, p), 1e-13)
    h = 1e-6
    columns = [(numpy_rhs(idiom, u + h * e, p) - numpy_rhs(idiom, u - h * e, p)) / (2 * h) for e in np.eye(4)]
    assert np.allclose(jax.jit(jax.jacfwd(g))(u, p, 0.0), np.stack(columns, axis=1), rtol=1e-6, atol=1e-8)


_Z = np.zeros(4, complex)


def _parts_written(du, u, p, t):
    du[:] = 0
    du.real[:] = -p[0] * u.imag
    du.imag[1:][0] = p[1] * u.real[1]  # a view of a view of a part
    np.imag(du)[2:] = p[1] * np.real(u)[2:]


def _parts_of_a_buffer(du, u, p, t):
    part = _Z.real  # read after the write below: a view sees it
    _Z[:] = u * p[0]
    _Z.imag[:] = -u.imag
    du[:] = -1j * _Z + part


def _parts_updated_and_set(du, u, p, t):
    du[:] = 0
    du.imag += p[1] * u.real
    du.real -= p[0] * u.imag
    du.real[0] *= 2
    du.imag = du.imag + u.real  # the setter


@pytest.mark.parametrize("f", [_parts_written, _parts_of_a_buffer, _parts_updated_and_set],
                         ids=lambda f: f.__name__.strip("_"))
def test_real_and_imaginary_parts_are_views(f):
    """``z.real``, ``z.imag``, ``np.real(z)``, ``np.imag(z)`` of a complex array are views
    (writable, and seeing later writes), as in NumPy; they once were copies, and writes
    through them were silently dropped."""
    p = np.array([0.7, 1.3])
    u0 = np.linspace(0.2, 1.1, 4) + 1j * np.linspace(-0.5, 0.5, 4)
    g = to_jax(f, u0, p)
    for u in (u0, 2 * u0[::-1]):
        expected = np.empty(4, complex)
        f(expected, u.copy(), p, 0.0)
        np.testing.assert_allclose(g(u, p, 0.0), expected, rtol=1e-14)


def test_setting_the_imaginary_part_of_a_real_array_raises_as_in_numpy():
    def f(du, u, p, t):
        du[:] = u
        du.imag = u

    with pytest.raises(TypeError, match="array does not have imaginary part to set"):
        f(np.zeros(2), np.ones(2), 1.0, 0.0)
    with pytest.raises(TypeError, match="array does not have imaginary part to set"):
        to_jax(f, np.ones(2), 1.0)(np.ones(2), 1.0, 0.0)


def test_a_debugging_print_with_a_format_spec_runs_when_f_is_traced(capsys):
    def f(du, u, p, t):
        print(f"t={t:.3f} p={p[0]:.2f} n={u.size:d} scale={3.14159:.2f}")
        du[:] = -p[0] * u

    g = to_jax(f, np.ones(2), np.array([0.5]))
    np.testing.assert_allclose(g(np.array([1.0, 2.0]), np.array([0.5]), 0.0), [-0.5, -1.0])
    printed = capsys.readouterr().out
    assert "TracedArray(shape=(), dtype=float64, role=input)" in printed  # t and p[0] are traced
    assert "n=2 scale=3.14" in printed


def test_jit_traces_f_once():
    idiom = idioms.lotka_volterra()
    g = to_jax(idiom.f, idiom.u0, idiom.p)
    assert g.n_traces == 0
    jitted = jax.jit(g)
    for k in range(3):
        jitted(idiom.u0 + k, idiom.p, 0.1 * k)
    assert g.n_traces == 1
    g(idiom.u0, idiom.p, 0.0)
    assert g.n_traces == 2


def test_float32_state_stays_float32():
    idiom = idioms.roll_periodic()
    u = idiom.u0.astype(np.float32)
    du = to_jax(idiom.f, u, idiom.p)(u, np.float32(idiom.p), np.float32(0.0))
    assert du.dtype == np.float32


def test_sparse_matrix_products():
    import scipy.sparse as sp

    L = sp.csr_matrix(sp.diags([1.0, -2.0, 3.0], [-1, 0, 2], shape=(6, 6)))
    C = sp.random_array((6, 6), density=0.4, rng=3, format="csr")  # not banded

    def f(du, u, p, t):
        du[:] = (L.T @ u) * p + L * u
        du += np.asarray(u @ L.toarray())
        du.reshape(3, 2)[:] += (C[:3, :3] @ u.reshape(3, 2)) + (u.reshape(2, 3) @ L[:3, :3]).T

    u = np.linspace(0.0, 1.0, 6)
    du = np.zeros(6)
    f(du, u, 2.0, 0.0)
    assert _close(to_jax(f, u, 2.0)(u, 2.0, 0.0), du, 1e-14)


def test_products_and_scalings_of_constant_sparse_matrices_stay_sparse():
    import scipy.sparse as sp

    S = sp.csr_matrix(np.array([[1.0, 0, 2], [0, -1.0, 0], [3.0, 0, -2]]))
    A = sp.csr_array(S)

    def f(du, u, p, t):
        du[:] = ((S @ S) @ u) * p + (2.0 * S) @ u - (-S) @ u + (S * S) @ u + (A @ A) @ u + (A * 0.5) @ u

    u = np.array([0.2, 0.5, -0.3])
    du = np.zeros(3)
    f(du, u, 0.1, 0.0)
    assert _close(to_jax(f, u, 0.1)(u, 0.1, 0.0), du, 1e-14)


def test_str_of_a_closure_constant_is_numpys():
    """``float(str(c[0]))`` of a closure constant read "TracedArray(shape=...)" (ValueError
    from float); a traced value still prints as its description."""
    c = np.array([0.25, 4.0])

    def f(du, u, p, t):
        assert str(u[0]).startswith("TracedArray")
        du[:] = -float(str(c[0])) * u * float(str(c[1:].sum()))

    u = np.array([1.0, 2.0])
    assert _close(to_jax(f, u, None)(u, None, 0.0), -u, 1e-15)


def test_memoising_by_t_is_refused_by_name():
    """``if t not in cache`` raised ``TypeError: unhashable type: 'TracedArray'``; a scalar
    constant still hashes as its value, an array as NumPy refuses it."""
    cache, weights = {}, np.array([0.5, 2.0])

    def memo(du, u, p, t):
        if t not in cache:
            cache[t] = np.sin(3 * t)
        du[:] = -u + cache[t]

    u = np.array([1.0, 0.5])
    with pytest.raises(TranslationError, match=r"(?s)dict key or set member \(hashing\) on a value that depends.*"
                                               r"test_translate\.py:\d+.*memoising"):
        to_jax(memo, u, None)(u, None, 0.3)

    def constant_keys(du, u, p, t):
        table = {0.5: 1.0, 2.0: -1.0}
        du[:] = u * table[weights[0]] + table[weights[1]]
        with pytest.raises(TypeError, match="unhashable"):
            hash(weights)

    expected = np.zeros(2)
    constant_keys(expected, u, None, 0.0)
    assert _close(to_jax(constant_keys, u, None)(u, None, 0.0), expected, 1e-15)


def test_sparse_powers_work_and_sparse_solvers_are_refused_by_name():
    """A constant power of a sparse matrix is SciPy's (it raised TypeError for ``**``);
    ``spsolve``, ``splu(M).solve`` and ``sparse.diags(u)`` on traced values raised
    SciPy's own ValueError/TypeError; now a TranslationError names each, with the line.
    On constant values they run as SciPy's."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    L = sp.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(4, 4), format="csr")
    M = (2.0 * sp.eye(4) + sp.diags([0.5, 0.5], [-1, 1], shape=(4, 4))).tocsc()
    lu = spla.splu(M)
    shift = np.ones(4)

    def powers(du, u, p, t):
        du[:] = (L**2) @ u * p + lu.solve(shift) + spla.spsolve(M, shift) + sp.diags(shift) @ u

    u = np.linspace(0.5, 1.0, 4)
    du = np.zeros(4)
    powers(du, u, 0.7, 0.0)
    assert _close(to_jax(powers, u, 0.7)(u, 0.7, 0.0), du, 1e-14)
    for call, match in [(lambda u: spla.spsolve(M, u), r"scipy\.sparse\.linalg\.spsolve on values that depend"),
                        (lambda u: lu.solve(u), r"SuperLU\.solve .*on values that depend"),
                        (lambda u: sp.diags(u) @ u, r"scipy\.sparse\.diags on values that depend"),
                        (lambda u: (L ** u[0]) @ u, "power of a SciPy sparse matrix")]:
        def refused(du, u, p, t, call=call):
            du[:] = call(u)

        with pytest.raises(TranslationError, match=r"(?s)" + match + r".*test_translate\.py:\d+"):
            to_jax(refused, u, 0.7)(u, 0.7, 0.0)


def test_scipy_special_functions_are_translated_by_jax_scipy_special():
    import scipy.special as special

    def f(du, u, p, t):
        du[:] = (special.expit(u) * p + special.erf(u) - special.xlogy(u, u + 2.0) + special.gammaln(u + 1.0)
                 + special.digamma(u + 1.0))  # digamma is the ufunc "psi"

    u = np.array([0.1, 0.7])
    du = np.zeros(2)
    f(du, u, 1.5, 0.0)
    assert _close(to_jax(f, u, 1.5)(u, 1.5, 0.0), du, 1e-14)

    def bessel(du, u, p, t):
        du[:] = special.jv(1, u)

    with pytest.raises(TranslationError, match=r"scipy\.special\.jv.*counterpart"):
        to_jax(bessel, u, 1.5)(u, 1.5, 0.0)


def test_a_ufunc_at_without_a_scatter_needs_constant_indices():
    """``np.divide.at`` (applied in rounds of distinct positions) with indices computed in
    ``f``: a TranslationError naming the line (it was a raw AttributeError)."""
    def f(du, u, p, t):
        du[:] = 1.0
        np.divide.at(du, np.argsort(u), u)

    with pytest.raises(TranslationError, match=r"np.divide.at with indices that depend on u.*np.divide.at\(du"):
        to_jax(f, np.array([0.3, 0.1, 0.2]))(jnp.array([0.3, 0.1, 0.2]), None, 0.0)


def test_random_numbers_inside_f_are_refused():
    def f(du, u, p, t):
        du[:] = -u + 0.1 * np.random.normal(size=u.shape)

    with pytest.raises(TranslationError, match=r"np\.random\.normal inside f.*constant"):
        to_jax(f, np.ones(2), None)(np.ones(2), None, 0.0)


def test_arrays_made_by_numpy_constructors_inside_f_hold_traced_values():
    def f(du, u, p, t):
        pair = numpy_zeros(2)  # imported by name
        pair[0], pair[1] = u[1] * p, -u[0]
        same = np.asarray(pair)  # no copy: the same array, as in NumPy
        same[0] += 1.0
        du[:] = np.array([pair[1], pair[0]]) + np.full(2, p) * u

    u = np.array([0.5, 2.0])
    g = to_jax(f, u, 3.0)
    assert _close(g(u, 3.0, 0.0), [-0.5 + 1.5, 7.0 + 6.0], 1e-15)
    assert np.allclose(jax.jacfwd(g, argnums=1)(u, 3.0, 0.0), [0.5, 2.0 + 2.0])


def test_wrong_number_of_parameters_is_a_type_error():
    with pytest.raises(TypeError, match="positional parameters"):
        to_jax(lambda du, u: None, np.ones(2), None)


def test_bad_arguments_of_to_jax_are_named_before_any_call():
    """``to_jax`` took ``f=None``, ``u0=None`` and ``duplicate_closure='x'`` and failed (or
    not) only when the result was called."""
    f = lambda du, u, p, t: np.negative(u, out=du)  # noqa: E731
    with pytest.raises(TypeError, match="f must be callable"):
        to_jax(None, np.ones(2))
    with pytest.raises(TypeError, match="u0 must be an example state"):
        to_jax(f, None)
    with pytest.raises(TypeError, match="duplicate_closure must be True or False"):
        to_jax(f, np.ones(2), duplicate_closure="x")
    with pytest.raises(TypeError, match="p must be .* an array of dtype object: convert it"):
        to_jax(f, np.ones(2), np.array([1.0, 2.0], dtype=object))


# ------------------------------------------------------------- why duplication matters
_tmp = np.zeros(3)


def _buffered(du, u, p, t):
    _tmp[:] = p[0] * u
    du[:] = _tmp * u


def test_duplicating_closure_buffers_gives_the_right_derivative():
    u, p = np.array([1.0, 2.0, 3.0]), np.array([0.5])
    du = np.zeros(3)
    _buffered(du, u, p, 0.0)  # the buffer now holds the values of this very call
    exact = u**2  # d du / d p0

    stale = jnp.asarray(_tmp.copy())

    def naive(u, p, t):  # a translation that reads the closure buffer as a constant
        return stale * u

    naive_derivative = jax.jacfwd(naive, argnums=1)(u, p, 0.0)[:, 0]
    assert np.allclose(naive(u, p, 0.0), du)  # the value is right ...
    assert not np.allclose(naive_derivative, exact, atol=0.1)  # ... the derivative is not

    g = to_jax(_buffered, u, p)
    assert np.allclose(jax.jacfwd(g, argnums=1)(u, p, 0.0)[:, 0], exact, rtol=1e-14)

    with pytest.raises(TranslationError, match=r"global variable '_tmp' of _buffered") as err:
        to_jax(_buffered, u, p, duplicate_closure=False)(u, p, 0.0)
    assert "duplicate_closure=True" in str(err.value)
    assert f"{__file__}:" in str(err.value)


def test_duplicate_closure_false_reads_closure_arrays_as_constants():
    A = np.array([[1.0, 2.0], [3.0, 4.0]])
    scale = np.zeros(2)

    def f(du, u, p, t):
        scale[:] = 2.0  # a constant write: allowed, and never reaches the user's array
        np.matmul(A * scale, u, out=du)

    g = to_jax(f, np.ones(2), None, duplicate_closure=False)
    assert np.allclose(jax.jacfwd(g)(np.ones(2), None, 0.0), 2 * A)
    assert not scale.any()


# ------------------------------------------------------------------- translation errors
def _raises(f, *, match, u=None, p=None):
    u = np.array([0.5, 1.5]) if u is None else u
    with pytest.raises(TranslationError, match=match) as err:
        to_jax(f, u, p)(u, p, 0.0)
    message = str(err.value)
    line = f.__code__.co_firstlineno
    assert any(f"{f.__code__.co_filename}:{line + k}" in message for k in range(1, 6)), message
    return message


def test_math_function_without_a_numpy_counterpart_on_traced_value():
    def f(du, u, p, t):
        du[:] = math.fsum(u)

    message = _raises(f, match=r"float\(\)")
    assert "math.fsum(u)" in message and "np.sum(u)" in message and "np.fsum" not in message


def test_python_if_on_traced_value():
    def f(du, u, p, t):
        if u[0] > 0:
            du[:] = u

    message = _raises(f, match="Python if/while")
    assert "np.where" in message


def test_builtin_max_over_elements_points_to_np_max():
    """max(u) compares elements with Python: the message spoke of if/while only."""
    def f(du, u, p, t):
        du[:] = -u * max(u)

    message = _raises(f, match=r"builtins max, min, sorted")
    assert "np.max(u)" in message


def test_float_of_traced_value():
    def f(du, u, p, t):
        du[:] = float(u[0])

    assert "NumPy functions" in _raises(f, match=r"float\(\)")


def test_int_of_traced_value_as_range_bound():
    def f(du, u, p, t):
        for i in range(p):
            du[i] = u[i]

    assert "shapes" in _raises(f, match="range bound", p=2)


def test_unsupported_numpy_functions():
    def nonzero(du, u, p, t):
        du[:] = np.nonzero(u > 1)[0]

    def unique(du, u, p, t):
        du[:] = np.unique(u)

    def missing(du, u, p, t):
        du[:] = np.busday_count(u, u)

    def one_argument_where(du, u, p, t):
        du[:] = np.where(u > 1)[0]

    def unsupported_option(du, u, p, t):  # second-order edges are translated for uniform spacings only
        du[:] = np.gradient(u, np.linspace(0.0, 1.0, u.size) ** 2, edge_order=2)

    assert "np.where" in _raises(nonzero, match="np.nonzero")
    assert "coordinate arrays" in _raises(unsupported_option, match="np.gradient with these arguments")
    _raises(unique, match="np.unique")
    _raises(missing, match="no jax.numpy counterpart")
    _raises(one_argument_where, match=r"np.where\(condition\) with one argument")


def test_scipy_functions_without_a_translation_are_named():
    """A SciPy function or distribution method with no JAX translation, called on traced
    values, is refused naming it (module attribute or imported name), not with the generic
    conversion error; on constants it is SciPy's."""
    import scipy.integrate
    import scipy.stats
    from scipy.integrate import simpson
    from scipy.stats import lognorm

    def module_function(du, u, p, t):
        du[:] = scipy.integrate.simpson(u) * p[0]

    def imported_function(du, u, p, t):
        du[:] = simpson(u) * p[0]

    def distribution_method(du, u, p, t):
        du[:] = scipy.stats.lognorm.logpdf(u, 0.5) * p[0]

    def frozen_distribution(du, u, p, t):
        du[:] = lognorm(0.5).pdf(u) * p[0]

    def on_constants(du, u, p, t):
        du[:] = -u * simpson(np.ones(3)) * lognorm(0.5).pdf(1.0) * scipy.linalg.solveh_banded(
            np.array([[0.0, 1.0], [4.0, 4.0]]), np.ones(2))[0]

    _raises(module_function, match=r"scipy.integrate.simpson on values that depend on u, p or t")
    _raises(imported_function, match=r"scipy.integrate.simpson on values that depend on u, p or t")
    _raises(distribution_method, match=r"scipy.stats.lognorm.logpdf on values")
    _raises(frozen_distribution, match=r"scipy.stats.lognorm.pdf on values")
    u, p = np.array([0.5, 1.0]), np.array([0.3])
    g = to_jax(on_constants, u, p)
    du = np.empty(2)
    on_constants(du, u, p, 0.0)
    np.testing.assert_allclose(g(u, p, 0.0), du, rtol=1e-14)


def test_writing_into_u_is_refused():
    def clip_in_place(du, u, p, t):  # a user's "keep it positive", which changes the solver's state
        np.maximum(u, 0.0, out=u)
        du[:] = -u

    _raises(clip_in_place, match="writing into u, the state f is given")


def test_traced_boolean_mask_indexing():
    def f(du, u, p, t):
        du[:] = 0.0
        du[u > 1] = u[u > 1]

    assert "np.where" in _raises(f, match="boolean mask")


def test_an_index_array_in_p_is_refused_by_the_derivatives_naming_the_line():
    """``p = {"k": 1.3, "idx": np.array([0, 2])}`` and ``du[p["idx"]] -= ...``: the JAX solve
    keeps the integers, but a derivative with respect to p takes p's leaves as floats, and
    JAX's "Indexer must have integer or boolean type" came out, naming nothing of f's."""
    def f(du, u, p, t):
        du[:] = -p["k"] * u
        du[p["idx"]] -= u[p["idx"]] ** 2

    p = {"k": 1.3, "idx": np.array([0, 2])}
    prob = dxdt.ODEProblem(f, np.array([1.0, 0.5, 0.2]), (0.0, 1.0), p)
    sol = dxdt.solve(prob, backend="jax", saveat=[1.0])
    np.testing.assert_allclose(sol.u, dxdt.solve(prob, saveat=[1.0]).u, rtol=1e-12)
    for mode in ("forward", "reverse"):
        with pytest.raises(TranslationError, match=r"(?s)integer index array held in p.*test_translate.py:\d+"
                                                   r".*Keep index arrays out of p"):
            sens.gradient(lambda u: np.sum(u**2), prob, saveat=[1.0], mode=mode)


def test_du_not_fully_written():
    def f(du, u, p, t):
        du[0] = u[0]

    with pytest.raises(TranslationError, match=r"f \(.*test_translate.py:\d+\) did not write du\[1\]"):
        to_jax(f, np.ones(2), None)(np.ones(2), None, 0.0)


def test_du_read_before_written():
    def f(du, u, p, t):
        du += u

    assert "du[:] = 0.0" in _raises(f, match=r"reading du\[0\] before f has written it")


def test_write_into_plain_numpy_array():
    def f(du, u, p, t):
        local = np.frombuffer(bytearray(16))  # a NumPy array the translation does not make
        np.multiply(u, 2.0, out=local)
        du[:] = local

    assert "np.zeros" in _raises(f, match="out=")


def test_slice_bound_depending_on_p():
    def f(du, u, p, t):
        du[:] = 0.0
        du[: p[0]] = 1.0

    _raises(f, match="slice bound", p=np.array([1]))


def test_unsupported_array_method():
    def f(du, u, p, t):
        du[:] = u.view(np.int64)

    _raises(f, match=r"ndarray.view")


def test_closure_arrays_whose_semantics_the_translation_would_lose_are_refused():
    """An np.matrix's ``*`` became elementwise and a masked array's sum counted the masked
    entry; writes through a closure view of another dtype (``Z.real``) never reached ``Z``:
    all silently wrong on the JAX backend."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        matrix = np.matrix([[-1.0, 0.2], [0.1, -1.0]])
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    Z = np.zeros(2, complex)
    real_part = Z.real

    def uses_matrix(du, u, p, t):
        du[:] = np.asarray(matrix * u[:, None])[:, 0]

    def uses_masked(du, u, p, t):
        du[:] = -masked.sum() * u

    def writes_a_real_view(du, u, p, t):
        real_part[:] = u
        du[:] = -np.abs(Z) ** 2

    for f, match in ((uses_matrix, r"'matrix'.*numpy.matrix.*np.asarray\(m\)"),
                     (uses_masked, r"'masked'.*MaskedArray.*filled"),
                     (writes_a_real_view, r"'real_part'.*view of another array.*float64 of complex128")):
        with pytest.raises(TranslationError, match=match):
            to_jax(f, np.array([0.3, 0.9]), None)(np.array([0.3, 0.9]), None, 0.0)


def test_a_ufunc_masked_by_where_has_finite_reverse_derivatives_at_its_singular_points():
    """``np.log(u, out=buf, where=u > 0)`` at u = 0: NumPy never evaluates the masked entry,
    the translation did, and its reverse derivative was 0 * inf = NaN (forward was right)."""
    jax, jnp = load_jax()
    logu, ratio = np.zeros(3), np.zeros(3)

    def gompertz(du, u, p, t):
        np.log(u, out=logu, where=u > 0)
        np.divide(p, u, out=ratio, where=u != 0)
        du[:] = -u * logu + 1e-3 * ratio * u**2

    u0 = np.array([0.2, 0.5, 0.0])
    g = to_jax(gompertz, u0, np.ones(3))
    forward = jax.jacfwd(lambda x: g(x, np.ones(3), 0.0))(jnp.asarray(u0))
    reverse = jax.jacrev(lambda x: g(x, np.ones(3), 0.0))(jnp.asarray(u0))
    assert np.all(np.isfinite(reverse))
    np.testing.assert_allclose(reverse, forward, rtol=1e-14)
    np.testing.assert_allclose(np.diag(reverse)[:2], -(np.log(u0[:2]) + 1.0) + 1e-3, rtol=1e-14)


@pytest.mark.parametrize("ufunc", [np.add, np.subtract, np.multiply, np.maximum, np.minimum])
def test_ufunc_at_with_a_slice_in_the_index_and_repeated_rows(ufunc):
    """NumPy takes slices in ``ufunc.at``'s index (a raw JAX TypeError before); repeated
    rows accumulate, as unbuffered updates do."""
    def f(du, u, p, t):
        du[:] = 1.5
        ufunc.at(du.reshape(2, 2), (np.array([0, 0, 1]), slice(None)), u.reshape(2, 2)[[0, 1, 1]] * p)

    u, p = np.array([0.3, 0.9, 0.5, 0.7]), np.array(2.0)
    expected = np.empty(4)
    f(expected, u, p, 0.0)
    np.testing.assert_allclose(np.asarray(to_jax(f, u, p)(u, p, 0.0)), expected, rtol=1e-15)


def test_import_does_not_load_jax():
    code = "import dxdt, dxdt.sensitivity, sys; assert 'jax' not in sys.modules, 'jax imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_power_with_a_zero_exponent_has_a_zero_derivative_at_zero():
    """A mass-action rate ``prod(u[react] ** orders)`` with a zero order on a species at 0:
    NumPy's ``0 ** 0`` is the constant 1, so its derivative is 0, where
    ``jax.numpy.power``'s ``y x ** (y - 1)`` is NaN."""
    orders = np.array([[1.0, 0.0], [0.0, 2.0]])
    rates = np.zeros(2)

    def f(du, u, p, t):
        np.prod(u ** orders, axis=1, out=rates)
        du[:] = -p * rates

    u = np.array([0.5, 0.0])
    g = to_jax(f, u, np.ones(2))
    J = np.asarray(jax.jacfwd(lambda x: g(x, jnp.ones(2), 0.0))(jnp.asarray(u)))
    np.testing.assert_array_equal(J, [[-1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(jax.jacrev(lambda x: g(x, jnp.ones(2), 0.0))(jnp.asarray(u))), J)


@pytest.mark.parametrize("orders", [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1, 0], [0, 1]])],
                         ids=["float orders", "integer orders"])
def test_second_derivatives_of_a_first_order_power_at_zero_are_finite(orders):
    """``u ** 1.0`` at u = 0 (A -> B -> nothing written with mass-action orders, B starting
    at 0): the first derivative ``1 * u ** 0`` was jnp.power's, whose own derivative is
    ``0 * 0 ** -1 = NaN``; every Hessian and hvp failed on this polynomial model. An
    integer array of orders went to jnp.power directly."""
    rates = np.zeros(2)

    def f(du, u, p, t):
        np.prod(u ** orders, axis=1, out=rates)
        du[0] = -p[0] * rates[0]
        du[1] = p[0] * rates[0] - p[1] * rates[1]

    u, p = np.array([1.0, 0.0]), np.array([0.7, 0.4])
    g = to_jax(f, u, p)
    H = np.asarray(jax.hessian(lambda x: g(x, jnp.asarray(p), 0.0)[1])(jnp.asarray(u)))
    np.testing.assert_array_equal(H, np.zeros((2, 2)))  # du[1] is linear in u
    mixed = np.asarray(jax.jacfwd(jax.jacrev(lambda x, q: g(x, q, 0.0)[1], argnums=1))(jnp.asarray(u), jnp.asarray(p)))
    np.testing.assert_array_equal(mixed, [[1.0, 0.0], [0.0, -1.0]])  # d2 du1 / dp du
    prob = dxdt.ODEProblem(f, u, (0.0, 2.0), p)
    H = sens.hessian(lambda U: np.sum(U**2), prob, saveat=[1.0, 2.0], rtol=1e-10, atol=1e-12)
    assert np.isfinite(H).all() and np.allclose(H, H.T, rtol=1e-8)


def test_euclidean_norm_has_a_zero_derivative_at_zero():
    """Quadratic drag ``-c ||v|| v`` from rest: ``d(||v|| v)/dv = 0`` at ``v = 0``, where
    ``jax.numpy.linalg.norm``'s ``v / ||v||`` is ``0/0 = NaN`` (the sensitivity failed as
    "nonfinite"). The subgradient 0 is taken there; other norms keep NumPy's values."""
    def f(du, u, p, t):
        v = u[2:]
        du[:2] = v
        du[2:] = -p[0] * np.linalg.norm(v) * v - np.array([0.0, 9.81])

    u, p = np.array([0.0, 10.0, 0.0, 0.0]), np.array([0.1])
    g = to_jax(f, u, p)
    for jac in (jax.jacfwd, jax.jacrev):
        J = np.asarray(jac(lambda x: g(x, jnp.asarray(p), 0.0))(jnp.asarray(u)))
        np.testing.assert_array_equal(J, [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    moving = np.array([0.0, 10.0, 3.0, -4.0])  # away from 0: the exact Jacobian -c (||v|| I + v v^T / ||v||)
    J = np.asarray(jax.jacfwd(lambda x: g(x, jnp.asarray(p), 0.0))(jnp.asarray(moving)))
    v = moving[2:]
    np.testing.assert_allclose(J[2:, 2:], -0.1 * (5.0 * np.eye(2) + np.outer(v, v) / 5.0), rtol=1e-14)
    prob = dxdt.ODEProblem(f, u, (0.0, 1.0), p)
    grad = dxdt.sensitivity.gradient(lambda U: np.sum(U[-1] ** 2), prob, rtol=1e-10, atol=1e-12)
    h = 1e-6
    fd = [(np.sum(dxdt.solve(prob.remake(p=p + s * h), rtol=1e-12, atol=1e-14).u[-1] ** 2)
           - np.sum(dxdt.solve(prob.remake(p=p - s * h), rtol=1e-12, atol=1e-14).u[-1] ** 2)) / (2 * h) for s in (1,)]
    np.testing.assert_allclose(grad, fd, rtol=1e-7)
    A = np.array([[3.0, 4.0], [1.0, -2.0]])

    def norms(du, u, p, t):  # every other form of np.linalg.norm as NumPy computes it
        du[0] = np.linalg.norm(A * u[0], 2) + np.linalg.norm(A * u[1], 1) + np.linalg.norm(u, np.inf)
        du[1] = np.linalg.norm(A * u[0], "fro") + np.linalg.norm(A * u[1], axis=0).sum() + np.linalg.norm(u, 3)

    x = np.array([0.7, -1.3])
    expected = np.empty(2)
    norms(expected, x, None, 0.0)
    np.testing.assert_allclose(np.asarray(to_jax(norms, x, None)(jnp.asarray(x), None, 0.0)), expected, rtol=1e-14)


def test_python_rounding_builtins_on_traced_and_constant_values():
    """``round(x, n)``, ``math.floor``, ``math.ceil`` and ``math.trunc`` of a value of
    ``u`` or ``p`` become NumPy's rounding (``round`` raised a bare TypeError); on a
    closure constant they stay Python's."""
    K = np.array([2.345])

    def f(du, u, p, t):
        k = round(p[0], 2) + math.floor(p[1]) + math.ceil(p[1]) + math.trunc(-p[1])
        du[:] = -(k + round(K[0], 1) + math.floor(K[0])) * u + round(u[0])

    u, p = np.array([1.6, 2.0]), np.array([0.4567, 1.5])
    expected = np.empty(2)
    f(expected, u, p, 0.0)
    np.testing.assert_allclose(np.asarray(to_jax(f, u, p)(jnp.asarray(u), jnp.asarray(p), 0.0)), expected,
                               rtol=1e-15)


def _interpolants():
    from scipy import interpolate

    td = np.linspace(0.0, 10.0, 11)
    yd = np.sin(td) + 2.0
    Y = np.stack([yd, yd**2], axis=1)
    return {
        "CubicSpline": interpolate.CubicSpline(td, yd),
        "CubicSpline 2-D, axis=1": interpolate.CubicSpline(td, Y.T, axis=1),
        "CubicSpline periodic": interpolate.CubicSpline(td, np.r_[yd[:-1], yd[0]], bc_type="periodic"),
        "CubicSpline decreasing x": interpolate.CubicSpline(-td[::-1], yd),
        "PchipInterpolator": interpolate.PchipInterpolator(td, yd, extrapolate=False),
        "Akima1DInterpolator": interpolate.Akima1DInterpolator(td, yd),
        "make_interp_spline": interpolate.make_interp_spline(td, Y, k=3),
        "interp1d linear": interpolate.interp1d(td, yd),
        "interp1d fill_value": interpolate.interp1d(td, Y, axis=0, bounds_error=False, fill_value=(-1.0, 5.0)),
        "interp1d extrapolate": interpolate.interp1d(td, yd, fill_value="extrapolate"),
        "interp1d cubic": interpolate.interp1d(td, Y.T, kind="cubic"),
        "interp1d previous": interpolate.interp1d(td, yd, kind="previous", bounds_error=False, fill_value=(0.0, 9.0)),
        "interp1d next 2-D": interpolate.interp1d(td, Y, kind="next", axis=0, fill_value="extrapolate"),
        "interp1d nearest axis=1": interpolate.interp1d(td, Y.T, kind="nearest", fill_value="extrapolate"),
        "interp1d nearest-up": interpolate.interp1d(td, yd, kind="nearest-up", bounds_error=False),
    }


@pytest.mark.parametrize("name", list(_interpolants()))
def test_scipy_interpolants_of_data_evaluate_at_traced_times(name):
    """A SciPy interpolant of measured data called at ``t`` inside ``f`` (a forcing) is
    evaluated as its piecewise polynomial in JAX: SciPy's values inside, at the ends and
    outside (extrapolated, NaN or the fill value, as SciPy gives them), and derivatives
    ``spline(t, 1)``; points and data of any shape along the interpolation axis."""
    from dxdt.sensitivity.translate._interpolants import Interpolant

    obj = _interpolants()[name]
    evaluate = jax.jit(Interpolant(obj)._evaluate, static_argnums=1)
    sign = -1.0 if "decreasing" in name else 1.0
    points = [3.3, 0.0, 10.0, 7.0, 6.5, np.array([1.2, 5.5, 9.99, 4.0])]  # (and ties: data, midpoints)
    if "linear" not in name and "cubic" not in name:  # interp1d's bounds_error raises outside
        points += [12.0, -1.5]
    for x in points:
        expected = np.asarray(obj(sign * np.asarray(x)))
        got = np.asarray(evaluate(jnp.asarray(sign * np.asarray(x)), 0))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13, equal_nan=True)
    if name in ("interp1d linear", "interp1d cubic"):  # SciPy raises outside: NaN ends the solve "nonfinite"
        assert np.all(np.isnan(np.asarray(evaluate(jnp.asarray(12.0), 0))))
    if hasattr(obj, "derivative") and "periodic" not in name:
        for x in (3.3, 7.1):
            np.testing.assert_allclose(np.asarray(evaluate(jnp.asarray(sign * x), 1)), obj(sign * x, 1), rtol=1e-12)


def test_ode_forced_by_a_cubic_spline_of_data():
    """``du = -k u + s(t)``, ``s`` a ``CubicSpline`` of data from the closure: both
    backends agree, and the parameter gradient matches finite differences (a SciPy
    interpolant's Python evaluation was refused before)."""
    from scipy.interpolate import CubicSpline

    td = np.linspace(0.0, 10.0, 11)
    forcing = CubicSpline(td, np.sin(td) + 2.0)

    def f(du, u, p, t):
        du[0] = -p[0] * u[0] + forcing(t)
        du[1] = p[1] * forcing(t, 1) - u[1]

    prob = dxdt.ODEProblem(f, np.array([1.0, 0.5]), (0.0, 10.0), np.array([0.3, 0.2]))
    by = {b: dxdt.solve(prob, rtol=1e-10, atol=1e-12, backend=b).u[-1] for b in ("numpy", "jax")}
    np.testing.assert_allclose(by["jax"], by["numpy"], rtol=1e-9)
    grad = dxdt.sensitivity.gradient(lambda U: np.sum(U[-1] ** 2), prob, rtol=1e-10, atol=1e-12)

    def loss(q):
        return np.sum(dxdt.solve(prob.remake(p=q), rtol=1e-12, atol=1e-14).u[-1] ** 2)

    h = 1e-6
    np.testing.assert_allclose(grad, [(loss(prob.p + h * e) - loss(prob.p - h * e)) / (2 * h) for e in np.eye(2)],
                               rtol=1e-7)


def test_ode_driven_by_a_rate_table_held_until_its_next_entry():
    """``du = -k u + r(t)``, ``r`` an ``interp1d(kind="previous")`` table (an infusion
    rate changed every 2 h): both backends and the gradient against the closed form,
    ``u = r_i / k + (u_i - r_i / k) exp(-k (t - t_i))`` on each interval (the
    piecewise-constant kinds were refused before)."""
    from scipy.interpolate import interp1d

    td, rates = np.arange(0.0, 12.0, 2.0), np.array([1.0, 0.0, 2.5, 0.5, 0.0, 3.0])
    rate = interp1d(td, rates, kind="previous", fill_value="extrapolate")

    def f(du, u, p, t):
        du[0] = -p[0] * u[0] + rate(t)

    def exact(k, T=9.0, u=1.0):
        for t_i, r in zip(td, rates):
            if t_i >= T:
                break
            dt = min(T, t_i + 2.0) - t_i
            u = r / k + (u - r / k) * np.exp(-k * dt)
        return u

    prob = dxdt.ODEProblem(f, np.array([1.0]), (0.0, 9.0), np.array([0.4]))
    for backend in ("numpy", "jax"):
        sol = dxdt.solve(prob, rtol=1e-10, atol=1e-12, saveat=[9.0], backend=backend)
        np.testing.assert_allclose(sol.u[-1, 0], exact(0.4), rtol=1e-8)
    grad = dxdt.sensitivity.gradient(lambda U: U[-1, 0], prob, saveat=[9.0], rtol=1e-10, atol=1e-12)
    h = 1e-6
    np.testing.assert_allclose(grad, [(exact(0.4 + h) - exact(0.4 - h)) / (2 * h)], rtol=1e-7)


def test_refusals_of_the_new_translations_name_the_construct_and_the_line():
    """The error paths of today's translations: a view as another dtype, np.vectorize with
    signature=, a SciPy interpolant called with extrapolate= on a traced point, second-order
    np.gradient edges on two points, sliding windows with unmatched axes, and a jax.numpy
    ValueError (np.pad's linear_ramp to a value of p): TranslationErrors naming the line."""
    from scipy.interpolate import CubicSpline

    spline = CubicSpline(np.linspace(0.0, 1.0, 5), np.arange(5.0))
    row = np.vectorize(lambda a: a.sum(), signature="(n)->()")

    def other_dtype(du, u, p, t):
        du[:] = u.view(np.int64)

    def with_signature(du, u, p, t):
        du[:] = row(u[None, :] * p)

    def extrapolate(du, u, p, t):
        du[:] = spline(t, extrapolate=True) * u

    def two_points(du, u, p, t):
        du[:] = np.gradient(u, 0.1, edge_order=2)

    def unmatched_windows(du, u, p, t):
        du[:] = np.lib.stride_tricks.sliding_window_view(u, (2, 2), axis=0)[:, 0, 0].sum() * u

    def ramp(du, u, p, t):
        du[:] = np.pad(u, 1, mode="linear_ramp", end_values=(p[0], 0.0))[1:-1]

    assert "z.real" in _raises(other_dtype, match="ndarray.view as int64")
    _raises(with_signature, match="np.vectorize with signature=", p=np.array([1.0]))
    _raises(extrapolate, match="SciPy interpolant called with extrapolate=")
    _raises(two_points, match="(?s)np.gradient with these arguments.*at least 3 points")
    _raises(unmatched_windows, match="same length")
    _raises(ramp, match="np.pad with these arguments", p=np.array([1.0]))


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "wrap", "constant", "grid-wrap", "grid-mirror",
                                  "grid-constant"])
def test_scipy_ndimage_filters_equal_scipys(mode):
    """The jax.numpy versions of scipy.ndimage's linear filters against SciPy itself, in
    every boundary mode, with origins, even kernels (convolution's extra shift), orders
    of the Gaussian and ``cval``."""
    from scipy import ndimage as ndi

    from dxdt.sensitivity.translate import _ndimage as J

    rng = np.random.default_rng(0)
    x1, x2, k2 = rng.normal(size=11), rng.normal(size=(7, 9)), rng.normal(size=(2, 3))
    pairs = [
        (ndi.laplace(x1, mode=mode, cval=0.3), J.laplace(x1, mode=mode, cval=0.3)),
        (ndi.laplace(x2, mode=mode), J.laplace(x2, mode=mode)),
        (ndi.convolve(x2, k2, mode=mode, cval=1.5), J.convolve(x2, k2, mode=mode, cval=1.5)),
        (ndi.correlate(x2, k2, mode=mode, origin=(0, 1)), J.correlate(x2, k2, mode=mode, origin=(0, 1))),
        (ndi.convolve(x2, k2, mode=mode, origin=(-1, 0)), J.convolve(x2, k2, mode=mode, origin=(-1, 0))),
        (ndi.convolve1d(x2, [1.0, 2, 3, 4], axis=0, mode=mode), J.convolve1d(x2, [1.0, 2, 3, 4], axis=0, mode=mode)),
        (ndi.correlate1d(x1, [1.0, -2, 1], mode=mode, origin=1), J.correlate1d(x1, [1.0, -2, 1], mode=mode, origin=1)),
        (ndi.gaussian_filter1d(x1, 1.3, order=1, mode=mode), J.gaussian_filter1d(x1, 1.3, order=1, mode=mode)),
        (ndi.gaussian_filter(x2, (1.0, 0.7), mode=mode), J.gaussian_filter(x2, (1.0, 0.7), mode=mode)),
        (ndi.uniform_filter1d(x1, 4, mode=mode), J.uniform_filter1d(x1, 4, mode=mode)),
        (ndi.uniform_filter(x2, 3, mode=mode), J.uniform_filter(x2, 3, mode=mode)),
    ]
    for expected, got in pairs:
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-13, atol=1e-13)


def test_a_function_reaching_nothing_to_replace_still_gets_max_min_and_imports():
    """A function that names no array, no numpy and no closure, only ``max``/``min`` or an
    import inside itself (an event condition ``lambda u, p, t: max(u[0], -1.0)``, a loss),
    was not copied for the trace, so it ran with Python's builtins: ``max`` of a traced
    value raised."""
    from dxdt.sensitivity.translate._trace import call

    def loss(u):
        return max(u[0], 0.0) ** 2 + min(u[1], 1.0)

    def loss_importing(u):
        import numpy

        return numpy.sum(u ** 2)

    u = jnp.array([0.7, 1.5])
    for fn in (loss, loss_importing):
        np.testing.assert_allclose(float(call(fn, (u,))), fn(np.asarray(u)), rtol=1e-15)
        grad = jax.grad(lambda x: call(fn, (x,)))(u)
        assert np.all(np.isfinite(np.asarray(grad)))


def test_error_paths_of_the_new_stand_ins():
    """Each refusal of r_/c_, np.piecewise and scipy.ndimage on traced values names what
    is wrong (and a TranslationError the line)."""
    from scipy import ndimage as ndi

    def directive(du, u, p, t):
        du[:] = np.r_["0,1", u]

    _raises(directive, match="np.r_/np.c_ with a string directive")

    def traced_kernel(du, u, p, t):
        du[:] = ndi.convolve1d(u, u[::-1])

    u = np.array([0.5, 1.5, 2.5])
    with pytest.raises(TranslationError, match=r"scipy.ndimage.convolve1d with weights that depend on u"):
        jax.jit(to_jax(traced_kernel, u, None))(jnp.asarray(u), None, 0.0)
    for f, match in [
        (lambda du, u, p, t: du.__setitem__(slice(None), np.piecewise(u, [u < 1.0], [1.0, 2.0, 3.0])),
         r"with 1 condition\(s\), either 1 or 2 functions are expected"),
        (lambda du, u, p, t: du.__setitem__(slice(None), ndi.laplace(u, mode="periodic")), "mode must be one of"),
        (lambda du, u, p, t: du.__setitem__(slice(None), ndi.correlate1d(u, [1.0, 2.0, 1.0], origin=2)),
         "invalid origin 2 for a kernel of size 3"),
    ]:
        with pytest.raises(ValueError, match=match):
            to_jax(f, u, None)(jnp.asarray(u), None, 0.0)
