"""``sens.jax_solve`` through state events (``Event``: root-found times, state jumps).

References are closed forms. A decay ``y' = -k y`` reset by ``y += a`` where it falls
to ``c``: the event time ``t* = ln(y0 / c) / k`` moves with ``(y0, k)``, so the rows after
it, ``(c + a) e^{-k (t - t*)}``, depend on ``y0`` only through ``t*`` (the saltation term
a solver without the event-time derivative drops). A ball bouncing with restitution:
bounce times and heights. Derivatives are checked against finite differences of the
closed forms; the compiled derivatives share one module fixture.
"""

import numpy as np
import pytest

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

jax = pytest.importorskip("jax")
jnp = jax.numpy

C = 0.5  # the threshold
TS = np.array([0.3, 1.5, 2.0])  # one row before the event (t* = ln 2 / 0.7 = 0.99), two after
X = np.array([1.0, 0.7, 0.8])  # (y0, k, a)
RTOL, ATOL = 1e-10, 1e-12


def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


def make_reset():
    buffer = np.zeros(1)  # a work buffer in the affect's closure: must stay untouched

    def reset(u, p, t):
        buffer[0] = p[1]
        u[0] += buffer[0]
    return dxdt.Event(lambda u, p, t: u[0] - C, affect=reset, direction=-1, name="reset"), buffer


def exact(x):
    """The rows at ``TS`` of the reset decay."""
    y0, k, a = x
    t_star = np.log(y0 / C) / k
    return np.where(TS < t_star, y0 * np.exp(-k * TS), (C + a) * np.exp(-k * (TS - t_star)))


def central(fn, x, h):
    return np.array([(fn(x + h * e) - fn(x - h * e)) / (2 * h) for e in np.eye(len(x))])


@pytest.fixture(scope="module")
def reset():
    event, buffer = make_reset()
    prob = dxdt.ODEProblem(decay, np.array([X[0]]), (0.0, 2.0), X[1:].copy())
    F = sens.jax_solve(prob, Tsit5(), saveat=TS, rtol=RTOL, atol=ATOL, events=[event])

    def rows(x):
        return F(x[:1], x[1:])[:, 0]

    def loss(x):
        return jnp.sum(rows(x) ** 2)

    x = jnp.asarray(X)
    return {
        "F": F, "rows": rows, "buffer": buffer, "value": F(x[:1], x[1:]),
        "jacrev": jax.jacrev(rows)(x), "jacfwd": jax.jacfwd(rows)(x), "hessian": jax.hessian(loss)(x),
    }


def test_rows_match_the_closed_form_and_the_numpy_backend(reset):
    np.testing.assert_allclose(reset["value"][:, 0], exact(X), rtol=1e-9)
    event, _ = make_reset()
    prob = dxdt.ODEProblem(decay, np.array([X[0]]), (0.0, 2.0), X[1:].copy())
    ref = dxdt.solve(prob, saveat=TS, events=[event], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(reset["value"], ref.u, rtol=1e-9)
    assert reset["value"].dtype == jnp.float64


def test_first_derivatives_include_the_event_time(reset):
    """Forward (``jacfwd``) and reverse (``jacrev``, the interpolating adjoint) Jacobians
    match the closed form, including ``d/dy0`` of the rows after the event, which is
    entirely the event-time (saltation) term."""
    fd = central(exact, X, 1e-6).T
    np.testing.assert_allclose(reset["jacfwd"], fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(reset["jacrev"], fd, rtol=1e-6, atol=1e-9)
    assert abs(fd[2, 0]) > 0.5  # a row after the event: all through t*(y0)


def test_hessian_forward_over_reverse_matches_the_closed_form(reset):
    def loss(x):
        return np.sum(exact(x) ** 2)

    h = 1e-4
    hess_fd = np.array([(central(loss, X + h * e, h) - central(loss, X - h * e, h)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(reset["hessian"], hess_fd, rtol=1e-5, atol=1e-6)


def test_vmap_equals_a_loop_and_a_changed_sequence_poisons_only_its_member(reset):
    """Every member plans its own event sequence; one whose threshold is never reached
    (an event less than F was built for) is NaN, the others equal their solo calls."""
    F = reset["F"]
    members = jnp.array([X, X * 1.05, [X[0], 0.01, X[2]], X * 0.95])
    batch = jax.vmap(lambda x: F(x[:1], x[1:]))(members)
    for i in (0, 1, 3):
        np.testing.assert_allclose(batch[i], F(members[i, :1], members[i, 1:]), rtol=1e-12, atol=0)
        np.testing.assert_allclose(batch[i][:, 0], exact(np.asarray(members[i])), rtol=1e-9)
    assert np.isnan(np.asarray(batch[2])).all()
    np.testing.assert_array_equal(reset["buffer"], 0.0)


def test_a_changed_sequence_raises_eagerly_and_is_nan_in_a_trace(reset):
    F, slow = reset["F"], jnp.array([0.01, X[2]])  # never reaches the threshold by t = 2
    with pytest.raises(dxdt.SolverError, match="event sequence at these .u0, p. differs.*build F again"):
        F(jnp.array([X[0]]), slow)
    assert np.isnan(np.asarray(jax.jit(F)(jnp.array([X[0]]), slow))).all()
    # and so is the gradient: where(valid, rows, nan) sent a zero cotangent back (a gradient
    # of exactly 0, which an optimiser takes for convergence)
    grads = jax.grad(lambda u0, p: jnp.sum(F(u0, p) ** 2), argnums=(0, 1))(jnp.array([X[0]]), slow)
    assert all(np.isnan(np.asarray(g)).all() for g in grads)
    # a save time on the other side of the event: t* = ln(1/0.5)/3 = 0.23 < 0.3
    with pytest.raises(dxdt.SolverError, match="differs"):
        F(jnp.array([X[0]]), jnp.array([3.0, X[2]]))


def test_a_failed_planning_solve_raises_with_its_status_and_is_nan_in_a_trace():
    event, _ = make_reset()
    prob = dxdt.ODEProblem(decay, np.array([X[0]]), (0.0, 2.0), X[1:].copy())
    F = sens.jax_solve(prob, Tsit5(), saveat=TS, events=[event], max_steps=40)
    stiff = jnp.array([1e6, X[2]])  # crosses at t = 7e-7, then needs far more than 40 steps
    with pytest.raises(dxdt.SolverError, match="max_steps"):
        F(jnp.array([X[0]]), stiff)
    assert np.isnan(np.asarray(jax.jit(F)(jnp.array([X[0]]), stiff))).all()
    assert np.isnan(np.asarray(jax.grad(lambda p: jnp.sum(F(jnp.array([X[0]]), p) ** 2))(stiff))).all()


def test_bad_input_names_the_event_or_the_argument():
    event, _ = make_reset()
    prob = dxdt.ODEProblem(decay, np.array([X[0]]), (0.0, 2.0), X[1:].copy())
    with pytest.raises(ValueError, match=r"backsolve.*Event 'reset'.*adjoint='interpolating'"):
        sens.jax_solve(prob, events=[event], adjoint="backsolve")
    stop = dxdt.Event(lambda u, p, t: u[0] - C, direction=-1, terminal=True, name="stop")
    with pytest.raises(ValueError, match=r"saveat: a terminal event ends the solve at t=0.99"):
        sens.jax_solve(prob, saveat=TS, events=[stop])
    with pytest.raises(TypeError, match=r"events\[0\]"):
        sens.jax_solve(prob, events=[object()])


G = 9.81


def ball(du, u, p, t):
    du[0] = u[1]
    du[1] = -G


def bounce(u, p, t):
    u[1] = -p[0] * u[1]


def ball_exact(e, h0, ts):
    """Height at ``ts`` of a ball dropped from ``h0`` bouncing with restitution ``e``."""
    v, t_hit, out = np.sqrt(2 * G * h0), np.sqrt(2 * h0 / G), []
    for t in ts:
        if t < t_hit:
            out.append(h0 - 0.5 * G * t**2)
            continue
        tau, speed = t - t_hit, e * v
        while tau > 2 * speed / G:
            tau, speed = tau - 2 * speed / G, e * speed
        out.append(speed * tau - 0.5 * G * tau**2)
    return np.array(out)


def test_bouncing_ball_heights_and_their_restitution_derivative():
    """Two bounces: heights at save times between them, and their derivative in the
    restitution ``e`` and the drop height (through both bounce times)."""
    ts = np.array([0.3, 0.6, 1.0, 1.4])
    prob = dxdt.ODEProblem(ball, np.array([1.0, 0.0]), (0.0, 1.4), np.array([0.8]))
    F = sens.jax_solve(prob, saveat=ts, rtol=RTOL, atol=ATOL,
                       events=[dxdt.Event(lambda u, p, t: u[0], affect=bounce, direction=-1, name="floor")])

    def heights(x):
        return F(jnp.stack([x[1], 0.0]), x[:1])[:, 0]

    x = jnp.array([0.8, 1.0])
    np.testing.assert_allclose(heights(x), ball_exact(0.8, 1.0, ts), rtol=1e-8, atol=1e-10)
    fd = central(lambda y: ball_exact(y[0], y[1], ts), np.asarray(x), 1e-6).T
    np.testing.assert_allclose(jax.jacfwd(heights)(x), fd, rtol=1e-6, atol=1e-8)


def test_a_float32_state_is_solved_in_float64_as_without_events():
    """``F`` of a float32 problem is solved in float64 and returns float32 rows (as
    ``jax_solve`` without events), through the state event and its gradient; a crash
    before (the chain's carry changed dtype)."""
    event, _ = make_reset()
    prob = dxdt.ODEProblem(decay, np.array([X[0]], np.float32), (0.0, 2.0), X[1:].copy())
    F = sens.jax_solve(prob, saveat=TS, rtol=RTOL, atol=ATOL, events=[event])
    rows = F(jnp.array([X[0]], jnp.float32), jnp.asarray(X[1:]))
    assert rows.dtype == jnp.float32
    np.testing.assert_allclose(rows[:, 0], exact(X), rtol=1e-6)
    grad = jax.grad(lambda p: F(jnp.array([X[0]], jnp.float32), p)[-1, 0])(jnp.asarray(X[1:]))
    np.testing.assert_allclose(grad, central(exact, X, 1e-6).T[-1, 1:], rtol=1e-6)
