"""Every sensitivity strategy against finite differences and each other, and accuracy
at default tolerances on the stiff-ish heat equation."""

import math
import warnings

import dxdt
import numpy as np
import pytest
from dxdt import problems
from dxdt import sensitivity as sens
from dxdt.solvers import RKC, Tsit5
from references import STRATEGIES, TIGHT, weighted_loss

# --- every strategy on nonlinear problems, against finite differences --------------------

FD_ENTRIES = 12  # entries checked by finite differences on larger targets


def fd_indices(shape):
    """All indices of a small target, else a fixed sample of ``FD_ENTRIES`` of them."""
    indices = list(np.ndindex(shape))
    if len(indices) <= FD_ENTRIES:
        return indices
    chosen = np.random.default_rng(0).choice(len(indices), FD_ENTRIES, replace=False)
    return [indices[i] for i in sorted(chosen)]


def central_fd(loss, prob, wrt, eps=1e-6):
    """Finite-difference gradient of ``loss(solve(prob))`` w.r.t. ``u0`` or an array ``p``,
    at the entries :func:`fd_indices` picks (NaN elsewhere)."""
    ts = np.array([prob.tspan[1]])
    base = prob.u0 if wrt == "u0" else np.asarray(prob.p, dtype=float)
    grad = np.full(base.shape, np.nan)
    for i in fd_indices(base.shape):
        values = []
        for sign in (1, -1):
            x = base.copy()
            x[i] += sign * eps * max(1.0, abs(base[i]))
            new = prob.remake(u0=x) if wrt == "u0" else prob.remake(p=x)
            values.append(loss(dxdt.solve(new, Tsit5(), saveat=ts, rtol=1e-12, atol=1e-14).u))
        grad[i] = (values[0] - values[1]) / (2 * eps * max(1.0, abs(base[i])))
    return grad


NONLINEAR = {
    "lotka_volterra": lambda: problems.lotka_volterra(tspan=(0.0, 5.0)),
    "lorenz": lambda: problems.lorenz(tspan=(0.0, 1.0)),
    "gray_scott": lambda: problems.gray_scott(n=8, tspan=(0.0, 10.0)),
    "heat_1d": lambda: problems.heat_1d(n=16, tspan=(0.0, 0.5)),
}


# integrating these backwards amplifies errors by far more than the tolerance: diffusion
# (Gray-Scott at this size; heat_1d(16) is too coarse to notice) and Lorenz's strongly contracting direction (exp(14.6 t) backwards)
ILL_POSED_BACKWARDS = ("gray_scott", "lorenz")


@pytest.fixture(scope="module", params=sorted(NONLINEAR))
def nonlinear(request):
    prob = NONLINEAR[request.param]()
    return request.param, prob, {w: central_fd(weighted_loss, prob, w) for w in ("p", "u0")}


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_strategies_agree_with_finite_differences(nonlinear, mode, adjoint):
    name, prob, fd = nonlinear
    if adjoint == "backsolve" and name in ILL_POSED_BACKWARDS:
        with pytest.raises(dxdt.SolverError, match="adjoint='interpolating'"):
            sens.gradient(weighted_loss, prob, Tsit5(), wrt=("u0", "p"), mode=mode,
                          adjoint=adjoint, rtol=1e-9, atol=1e-11)
        return
    g_u0, g_p = sens.gradient(weighted_loss, prob, Tsit5(), wrt=("u0", "p"), mode=mode,
                              adjoint=adjoint, rtol=1e-9, atol=1e-11)
    for got, want in ((g_u0, fd["u0"]), (g_p, fd["p"])):
        checked = ~np.isnan(want)
        scale = np.abs(want[checked]).max()
        np.testing.assert_allclose(got[checked], want[checked], atol=2e-5 * scale, rtol=1e-4)


def test_tuple_and_dict_parameters():
    def lv_tuple(du, u, p, t):
        (a, b), (c, d) = p
        du[0] = a * u[0] - b * u[0] * u[1]
        du[1] = -c * u[1] + d * u[0] * u[1]

    def lv_dict(du, u, p, t):
        du[0] = p["prey"][0] * u[0] - p["prey"][1] * u[0] * u[1]
        du[1] = -p["pred"] * u[1] + p["d"] * u[0] * u[1]

    ref_prob = problems.lotka_volterra(tspan=(0.0, 3.0))
    ref = sens.gradient(weighted_loss, ref_prob, Tsit5(), **TIGHT)
    tup = dxdt.ODEProblem(lv_tuple, ref_prob.u0, (0.0, 3.0), (np.array([1.5, 1.0]), np.array([3.0, 1.0])))
    g = sens.gradient(weighted_loss, tup, Tsit5(), **TIGHT)
    assert isinstance(g, tuple) and len(g) == 2
    np.testing.assert_allclose(np.concatenate(g), ref, rtol=1e-7)
    dct = dxdt.ODEProblem(lv_dict, ref_prob.u0, (0.0, 3.0), {"prey": np.array([1.5, 1.0]), "pred": 3.0, "d": 1.0})
    for mode in ("forward", "reverse"):
        g = sens.gradient(weighted_loss, dct, Tsit5(), mode=mode, **TIGHT)
        assert set(g) == {"prey", "pred", "d"} and np.shape(g["pred"]) == ()
        np.testing.assert_allclose([*g["prey"], g["pred"], g["d"]], ref, rtol=1e-7)


def test_loss_with_parameters_and_saveat():
    """``loss(u, p)`` sees p (its direct derivative counts) and the whole saved trajectory."""
    prob = problems.lotka_volterra(tspan=(0.0, 2.0))
    ts = np.linspace(0.5, 2.0, 4)
    loss = lambda u, p: np.sum(u[:, 0] * u[:, 1]) + np.sum(p ** 2)  # noqa: E731
    got = sens.gradient(loss, prob, Tsit5(), saveat=ts, **TIGHT)
    eps, want = 1e-6, np.zeros(4)
    for i in range(4):
        vals = []
        for s in (1, -1):
            p = prob.p.copy()
            p[i] += s * eps
            u = dxdt.solve(prob.remake(p=p), saveat=ts, rtol=1e-12, atol=1e-14).u
            vals.append(loss(u, p))
        want[i] = (vals[0] - vals[1]) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    value, grad = sens.value_and_gradient(loss, prob, Tsit5(), saveat=ts, **TIGHT)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, loss(dxdt.solve(prob, saveat=ts, rtol=1e-12, atol=1e-14).u, prob.p), rtol=1e-8)

# --- accuracy at default tolerances on the stiff-ish PDE --------------------------------

@pytest.fixture(scope="module")
def heat256():
    prob = problems.heat_1d(n=256)
    data = np.sin(3 * np.linspace(0, 1, 256))

    def loss(u):
        return np.sum((u[-1] - data) ** 2)

    reference = sens.gradient(loss, prob, Tsit5(), mode="reverse", rtol=1e-11, atol=1e-13)
    return prob, loss, reference


def test_auto_gradient_accurate_at_default_tolerance(heat256):
    prob, loss, reference = heat256
    prep = sens.prepare("gradient", loss, prob, Tsit5())
    assert prep.mode == "reverse" and prep.adjoint == "interpolating"
    got = prep(prob.p)
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 1e-3


def test_checkpoint_warns_where_it_cannot_vouch(heat256):
    prob, loss, reference = heat256
    with pytest.warns(RuntimeWarning, match="cannot vouch"):
        got = sens.gradient(loss, prob, Tsit5(), mode="reverse", adjoint="checkpoint")
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) > 1e-3  # why it warns


def test_checkpoint_silent_where_accurate():
    prob = problems.lotka_volterra(tspan=(0.0, 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sens.gradient(weighted_loss, prob, Tsit5(), mode="reverse", adjoint="checkpoint")


def test_backsolve_raises_on_ill_posed_backward_problem():
    prob = problems.heat_1d(n=128)  # backwards, the fastest mode grows like exp(100 t)
    with pytest.raises(dxdt.SolverError, match="interpolating"):
        sens.gradient(weighted_loss, prob, Tsit5(), mode="reverse", adjoint="backsolve")


def test_backsolve_warns_where_the_reconstructed_state_is_doubtful():
    """A fast decay run backwards: the reconstruction misses by ~1e3 x tolerance, below the
    ill-posed cut-off, and the gradient by ~1e3 x rtol in its smallest entries: a warning
    (the exact gradient below), while the interpolating adjoint stays at the tolerance."""
    def f(du, u, p, t):
        du[0] = -p[0] * u[0]
        du[1] = -p[1] * u[1] + p[2] * u[0] * u[1]

    k, b, c = p = np.array([15.3, 0.5, 2.0])
    prob = dxdt.ODEProblem(f, np.array([1.0, 1.0]), (0.0, 1.0), p)
    e = math.exp(-k)
    u1 = math.exp(-b + c * (1 - e) / k)  # u(1) = (e^{-k}, u1), loss u0(1) + u1(1)
    exact = np.array([-e + u1 * c * (e / k - (1 - e) / k**2), -u1, u1 * (1 - e) / k])
    options = dict(rtol=1e-6, atol=1e-8, mode="reverse")
    with pytest.warns(RuntimeWarning, match="backsolve' cannot vouch.*interpolating"):
        sens.gradient(np.sum, prob, Tsit5(), adjoint="backsolve", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        g = sens.gradient(np.sum, prob, Tsit5(), adjoint="interpolating", **options)
    np.testing.assert_allclose(g, exact, rtol=1e-5)


def test_loss_written_with_jax_numpy():
    import jax.numpy as jnp

    prob = problems.lotka_volterra(tspan=(0.0, 3.0))
    ts = np.linspace(1.0, 3.0, 3)
    with_jnp = sens.gradient(lambda u: jnp.sum(u ** 2), prob, Tsit5(), saveat=ts, **TIGHT)
    with_np = sens.gradient(lambda u: np.sum(u ** 2), prob, Tsit5(), saveat=ts, **TIGHT)
    np.testing.assert_allclose(with_jnp, with_np, rtol=1e-12)

    def misfit(u):  # jax.numpy in a helper only: the loss was translated as NumPy, and the
        return jnp.sum(u ** 2)  # helper's jnp call met a traced array ("not a valid JAX type")

    for mode in ("forward", "reverse"):
        through_helper = sens.gradient(lambda u: misfit(u), prob, Tsit5(), saveat=ts, mode=mode, **TIGHT)
        np.testing.assert_allclose(through_helper, with_np, rtol=1e-9)


def test_loss_with_a_default_argument_is_loss_of_u():
    """``loss(u, w=weights)`` takes the trajectory only: ``p`` is not passed into ``w``."""
    prob = problems.lotka_volterra(tspan=(0.0, 3.0))
    weights = np.array([2.0, 0.5])

    def weighted(u, w=weights):
        return np.sum(w * u[-1] ** 2)

    got = sens.gradient(weighted, prob, Tsit5(), **TIGHT)
    want = sens.gradient(lambda u: np.sum(weights * u[-1] ** 2), prob, Tsit5(), **TIGHT)
    np.testing.assert_allclose(got, want, rtol=1e-12)


# --- the dense output the interpolating adjoint reads ---------------------------------------


@pytest.mark.parametrize("method", ["Tsit5", "DP5", "Vern7", "BS3", "ROCK2"])
@pytest.mark.parametrize("tree", [False, True], ids=["array", "tuple"])
def test_dense_evaluate_equals_diffrax_interpolation(method, tree):
    """``Solved.evaluate`` (diffrax's dense interpolation without its bounds ``cond``, and
    for polynomial interpolants summed from the step buffers) gives diffrax's values
    everywhere in the span, step ends and both end points included, in physical time on a
    backward span, for a state that is an array or a pytree (a state with its tangents)."""
    from dxdt.sensitivity._jax import load_jax
    from dxdt.sensitivity._ode import odeint
    from dxdt.sensitivity._options import SolveOptions

    jax, jnp = load_jax()
    m = getattr(dxdt.solvers, method)()
    k = jnp.array([1.0, 3.0])
    options = SolveOptions(m, 1e-5, 1e-8, 4096)
    t0, t1 = 2.0, 0.5  # backward, as in an adjoint pass

    def field(t, y, a):
        if tree:
            return (-a * y[0] + jnp.sin(t), y[0] * y[1][::-1])
        return -a * y + jnp.sin(t)

    y0 = (jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])) if tree else jnp.array([1.0, -2.0])
    sol, code = jax.jit(lambda y0: odeint(field, y0, k, t0, t1, options, dense=True))(y0)
    assert int(code) == 0
    steps = np.asarray(sol.sol.interpolation.ts)
    steps = steps[np.isfinite(steps)]
    times = np.concatenate([[t0, t1], t0 + steps * (t1 - t0), np.linspace(t0, t1, 37)])
    flat = lambda y: np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(y)])  # noqa: E731
    evaluate = jax.jit(lambda sol, t: sol.evaluate(t))
    ours = np.stack([flat(evaluate(sol, t)) for t in times])
    theirs = np.stack([flat(sol.sol.evaluate((t - t0) / (t1 - t0))) for t in times])
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)
    exact_end = flat(jax.tree_util.tree_map(lambda y: y[-1], sol.ys))
    np.testing.assert_allclose(ours[1], exact_end, rtol=1e-13, atol=1e-13 * np.abs(exact_end).max())


@pytest.mark.parametrize("method", ["Tsit5", "Vern7", "BS3"])
@pytest.mark.parametrize("tree", [False, True], ids=["array", "tuple"])
def test_dense_evaluate_stages_equals_evaluate_at_each_time(method, tree):
    """``Solved.evaluate_stages`` (the backward step's stages read in one batch: one lookup,
    then a window of step ends slid on as far as needed) equals ``evaluate`` at each time:
    for times within one step, over a few steps, over many more steps than the window
    (the slide), at both ends of the span, in either order, and batched over two solves
    whose times need different slides (the loop under ``vmap``)."""
    from dxdt.sensitivity._jax import load_jax
    from dxdt.sensitivity._ode import _STAGE_WINDOW, odeint
    from dxdt.sensitivity._options import SolveOptions

    jax, jnp = load_jax()
    options = SolveOptions(getattr(dxdt.solvers, method)(), 1e-6, 1e-9, 4096)
    t0, t1 = 0.0, 6.0

    def field(t, y, a):
        if tree:
            return (-a * y[0] + jnp.sin(3 * t), y[0] * y[1][::-1])
        return -a * y + jnp.sin(3 * t)

    y0 = (jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])) if tree else jnp.array([1.0, -2.0])
    solve = jax.jit(lambda k: odeint(field, y0, k, t0, t1, options, dense=True)[0])
    sol = solve(jnp.array([1.0, 3.0]))
    ends = np.asarray(sol.sol.interpolation.ts)
    ends = t0 + ends[np.isfinite(ends)] * (t1 - t0)
    assert len(ends) > 3 * _STAGE_WINDOW
    rng = np.random.default_rng(0)
    batches = [np.linspace(ends[3], ends[3] + 0.3 * (ends[4] - ends[3]), 7),  # one step
               np.linspace(ends[5], ends[8], 7)[::-1],  # a few steps, backwards
               np.linspace(ends[2], ends[2 + 3 * _STAGE_WINDOW], 7),  # slides twice
               np.array([t0, t0, ends[1], 0.5 * (ends[1] + ends[2]), ends[2], ends[3], ends[4]]),
               np.linspace(ends[-3 * _STAGE_WINDOW], t1, 7)[::-1],  # to the end (clamped window)
               np.sort(rng.uniform(t0, t1, 7))]
    stages = jax.jit(lambda sol, t: sol.evaluate_stages(t))
    each = jax.jit(lambda sol, t: jax.vmap(sol.evaluate)(t))
    flat = lambda y: np.concatenate([np.reshape(leaf, (7, -1)) for leaf in jax.tree_util.tree_leaves(y)], axis=1)  # noqa: E731
    for times in batches:
        np.testing.assert_allclose(flat(stages(sol, jnp.asarray(times))), flat(each(sol, jnp.asarray(times))),
                                   rtol=1e-13, atol=1e-14)
    # batched: one member's times within a step, the other's across many steps
    sols = jax.vmap(lambda k: odeint(field, y0, k, t0, t1, options, dense=True)[0])(jnp.array([[1.0, 3.0], [1.2, 2.5]]))
    times = jnp.asarray(np.stack([batches[0], batches[2]]))
    got = jax.jit(jax.vmap(lambda s, t: s.evaluate_stages(t)))(sols, times)
    want = jax.jit(jax.vmap(lambda s, t: jax.vmap(s.evaluate)(t)))(sols, times)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("adjoint", ["interpolating", "backsolve"])
def test_small_pytree_state_solved_flat_equals_solved_by_leaves(monkeypatch, adjoint):
    """A state of several leaves under ``_ode.FLAT_BELOW`` entries is solved as one flat
    vector (adjoint and parameter integral, state and tangents): the gradients in a dict
    ``p`` and in ``u0``, ``jax.jacfwd`` (the tangent solve), the Hessian (the second-order
    system) and the NumPy-facing operator's gradients (in ``u0`` alone: no parameter
    integral) equal those of the same solves by leaves to roundoff (the same error norm,
    so the same steps), and the closed form of ``u' = -k u + c`` to the tolerance."""
    from dxdt.sensitivity import _ode
    from dxdt.sensitivity._jax import load_jax

    jax, jnp = load_jax()

    def f(du, u, p, t):
        du[:] = -p["k"] * u + p["c"]

    p = {"k": np.array([0.7, 1.3]), "c": np.array(0.4)}
    prob = dxdt.ODEProblem(f, np.array([1.0, -2.0]), (0.0, 2.0), p)
    ts = np.array([0.5, 1.0, 2.0])

    def derivatives():
        sens.clear_cache()  # the operator compiled again, with the size limit patched
        F = sens.jax_solve(prob, Tsit5(), saveat=ts, rtol=1e-10, atol=1e-12, adjoint=adjoint)
        x = (jnp.asarray(prob.u0), jax.tree_util.tree_map(jnp.asarray, p))
        L = lambda u0, q: jnp.sum(F(u0, q) ** 2)  # noqa: E731
        out = {"grad": jax.grad(L, argnums=1)(*x), "grad_u0": jax.grad(L)(*x),
               "jacfwd": jax.jacfwd(lambda q: F(x[0], q))(x[1])}
        if adjoint == "interpolating":
            out["hessian"] = jax.hessian(lambda k: L(x[0], {"k": k, "c": x[1]["c"]}))(x[1]["k"])
        for wrt in ("p", "u0"):  # in u0 alone the adjoint carries no parameter integral
            out[f"operator_{wrt}"] = sens.gradient(lambda u: np.sum(u**2), prob, Tsit5(), saveat=ts, rtol=1e-10,
                                                   atol=1e-12, mode="reverse", adjoint=adjoint, wrt=wrt)
        return jax.tree_util.tree_map(np.asarray, out)

    monkeypatch.setattr(_ode, "FLAT_BELOW", 10**6)
    flat = derivatives()
    monkeypatch.setattr(_ode, "FLAT_BELOW", 0)
    leaves = derivatives()
    for a, b in zip(jax.tree_util.tree_leaves(flat), jax.tree_util.tree_leaves(leaves)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # closed form: u_i(t) = e^{-k_i t} (u0_i - c/k_i) + c/k_i
    k, c, u0 = p["k"], float(p["c"]), prob.u0
    e = np.exp(-np.outer(ts, k))
    U = e * (u0 - c / k) + c / k
    dU_dk = -ts[:, None] * e * (u0 - c / k) + (1 - e) * (-c / k**2)
    dU_dc = (1 - e) / k
    np.testing.assert_allclose(flat["grad"]["k"], np.sum(2 * U * dU_dk, axis=0), rtol=1e-8)
    np.testing.assert_allclose(flat["grad"]["c"], np.sum(2 * U * dU_dc), rtol=1e-8)
    np.testing.assert_allclose(flat["grad_u0"], np.sum(2 * U * e, axis=0), rtol=1e-8)
    np.testing.assert_allclose(flat["operator_u0"], np.sum(2 * U * e, axis=0), rtol=1e-8)


def test_sorted_position_is_searchsorted():
    """The unrolled bisection that looks up the dense output's step equals
    ``np.searchsorted`` on both sides, with repeated entries, ``inf`` padding (unfilled
    steps) and queries outside the array, for every length up to a power of two and past it."""
    from dxdt.sensitivity._jax import load_jax
    from dxdt.solvers._diffrax import sorted_position

    jax, jnp = load_jax()
    rng = np.random.default_rng(3)
    for n in [0, 1, 2, 3, 7, 8, 9, 31, 384, 1000]:
        a = np.sort(rng.uniform(0, 1, n))
        if n > 4:
            a[2] = a[3]
            a[-2:] = np.inf
        v = np.concatenate([rng.uniform(-0.1, 1.1, 40), a[np.isfinite(a)], [-np.inf, np.inf]])
        for side in ["left", "right"]:
            got = jax.jit(lambda a, v: sorted_position(a, v, side))(jnp.asarray(a), jnp.asarray(v))
            np.testing.assert_array_equal(np.asarray(got), np.searchsorted(a, v, side))


def test_complex_states_get_the_strategies_that_are_right_and_clear_errors_otherwise():
    """u' = -(a + i b) u: the forward-mode gradient came out complex (-1.37 i for d/db,
    exactly 0), the reverse Jacobian dropped the imaginary parts, the continuous adjoints
    crashed inside diffrax. Right: the discrete adjoint's gradient, forward-mode Jacobians."""
    import jax

    def f(du, u, p, t):
        du[:] = (-p[0] - 1j * p[1]) * u

    u0 = np.array([1.0 + 0.5j])
    prob = dxdt.ODEProblem(f, u0, (0.0, 1.0), np.array([0.3, 2.0]))
    loss = lambda u: np.sum(np.abs(u[-1]) ** 2)  # noqa: E731  |u0|^2 e^{-2a}
    u1 = u0 * np.exp(-0.3 - 2.0j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # diffrax: complex support in progress
        g = sens.gradient(loss, prob, Tsit5(), mode="reverse", adjoint="checkpoint", rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, [-2 * 1.25 * math.exp(-0.6), 0.0], atol=1e-9)
        J = sens.jacobian(prob, Tsit5(), saveat=[1.0], mode="forward", rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(J.ravel(), [-u1[0], -1j * u1[0]], rtol=1e-8)
        # mode="auto" picks these strategies (it picked forward mode, which then raised)
        prep = sens.prepare("gradient", loss, prob, Tsit5(), rtol=1e-10, atol=1e-12)
        assert (prep.mode, prep.adjoint) == ("reverse", "checkpoint") and "complex state" in prep.reason
        np.testing.assert_array_equal(prep(prob.p), g)
        np.testing.assert_allclose(sens.jacobian(prob, Tsit5(), saveat=[1.0], rtol=1e-10, atol=1e-12), J, rtol=1e-14)
        np.testing.assert_allclose(sens.jacobian(prob, RKC(), saveat=[1.0], rtol=1e-10, atol=1e-12).ravel(),
                                   [-u1[0], -1j * u1[0]], rtol=1e-6)
        for call, match in [
            (lambda: sens.gradient(loss, prob, Tsit5(), adjoint="backsolve"), "mode='reverse', adjoint='checkpoint'"),
            (lambda: sens.gradient(loss, prob, Tsit5(), mode="forward"), "adjoint='checkpoint'"),
            (lambda: sens.jacobian(prob, Tsit5(), mode="reverse"), "mode='forward'"),
            (lambda: sens.hessian(loss, prob, Tsit5()), "complex state is not supported"),
            (lambda: sens.gradient(loss, prob, Tsit5(), wrt="u0"), "wrt='u0' holds complex"),
        ]:
            with pytest.raises((ValueError, TypeError), match=match):
                call()
        F = sens.jax_solve(prob, Tsit5(), rtol=1e-10, atol=1e-12)  # interpolating
        with pytest.raises(ValueError, match="real states only.*checkpoint"):
            jax.grad(lambda p: jax.numpy.sum(jax.numpy.abs(F(u0, p)) ** 2))(prob.p)


# --- dtypes: a float32 p is solved in float64; every strategy returns float64 ------------

def _triangular(du, u, p, t):
    du[0] = -p[0] * u[0] + p[1] * u[1]
    du[1] = -p[1] * u[1]


def _triangular_exact_gradient(p, u0, T):
    """d/dp of |u(T)|^2 for u' = A(p) u, by the Frechet derivative of expm (A T)."""
    from scipy.linalg import expm, expm_frechet

    A = np.array([[-p[0], p[1]], [0.0, -p[1]]])
    uT = expm(A * T) @ u0
    dA = [np.array([[-1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 1.0], [0.0, -1.0]])]
    return np.array([2 * uT @ (expm_frechet(A * T, d * T, compute_expm=False) @ u0) for d in dA])


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_float32_p_of_a_float64_state_is_differentiated_in_float64(mode, adjoint):
    """The adjoint's p-cotangents were float32: the reverse gradient was 2.4e-9 off at
    rtol 1e-10 (forward mode 2e-12) at the very same float32 value of p."""
    p32 = np.array([0.5, 0.3], np.float32)
    u0, T = np.array([1.0, 2.0]), 2.0
    prob = dxdt.ODEProblem(_triangular, u0, (0.0, T), p32)
    grad = sens.gradient(lambda u: np.sum(u[-1] ** 2), prob, saveat=[T], mode=mode, adjoint=adjoint, **TIGHT)
    assert grad.dtype == np.float64
    exact = _triangular_exact_gradient(p32.astype(np.float64), u0, T)
    np.testing.assert_allclose(grad, exact, rtol=2e-10)
    assert prob.p.dtype == np.float32 and prob.p is p32


@pytest.mark.parametrize("mode, adjoint", STRATEGIES)
def test_float32_problem_gradients_are_float64_on_every_strategy(mode, adjoint):
    """The discrete adjoint returned float32 where every other strategy gave float64."""
    p32, u0, T = np.array([0.5, 0.3], np.float32), np.array([1.0, 2.0], np.float32), 2.0
    prob = dxdt.ODEProblem(_triangular, u0, (0.0, T), p32)
    grad = sens.gradient(lambda u: np.sum(u[-1] ** 2), prob, saveat=[T], mode=mode, adjoint=adjoint,
                         rtol=1e-6, atol=1e-8)
    assert grad.dtype == np.float64
    exact = _triangular_exact_gradient(p32.astype(np.float64), u0.astype(np.float64), T)
    np.testing.assert_allclose(grad, exact, rtol=1e-4)
