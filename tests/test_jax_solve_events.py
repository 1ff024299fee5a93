"""``sens.jax_solve`` through dosing events (``TimeEvent`` at fixed times or ``times(p)``).

References are closed forms: intravenous bolus doses into a one-compartment model,
``u(t) = u0 e^{-k t} + D sum_{tau_i <= t} e^{-k (t - tau_i)}``, with its first and second
derivatives in ``(u0, k, D)``; and the NumPy backend with the same events. The
derivatives are computed together in one compiled program (module fixture).
"""

import numpy as np
import pytest

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

jax = pytest.importorskip("jax")
jnp = jax.numpy

TAU = np.array([0.0, 1.0, 2.0])  # doses: at t0, inside, and at t1 (two segment solves)
TS = np.array([0.0, 0.4, 1.0, 1.2, 2.0])  # rows at t0, between doses, on a dose, at t1
U0, K, D = 1.0, 0.7, 0.5
RTOL, ATOL = 1e-10, 1e-12


def bolus_rhs(du, u, p, t):
    du[:] = -p[0] * u


def make_dose():
    buffer = np.zeros(1)  # a work buffer in the affect's closure: must stay untouched

    def dose(u, p, t):
        buffer[:] = p[1]
        u += buffer
    return dose, buffer


def exact(x, t):
    """``U(t)`` and its gradient and Hessian in ``x = (u0, k, D)``."""
    u0, k, dose = x
    lags = t - TAU[TAU <= t]
    e0, e = np.exp(-k * t), np.exp(-k * lags)
    value = u0 * e0 + dose * e.sum()
    grad = np.array([e0, -t * u0 * e0 - dose * (lags * e).sum(), e.sum()])
    hess = np.array([[0.0, -t * e0, 0.0],
                     [-t * e0, t**2 * u0 * e0 + dose * (lags**2 * e).sum(), -(lags * e).sum()],
                     [0.0, -(lags * e).sum(), 0.0]])
    return value, grad, hess


def exact_loss(x):
    """``L = sum_j U(t_j)^2``, its gradient and Hessian."""
    parts = [exact(x, t) for t in TS]
    value = sum(v**2 for v, _, _ in parts)
    grad = sum(2 * v * g for v, g, _ in parts)
    hess = sum(2 * (np.outer(g, g) + v * h) for v, g, h in parts)
    return value, grad, hess


@pytest.fixture(scope="module")
def bolus():
    dose, buffer = make_dose()
    prob = dxdt.ODEProblem(bolus_rhs, np.array([U0]), (0.0, 2.0), np.array([K, D]))
    F = sens.jax_solve(prob, Tsit5(), saveat=TS, rtol=RTOL, atol=ATOL, events=[dxdt.TimeEvent(TAU, dose)])
    return F, prob, buffer


@pytest.fixture(scope="module")
def bolus_derivatives(bolus):
    F, _, _ = bolus

    def rows(x):
        return F(x[:1], x[1:])[:, 0]

    def loss(x):
        return jnp.sum(rows(x) ** 2)

    @jax.jit
    def everything(x):
        return {"U": rows(x), "grad": jax.grad(loss)(x), "jacfwd": jax.jacfwd(rows)(x),
                "jacrev": jax.jacrev(rows)(x), "hessian": jax.hessian(loss)(x),
                "jvp_grad": jax.jvp(jax.grad(loss), (x,), (jnp.array([0.3, -1.0, 2.0]),))[1]}

    x = np.array([U0, K, D])
    return x, {k: np.asarray(v) for k, v in everything(jnp.asarray(x)).items()}


def test_rows_match_the_closed_form_eager_and_the_numpy_backend(bolus):
    F, prob, _ = bolus
    U = np.asarray(F(jnp.array([U0]), jnp.array([K, D])))[:, 0]
    expected = np.array([exact((U0, K, D), t)[0] for t in TS])
    np.testing.assert_allclose(U, expected, rtol=1e-8)
    # a row on a dose time shows the post-dose state, one at t1 the state after the dose at t1
    assert U[2] == pytest.approx(exact((U0, K, D), 1.0)[0], rel=1e-8)
    dose, _ = make_dose()
    sol = dxdt.solve(prob, Tsit5(), saveat=TS, rtol=RTOL, atol=ATOL, events=[dxdt.TimeEvent(TAU, dose)])
    np.testing.assert_allclose(U, sol.u[:, 0], rtol=1e-8)
    assert "2 segment solves" in repr(F)


def test_first_derivatives_match_the_closed_form(bolus_derivatives):
    x, out = bolus_derivatives
    np.testing.assert_allclose(out["U"], [exact(x, t)[0] for t in TS], rtol=1e-8)
    jac = np.array([exact(x, t)[1] for t in TS])
    np.testing.assert_allclose(out["jacfwd"], jac, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out["jacrev"], jac, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out["grad"], exact_loss(x)[1], rtol=1e-6)


def test_second_derivatives_match_the_closed_form(bolus_derivatives):
    x, out = bolus_derivatives
    hess = exact_loss(x)[2]
    np.testing.assert_allclose(out["hessian"], hess, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(out["jvp_grad"], hess @ np.array([0.3, -1.0, 2.0]), rtol=1e-6)


def test_vmap_equals_a_loop_and_buffers_stay_untouched(bolus):
    F, prob, buffer = bolus
    ps = jnp.array([[K, D], [0.3, 1.0], [1.5, 0.2]])
    batched = jax.vmap(F, in_axes=(None, 0))(jnp.array([U0]), ps)
    for p, rows in zip(ps, batched):
        np.testing.assert_allclose(rows, F(jnp.array([U0]), p), rtol=1e-12, atol=1e-14)
    assert buffer.tobytes() == np.zeros(1).tobytes()  # the user's affect buffer, never written
    assert np.array_equal(prob.p, [K, D]) and np.array_equal(prob.u0, [U0])


def test_a_failed_segment_raises_eagerly_and_is_nan_in_a_trace():
    dose, _ = make_dose()
    prob = dxdt.ODEProblem(bolus_rhs, np.array([U0]), (0.0, 2.0), np.array([K, D]))
    F = sens.jax_solve(prob, Tsit5(), saveat=TS, events=[dxdt.TimeEvent(TAU, dose)], adjoint="checkpoint")
    stiff = jnp.array([1e7, D])  # needs far more steps than the budget at this rate
    F_small = sens.jax_solve(prob, Tsit5(), saveat=TS, events=[dxdt.TimeEvent(TAU, dose)],
                             adjoint="checkpoint", max_steps=50)
    with pytest.raises(dxdt.SolverError, match="max_steps"):
        F_small(jnp.array([U0]), stiff)
    rows = jax.jit(F_small)(jnp.array([U0]), stiff)
    assert np.isnan(np.asarray(rows)[1:]).all()
    # checkpoint: the discrete adjoint in every segment, first derivatives
    g = jax.grad(lambda p: jnp.sum(F(jnp.array([U0]), p) ** 2))(jnp.array([K, D]))
    np.testing.assert_allclose(g, exact_loss((U0, K, D))[1][1:], rtol=1e-4)


def forced(du, u, p, t):
    du[0] = -p[0] * u[0] + np.sin(t)
    du[1] = u[0] - p[1] * u[1]


def kick(u, p, t):
    u[0] += 1.0


def halve_and_add(u, p, t):
    u[0] *= 0.5
    u[1] += p[1]


EDGE_CASES = {  # tspan, saveat, events: each against the NumPy backend
    "two events, one shared time, list order": ((0.0, 3.0), np.linspace(0, 3, 7),
                                                [dxdt.TimeEvent([1.0, 2.0], kick), dxdt.TimeEvent([1.0, 2.5], halve_and_add)]),
    "the other list order": ((0.0, 3.0), np.linspace(0, 3, 7),
                             [dxdt.TimeEvent([1.0, 2.5], halve_and_add), dxdt.TimeEvent([1.0, 2.0], kick)]),
    "backward in time": ((3.0, 0.0), np.linspace(3, 0, 7), [dxdt.TimeEvent([1.0, 2.0], kick)]),
    "times outside tspan, an event without affect": ((0.0, 3.0), np.linspace(0, 3, 7),
                                                     [dxdt.TimeEvent([-1.0, 1.3, 5.0], kick), dxdt.TimeEvent([0.7])]),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_rows_match_the_numpy_backend(case):
    tspan, saveat, events = EDGE_CASES[case]
    prob = dxdt.ODEProblem(forced, np.array([1.0, 0.2]), tspan, np.array([0.7, 0.3]))
    ref = dxdt.solve(prob, saveat=saveat, events=events, rtol=RTOL, atol=ATOL)
    F = sens.jax_solve(prob, saveat=saveat, events=events, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(F(jnp.asarray(prob.u0), jnp.asarray(prob.p)), ref.u, rtol=1e-9, atol=1e-11)


def test_gradient_through_two_events_matches_finite_differences_of_numpy_solves():
    tspan, saveat, events = EDGE_CASES["two events, one shared time, list order"]
    prob = dxdt.ODEProblem(forced, np.array([1.0, 0.2]), tspan, np.array([0.7, 0.3]))
    F = sens.jax_solve(prob, saveat=saveat, events=events, rtol=RTOL, atol=ATOL)
    grad = jax.grad(lambda p: jnp.sum(F(jnp.asarray(prob.u0), p) ** 2))(jnp.asarray(prob.p))

    def numpy_loss(p):
        sol = dxdt.solve(prob.remake(p=p), saveat=saveat, events=events, rtol=1e-12, atol=1e-14)
        return np.sum(sol.u**2)

    h = 1e-6
    fd = [(numpy_loss(prob.p + h * e) - numpy_loss(prob.p - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_dose_times_of_p_first_and_second_derivatives_and_what_is_refused():
    """TimeEvent(times(p)): the dose time is a parameter. Rows, first derivatives and the
    Hessian (forward-over-reverse: segments between planned times, the joints moved along
    the flow) match the closed form; parameters that move a dose past a save time change
    the planned sequence: eagerly SolverError, NaN inside a trace."""
    ts = np.array([0.5, 1.5, 2.0, 3.0])

    def dose(u, p, t):
        u[0] += p[1]

    prob = dxdt.ODEProblem(bolus_rhs, np.array([1.0]), (0.0, 3.0), np.array([0.7, 0.5, 1.0]))
    event = dxdt.TimeEvent(lambda p: p[2] + np.array([0.0, 1.2]), dose)
    F = sens.jax_solve(prob, saveat=ts, events=[event], rtol=RTOL, atol=ATOL)

    def exact(p):
        k, amount, first = p
        return np.array([np.exp(-k * t) + sum(amount * np.exp(-k * (t - s)) for s in (first, first + 1.2) if s <= t)
                         for t in ts])

    u0, p = jnp.array([1.0]), jnp.array([0.7, 0.5, 1.0])
    np.testing.assert_allclose(F(u0, p)[:, 0], exact(np.asarray(p)), rtol=1e-9)
    h = 1e-6
    fd = np.array([(exact(np.asarray(p) + h * e) - exact(np.asarray(p) - h * e)) / (2 * h) for e in np.eye(3)]).T
    rows = lambda p: F(u0, p)[:, 0]  # noqa: E731
    np.testing.assert_allclose(jax.jacfwd(rows)(p), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jax.jacrev(rows)(p), fd, rtol=1e-6, atol=1e-9)
    def exact_loss(p):
        return np.sum(exact(p) ** 2)

    h = 1e-4
    grad_fd = lambda q: np.array([(exact_loss(q + h * e) - exact_loss(q - h * e)) / (2 * h)  # noqa: E731
                                  for e in np.eye(3)])
    hess_fd = np.array([(grad_fd(np.asarray(p) + h * e) - grad_fd(np.asarray(p) - h * e)) / (2 * h)
                        for e in np.eye(3)])
    np.testing.assert_allclose(jax.hessian(lambda p: jnp.sum(rows(p) ** 2))(p), hess_fd, rtol=1e-5, atol=1e-6)
    moved = jnp.array([0.7, 0.5, 1.6])  # the first dose passes the row at 1.5
    with pytest.raises(dxdt.SolverError, match="build F again"):
        F(u0, moved)
    assert np.isnan(np.asarray(jax.jit(F)(u0, moved))).all()
    assert np.isnan(np.asarray(jax.grad(lambda p: jnp.sum(rows(p) ** 2))(moved))).all()  # was exactly 0


def test_eager_gradients_through_events_compile_once():
    """An eager jax.grad (not under jit) of F through events ran the chain op by op and
    compiled its scan again at every call (2-3 s each); F's traced path is jitted now."""
    import logging

    prob = dxdt.ODEProblem(bolus_rhs, np.array([1.0]), (0.0, 3.0), np.array([0.7, 0.5, 1.0]))
    event = dxdt.TimeEvent(lambda p: p[2] + np.array([0.0]), lambda u, p, t: u.__setitem__(0, u[0] + p[1]))
    F = sens.jax_solve(prob, saveat=np.array([0.5, 2.0, 3.0]), events=[event], rtol=RTOL, atol=ATOL)
    u0 = jnp.array([1.0])
    grad = jax.grad(lambda p: jnp.sum(F(u0, p) ** 2))
    first = grad(jnp.array([0.7, 0.5, 1.0]))
    compiled = []

    class Count(logging.Handler):
        def emit(self, record):
            if "Compiling" in record.getMessage():
                compiled.append(record.getMessage()[:80])

    handler = Count()
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles():
            again = [grad(jnp.array([0.7, 0.5, 1.0 + d])) for d in (0.01, 0.02)]
    finally:
        logging.getLogger("jax").removeHandler(handler)
    assert compiled == [], compiled
    assert np.isfinite(np.asarray(again)).all() and not np.allclose(again[0], first)


def test_a_tangent_in_a_segments_times_is_refused_not_dropped():
    """Chains hold their segments' times fixed (they move the joints instead); a tangent in
    a segment solve's times raises rather than being silently ignored."""
    from dxdt.sensitivity._jax_solve import _differentiable, solve_static
    from dxdt.sensitivity._ode import SolveOptions

    prob = dxdt.ODEProblem(bolus_rhs, np.array([1.0]), (0.0, 1.0), np.array([0.7, 0.5, 1.0]))
    g = sens.to_jax(prob.f, prob.u0, prob.p)
    segment = _differentiable(solve_static(g, SolveOptions(Tsit5(), RTOL, ATOL, 1000), "interpolating", 64, 2))
    u0, p = jnp.array([1.0]), jnp.array([0.7, 0.5, 1.0])

    def rows(t1):
        return segment((jnp.asarray(0.0), t1, jnp.stack([0.5 * t1, t1])), u0, p)[0]

    np.testing.assert_allclose(rows(jnp.asarray(1.0))[:, 0], np.exp(-0.7 * np.array([0.5, 1.0])), rtol=1e-8)
    with pytest.raises(NotImplementedError, match="times are fixed"):
        jax.jvp(rows, (jnp.asarray(1.0),), (jnp.asarray(1.0),))


def test_a_float32_state_is_solved_in_float64_as_without_events():
    """A float32 problem through the dose chain is solved in float64 and gives float32
    rows, as without events (a crash before: the scan's carry changed dtype)."""
    dose, _ = make_dose()
    prob = dxdt.ODEProblem(bolus_rhs, np.array([U0], np.float32), (0.0, 2.0), np.array([K, D]))
    F = sens.jax_solve(prob, saveat=TS, events=[dxdt.TimeEvent(TAU, dose)], rtol=RTOL, atol=ATOL)
    rows = F(jnp.array([U0], jnp.float32), jnp.array([K, D]))
    assert rows.dtype == jnp.float32
    np.testing.assert_allclose(rows[:, 0], [exact((U0, K, D), t)[0] for t in TS], rtol=1e-6)


def test_dose_times_built_with_np_array_inside_jax_solve():
    """``times=lambda p: np.array([p[2], p[2] + 1])`` inside ``jax_solve``: its private
    copy of ``times`` was translated without its module's ``np`` (a copy of a copy did not
    see the module's names), and ``np.array`` of traced values was refused. u(4) of
    ``u' = -k u`` with doses ``a`` at ``tau`` and ``tau + 1``: the closed form's gradient."""
    import math

    def decay(du, u, p, t):
        du[0] = -p[0] * u[0]

    dose = dxdt.TimeEvent(times=lambda p: np.array([p[2], p[2] + 1.0]),
                          affect=lambda u, p, t: u.__setitem__(0, u[0] + p[1]))
    prob = dxdt.ODEProblem(decay, np.array([2.0]), (0.0, 4.0), np.array([0.7, 0.5, 1.2]))
    F = sens.jax_solve(prob, events=[dose], rtol=1e-10, atol=1e-12)
    k, a, tau = prob.p
    spans = (4.0 - tau, 3.0 - tau)
    exact = [-4 * 2.0 * math.exp(-4 * k) - sum(s * a * math.exp(-k * s) for s in spans),
             sum(math.exp(-k * s) for s in spans), sum(a * k * math.exp(-k * s) for s in spans)]
    grad = jax.grad(lambda p: F(jnp.asarray(prob.u0), p)[-1, 0])(jnp.asarray(prob.p))
    np.testing.assert_allclose(np.asarray(grad), exact, rtol=1e-7)
