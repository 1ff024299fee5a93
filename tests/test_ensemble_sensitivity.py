"""Differentiable ensembles: multi-experiment gradients through the stacked members.

References: the sum of per-experiment gradients (each a solo ``sens.gradient``) and
central finite differences of the loss through NumPy ensemble solves at tight tolerance.
"""

import numpy as np
import pytest

pytest.importorskip("diffrax")

import dxdt  # noqa: E402
from dxdt import sensitivity as sens  # noqa: E402
from dxdt.solvers import Tsit5  # noqa: E402

P = np.array([1.5, 1.0, 3.0, 1.0])
U0 = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])  # three experiments, their own initial states
TS = np.linspace(0.5, 2.0, 4)
DATA = np.ones((len(U0), len(TS), 2))
TOL = dict(rtol=1e-10, atol=1e-12)
_TARGET = np.empty((len(TS), 2))  # one experiment's data, changed in place between solo calls


def lotka_volterra(du, u, p, t):
    a, b, c, d = p
    du[0] = a * u[0] - b * u[0] * u[1]
    du[1] = -c * u[1] + d * u[0] * u[1]


def all_experiments(u):
    return np.sum((u - DATA) ** 2)


def one_experiment(u):
    return np.sum((u - _TARGET) ** 2)


@pytest.fixture(scope="module")
def prob():
    return dxdt.ODEProblem(lotka_volterra, U0[0], (0.0, 2.0), p=P)


@pytest.fixture(scope="module")
def per_experiment(prob):
    grads = []
    for i, u0 in enumerate(U0):
        _TARGET[...] = DATA[i]
        grads.append(sens.gradient(one_experiment, prob.remake(u0=u0), Tsit5(), saveat=TS, **TOL))
    return np.array(grads)


def ensemble_loss(ens, **kw):
    sol = dxdt.solve(ens, Tsit5(), saveat=TS, rtol=1e-12, atol=1e-14, **kw)
    return all_experiments(sol.u)


def test_multi_experiment_gradient_is_the_sum_of_per_experiment_gradients(prob, per_experiment):
    ens = dxdt.EnsembleProblem(prob, u0=U0)
    value, grad = sens.value_and_gradient(all_experiments, ens, Tsit5(), saveat=TS, **TOL)
    np.testing.assert_allclose(grad, per_experiment.sum(axis=0), rtol=1e-7)
    assert value == pytest.approx(ensemble_loss(ens), rel=1e-9)
    h = 1e-6
    fd = [(ensemble_loss(dxdt.EnsembleProblem(prob.remake(p=P + h * e), u0=U0))
           - ensemble_loss(dxdt.EnsembleProblem(prob.remake(p=P - h * e), u0=U0))) / (2 * h)
          for e in np.eye(len(P))]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_per_member_batches_as_the_target(prob, per_experiment):
    P_batch = np.tile(P, (len(U0), 1))
    ens = dxdt.EnsembleProblem(prob, u0=U0, p=P_batch)
    g_u0, g_p = sens.gradient(all_experiments, ens, Tsit5(), saveat=TS, wrt=("u0", "p"), **TOL)
    assert g_u0.shape == U0.shape and g_p.shape == P_batch.shape
    np.testing.assert_allclose(g_p, per_experiment, rtol=1e-7)
    h = 1e-6
    for i, j in [(0, 0), (1, 1), (2, 0)]:
        step = np.zeros_like(U0)
        step[i, j] = h
        fd = (ensemble_loss(dxdt.EnsembleProblem(prob, u0=U0 + step, p=P_batch))
              - ensemble_loss(dxdt.EnsembleProblem(prob, u0=U0 - step, p=P_batch))) / (2 * h)
        assert g_u0[i, j] == pytest.approx(fd, rel=1e-6)


def test_choose_mode_shows_the_choice_the_operators_make_for_an_ensemble(prob):
    """``choose_mode`` refused an ensemble (TypeError) though the operators take one and
    apply it to the stacked members: 3 x 2 states, 4 shared or 3 x 4 batched parameters."""
    shared, batched = dxdt.EnsembleProblem(prob, u0=U0), dxdt.EnsembleProblem(prob, u0=U0, p=np.tile(P, (3, 1)))
    assert sens.choose_mode(shared) == sens.choose_mode(prob.remake(u0=U0.ravel()))
    mode, reason = sens.choose_mode(batched, wrt=("u0", "p"))
    assert mode == "reverse" and reason.startswith("18 target entries") and "for 6 states" in reason
    for ens, wrt in ((shared, "p"), (batched, ("u0", "p"))):
        prep = sens.prepare("gradient", all_experiments, ens, Tsit5(), saveat=TS, wrt=wrt)
        assert prep.mode == sens.choose_mode(ens, wrt=wrt)[0]
    with pytest.raises(ValueError, match="no tspan batch, no prob_func"):
        sens.choose_mode(dxdt.EnsembleProblem(prob, tspan=[[0, 1], [0, 2]]))


def test_ensembles_that_cannot_be_stacked_are_refused(prob):
    with pytest.raises(ValueError, match="no tspan batch, no prob_func"):
        sens.gradient(all_experiments, dxdt.EnsembleProblem(prob, tspan=[[0, 1], [0, 2]]), Tsit5())
    with pytest.raises(ValueError, match="jacobian does not take an EnsembleProblem"):
        sens.jacobian(dxdt.EnsembleProblem(prob, u0=U0), Tsit5())


def test_two_models_and_two_losses_of_the_same_shapes_get_their_own_programs():
    """The stacked ensemble wraps the user's ``f`` and loss: the compiled-code cache key
    once stopped at the wrappers, so a second model (or loss) of the same shapes reused the
    first one's program, silently. ``u' = -k q u``: ``d u(1)/dq = -k exp(-k q)``."""
    P2 = np.array([[1.0], [2.0]])

    def slow(du, u, p, t):
        du[:] = -p[0] * u

    def fast(du, u, p, t):
        du[:] = -3.0 * p[0] * u

    for f, k in ((slow, 1.0), (fast, 3.0)):
        ens = dxdt.EnsembleProblem(dxdt.ODEProblem(f, np.ones(1), (0.0, 1.0), np.array([1.0])), p=P2)
        grad = sens.gradient(lambda U: np.sum(U[:, -1, 0]), ens, Tsit5(), **TOL)
        np.testing.assert_allclose(grad.ravel(), -k * np.exp(-k * P2.ravel()), rtol=1e-7)
        weights = np.array([1.0, 1.0])
        grad = sens.gradient(lambda U: np.sum(weights * U[:, -1, 0]), ens, Tsit5(), **TOL)
        weights[:] = [2.0, 0.0]  # a closure array of the loss, changed in place
        again = sens.gradient(lambda U: np.sum(weights * U[:, -1, 0]), ens, Tsit5(), **TOL)
        np.testing.assert_allclose(again.ravel(), [2 * grad[0, 0], 0.0], rtol=1e-7, atol=1e-14)


def test_members_with_work_buffers_written_by_out_are_translated():
    """``heat_1d`` writes its flux buffer with ``np.add(..., out=...)``: stacked into an
    ensemble, the buffer must still be reached (and duplicated); each member's gradient
    equals its solo gradient."""
    heat = dxdt.problems.heat_1d(n=8, tspan=(0.0, 0.01))
    P = np.stack([heat.p, 1.5 * heat.p])
    ens = dxdt.EnsembleProblem(heat, p=P)
    grad = sens.gradient(lambda U: np.sum(U[:, -1] ** 2), ens, Tsit5(), saveat=[0.01], **TOL)
    for i in range(2):
        solo = sens.gradient(lambda u: np.sum(u[-1] ** 2), heat.remake(p=P[i]), Tsit5(), saveat=[0.01], **TOL)
        np.testing.assert_allclose(grad[i], solo, rtol=1e-7)


def test_events_with_an_ensemble_are_refused_not_located_on_the_stacked_state():
    """The stacked members shared one event location and affect: a loss of 1.969 against
    2.702 for the members' own events, silently."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.multiply(-p, u, out=du), np.array([1.0]), (0.0, 2.0),
                           np.array([1.0]))
    ens = dxdt.EnsembleProblem(prob, p=np.array([[1.0], [2.0]]))
    event = dxdt.Event(lambda u, p, t: u[0] - 0.5, lambda u, p, t: u.__setitem__(0, u[0] + 1.0))
    with pytest.raises(ValueError, match="events with an EnsembleProblem"):
        sens.value_and_gradient(lambda u: np.sum(u[:, -1]), ens, events=[event])
