"""Ensembles on ``backend="jax"``: vectorised batches equal solo JAX solves, member by member.

References: closed forms (exponential decay, the blow-up of y' = y^2, a cosine mode of the
heat equation) and each member's solo ``dxdt.solve(member, backend="jax")`` (same status and
stats, a stabilized method's stage counts and estimates included; values to rounding, since
vectorised arithmetic may round differently).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffrax")

import dxdt  # noqa: E402
from dxdt.solvers import RKC, ROCK2, Tsit5  # noqa: E402

TS = np.linspace(0.0, 1.0, 11)
OPTIONS = dict(rtol=1e-8, atol=1e-10, saveat=TS)
# y' = -a y + b y^2: decays over four decades (b = 0), and one member that blows up at t = 0.5
# in index order each batch of 3 holds one expensive member (a = 100, 30, the blow-up)
P = np.array([[1e-2, 0.0], [1e2, 0.0], [1e-1, 0.0], [0.0, 1.0], [1.0, 0.0], [0.3, 0.0],
              [30.0, 0.0], [3.0, 0.0], [3e-2, 0.0]])
U0 = np.ones((len(P), 1))
BLOWS_UP = 3
U0[BLOWS_UP] = 2.0


def logistic_decay(du, u, p, t):
    du[0] = -p[0] * u[0] + p[1] * u[0] * u[0]


@pytest.fixture(scope="module")
def ensemble():
    prob = dxdt.ODEProblem(logistic_decay, [1.0], (0.0, 1.0), p=np.array([1.0, 0.0]))
    ens = dxdt.EnsembleProblem(prob, u0=U0, p=P)
    solos = [dxdt.solve(ens.member(i), Tsit5(), backend="jax", **OPTIONS) for i in range(len(ens))]
    return ens, solos


@pytest.fixture(scope="module")
def batched(ensemble):
    """Batches of 3 lanes: the pilot groups the members by their step counts."""
    ens, _ = ensemble
    return dxdt.solve(ens, Tsit5(), backend="jax", batch_size=3, **OPTIONS)


def test_members_equal_their_solo_jax_solves(ensemble, batched):
    _, solos = ensemble
    for i, solo in enumerate(solos):
        member = batched.members[i]
        assert member.status == solo.status and member.stats == solo.stats, i
        np.testing.assert_array_equal(member.t, solo.t)
        # to 1e-12 of the solution's scale: decayed far below atol, a state's last digits
        # follow the rounding of the batched and the solo program's step-size control; the
        # last state of a failed member (a blow-up) amplifies that rounding, to 1e-6
        n = len(solo.u) - (not solo.success)
        scale = 1e-12 * np.abs(solo.u[:n]).max()
        for u in (member.u, batched.u[i, : len(solo.u)]):
            np.testing.assert_allclose(u[:n], solo.u[:n], rtol=1e-12, atol=scale)
            np.testing.assert_allclose(u[n:], solo.u[n:], rtol=1e-6)


def test_decays_match_the_closed_form(batched):
    decays = [i for i in range(len(P)) if i != BLOWS_UP]
    exact = np.exp(-P[decays, 0][:, None] * TS)
    np.testing.assert_allclose(batched.u[decays, :, 0], exact, rtol=1e-6, atol=1e-9)


def test_a_failing_member_keeps_its_status_and_partial_data(batched):
    assert list(np.flatnonzero(~batched.success)) == [BLOWS_UP]
    failed = batched.members[BLOWS_UP]
    assert failed.status in ("dt_min", "nonfinite") and "t=0.5" in failed.message
    reached = len(failed.t)
    assert 5 <= reached <= 6
    np.testing.assert_allclose(failed.u[:5, 0], 2.0 / (1 - 2.0 * TS[:5]), rtol=1e-6)
    assert np.isnan(batched.u[BLOWS_UP, reached:]).all()


def test_grouping_by_pilot_step_counts_cuts_the_lockstep_cost(ensemble, batched):
    assert batched.stats["grouped"] and batched.stats["n_batches"] == 3
    ens, solos = ensemble
    steps = np.array([s.stats["naccept"] + s.stats["nreject"] for s in solos])
    in_index_order = sum(3 * steps[i:i + 3].max() for i in range(0, len(steps), 3)) / steps.sum()
    assert 1.0 <= batched.stats["lockstep"] < in_index_order


# the heat equation u_t = D u_xx with no-flux walls (dxdt.problems.heat_1d, D constant per member)
# from 1 + cos(pi x): stiff enough (spectral radius ~ 4 D n^2) for stabilized methods to take
# several stages; batches of 2 lanes, so the pilot runs and the last batch is padded
HEAT_N = 32
HEAT_X = (np.arange(HEAT_N) + 0.5) / HEAT_N
HEAT_D = np.array([0.5, 1.0, 2.0])
HEAT_TS = np.linspace(0.0, 0.2, 5)
HEAT_OPTIONS = dict(rtol=1e-5, atol=1e-8, saveat=HEAT_TS)


def heat_gershgorin(u, p, t):
    return 4.0 * np.max(p) * HEAT_N**2  # row sums of |df/du| bound its spectral radius


@pytest.fixture(scope="module", params=[RKC(), ROCK2(), RKC(eigen_est=heat_gershgorin)],
                ids=["RKC", "ROCK2", "RKC-eigen_est"])
def heat_ensemble(request):
    method = request.param
    prob = dxdt.problems.heat_1d(n=HEAT_N, p=np.ones(HEAT_N), u0=1.0 + np.cos(np.pi * HEAT_X),
                                 tspan=(0.0, 0.2))
    ens = dxdt.EnsembleProblem(prob, p=np.outer(HEAT_D, np.ones(HEAT_N)))
    sol = dxdt.solve(ens, method, backend="jax", batch_size=2, **HEAT_OPTIONS)
    solos = [dxdt.solve(ens.member(i), method, backend="jax", **HEAT_OPTIONS) for i in range(len(ens))]
    return sol, solos


def test_stabilized_members_report_their_solo_stats(heat_ensemble):
    sol, solos = heat_ensemble
    assert sol.stats["n_batches"] == 2
    for i, solo in enumerate(solos):
        member = sol.members[i]
        assert solo.status == "success" and solo.stats["max_stages_used"] > 2, solo.stats
        assert member.status == solo.status and member.stats == solo.stats, (i, member.stats, solo.stats)
        np.testing.assert_allclose(member.u, solo.u, rtol=1e-12, atol=1e-300)


def test_stabilized_members_follow_the_heat_equation(heat_ensemble):
    sol, _ = heat_ensemble
    # the cosine mode is an eigenvector of the discrete Laplacian: exact for the ODE,
    # and within the discretisation error (dx^2) of the PDE's exp(-pi^2 D t)
    rate = 4.0 * HEAT_N**2 * np.sin(np.pi / (2 * HEAT_N)) ** 2
    decay = np.exp(-np.outer(HEAT_D, HEAT_TS) * rate)
    exact = 1.0 + decay[:, :, None] * np.cos(np.pi * HEAT_X)
    np.testing.assert_allclose(sol.u, exact, rtol=0, atol=1e-4)
    pde = 1.0 + np.exp(-np.pi**2 * np.outer(HEAT_D, HEAT_TS))[:, :, None] * np.cos(np.pi * HEAT_X)
    np.testing.assert_allclose(sol.u, pde, rtol=0, atol=1e-3)


def test_tspan_batches_shared_p_and_prob_func():
    prob = dxdt.ODEProblem(logistic_decay, [1.0], (0.0, 1.0), p=np.array([2.0, 0.0]))
    spans = np.array([[0.0, 1.0], [0.0, 0.5], [1.0, 0.0]])  # forwards, shorter, backwards
    ens = dxdt.EnsembleProblem(prob, tspan=spans)  # p shared by every lane
    sol = dxdt.solve(ens, Tsit5(), backend="jax", saveat=[0.5], rtol=1e-9, atol=1e-12)
    exact = np.exp(-2.0 * (0.5 - spans[:, 0]))  # backwards from t0=1 the decay grows
    np.testing.assert_allclose(sol.u[:, 0, 0], exact, rtol=1e-7)
    solo = dxdt.solve(ens.member(2), Tsit5(), backend="jax", saveat=[0.5], rtol=1e-9, atol=1e-12)
    assert sol.members[2].stats == solo.stats and sol.members[2].message == solo.message
    scaled = dxdt.EnsembleProblem(prob, tspan=spans, prob_func=lambda m, i: m.remake(u0=m.u0 * (i + 1)))
    by_member = dxdt.solve(scaled, Tsit5(), backend="jax", saveat=[0.5], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(by_member.u[:, 0, 0], exact * np.arange(1, 4), rtol=1e-7)


def test_bad_input_for_the_jax_backend(ensemble):
    ens, _ = ensemble
    with pytest.raises(ValueError, match="executor=None"):
        dxdt.solve(ens, Tsit5(), backend="jax", executor="threads", saveat=TS)
    mixed = dxdt.EnsembleProblem(ens.prob, n=2, prob_func=lambda m, i: m.remake(u0=np.ones(i + 1)))
    with pytest.raises(ValueError, match="member 1 differs from member 0"):
        dxdt.solve(mixed, Tsit5(), backend="jax", saveat=TS)


@pytest.mark.parametrize("budget", [None, 2048], ids=["one-pass", "narrowed"])
def test_without_saveat_each_member_saves_its_own_steps_as_its_solo_solve(ensemble, monkeypatch, budget):
    """``saveat=None``: every member's rows are its accepted steps (t0 and t1 included), as
    its solo JAX solve saves them: the same status, counts and rows, values to rounding;
    a member that runs out of ``max_steps`` stops at the same step. ``budget``: buffers
    capped so that the saving pass runs in narrower batches than the counting pass."""
    if budget is not None:
        monkeypatch.setattr(dxdt._backend_jax, "BUFFER_BUDGET_BYTES", budget)
    ens, _ = ensemble
    options = dict(rtol=1e-8, atol=1e-10)
    sol = dxdt.solve(ens, Tsit5(), backend="jax", batch_size=4, **options)
    short = dxdt.solve(ens, Tsit5(), backend="jax", max_steps=12, **options)
    assert isinstance(sol.t, list) and isinstance(sol.u, list) and len(sol.t) == len(ens)
    for i in range(len(ens)):
        solo = dxdt.solve(ens.member(i), Tsit5(), backend="jax", **options)
        member = sol.members[i]
        assert member.status == solo.status and member.stats == solo.stats, (i, member.stats, solo.stats)
        assert len(member.t) == len(solo.t) == solo.stats["naccept"] + 1
        assert member.t[0] == 0.0 and (member.t[-1] == 1.0) == solo.success
        np.testing.assert_allclose(member.t, solo.t, rtol=1e-7, atol=1e-14)  # see the docs
        # near the blow-up at t = 0.5, u ~ 1 / (0.5 - t) magnifies the steps' differences
        n = len(solo.u) if solo.success else int(np.sum(np.abs(solo.u[:, 0]) < 1e3))
        np.testing.assert_allclose(member.u[:n], solo.u[:n], rtol=1e-7, atol=1e-16)
        np.testing.assert_array_equal(sol.t[i], member.t)
        if solo.success:  # the decays against their closed form
            np.testing.assert_allclose(member.u[:, 0], np.exp(-P[i, 0] * member.t), rtol=1e-6, atol=1e-9)
        solo_short = dxdt.solve(ens.member(i), Tsit5(), backend="jax", max_steps=12, **options)
        cut = short.members[i]
        assert cut.status == solo_short.status and cut.stats == solo_short.stats, i
        assert cut.message == solo_short.message and len(cut.t) == len(solo_short.t)
        np.testing.assert_allclose(cut.u, solo_short.u, rtol=1e-7, atol=1e-16)
    assert {"success", "max_steps"} <= set(short.status) and sol.status[BLOWS_UP] != "success"


def test_a_closure_array_changed_in_place_is_seen_and_an_identical_solve_does_not_rebuild():
    rates = np.array([1.0, 2.0])

    def scaled_decay(du, u, p, t):
        du[:] = -p * rates * u

    prob = dxdt.ODEProblem(scaled_decay, np.ones(2), (0.0, 1.0), p=1.0)
    ens = dxdt.EnsembleProblem(prob, p=np.array([0.5, 1.0, 2.0]))
    options = dict(saveat=[0.5, 1.0], rtol=1e-9, atol=1e-12)
    first = dxdt.solve(ens, Tsit5(), backend="jax", **options)
    builds = dxdt.sensitivity.cache_info()["builds"]
    again = dxdt.solve(ens, Tsit5(), backend="jax", **options)
    assert dxdt.sensitivity.cache_info()["builds"] == builds  # the compiled batch is found again
    np.testing.assert_array_equal(again.u, first.u)
    rates *= 3.0  # in place: same object, same code of f, new values
    scaled = dxdt.solve(ens, Tsit5(), backend="jax", **options)
    assert dxdt.sensitivity.cache_info()["builds"] == builds + 1
    exact = np.exp(-np.multiply.outer(np.outer([0.5, 1.0, 2.0], [0.5, 1.0]), rates))
    np.testing.assert_allclose(scaled.u, exact, rtol=1e-7)
    np.testing.assert_allclose(scaled.u, dxdt.solve(ens, Tsit5(), **options).u, rtol=1e-7)
    np.testing.assert_allclose(first.u, exact ** (1 / 3), rtol=1e-7)  # before: the old rates



def test_the_users_work_buffer_is_never_written():
    """The JAX backend's ensemble checked ``f`` at ``u0`` with the user's own ``f``: its
    closure work buffer held ``2 u0`` afterwards (a solo JAX solve checks on a duplicate)."""
    work = np.full(2, -7.0)

    def buffered_decay(du, u, p, t):
        np.multiply(u, 2.0, out=work)
        du[:] = -p * work

    prob = dxdt.ODEProblem(buffered_decay, np.ones(2), (0.0, 1.0), p=1.0)
    sol = dxdt.solve(dxdt.EnsembleProblem(prob, p=np.array([0.5, 1.0])), Tsit5(), backend="jax", saveat=[1.0],
                     rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(work, [-7.0, -7.0])
    np.testing.assert_allclose(sol.u[:, 0, 0], np.exp([-1.0, -2.0]), rtol=1e-7)

SHARDED = textwrap.dedent("""
    import numpy as np, jax, dxdt
    from dxdt.solvers import Tsit5

    def decay(du, u, p, t):
        du[:] = -p * u

    assert jax.local_device_count() == 2
    prob = dxdt.ODEProblem(decay, np.ones(2), (0.0, 1.0), p=1.0)
    rates = np.array([0.1, 1.0, 10.0])  # padded to 4 lanes, 2 per device
    sol = dxdt.solve(dxdt.EnsembleProblem(prob, p=rates), Tsit5(), backend="jax", saveat=[0.5, 1.0],
                     rtol=1e-8, atol=1e-10)
    exact = np.exp(-np.outer(rates, [0.5, 1.0]))
    assert np.allclose(sol.u[:, :, 0], exact, rtol=1e-6), sol.u
    solo = dxdt.solve(prob.remake(p=10.0), Tsit5(), backend="jax", saveat=[0.5, 1.0], rtol=1e-8, atol=1e-10)
    assert sol.members[2].stats == solo.stats and np.allclose(sol.members[2].u, solo.u, rtol=1e-12)
    print("sharded ok")
""")


def test_member_axis_sharded_over_two_host_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(Path(dxdt.__file__).resolve().parent.parent))
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sharded ok" in done.stdout


@pytest.mark.parametrize("method, options", [(Tsit5(), {}), (dxdt.solvers.RK4(), {"dt": 0.1})],
                         ids=["adaptive", "fixed steps"])
def test_members_failing_at_t0_or_midway_equal_their_solo_jax_solves(method, options):
    """A member whose f is NaN from t0 keeps the saveat row at t0; a fixed-step member whose
    state turns NaN stops there with the NumPy message and counts, each as its solo solve."""
    def f(du, u, p, t):
        du[0] = np.where(t < p[1], -p[0] * u[0], np.nan)

    prob = dxdt.ODEProblem(f, np.array([1.0]), (0.0, 2.0), np.array([1.0, 5.0]))
    P = np.array([[1.0, 5.0], [np.nan, 5.0], [1.0, 1.0]])
    ts = np.linspace(0.0, 2.0, 9)
    ens = dxdt.solve(dxdt.EnsembleProblem(prob, p=P), method, saveat=ts, backend="jax", **options)
    for i, member in enumerate(ens.members):
        solo = dxdt.solve(prob.remake(p=P[i]), method, saveat=ts, backend="jax", **options)
        assert member.status == solo.status == ("success" if i == 0 else "nonfinite")
        assert member.message == solo.message and member.stats == solo.stats
        np.testing.assert_array_equal(member.t, solo.t)
        # (to rounding: the first step's norms are reduced in another order under vmap)
        np.testing.assert_allclose(member.u, solo.u, rtol=1e-14, atol=0)
    np.testing.assert_array_equal(ens.members[1].t, [0.0])
