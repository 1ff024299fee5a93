"""``sens.jax_solve``: a dxdt solve inside JAX under every transformation.

References are independent of dxdt: closed forms (scalar decay), ``expm``,
``expm_frechet`` and block-triangular matrix exponentials (linear ODE), finite
differences of exact gradients. Problems are built once per module; the scalar-decay
compositions are compiled together in one program.
"""

import re

import numpy as np
import pytest
from scipy.linalg import expm, expm_frechet

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

jax = pytest.importorskip("jax")
jnp = jax.numpy

RTOL, ATOL = 1e-10, 1e-12
TS = np.array([0.5, 1.5])  # save times of the scalar decay
Y0, Z = 2.0, 0.7


def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


def decay_exact(y0, z):
    """``L = sum_k U_k^2`` with ``U_k = y0 exp(-z t_k)``: value, gradient, Hessian in (y0, z)."""
    e = np.exp(-2 * z * TS)
    value = y0**2 * e.sum()
    grad = np.array([2 * y0 * e.sum(), -2 * y0**2 * (TS * e).sum()])
    hess = np.array([[2 * e.sum(), -4 * y0 * (TS * e).sum()],
                     [-4 * y0 * (TS * e).sum(), 4 * y0**2 * (TS**2 * e).sum()]])
    return value, grad, hess


@pytest.fixture(scope="module")
def decay_F():
    prob = dxdt.ODEProblem(decay, np.array([Y0]), (0.0, 1.5), np.array([Z]))
    return sens.jax_solve(prob, Tsit5(), saveat=TS, rtol=RTOL, atol=ATOL, max_steps=2000)


def _decay_loss(F):
    def L(x):  # x = (y0, z)
        return jnp.sum(F(x[:1], x[1:]) ** 2)
    return L


def test_decay_solution_eager_and_jit(decay_F):
    expected = Y0 * np.exp(-Z * TS)[:, None]
    u0, p = jnp.array([Y0]), jnp.array([Z])
    np.testing.assert_allclose(decay_F(u0, p), expected, rtol=1e-9)
    np.testing.assert_allclose(jax.jit(decay_F)(u0, p), expected, rtol=1e-9)
    assert decay_F(np.array([Y0]), np.array([Z])).dtype == jnp.float64


@pytest.fixture(scope="module")
def decay_derivatives(decay_F):
    """Every first and second derivative composition, in one compiled program."""
    L = _decay_loss(decay_F)
    grad = jax.grad(L)
    e = jnp.array([0.3, -1.1])

    def nested(x):  # a function that itself calls jax.grad of F
        return jnp.sum(grad(x) ** 2)

    @jax.jit
    def everything(x):
        U, vjp = jax.vjp(lambda x: decay_F(x[:1], x[1:]), x)
        return {
            "grad": grad(x), "vjp": vjp(jnp.ones_like(U))[0],
            "jvp": jax.jvp(L, (x,), (e,))[1], "jacfwd": jax.jacfwd(L)(x), "jacrev": jax.jacrev(L)(x),
            "hessian": jax.hessian(L)(x),  # jax.hessian is jacfwd(jacrev)
            "jacrev(jacfwd)": jax.jacrev(jax.jacfwd(L))(x), "jvp(grad)": jax.jvp(grad, (x,), (e,))[1],
            "grad(grad)": jax.grad(lambda x: grad(x) @ e)(x), "nested": jax.grad(nested)(x),
        }

    return everything(jnp.array([Y0, Z])), e


def test_decay_first_derivatives(decay_derivatives):
    out, e = decay_derivatives
    _, grad, _ = decay_exact(Y0, Z)
    for name in ("grad", "jacfwd", "jacrev"):
        np.testing.assert_allclose(out[name], grad, rtol=1e-7, err_msg=name)
    np.testing.assert_allclose(out["jvp"], grad @ np.asarray(e), rtol=1e-7)
    np.testing.assert_allclose(out["vjp"], [np.exp(-Z * TS).sum(), -(Y0 * TS * np.exp(-Z * TS)).sum()],
                               rtol=1e-7)  # vjp with ones: sum_k dU_k/dx


def test_float32_arguments_are_cast_to_the_problem_dtype(decay_F):
    L = _decay_loss(decay_F)
    grad = jax.grad(L)(jnp.array([Y0, Z], dtype=jnp.float32))
    np.testing.assert_allclose(grad, decay_exact(Y0, Z)[1], rtol=1e-6)


def test_decay_second_and_nested_derivatives(decay_derivatives):
    out, e = decay_derivatives
    _, grad, hess = decay_exact(Y0, Z)
    for name in ("hessian", "jacrev(jacfwd)"):
        np.testing.assert_allclose(out[name], hess, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(out["jvp(grad)"], hess @ np.asarray(e), rtol=1e-6)
    np.testing.assert_allclose(out["grad(grad)"], hess @ np.asarray(e), rtol=1e-6)
    np.testing.assert_allclose(out["nested"], 2 * hess @ grad, rtol=1e-6)


def test_nested_gradient_matches_finite_differences_of_exact_gradient(decay_derivatives):
    out, _ = decay_derivatives

    def nested_exact(x):
        return np.sum(decay_exact(*x)[1] ** 2)

    x, h = np.array([Y0, Z]), 1e-5
    fd = [(nested_exact(x + h * d) - nested_exact(x - h * d)) / (2 * h) for d in np.eye(2)]
    np.testing.assert_allclose(out["nested"], fd, rtol=1e-6)


def test_second_derivatives_are_forward_over_reverse(decay_F):
    """No solve is ever transposed twice: second derivatives end in the forward derivatives
    of the tangent or adjoint solves (the primitives below), not in a reverse pass."""
    L = _decay_loss(decay_F)
    x = jnp.array([Y0, Z])

    assert "dxdt_second_adjoint" in str(jax.make_jaxpr(jax.hessian(L))(x))
    assert "dxdt_second_adjoint" in str(jax.make_jaxpr(jax.grad(lambda x: jax.grad(L)(x)[1]))(x))
    assert "dxdt_second_tangent" in str(jax.make_jaxpr(jax.jacfwd(jax.jacfwd(L)))(x))
    first = str(jax.make_jaxpr(jax.grad(L))(x))
    assert "dxdt_adjoint" in first and "dxdt_second" not in first


def test_programs_hold_no_host_callbacks_and_user_checks_still_raise(decay_F):
    """Every solve dxdt traces is free of host callbacks, also inside a user's own
    ``jax.jit`` (diffrax checks ``dt0`` and the save times by a callback, which kept
    XLA:CPU from compiling the adjoint's loop of solves into one kernel: 40% of a small
    gradient). The checks are traced as NaN outputs on dxdt's solves only: a user's own
    ``eqx.error_if`` traced afterwards still raises."""
    import equinox as eqx

    L = _decay_loss(decay_F)
    x = jnp.array([Y0, Z])
    for program in (jax.jit(L), jax.jit(jax.grad(L)), jax.jit(jax.hessian(L)), jax.jit(jax.jacfwd(L)),
                    jax.jit(jax.grad(lambda x: jnp.sum(jax.grad(L)(x) ** 2)))):
        assert "python_cpu_callback" not in program.lower(x).compile().as_text()
    checked = jax.jit(lambda v: eqx.error_if(v, v < 0, "v must be >= 0") * 2.0)
    with pytest.raises(Exception, match="v must be >= 0"):
        jax.block_until_ready(checked(jnp.array(-1.0)))


def test_hessian_with_a_moving_cotangent_is_one_second_adjoint_solve(decay_F):
    """``L = sum F^2``: the gradient's cotangent ``w = 2F`` moves with ``x``, so the
    derivative of the gradient is ``C(x; w, d) + A(x; w')``; both come from one solve of
    the second-order system (``Lambda`` jumping by ``w'``), not from a second-adjoint solve
    and a separate adjoint solve: the only ``dxdt_adjoint`` left is the gradient itself."""
    L = _decay_loss(decay_F)
    x = jnp.array([Y0, Z])
    for program in (jax.make_jaxpr(jax.hessian(L))(x),
                    jax.make_jaxpr(lambda x: jax.jvp(jax.grad(L), (x,), (x,)))(x)):
        solves = re.findall(r"dxdt_\w+", str(program))
        assert solves.count("dxdt_adjoint") == 1 and solves.count("dxdt_second_adjoint") == 1, solves


def test_second_adjoint_with_a_moving_cotangent_is_not_transposed_in_w(decay_F):
    """``D(x; w, d, dw)`` is linear in ``w`` only without ``dw`` (the rules never transpose
    it in ``w`` otherwise); asked to, it raises rather than return a wrong cotangent."""
    from dxdt.sensitivity._jax_solve_rules import _bind, second_adjoint_p

    u0, p, w = jnp.array([Y0]), jnp.array([Z]), jnp.ones((len(TS), 1))
    D = lambda w: _bind(second_adjoint_p, decay_F.spec, u0, p, w, u0, p, jnp.ones_like(w))  # noqa: E731
    with pytest.raises(NotImplementedError, match="transposed in w with dw given"):
        jax.linear_transpose(D, w)((u0, p))


@pytest.mark.parametrize("adjoint", ["checkpoint", "backsolve"])
def test_other_adjoints_gradient(adjoint):
    prob = dxdt.ODEProblem(decay, np.array([Y0]), (0.0, 1.5), np.array([Z]))
    F = sens.jax_solve(prob, Tsit5(), saveat=TS, rtol=RTOL, atol=ATOL, adjoint=adjoint, max_steps=200)
    L = _decay_loss(F)
    x = jnp.array([Y0, Z])
    _, grad, hess = decay_exact(Y0, Z)
    np.testing.assert_allclose(jax.grad(L)(x), grad, rtol=1e-6)
    np.testing.assert_allclose(jax.jacfwd(jax.jacfwd(L))(x), hess, rtol=1e-6)  # every adjoint
    if adjoint == "checkpoint":
        for second_order in (jax.hessian, lambda fn: jax.jacrev(jax.jacfwd(fn))):
            with pytest.raises(ValueError, match="adjoint='interpolating'"):
                second_order(L)(x)
    else:  # forward mode through the backsolve's solves, the moving cotangent included
        np.testing.assert_allclose(jax.hessian(L)(x), hess, rtol=1e-6)
        e = jnp.array([0.3, -1.1])
        nested = jax.grad(lambda x: jnp.sum(jax.grad(L)(x) ** 2))(x)
        np.testing.assert_allclose(nested, 2 * hess @ grad, rtol=1e-6)
        np.testing.assert_allclose(jax.jvp(jax.grad(L), (x,), (e,))[1], hess @ np.asarray(e), rtol=1e-6)


def test_vmap_equals_loop_and_failing_member_is_nan(decay_F):
    u0 = jnp.array([Y0])
    zs = jnp.array([[0.3], [0.7], [1e5], [1.2]])  # z = 1e5 is stiff: over max_steps
    batch = jax.jit(jax.vmap(decay_F, in_axes=(None, 0)))(u0, zs)
    assert np.all(np.isnan(batch[2]))
    for i in (0, 1, 3):
        np.testing.assert_allclose(batch[i], decay_F(u0, zs[i]), rtol=1e-12, atol=0)
    with pytest.raises(dxdt.SolverError, match="max_steps"):
        decay_F(u0, zs[2])
    grads = jax.vmap(jax.grad(lambda p: jnp.sum(decay_F(u0, p))))(zs)
    grads = np.asarray(grads)
    assert np.all(np.isnan(grads[2])) and np.all(np.isfinite(grads[[0, 1, 3]]))
    # each member as a single gradient would give it, to the tolerances
    loop = [np.asarray(jax.grad(lambda p: jnp.sum(decay_F(u0, p)))(zs[i])) for i in (0, 1, 3)]
    np.testing.assert_allclose(grads[[0, 1, 3]], np.stack(loop), rtol=1e-7)
    exact = -np.sum(Y0 * TS * np.exp(-np.asarray(zs)[[0, 1, 3]] * TS), axis=1)
    np.testing.assert_allclose(grads[[0, 1, 3], 0], exact, rtol=1e-7)


def test_parameters_needing_more_steps_than_the_dense_buffer(decay_F):
    """The interpolating adjoint's dense buffer is sized at the problem's p (z = 0.7); at
    z = 15 the solve needs nine times more steps, more than the buffer holds: the forward
    sweep runs in two chunks (the first solved again in the backward sweep) and the
    gradient and Hessian stay exact (they were NaN), also in a ``vmap`` with a member that
    needs no chunking."""
    z = 15.0
    steps = dxdt.solve(dxdt.ODEProblem(decay, np.array([Y0]), (0.0, 1.5), np.array([z])), Tsit5(),
                       rtol=RTOL, atol=ATOL).stats["naccept"]
    assert steps > decay_F.spec.dense_steps
    L = _decay_loss(decay_F)
    x = jnp.array([Y0, z])
    value, grad, hess = decay_exact(Y0, z)
    # the primal of a derivative: the first dense chunk overflows, the rows come from the
    # plain solve
    value_got, grad_got = jax.value_and_grad(L)(x)
    np.testing.assert_allclose(value_got, value, rtol=1e-8)
    np.testing.assert_allclose(grad_got, grad, rtol=1e-7)
    # in a vmap with a member that fits the buffer (each keeps its own chunking)
    grads = jax.vmap(jax.grad(L))(jnp.array([[Y0, Z], [Y0, z]]))
    np.testing.assert_allclose(grads[0], decay_exact(Y0, Z)[1], rtol=1e-7)
    np.testing.assert_allclose(grads[1], grad, rtol=1e-7)
    np.testing.assert_allclose(jax.hessian(L)(x), hess, rtol=1e-6)


def test_a_reverse_derivative_solves_the_state_forward_once(decay_F, monkeypatch):
    """The interpolating adjoint's backward pass starts from the primal's dense solve
    (``SolveSpec.first_chunk``) instead of solving the state forward again: counted by
    the vector field's evaluations in each half of ``jax.vjp``, against the same solve
    with the sharing switched off (no memory for it). Same gradient to rounding."""
    import dataclasses

    from dxdt.sensitivity import _jax_solve

    times: list = []

    def counted(u, p, t):
        jax.debug.callback(lambda t: times.append(float(t)), t)
        return decay_F.spec.g(u, p, t)

    static = dataclasses.replace(decay_F.spec.static, g=counted)

    def evaluations(budget):
        monkeypatch.setattr(_jax_solve, "SHARED_FORWARD_BYTES", budget)
        solve = _jax_solve._differentiable(dataclasses.replace(static), share_forward=True)
        L = lambda p: jnp.sum(solve(decay_F.spec.times, jnp.array([Y0]), p)[0] ** 2)  # noqa: E731
        times.clear()
        value, pullback = jax.vjp(L, jnp.array([Z]))
        jax.block_until_ready(value)
        forward = len(times)
        times.clear()
        (grad,) = pullback(jnp.asarray(1.0))
        return value, jax.block_until_ready(grad), forward, len(times)

    value, grad, forward, backward = evaluations(_jax_solve.SHARED_FORWARD_BYTES)
    value_0, grad_0, forward_0, backward_0 = evaluations(0)
    assert forward == forward_0 > 50  # the same steps, dense or not
    assert backward <= backward_0 - 0.95 * forward  # (the sweep still takes its first step's 2)
    np.testing.assert_allclose(value, value_0, rtol=1e-14)
    np.testing.assert_allclose(grad, grad_0, rtol=1e-13)
    np.testing.assert_allclose(grad, decay_exact(Y0, Z)[1][1:], rtol=1e-8)


# --- linear ODE u' = A u: exact first and second derivatives ------------------------------

A = np.array([[-0.5, 1.0, 0.0], [-1.0, -0.3, 0.2], [0.1, 0.0, -0.8]])
U0 = np.array([1.0, -0.5, 0.25])
T1 = 1.2
W = np.array([0.7, -1.3, 0.4])  # L = <W, u(T1)> (first order), 0.5 |u(T1)|^2 (Hessian in u0)


def _frechet(X, E):
    return expm_frechet(X, E, compute_expm=False)


def _second_frechet(X, E1, E2):
    """``D^2 expm(X)[E1, E2]`` from block-triangular exponentials (Najfeld & Havel 1995)."""
    n = X.shape[0]

    def block(Ea, Eb):
        M = np.zeros((3 * n, 3 * n))
        for i in range(3):
            M[i * n:(i + 1) * n, i * n:(i + 1) * n] = X
        M[:n, n:2 * n], M[n:2 * n, 2 * n:] = Ea, Eb
        return expm(M)[:n, 2 * n:]
    return block(E1, E2) + block(E2, E1)


def _basis(shape):
    return [e.reshape(shape) for e in np.eye(int(np.prod(shape)))]


def linear_matrix_exact():
    """Gradient and Hessian of ``<W, expm(A T1) U0>`` with respect to ``A``."""
    E = _basis(A.shape)
    grad = np.array([W @ _frechet(A * T1, e * T1) @ U0 for e in E]).reshape(A.shape)
    hess = np.array([[W @ _second_frechet(A * T1, a * T1, b * T1) @ U0 for b in E] for a in E])
    return grad, hess


def lin_array(du, u, p, t):
    np.matmul(p, u, out=du)


def lin_tuple(du, u, p, t):  # A = p[0] + p[1] I
    np.matmul(p[0], u, out=du)
    du += p[1] * u


def lin_dict(du, u, p, t):  # A = p["A"] + p["s"] I
    np.matmul(p["A"], u, out=du)
    du += p["s"] * u


@pytest.fixture(scope="module")
def linear_F():
    prob = dxdt.ODEProblem(lin_array, U0, (0.0, T1), A.copy())
    return sens.jax_solve(prob, Tsit5(), rtol=RTOL, atol=ATOL)


def test_linear_gradient_and_hessian_in_matrix(linear_F):
    grad_ex, hess_ex = linear_matrix_exact()
    L = lambda p: jnp.asarray(W) @ linear_F(jnp.asarray(U0), p)[0]  # noqa: E731
    grad, hess = jax.grad(L)(jnp.asarray(A)), jax.hessian(L)(jnp.asarray(A))
    np.testing.assert_allclose(grad, grad_ex, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.asarray(hess).reshape(9, 9), hess_ex, rtol=1e-6, atol=1e-8)


def test_linear_hessian_in_u0_is_phi_t_phi(linear_F):
    Phi = expm(A * T1)
    L = lambda u0: 0.5 * jnp.sum(linear_F(u0, jnp.asarray(A))[0] ** 2)  # noqa: E731
    np.testing.assert_allclose(jax.hessian(L)(jnp.asarray(U0)), Phi.T @ Phi, rtol=1e-7, atol=1e-9)


def test_derivatives_of_a_small_loss_are_as_accurate_as_of_a_unit_one(linear_F):
    """Cotangents far below ``atol`` (a loss scaled by 1e-9): the adjoint, the stacked
    adjoints of ``jacrev`` and the second-order adjoint are solved for unit cotangents, so
    every derivative keeps its relative accuracy (they came out 1e-6 off at rtol 1e-10)."""
    c, u0, a = 1e-9, jnp.asarray(U0), jnp.asarray(A)
    Phi = expm(A * T1)
    J0 = jax.jit(jax.jacrev(lambda u: c * linear_F(u, a)[0]))(u0)
    np.testing.assert_allclose(J0 / c, Phi, rtol=1e-8, atol=1e-10)
    grad_ex, hess_ex = linear_matrix_exact()
    L = lambda p: c * (jnp.asarray(W) @ linear_F(u0, p)[0])  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(L))(a) / c, grad_ex, rtol=1e-7, atol=1e-9)
    H = jax.jit(jax.hessian(L))(a).reshape(9, 9)
    np.testing.assert_allclose(H / c, hess_ex, rtol=1e-6, atol=1e-8)
    Hu = jax.jit(jax.hessian(lambda u: 0.5 * c * jnp.sum(linear_F(u, a)[0] ** 2)))(u0)
    np.testing.assert_allclose(Hu / c, Phi.T @ Phi, rtol=1e-7, atol=1e-9)


def test_a_float64_p_is_not_rounded_to_a_float32_problem_p():
    """``prob.p`` float32, the caller's ``p`` float64: F used to cast it down (an error of
    6e-9 at rtol 1e-12, with float64 outputs that hid it)."""
    prob = dxdt.ODEProblem(decay, np.array([Y0]), (0.0, 1.0), np.array([Z], np.float32))
    F = sens.jax_solve(prob, Tsit5(), saveat=[1.0], rtol=1e-12, atol=1e-14)
    p = jnp.array([Z], jnp.float64)
    np.testing.assert_allclose(F(jnp.array([Y0]), p)[0, 0], Y0 * np.exp(-Z), rtol=1e-12)
    grad = jax.grad(lambda p: F(jnp.array([Y0]), p)[0, 0])(p)
    assert grad.dtype == jnp.float64
    np.testing.assert_allclose(grad, [-Y0 * np.exp(-Z)], rtol=1e-10)


def test_float32_problem_is_solved_in_float64_with_float32_cotangents():
    """A float32 ``u0`` and ``p``: the solves run in float64, the rows come back float32
    (as from ``solve(backend="jax")``), and ``jax.grad``/``jax.hessian`` give float32
    derivatives equal to the float64 problem's (a float32 ``p`` once crashed the adjoint
    with a dtype mismatch)."""
    A32, U32 = A.astype(np.float32), U0.astype(np.float32)
    F32 = sens.jax_solve(dxdt.ODEProblem(lin_array, U32, (0.0, T1), A32), Tsit5(), rtol=RTOL, atol=ATOL)
    grad_ex, hess_ex = linear_matrix_exact()
    L = lambda F, u0, p: jnp.asarray(W) @ F(u0, p)[0]  # noqa: E731
    assert F32(jnp.asarray(U32), jnp.asarray(A32)).dtype == jax.jit(F32)(U32, A32).dtype == jnp.float32
    grad = jax.grad(L, 2)(F32, jnp.asarray(U32), jnp.asarray(A32))
    hess = jax.hessian(L, 2)(F32, jnp.asarray(U32), jnp.asarray(A32))
    assert grad.dtype == hess.dtype == jnp.float32
    np.testing.assert_allclose(grad, grad_ex, rtol=1e-5, atol=1e-6)  # A32 rounds A by ~1e-8
    np.testing.assert_allclose(np.asarray(hess).reshape(9, 9), hess_ex, rtol=1e-3, atol=1e-4)
    assert jax.grad(L, 1)(F32, jnp.asarray(U32), jnp.asarray(A32)).dtype == jnp.float32


def test_dot_product_jvp_vjp(linear_F):
    """``<w, J v> = <J^T w, v>`` between forward sensitivities and the adjoint."""
    rng = np.random.default_rng(1)
    x = (jnp.asarray(U0), jnp.asarray(A))
    v = (jnp.asarray(rng.normal(size=3)), jnp.asarray(rng.normal(size=(3, 3))))
    w = jnp.asarray(rng.normal(size=(1, 3)))

    def both(x, v, w):
        Jv = jax.jvp(linear_F, x, v)[1]
        JTw = jax.vjp(linear_F, *x)[1](w)
        return jnp.sum(w * Jv), sum(jnp.sum(a * b) for a, b in zip(JTw, v))

    lhs, rhs = both(x, v, w)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-7)


def test_jacfwd_is_one_solve_for_all_directions_and_exact(linear_F):
    """``jax.jacfwd`` stacks its 12 directions (3 in u0, 9 in A) into one state-and-tangents
    solve (equal to that solve to rounding, where per-direction solves would differ at the
    tolerance) and matches ``expm`` / ``expm_frechet``; ``vmap(jacfwd)`` over two matrices
    equals the loop."""
    from dxdt.sensitivity._jax_solve_passes import _stacked_tangents

    x = (jnp.asarray(U0), jnp.asarray(A))
    J0, JA = jax.jit(jax.jacfwd(linear_F, argnums=(0, 1)))(*x)
    V0 = jnp.concatenate([jnp.eye(3), jnp.zeros((9, 3))])
    VA = jnp.concatenate([jnp.zeros((3, 3, 3)), jnp.eye(9).reshape(9, 3, 3)])
    S = jax.jit(lambda u0, p: _stacked_tangents(linear_F.spec, u0, p, V0, VA))(*x)[:, 0]
    np.testing.assert_allclose(J0[0], S[:3].T, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(JA[0], np.moveaxis(np.asarray(S[3:]), 0, 1).reshape(3, 3, 3),
                               rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(J0[0], expm(A * T1), rtol=1e-8, atol=1e-10)
    JA_exact = np.stack([_frechet(A * T1, e * T1) @ U0 for e in _basis(A.shape)], -1).reshape(3, 3, 3)
    np.testing.assert_allclose(JA[0], JA_exact, rtol=1e-8, atol=1e-10)
    As = jnp.stack([jnp.asarray(A), jnp.asarray(A) * 0.9])
    jac = jax.jacfwd(linear_F, argnums=1)
    batch = jax.jit(jax.vmap(jac, in_axes=(None, 0)))(x[0], As)
    for i in range(2):
        np.testing.assert_allclose(batch[i], jac(x[0], As[i]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_linear_pytree_parameters(kind):
    shift = -0.2
    if kind == "tuple":
        f, p = lin_tuple, (A - shift * np.eye(3), np.array(shift))
    else:
        f, p = lin_dict, {"A": A - shift * np.eye(3), "s": np.array(shift)}
    F = sens.jax_solve(dxdt.ODEProblem(f, U0, (0.0, T1), p), Tsit5(), rtol=RTOL, atol=ATOL)
    L = lambda p: jnp.asarray(W) @ F(jnp.asarray(U0), p)[0]  # noqa: E731
    grad = jax.grad(L)(jax.tree_util.tree_map(jnp.asarray, p))
    grad_A, _ = linear_matrix_exact()
    grad_s = W @ _frechet(A * T1, np.eye(3) * T1) @ U0
    leaves = grad if kind == "tuple" else (grad["A"], grad["s"])
    np.testing.assert_allclose(leaves[0], grad_A, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(leaves[1], grad_s, rtol=1e-7)
    # the stacked second adjoint carries pytree directions: d^2/ds^2 <W, expm(A T) U0>
    # = T^2 <W, expm(A T) U0> (A = A' + s I), and the A-block is the matrix case's
    H = jax.hessian(L)(jax.tree_util.tree_map(jnp.asarray, p))
    H_ss, H_AA = (H[1][1], H[0][0]) if kind == "tuple" else (H["s"]["s"], H["A"]["A"])
    np.testing.assert_allclose(H_ss, T1 ** 2 * W @ expm(A * T1) @ U0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(H_AA).reshape(9, 9), linear_matrix_exact()[1], rtol=1e-6, atol=1e-8)


def test_jacrev_and_hessian_are_one_solve_for_all_directions_and_exact(linear_F):
    """``jax.jacrev`` of ``F`` (3 outputs) runs one adjoint solve for all its cotangents
    and ``jax.hessian`` (9 directions in A) one solve of the second-order adjoint system
    (``_stacking``): each equals that stacked solve to rounding (the Hessian's program
    holds more solves, so XLA's rounding differs slightly), where per-direction solves
    would differ at the tolerance, and matches ``expm`` / its second Frechet derivative."""
    from dxdt.sensitivity._jax_solve_passes import _stacked_adjoints, _stacked_second_adjoints

    spec, u0, a = linear_F.spec, jnp.asarray(U0), jnp.asarray(A)
    J0, JA = jax.jit(jax.jacrev(lambda u0, p: linear_F(u0, p)[0], argnums=(0, 1)))(u0, a)
    lam, mu = jax.jit(lambda u0, p: _stacked_adjoints(spec, u0, p, jnp.eye(3)[:, None, :]))(u0, a)
    np.testing.assert_allclose(J0, lam, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(JA, mu, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(J0, expm(A * T1), rtol=1e-8, atol=1e-10)

    L = lambda p: jnp.asarray(W) @ linear_F(u0, p)[0]  # noqa: E731 (w = W: H is C alone)
    H = jax.jit(jax.hessian(L))(a).reshape(9, 9)
    w = jnp.asarray(W)[None]
    _, C = jax.jit(lambda u0, p: _stacked_second_adjoints(spec, u0, p, w, jnp.zeros((9, 3)),
                                                          jnp.eye(9).reshape(9, 3, 3),
                                                          jnp.zeros((9,) + w.shape)))(u0, a)
    # to rounding amplified by the step-size control (3e-13 here), not the tolerance
    np.testing.assert_allclose(H, C.reshape(9, 9), rtol=0, atol=1e-11 * np.abs(H).max())
    np.testing.assert_allclose(H, linear_matrix_exact()[1], rtol=1e-6, atol=1e-8)


# --- closure buffers and failures -------------------------------------------------------

def test_closure_buffers_unchanged_gierer_meinhardt():
    prob = dxdt.problems.gierer_meinhardt(n=4, tspan=(0.0, 0.01))
    ref = dxdt.solve(prob, Tsit5(), rtol=1e-10, atol=1e-12, saveat=[0.01]).u  # writes the buffers
    cells = [c.cell_contents for c in prob.f.__closure__ if isinstance(c.cell_contents, np.ndarray)]
    before = [c.copy() for c in cells]
    u0_before, p_before = prob.u0.copy(), np.array(prob.p, dtype=float)
    F = sens.jax_solve(prob, Tsit5(), rtol=1e-6, atol=1e-8)
    u0, p = jnp.asarray(prob.u0), jnp.asarray(np.asarray(prob.p, dtype=float))
    U, dU = jax.jvp(lambda p: F(u0, p), (p,), (jnp.ones_like(p),))
    np.testing.assert_allclose(U, ref, rtol=1e-5)
    assert np.all(np.isfinite(dU)) and np.any(dU != 0)  # derivatives flow through the buffers
    # the stacked passes (jacrev: all adjoints in one solve; hessian: the second-order system)
    J = jax.jacrev(lambda p: F(u0, p)[0, :2])(p)
    H = jax.hessian(lambda p: jnp.sum(F(u0, p) ** 2))(p)
    assert np.all(np.isfinite(J)) and np.all(np.isfinite(H)) and np.any(H != 0)
    np.testing.assert_allclose(H, np.asarray(H).T, rtol=0, atol=1e-4 * np.abs(H).max())  # to the tolerance
    assert len(cells) >= 6
    assert all(a.tobytes() == b.tobytes() for a, b in zip(cells, before))
    assert np.array_equal(prob.u0, u0_before) and np.array_equal(np.asarray(prob.p, dtype=float), p_before)


def test_bad_arguments_raise():
    prob = dxdt.ODEProblem(decay, np.array([Y0]), (0.0, 1.5), np.array([Z]))
    with pytest.raises(ValueError, match="adjoint"):
        sens.jax_solve(prob, adjoint="reverse")
    with pytest.raises(TypeError, match=r"events\[0\] must be a dxdt.Event"):
        sens.jax_solve(prob, events=[object()])
    with pytest.raises(ValueError, match="saveat"):
        sens.jax_solve(prob, saveat=[3.0])
    F = sens.jax_solve(prob, adjoint="backsolve")
    with pytest.raises(ValueError, match="u0"):
        F(jnp.ones(2), jnp.array([Z]))
    with pytest.raises(ValueError, match="p "):
        F(jnp.ones(1), (jnp.array([Z]),))
    # complex values for a real problem: refused (their imaginary parts were dropped)
    with pytest.raises(TypeError, match="u0 is complex but F was built for a real one"):
        F(jnp.ones(1) + 1j, jnp.array([Z]))
    with pytest.raises(TypeError, match="p is complex"):
        F(jnp.ones(1), jnp.array([Z + 1j]))
    pair = sens.jax_solve(prob.remake(p=(Z, 1.0)), adjoint="backsolve")  # the same leaves, a list for a tuple:
    with pytest.raises(ValueError, match=r"PyTreeDef\(\[\*, \*\]\) but F was built for PyTreeDef\(\(\*, \*\)\)"):
        pair(jnp.ones(1), [Z, 1.0])  # the message showed two equal descriptions


def test_F_uses_the_closure_arrays_as_they_were_when_it_was_built():
    """A closure array changed in place after ``jax_solve`` is not seen, whether the change
    comes before the first call (the first trace) or after it: ``F`` does not depend on
    when it is traced. The user's array itself is never written."""
    rate = np.array([1.0])

    def scaled(du, u, p, t):
        du[:] = -rate[0] * p[0] * u

    prob = dxdt.ODEProblem(scaled, np.array([1.0]), (0.0, 1.0), np.array([1.0]))
    F = sens.jax_solve(prob, rtol=1e-10, atol=1e-12)
    rate[0] = 2.0  # before the first trace
    np.testing.assert_allclose(F(jnp.array([1.0]), jnp.array([1.0])), [[np.exp(-1.0)]], rtol=1e-8)
    rate[0] = 3.0  # after it
    np.testing.assert_allclose(jax.jit(F)(jnp.array([1.0]), jnp.array([0.5])), [[np.exp(-0.5)]], rtol=1e-8)
    assert rate[0] == 3.0
    G = sens.jax_solve(prob, rtol=1e-10, atol=1e-12)  # built again: sees the change
    np.testing.assert_allclose(G(jnp.array([1.0]), jnp.array([1.0])), [[np.exp(-3.0)]], rtol=1e-8)


def test_F_built_where_the_solve_fails_sizes_a_moderate_dense_buffer():
    """The planning solve fails at the problem's own point (a blow-up): the buffer was
    max_steps long (100 000 steps), which every later gradient paid for."""
    def riccati(du, u, p, t):
        du[:] = p[0] * u**2

    prob = dxdt.ODEProblem(riccati, np.ones(4), (0.0, 1.0), np.array([3.0]))  # blows up at t = 1/3
    F = sens.jax_solve(prob, Tsit5(), rtol=1e-8, atol=1e-10)
    assert F.spec.dense_steps <= 8192
    grad = jax.grad(lambda p: jnp.sum(F(jnp.ones(4), p)))(jnp.array([0.5]))
    np.testing.assert_allclose(grad, [4.0 / (1 - 0.5) ** 2], rtol=1e-6)  # u(1) = 1 / (1 - p)


def test_gradient_far_from_where_F_was_built_is_not_nan():
    """``F`` built for an oscillator at frequency 1 (a dense buffer of ~100 steps), its
    gradient at frequency 100 (13.8k steps) by the chunked interpolating adjoint: the
    checkpoints were capped at 64 chunks (~4.8k steps), past which ``jax.grad`` was NaN,
    silently, though the solve succeeds and ``max_steps`` is 100000. Exact: d/dw cos(w T)."""
    def oscillator(du, u, p, t):
        du[0] = p[0] * u[1]
        du[1] = -p[0] * u[0]

    T = 10.0
    prob = dxdt.ODEProblem(oscillator, np.array([1.0, 0.0]), (0.0, T), np.array([1.0]))
    F = sens.jax_solve(prob, rtol=1e-8, atol=1e-10)
    grad = jax.grad(lambda p: F(jnp.array([1.0, 0.0]), p)[-1, 0])(jnp.array([100.0]))
    np.testing.assert_allclose(np.asarray(grad), [-T * np.sin(100.0 * T)], rtol=1e-5)
