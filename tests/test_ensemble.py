"""Ensembles on the NumPy backend: every member equals its solo solve, whatever the executor.

References are closed forms (exponential decays, the blow-up of y' = y^2) and the solo
``dxdt.solve`` of each member (bitwise: same values, same ``nfev``).
"""

import multiprocessing
import os
import signal
import threading
import warnings
from typing import NamedTuple
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import dxdt
from dxdt.solvers import Tsit5

RATES = np.logspace(-2, 2, 9)  # four decades of decay rates
TS = np.linspace(0.0, 2.0, 7)
U0 = np.array([1.0, -0.5])
OPTIONS = dict(rtol=1e-8, atol=1e-10, saveat=TS)


def decay(du, u, p, t):
    du[:] = -p * u


def decay_pytree(du, u, p, t):
    du[:] = -p["k"] * u + p["c"][0]


class Relaxation(NamedTuple):
    k: np.ndarray
    c: float


def decay_namedtuple(du, u, p, t):
    du[:] = -p.k * u + p.c


def riccati(du, u, p, t):
    du[0] = u[0] * u[0]


def killer(du, u, p, t):
    if p == 0.0:  # member 0 of the dead-worker test kills its worker process
        os.kill(os.getpid(), signal.SIGKILL)
    du[:] = -p * u


N_CELLS = 16
_LAP = np.empty(N_CELLS)  # a work buffer in the closure (module global): threads must not share it


def heat(du, u, p, t):
    _LAP[1:-1] = u[:-2] - 2.0 * u[1:-1] + u[2:]
    _LAP[0] = u[1] - 2.0 * u[0]
    _LAP[-1] = u[-2] - 2.0 * u[-1]
    np.multiply(_LAP, p * (N_CELLS + 1) ** 2, out=du)


def decay_problem():
    return dxdt.ODEProblem(decay, U0, (0.0, 2.0), p=1.0)


@pytest.fixture(scope="module")
def decays():
    """The decay ensemble and each member's solo solve."""
    prob = decay_problem()
    solos = [dxdt.solve(prob.remake(p=k), Tsit5(), **OPTIONS) for k in RATES]
    return dxdt.EnsembleProblem(prob, p=RATES), solos


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def assert_members_equal_solos(sol, solos):
    assert sol.u.shape == (len(solos), len(TS), *U0.shape)
    np.testing.assert_array_equal(sol.t, TS)
    for i, solo in enumerate(solos):
        np.testing.assert_array_equal(sol.u[i], solo.u)  # bitwise
        np.testing.assert_array_equal(sol.members[i].u, solo.u)
        assert sol.members[i].stats == solo.stats
    assert sol.success.all() and list(sol.status) == ["success"] * len(solos)
    assert sol.stats["nfev"] == sum(s.stats["nfev"] for s in solos)


def test_decays_match_the_closed_form(decays):
    ens, _ = decays
    sol = dxdt.solve(ens, Tsit5(), **OPTIONS)
    exact = np.exp(-RATES[:, None, None] * TS[None, :, None]) * U0
    np.testing.assert_allclose(sol.u, exact, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("batch_size", [1, 4, None])
@pytest.mark.parametrize("executor", [None, "threads", "processes"])
def test_every_member_equals_its_solo_solve(decays, executor, batch_size):
    ens, solos = decays
    sol = dxdt.solve(ens, Tsit5(), executor=executor, max_workers=2, batch_size=batch_size, **OPTIONS)
    assert_members_equal_solos(sol, solos)
    if batch_size is not None:
        assert sol.stats["n_batches"] == -(-len(RATES) // batch_size)


def forkserver_pool(workers: int) -> ProcessPoolExecutor:
    # not the default fork: JAX may be loaded (by other tests), and forking its threads can deadlock
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


@pytest.mark.parametrize("make_pool", [ThreadPoolExecutor, forkserver_pool], ids=["threads", "processes"])
def test_user_executors(decays, make_pool):
    ens, solos = decays
    with make_pool(2) as pool:
        sol = dxdt.solve(ens, Tsit5(), executor=pool, batch_size=3, **OPTIONS)
    assert_members_equal_solos(sol, solos)


def test_dask_local_cluster(decays, dask_client):
    ens, solos = decays
    sol = dxdt.solve(ens, Tsit5(), executor=dask_client, batch_size=2, **OPTIONS)
    assert_members_equal_solos(sol, solos)


def test_closure_buffers_under_threads_equal_serial_bitwise():
    x = np.linspace(0, 1, N_CELLS + 2)[1:-1]
    prob = dxdt.ODEProblem(heat, np.sin(np.pi * x), (0.0, 0.05), p=1.0)
    ens = dxdt.EnsembleProblem(prob, p=np.linspace(0.5, 2.0, 8))
    serial = dxdt.solve(ens, Tsit5(), saveat=[0.05])
    threads = dxdt.solve(ens, Tsit5(), saveat=[0.05], executor="threads", max_workers=4, batch_size=1)
    np.testing.assert_array_equal(threads.u, serial.u)
    assert [m.stats for m in threads.members] == [m.stats for m in serial.members]
    # the discrete Laplacian's first mode decays like exp(-lambda D t)
    lam = 4 * (N_CELLS + 1) ** 2 * np.sin(np.pi / (2 * (N_CELLS + 1))) ** 2
    exact = np.exp(-lam * np.linspace(0.5, 2.0, 8) * 0.05)[:, None] * np.sin(np.pi * x)
    np.testing.assert_allclose(serial.u[:, 0], exact, rtol=1e-5)


def test_a_blowing_up_member_is_isolated():
    u0s = np.array([[0.5], [2.0], [-1.0]])  # y' = y^2, y = y0 / (1 - y0 t): member 1 blows up at t=0.5
    ts = np.linspace(0.0, 1.0, 11)
    prob = dxdt.ODEProblem(riccati, [0.5], (0.0, 1.0))
    ens = dxdt.EnsembleProblem(prob, u0=u0s)
    sol = dxdt.solve(ens, Tsit5(), rtol=1e-8, atol=1e-10, saveat=ts, batch_size=1, executor="threads")
    assert list(sol.success) == [True, False, True]
    assert sol.status[1] in ("dt_min", "nonfinite", "max_steps")
    for i in (0, 2):
        np.testing.assert_allclose(sol.u[i, :, 0], u0s[i, 0] / (1 - u0s[i, 0] * ts), rtol=1e-6)
    reached = len(sol.members[1].t)
    assert reached == 6 and sol.members[1].t[-1] == 0.5  # rows up to the singularity are kept
    np.testing.assert_allclose(sol.u[1, :5, 0], 2.0 / (1 - 2.0 * ts[:5]), rtol=1e-6)
    assert np.isnan(sol.u[1, reached:]).all()
    solo = dxdt.solve(prob.remake(u0=u0s[1]), Tsit5(), rtol=1e-8, atol=1e-10, saveat=ts)
    assert sol.members[1].status == solo.status and sol.members[1].message == solo.message
    with pytest.raises(dxdt.SolverError, match="1 of 3 ensemble members failed") as info:
        dxdt.solve(ens, Tsit5(), rtol=1e-8, atol=1e-10, saveat=ts, throw=True)
    assert isinstance(info.value.solution, dxdt.EnsembleSolution)
    assert list(info.value.solution.success) == [True, False, True]


@pytest.mark.parametrize("executor, backend", [(None, "numpy"), ("threads", "numpy"), (None, "jax")])
def test_members_stopped_by_a_terminal_event_succeed(executor, backend):
    """Status "event" is a success (API.md): the ensemble's ``success``, ``n_failed`` and
    ``throw=True`` counted it as a failure. On the JAX backend (where events were refused)
    each member runs its own compiled solve with events, equal to its solo JAX solve."""
    prob = dxdt.ODEProblem(decay, [1.0], (0.0, 1.0), p=np.array([1.0]))
    half = dxdt.Event(lambda u, p, t: u[0] - 0.5, terminal=True)
    ens = dxdt.EnsembleProblem(prob, p=np.array([[0.5], [2.0]]))  # only member 1 reaches 0.5, at ln(2)/2
    sol = dxdt.solve(ens, Tsit5(), events=[half], executor=executor, rtol=1e-10, atol=1e-12, throw=True,
                     backend=backend)
    if backend == "jax":
        for i, member in enumerate(sol.members):
            solo = dxdt.solve(ens.member(i), Tsit5(), events=[half], rtol=1e-10, atol=1e-12, backend="jax")
            np.testing.assert_array_equal(member.u, solo.u)
            assert member.stats == solo.stats
    assert list(sol.status) == ["success", "event"] and list(sol.success) == [True, True]
    assert sol.stats["n_failed"] == 0
    np.testing.assert_allclose(sol.members[1].t_events[0], [np.log(2.0) / 2.0], rtol=1e-9)
    assert len(sol.members[0].t_events[0]) == 0 and sol.members[1].t[-1] == sol.members[1].t_events[0][0]


def test_reduction_folds_batches_to_the_closed_form_sum(decays):
    ens, _ = decays
    seen = []

    def total(acc, batch):
        seen.append(batch.index.tolist())
        return (0.0 if acc is None else acc) + batch.u[:, -1].sum(axis=0)

    sol = dxdt.solve(ens, Tsit5(), reduction=total, batch_size=2, **OPTIONS)
    np.testing.assert_allclose(sol.reduced, np.exp(-RATES * TS[-1]).sum() * U0, rtol=1e-7)
    assert seen == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]  # folded in member order
    assert sol.members is None and sol.u is None and sol.success.all()
    parallel = dxdt.solve(ens, Tsit5(), reduction=total, batch_size=2, executor="threads", **OPTIONS)
    np.testing.assert_array_equal(parallel.reduced, sol.reduced)


def test_pytree_p_batches_and_prob_func():
    k, c = np.array([0.5, 1.0, 3.0]), np.array([[0.1], [0.2], [-0.3]])
    prob = dxdt.ODEProblem(decay_pytree, [1.0], (0.0, 1.0), p={"k": 1.0, "c": np.zeros(1)})
    ens = dxdt.EnsembleProblem(prob, p={"k": k, "c": c},
                               prob_func=lambda member, i: member.remake(u0=member.u0 * (i + 1)))
    ts = np.linspace(0.0, 1.0, 5)
    sol = dxdt.solve(ens, Tsit5(), rtol=1e-9, atol=1e-12, saveat=ts)
    u0 = np.arange(1, 4)[:, None]
    steady = c[:, 0] / k
    exact = steady[:, None] + (u0 - steady[:, None]) * np.exp(-k[:, None] * ts)
    np.testing.assert_allclose(sol.u[:, :, 0], exact, rtol=1e-7)
    member = ens.member(2)
    assert member.p["k"] == 3.0 and member.u0[0] == 3.0


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_namedtuple_p_batches(backend):
    """A NamedTuple ``p`` batch is split into NamedTuple members (it was rebuilt as if a
    plain tuple, and failed)."""
    k, c = np.array([[0.5, 1.0], [2.0, 3.0], [4.0, 0.25]]), np.array([0.1, 0.0, -0.2])
    prob = dxdt.ODEProblem(decay_namedtuple, U0, (0.0, 2.0), Relaxation(np.ones(2), 0.0))
    ens = dxdt.EnsembleProblem(prob, p=Relaxation(k, c))
    sol = dxdt.solve(ens, Tsit5(), backend=backend, **OPTIONS)
    steady = c[:, None] / k
    exact = steady[:, None, :] + (U0 - steady)[:, None, :] * np.exp(-k[:, None, :] * TS[None, :, None])
    np.testing.assert_allclose(sol.u, exact, rtol=1e-6, atol=1e-9)
    member = ens.member(1)
    assert isinstance(member.p, Relaxation) and member.p.c == 0.0


def test_tspan_batches_and_n():
    prob = decay_problem()
    spans = np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    sol = dxdt.solve(dxdt.EnsembleProblem(prob, tspan=spans), Tsit5(), rtol=1e-9, atol=1e-12)
    ends = np.array([u[-1, 0] for u in sol.u])
    np.testing.assert_allclose(ends, np.exp(-(spans[:, 1] - spans[:, 0])), rtol=1e-7)
    assert isinstance(sol.t, list) and sol.t[2][-1] == 0.0
    by_count = dxdt.solve(dxdt.EnsembleProblem(prob, n=3, prob_func=lambda m, i: m.remake(p=float(i))),
                          Tsit5(), saveat=[2.0])
    np.testing.assert_allclose(by_count.u[:, 0, 0], np.exp(-2.0 * np.arange(3)), rtol=1e-5)


@pytest.mark.parametrize("pool", ["processes", "a user's ProcessPoolExecutor"])
def test_a_dead_worker_process_fails_only_its_members(pool):
    """A user's pool that breaks cannot be restarted: its unfinished batches go on in dxdt's
    own pools (every member of the ensemble was reported "worker_died")."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    prob = dxdt.ODEProblem(killer, U0, (0.0, 1.0), p=1.0)
    rates = np.array([0.5, 0.0, 1.0, 2.0, 3.0])
    # (not forked: other tests of this process may have started JAX's threads)
    executor = "processes" if pool == "processes" else ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context("forkserver"))
    sol = dxdt.solve(dxdt.EnsembleProblem(prob, p=rates), Tsit5(), saveat=[1.0],
                     executor=executor, max_workers=2, batch_size=2)
    if pool != "processes":
        executor.shutdown()
    assert list(sol.status) == ["success", "worker_died", "success", "success", "success"]
    assert "worker process" in sol.members[1].message and np.isnan(sol.u[1]).all()
    np.testing.assert_allclose(sol.u[[0, 2, 3, 4], 0, 0], np.exp(-rates[[0, 2, 3, 4]]), rtol=1e-5)


def test_an_exception_in_f_names_the_member():
    def fails(du, u, p, t):
        if p > 1:
            raise ZeroDivisionError("model error")
        du[:] = -p * u

    ens = dxdt.EnsembleProblem(dxdt.ODEProblem(fails, U0, (0.0, 1.0), p=1.0), p=np.array([0.5, 2.0]))
    with pytest.raises(ZeroDivisionError) as info:
        dxdt.solve(ens, Tsit5())
    assert "ensemble member 1" in "".join(info.value.__notes__)


def _fails_for_member_two(member, i):
    if i == 2:
        raise RuntimeError("no data for this member")
    return member


@pytest.mark.parametrize("how", [{}, {"executor": "threads", "max_workers": 2}, {"backend": "jax"}],
                         ids=["serial", "threads", "jax"])
def test_an_exception_in_prob_func_names_the_member(how):
    """f's errors carried a note naming the member; prob_func's came out bare."""
    ens = dxdt.EnsembleProblem(dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), -u), U0, (0.0, 1.0)),
                               prob_func=_fails_for_member_two, n=4)
    with pytest.raises(RuntimeError, match="no data") as info:
        dxdt.solve(ens, Tsit5(), saveat=[1.0], **how)
    assert "raised by prob_func for ensemble member 2" in "".join(info.value.__notes__)


def test_progress_over_members(decays, capsys):
    ens, solos = decays
    sol = dxdt.solve(ens, Tsit5(), progress=True, batch_size=3, **OPTIONS)
    assert_members_equal_solos(sol, solos)
    assert "9/9" in capsys.readouterr().err


def test_bad_input_names_the_argument():
    prob = decay_problem()
    with pytest.raises(ValueError, match=r"u0 has 3, p has 2"):
        dxdt.EnsembleProblem(prob, u0=np.ones((3, 2)), p=np.ones(2))
    with pytest.raises(ValueError, match=r"p\['c'\] has 2"):
        dxdt.EnsembleProblem(prob, p={"k": np.ones(3), "c": np.ones(2)})
    with pytest.raises(ValueError, match="n has 4"):
        dxdt.EnsembleProblem(prob, p=np.ones(3), n=4)
    with pytest.raises(ValueError, match="batches .* or a member count n"):
        dxdt.EnsembleProblem(prob)
    with pytest.raises(ValueError, match="at least one member: the batch p has none"):
        dxdt.EnsembleProblem(prob, p=np.ones((0, 2)))
    with pytest.raises(ValueError, match=r"tspan batch must have shape \(members, 2\)"):
        dxdt.EnsembleProblem(prob, tspan=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"p\['k'\] batch is a scalar"):
        dxdt.EnsembleProblem(prob, p={"k": 1.0})
    with pytest.raises(TypeError, match="prob must be a dxdt.ODEProblem"):
        dxdt.EnsembleProblem("not a problem", n=2)
    with pytest.raises(TypeError, match="prob_func must be callable"):
        dxdt.EnsembleProblem(prob, n=2, prob_func=3)
    ens = dxdt.EnsembleProblem(prob, p=RATES)
    with pytest.raises(ValueError, match="executor must be None, 'threads', 'processes'"):
        dxdt.solve(ens, Tsit5(), executor="gpu")
    with pytest.raises(TypeError, match="executor must be"):
        dxdt.solve(ens, Tsit5(), executor=3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        dxdt.solve(ens, Tsit5(), batch_size=0)
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        dxdt.solve(ens, Tsit5(), executor="threads", max_workers=0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['rtoll'\]"):
        dxdt.solve(ens, Tsit5(), rtoll=1e-3)
    with pytest.raises(TypeError, match="executor, max_workers, batch_size, reduction are for an EnsembleProblem"):
        dxdt.solve(prob, Tsit5(), executor="threads")
    with pytest.raises(TypeError, match="prob_func must return a dxdt.ODEProblem"):
        dxdt.solve(dxdt.EnsembleProblem(prob, n=2, prob_func=lambda m, i: None), Tsit5())
    lock = threading.Lock()
    with pytest.raises(TypeError, match="need a picklable f"):
        dxdt.solve(dxdt.EnsembleProblem(prob, n=2, prob_func=lambda m, i: lock and m), Tsit5(),
                   executor="processes")
    with pytest.raises(ValueError, match="rtol must be finite"):
        dxdt.solve(ens, Tsit5(), rtol=-1.0)


def test_warnings_from_worker_processes_reach_the_caller_naming_the_member():
    """A worker process's warnings went nowhere (threads and serial runs showed them)."""
    def warns(du, u, p, t):
        if p > 1.5:
            warnings.warn("rate above 1.5", UserWarning)
        du[:] = -p * u

    ens = dxdt.EnsembleProblem(dxdt.ODEProblem(warns, U0, (0.0, 2.0), p=1.0), p=np.array([1.0, 2.0, 1.2]))
    with pytest.warns(UserWarning, match="ensemble member 1: rate above 1.5") as record:
        sol = dxdt.solve(ens, Tsit5(), executor="processes", max_workers=2, batch_size=1, **OPTIONS)
    assert all("member 1" in str(w.message) for w in record if "rate" in str(w.message))
    assert sol.success.all()


def test_processes_take_closure_built_models():
    buffer = np.empty(2)

    def local_decay(du, u, p, t):  # a local function with a work buffer: pickled by value
        np.multiply(u, -p, out=buffer)
        du[:] = buffer

    ens = dxdt.EnsembleProblem(dxdt.ODEProblem(local_decay, U0, (0.0, 2.0), p=1.0), p=RATES[:4])
    serial = dxdt.solve(ens, Tsit5(), **OPTIONS)
    processes = dxdt.solve(ens, Tsit5(), executor="processes", max_workers=2, **OPTIONS)
    np.testing.assert_array_equal(processes.u, serial.u)


def test_processes_keep_work_buffers_that_are_views_of_one_array():
    """``heat_1d`` writes ``flux[1:-1]`` and reads ``flux[1:]``, ``flux[:-1]``: pickled
    one by one, the views became three arrays and the workers' f silently wrong."""
    from dxdt._ensemble_executors import _dumps

    heat = dxdt.problems.heat_1d(n=16)
    flux = np.zeros(9)
    windows = np.lib.stride_tricks.sliding_window_view(flux, 3)  # as_strided: its base is no array
    parts = (flux[1:-1], flux[1:], flux[:-1], flux[::-2], windows)
    import pickle

    copies = pickle.loads(_dumps(parts, pickle))
    copies[0][:] = np.arange(7.0)
    np.testing.assert_array_equal(copies[1][:7], np.arange(7.0))
    np.testing.assert_array_equal(copies[2][1:8], np.arange(7.0))
    np.testing.assert_array_equal(copies[3], [0.0, 5.0, 3.0, 1.0, 0.0])  # flux[8], flux[6], ..., flux[0]
    np.testing.assert_array_equal(copies[4][2], [1.0, 2.0, 3.0])  # flux[2:5], a view of the same copy
    np.testing.assert_array_equal(flux, 0.0)  # the originals are not touched
    ens = dxdt.EnsembleProblem(heat, p=np.stack([heat.p, 2 * heat.p]))
    serial = dxdt.solve(ens, Tsit5(), saveat=[0.5, 1.0])
    processes = dxdt.solve(ens, Tsit5(), saveat=[0.5, 1.0], executor="processes", max_workers=2)
    np.testing.assert_array_equal(processes.u, serial.u)
