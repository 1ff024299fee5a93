"""``solve(..., backend="jax")``: agreement with the NumPy backend and with independent
references, statuses and partial data, float64, and no recompilation on new values."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dxdt
from dxdt import problems
from dxdt import sensitivity as sens
from dxdt.solvers import BS3, DP5, RK4, Euler, Heun, Tsit5, Vern7

RTOL, ATOL = 1e-8, 1e-10


def reference(prob, ts):
    """DOP853 at tight tolerance on the problem's own (NumPy, in-place) right-hand side."""
    shape = prob.u0.shape

    def rhs(t, u):
        du = np.empty(shape)
        prob.f(du, u.reshape(shape), prob.p, t)
        return du.ravel()

    sol = solve_ivp(rhs, prob.tspan, prob.u0.ravel(), method="DOP853", rtol=1e-12, atol=1e-14, t_eval=ts)
    return sol.y.T.reshape((len(ts),) + shape)


PROBLEMS = {
    "lotka_volterra": lambda: problems.lotka_volterra(),
    "lorenz": lambda: problems.lorenz(tspan=(0.0, 2.0)),
    "gray_scott": lambda: problems.gray_scott(n=12, tspan=(0.0, 20.0)),
    "heat_1d": lambda: problems.heat_1d(n=24, tspan=(0.0, 0.2)),
    "linear": lambda: problems.linear(np.array([[-1.0, 2.0], [-2.0, -0.5]]), np.array([1.0, 0.5]), 3.0),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_jax_backend_agrees_with_numpy_and_reference(name):
    prob = PROBLEMS[name]()
    ts = np.linspace(*prob.tspan, 6)
    ref = reference(prob, ts)
    scale = np.abs(ref).max()
    jx = dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, saveat=ts, backend="jax")
    npy = dxdt.solve(prob, Tsit5(), rtol=RTOL, atol=ATOL, saveat=ts)
    assert jx.success, jx.message
    assert jx.u.dtype == np.float64 and jx.u.shape == npy.u.shape
    np.testing.assert_array_equal(jx.t, ts)
    # both within the tolerance's reach of the reference, hence of each other
    np.testing.assert_allclose(jx.u, ref, atol=2e-6 * scale)
    np.testing.assert_allclose(jx.u, npy.u, atol=2e-6 * scale)


@pytest.fixture(scope="module")
def lv():
    return problems.lotka_volterra()


@pytest.mark.parametrize("method", [DP5(), BS3(), Vern7(), Heun()], ids=repr)
def test_every_adaptive_method(lv, method):
    ts = np.linspace(0, 10, 11)
    ref = reference(lv, ts)
    tol = 1e-5 if method.order <= 3 else 1e-8
    sol = dxdt.solve(lv, method, rtol=tol, atol=tol * 1e-2, saveat=ts, backend="jax")
    assert sol.success, sol.message
    np.testing.assert_allclose(sol.u, ref, atol=300 * tol)


def test_fixed_step_matches_numpy_to_rounding(lv):
    ts = np.linspace(0, 10, 11)
    a = dxdt.solve(lv, RK4(), dt=0.01, saveat=ts, backend="jax")
    b = dxdt.solve(lv, RK4(), dt=0.01, saveat=ts)
    np.testing.assert_allclose(a.u, b.u, rtol=1e-12)


def test_every_step_and_dense_output(lv):
    every = dxdt.solve(lv, Tsit5(), rtol=RTOL, atol=ATOL, backend="jax")
    assert every.t[0] == 0.0 and every.t[-1] == 10.0 and np.all(np.diff(every.t) > 0)
    assert len(every.t) == every.stats["naccept"] + 1
    dense = dxdt.solve(lv, Tsit5(), rtol=RTOL, atol=ATOL, backend="jax", dense=True)
    ts = np.array([0.5, 3.3, 9.9])
    np.testing.assert_allclose(dense(ts), reference(lv, ts), atol=1e-6)
    np.testing.assert_allclose(dense(3.3), dense(ts)[1])
    values = dense(ts)  # a writable array of its own, as on the NumPy backend (it was read-only)
    values *= 2.0
    np.testing.assert_allclose(values, 2.0 * dense(ts))


@pytest.mark.parametrize("method", [Tsit5, DP5, Vern7, BS3], ids=lambda m: m.__name__)
def test_dense_output_is_the_numpy_backends_interpolant(method):
    """Between the steps, the JAX backend's dense output (each step's polynomial kept as its
    coefficients in theta) is the NumPy executor's interpolant on the same steps: both
    backends take the same steps, so they agree to rounding, at times inside every step."""
    prob = problems.lorenz(tspan=(0.0, 1.0))
    kw = dict(rtol=1e-6, atol=1e-8, dense=True)
    numpy_sol = dxdt.solve(prob, method(), backend="numpy", **kw)
    jax_sol = dxdt.solve(prob, method(), backend="jax", **kw)
    assert jax_sol.stats["naccept"] == numpy_sol.stats["naccept"]
    steps = numpy_sol.t
    inside = np.concatenate([steps[:-1] + f * np.diff(steps) for f in (0.1, 0.37, 0.5, 0.81)])
    np.testing.assert_allclose(jax_sol(inside), numpy_sol(inside), rtol=1e-9, atol=1e-11)


def test_progress_bar_stops_where_the_solve_stopped(capsys):
    """The JAX backend's bar (percent of the span) ends at 100% for a solve that reached its
    end and where a failed solve stopped: diffrax's own bar jumps to 100% when it closes."""
    def nan_from_one(du, u, p, t):
        du[0] = np.where(t < 1.0, -u[0], np.nan)

    failed = dxdt.solve(dxdt.ODEProblem(nan_from_one, np.array([1.0]), (0.0, 2.0)), Tsit5(), backend="jax",
                        progress=True)
    assert failed.status == "nonfinite"
    shown = [line.split("%")[0].strip() for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if "%|" in line]
    assert shown and float(shown[-1]) == pytest.approx(50.0, abs=0.01) and "100.00" not in shown
    solved = dxdt.solve(problems.lotka_volterra(), Tsit5(), backend="jax", progress=True)
    assert solved.success
    shown = [line.split("%")[0].strip() for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if "%|" in line]
    assert shown[-1] == "100.00"


def test_progress_bar_falls_back_to_diffrax_meter_where_its_internals_differ(monkeypatch):
    """A diffrax without the internals the closing bar uses: diffrax's own meter, no crash."""
    import diffrax._progress_meter as meters

    from dxdt import _backend_jax

    monkeypatch.delattr(meters, "_progress_meter_manager")
    _backend_jax._progress_meter.cache_clear()
    try:
        assert type(_backend_jax._progress_meter()) is meters.TqdmProgressMeter
    finally:
        monkeypatch.undo()
        _backend_jax._progress_meter.cache_clear()
    assert type(_backend_jax._progress_meter()) is not meters.TqdmProgressMeter


def test_new_values_do_not_retrace(lv):
    from dxdt.sensitivity import cache_info

    ts = np.linspace(0, 10, 5)
    dxdt.solve(lv, Tsit5(), saveat=ts, backend="jax")
    builds = cache_info()["builds"]
    for scale in (0.9, 1.1, 1.2):  # new u0, p, tspan, saveat values and rtol, same shapes
        new = lv.remake(p=lv.p * scale, u0=lv.u0 * scale, tspan=(0.0, 9.0 + scale))
        sol = dxdt.solve(new, Tsit5(), rtol=1e-7 * scale, saveat=np.linspace(0, 9.0 + scale, 5), backend="jax")
        np.testing.assert_allclose(sol.u, reference(new, sol.t), atol=1e-4)
    assert cache_info()["builds"] == builds


def test_max_steps_keeps_partial_data(lv):
    ts = np.linspace(0, 10, 101)
    sol = dxdt.solve(lv, Tsit5(), rtol=RTOL, saveat=ts, max_steps=20, backend="jax")
    assert sol.status == "max_steps" and "max_steps=20" in sol.message
    assert 0 < len(sol.t) < len(ts)
    np.testing.assert_allclose(sol.u, reference(lv, sol.t), atol=1e-5)
    with pytest.raises(dxdt.SolverError) as info:
        dxdt.solve(lv, Tsit5(), saveat=ts, max_steps=20, backend="jax", throw=True)
    assert info.value.solution.status == "max_steps"


def _oscillator(du, u, p, t):
    du[0] = u[1]
    du[1] = -u[0]


def test_a_failure_names_the_step_size_of_the_numpy_backend():
    """The message of a solve that ran out of steps is the NumPy backend's, ``dt`` (the step
    the controller proposed last) included: the JAX backend and its ensembles left ``dt``
    out, and with events it named the step proposed at the end of a compiled chunk that
    ran past ``max_steps`` (0.0606 for max_steps 5 and 30 alike, against 0.0426 and 0.0662)."""
    prob = dxdt.ODEProblem(_oscillator, np.array([0.0, 1.0]), (0.0, 20.0))
    kick = dxdt.Event(lambda u, p, t: u[0], lambda u, p, t: u.__setitem__(1, 1.1 * u[1]), direction=+1)
    for max_steps, dt in ((5, "0.0426"), (30, "0.0662")):
        for events in ([], [kick]):
            for saveat in (None, [0.05, 1.0]):
                by = {b: dxdt.solve(prob, Tsit5(), rtol=1e-8, atol=1e-10, max_steps=max_steps, events=events,
                                    saveat=saveat, backend=b) for b in ("numpy", "jax")}
                assert by["numpy"].status == by["jax"].status == "max_steps"
                assert by["jax"].message == by["numpy"].message, (events, saveat)
                assert f"(dt={dt})" in by["jax"].message
    U0 = np.array([[0.0, 1.0], [0.0, 2.0]])
    ens = dxdt.EnsembleProblem(prob, u0=U0)  # (p=None: the JAX backend's ensemble crashed)
    members = dxdt.solve(ens, Tsit5(), rtol=1e-8, atol=1e-10, max_steps=5, backend="jax").members
    solos = [dxdt.solve(prob.remake(u0=u0), Tsit5(), rtol=1e-8, atol=1e-10, max_steps=5, backend="jax")
             for u0 in U0]
    assert [m.message for m in members] == [s.message for s in solos]
    assert "(dt=0.0374)" in members[1].message  # (as the NumPy backend's solo solve)
    blowup = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, u[0] ** 2), np.array([1.0]), (0.0, 2.0))
    sol = dxdt.solve(blowup, Tsit5(), rtol=1e-8, atol=1e-10, backend="jax")
    assert sol.status == "dt_min" and "at t=1 (dt=3.29e-15)" in sol.message  # (NumPy: dt=3.3e-15)


def test_blowup_is_reported(lv):
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.multiply(u, u, out=du), np.array([1.0]), (0.0, 2.0))
    sol = dxdt.solve(prob, Tsit5(), saveat=np.linspace(0, 2, 21), backend="jax")
    assert sol.status in ("dt_min", "nonfinite") and "t=" in sol.message
    assert len(sol.t) <= 11 and np.all(np.isfinite(sol.u))


def test_float32_stays_float32():
    prob = dxdt.ODEProblem(lambda du, u, p, t: np.multiply(u, -1.0, out=du), np.ones(3, np.float32), (0, 1))
    sol = dxdt.solve(prob, Tsit5(), rtol=1e-4, atol=1e-6, saveat=[1.0], backend="jax")
    assert sol.u.dtype == np.float32
    np.testing.assert_allclose(sol.u[0], np.exp(-1.0), rtol=1e-4)


def test_problem_untouched_by_jax_backend(lv):
    u0, p = lv.u0.copy(), lv.p.copy()
    dxdt.solve(lv, Tsit5(), backend="jax")
    np.testing.assert_array_equal(lv.u0, u0)
    np.testing.assert_array_equal(lv.p, p)


@pytest.mark.parametrize("saveat", [None, np.linspace(0.0, 10.0, 6)], ids=["every step", "saveat"])
def test_results_are_writable_arrays_of_their_own(lv, saveat):
    """Like the NumPy backend's: writing into one solution changes neither the user's saveat
    nor a later solution (the JAX results are copied out of the transfer buffer)."""
    given = None if saveat is None else saveat.copy()
    first = dxdt.solve(lv, Tsit5(), saveat=given, backend="jax")
    assert first.u.flags.writeable and first.t.flags.writeable
    expected_u, expected_t = first.u.copy(), first.t.copy()
    first.u[...] = -1.0
    first.t[...] = -1.0
    if saveat is not None:
        np.testing.assert_array_equal(given, saveat)
    second = dxdt.solve(lv, Tsit5(), saveat=given, backend="jax")
    np.testing.assert_array_equal(second.u, expected_u)
    np.testing.assert_array_equal(second.t, expected_t)


def test_saveat_checks_name_the_problem():
    """The fast path of the saveat check falls back to the full one with its messages."""
    prob = problems.lotka_volterra(tspan=(0.0, 2.0))
    for bad, match in [([0.0, np.nan, 1.0], "sorted|non-finite"), ([0.0, np.inf], "non-finite"),
                       ([0.0, 3.0], "outside tspan"), ([1.0, 0.5], "sorted"), ([], "non-empty")]:
        with pytest.raises(ValueError, match=match):
            dxdt.solve(prob, Tsit5(), saveat=bad, backend="jax")
    back = problems.lotka_volterra(tspan=(2.0, 0.0))
    sol = dxdt.solve(back, Tsit5(), saveat=[2.0, 1.0, 2e-13 * -1], backend="jax")  # clipped into tspan
    np.testing.assert_array_equal(sol.t, [2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="sorted"):
        dxdt.solve(back, Tsit5(), saveat=[0.0, 1.0], backend="jax")


def test_closure_work_buffers_untouched_by_jax_backend():
    """Gray-Scott's f writes four closure work buffers; the JAX backend (its input check
    included, with and without events) never writes them: a NumPy solve of the same model
    in another thread would race with it."""
    prob = problems.gray_scott(n=8, tspan=(0.0, 2.0))
    cells = [c.cell_contents for c in prob.f.__closure__ if isinstance(c.cell_contents, np.ndarray)]
    assert len(cells) >= 4
    for buffer in cells:
        buffer[...] = 7.0
    dxdt.solve(prob, Tsit5(), saveat=[2.0], backend="jax")
    tick = dxdt.TimeEvent([1.0], lambda u, p, t: None)
    dxdt.solve(prob, Tsit5(), saveat=[2.0], backend="jax", events=[tick])
    for buffer in cells:
        assert np.all(buffer == 7.0)


def fast_pulse(du, u, p, t):
    """A forcing pulse of width 1e-6 at t = 0, then slow decay: u(t) -> (1 - exp(-t/1e-6), exp(-1e-9 t))."""
    du[0] = np.exp(-t / 1e-6) / 1e-6
    du[1] = -1e-9 * u[1]


def test_the_step_floor_follows_the_current_time_as_on_numpy():
    """The JAX floor was 16 eps max(|t0|, |t1|) for the whole solve: on [0, 1e8] the steps of
    the pulse near t = 0 "underflowed" (dt_min at t = 1e-8) where NumPy's 16 eps |t| lets
    them through; with events, and in jax_solve, likewise. Also a tiny first step dt=1e-20."""
    prob = dxdt.ODEProblem(fast_pulse, np.array([0.0, 1.0]), (0.0, 1e8))
    exact = np.array([1.0, np.exp(-0.1)])
    tick = dxdt.TimeEvent([5e7], lambda u, p, t: None)
    for events in ([], [tick]):
        by = {b: dxdt.solve(prob, Tsit5(), backend=b, events=events) for b in ("numpy", "jax")}
        for sol in by.values():
            assert sol.success, sol.message
            np.testing.assert_allclose(sol.u[-1], exact, rtol=1e-5)
        assert by["jax"].stats["naccept"] == by["numpy"].stats["naccept"]
    F = sens.jax_solve(prob, Tsit5(), saveat=[1e8])
    np.testing.assert_allclose(F(prob.u0, prob.p)[-1], exact, rtol=1e-5)
    decay = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, -u[0]), np.array([1.0]), (0.0, 1.0))
    by = {b: dxdt.solve(decay, Tsit5(), dt=1e-20, backend=b) for b in ("numpy", "jax")}
    assert by["jax"].success and by["jax"].stats["naccept"] == by["numpy"].stats["naccept"]
    np.testing.assert_allclose(by["jax"].u[-1], np.exp(-1.0), rtol=1e-6)


def nan_after_one(du, u, p, t):
    """du = -u until t = 1, then NaN: the NumPy backend reports "nonfinite" at t = 1."""
    du[:] = np.where(t < 1.0, -u, np.nan)


@pytest.mark.parametrize("saveat", [None, np.linspace(0.0, 2.0, 9)], ids=["every step", "saveat"])
def test_nonfinite_status_and_partial_data_match_numpy(saveat):
    prob = dxdt.ODEProblem(nan_after_one, np.array([1.0, 2.0]), (0.0, 2.0))
    npy = dxdt.solve(prob, Tsit5(), saveat=saveat)
    jx = dxdt.solve(prob, Tsit5(), saveat=saveat, backend="jax")
    assert npy.status == jx.status == "nonfinite" and not jx.success
    assert "non-finite" in jx.message and "t=1" in jx.message
    if saveat is None:  # every accepted step up to t = 1, the last one reaching it
        assert jx.t[-1] == pytest.approx(1.0, abs=1e-12) and npy.t[-1] == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(jx.u[-1], np.exp(-1.0) * prob.u0, rtol=1e-6)
    else:
        np.testing.assert_array_equal(jx.t, npy.t)
        np.testing.assert_allclose(jx.u, npy.u, rtol=1e-6)
    np.testing.assert_allclose(jx.u, np.exp(-jx.t)[:, None] * prob.u0, rtol=1e-6)
    with pytest.raises(dxdt.SolverError, match="non-finite") as info:
        dxdt.solve(prob, Tsit5(), saveat=saveat, backend="jax", throw=True)
    assert info.value.solution.status == "nonfinite"


def nan_in_a_window(start, width):
    """``u' = -u`` (and ``v' = u``) with ``f`` NaN for ``t`` in ``(start, start + width)`` only."""
    def f(du, u, p, t):
        du[0] = -u[0] + np.where((t > start) & (t < start + width), np.nan, 0.0)
        du[1] = u[0]
    return dxdt.ODEProblem(f, np.array([1.0, 0.0]), (0.0, 1.0))


@pytest.mark.parametrize("options", [dict(), dict(dt=0.1, adaptive=False)], ids=["adaptive", "fixed"])
def test_a_nan_in_vern7s_interpolation_stages_never_reaches_the_saved_rows(options):
    """Vern7's six interpolation-only stages, which the NumPy backend evaluated only after
    accepting a step, put a NaN that only they met into the saved rows and the dense
    output with status "success" (rows 10-14 NaN here, and ``sol(0.6)``). A non-finite
    interpolation stage now fails the step as any stage does, as on the JAX backend, where
    they are stages of the step: the adaptive solve steps around the NaN window, the fixed
    one stops there with the rows before it."""
    ts = np.linspace(0.0, 1.0, 21)
    # the adaptive solve's step [0.492, 0.744] meets the window only at its stage c = 0.29;
    # the fixed step [0.5, 0.6] only at its stage c = 0.125
    prob = nan_in_a_window(0.5642857142857143, 1e-3) if not options else nan_in_a_window(0.5123, 4e-4)
    by = {b: dxdt.solve(prob, Vern7(), saveat=ts, backend=b, **options) for b in ("numpy", "jax")}
    for backend, sol in by.items():
        assert np.isfinite(sol.u).all(), backend
        np.testing.assert_allclose(sol.u[:, 0], np.exp(-sol.t), rtol=1e-6, err_msg=backend)
    if options:
        assert by["numpy"].status == by["jax"].status == "nonfinite"
        np.testing.assert_array_equal(by["numpy"].t, ts[:11])
        np.testing.assert_array_equal(by["jax"].t, ts[:11])
        assert by["numpy"].message == by["jax"].message
    else:
        assert by["numpy"].success and by["jax"].success
        dense = dxdt.solve(prob, Vern7(), dense=True)
        assert dense.success
        np.testing.assert_allclose(dense(0.6)[0], np.exp(-0.6), rtol=1e-6)


@pytest.mark.parametrize("method, k", [(DP5(), 1.1), (BS3(), 0.99)], ids=["DP5", "BS3"])
def test_a_nan_near_a_singularity_is_nonfinite_on_both_backends(method, k):
    """``u' = -k sqrt(u)`` reaches ``u = 0`` at ``t = 2/k``; a step overshooting below 0
    makes ``f`` NaN. The NumPy backend reported "dt_min" here: after its NaN rejections it
    accepted one smaller step, which cleared the record of them, and the next proposal fell
    below the step floor. A step-size underflow after non-finite rejections is "nonfinite"
    until the step grows again, on both backends (their last steps differ in rounding)."""
    def f(du, u, p, t):
        du[0] = -p[0] * np.sqrt(u[0])
        du[1] = u[0]
    prob = dxdt.ODEProblem(f, np.array([1.0, 0.0]), (0.0, 3.0), np.array([k]))
    with np.errstate(invalid="ignore"):
        by = {b: dxdt.solve(prob, method, backend=b) for b in ("numpy", "jax")}
    for backend, sol in by.items():
        assert sol.status == "nonfinite", (backend, sol.message)
        assert "non-finite" in sol.message
        assert sol.t[-1] == pytest.approx(2.0 / k, rel=1e-3)  # (default tolerances)
        np.testing.assert_allclose(sol.u[:, 0], (1.0 - k * sol.t / 2.0) ** 2, atol=1e-5)


@pytest.mark.parametrize("options", [dict(rtol=1e-8), dict(max_steps=20), dict(f=nan_after_one)],
                         ids=["blow-up", "max_steps", "nonfinite"])
def test_large_states_count_their_steps_first_and_keep_the_status(monkeypatch, options):
    """Saving every step of a state too large for a buffer of ``max_steps`` rows (here: any
    state, with the budget cut) counts the steps first, then solves again saving them. The
    second pass must report the first's outcome: it reported a blow-up, a non-finite f and
    running out of steps as "success" and moved the last row to t1."""
    options = dict(options)
    f = options.pop("f", lambda du, u, p, t: np.multiply(u, u, out=du))
    prob = dxdt.ODEProblem(f, np.array([1.0, 2.0]), (0.0, 2.0))
    direct = dxdt.solve(prob, Tsit5(), backend="jax", **options)
    monkeypatch.setattr(dxdt._backend_jax, "BUFFER_BUDGET_BYTES", 64)
    counted = dxdt.solve(prob, Tsit5(), backend="jax", **options)
    assert direct.status != "success" and counted.status == direct.status
    assert counted.message == direct.message and counted.stats["naccept"] == direct.stats["naccept"]
    # (the rejections before a non-finite f stops the solve may differ by a few: the two
    # programs round differently, which the shrinking steps at the failure amplify)
    assert abs(counted.stats["nreject"] - direct.stats["nreject"]) <= (5 if f is nan_after_one else 0)
    np.testing.assert_array_equal(counted.t, direct.t)
    np.testing.assert_allclose(counted.u, direct.u, rtol=1e-12)
    assert counted.t[-1] < 1.5
    with pytest.raises(dxdt.SolverError):
        dxdt.solve(prob, Tsit5(), backend="jax", throw=True, **options)


def test_nfev_counts_vern7s_interpolation_stages_where_the_compiled_step_takes_them():
    """A compiled Vern7 step that interpolates (saveat, dense output, event location)
    evaluates its six interpolation-only stages on every attempt; nfev counted 10 per
    attempt whatever the solve (682 against the 1090 calls of f made with saveat)."""
    lv = problems.lotka_volterra()
    plain = dxdt.solve(lv, Vern7(), backend="jax")
    attempts = plain.stats["naccept"] + plain.stats["nreject"]
    assert plain.stats["nfev"] == 2 + 10 * attempts  # the first step's selection, then 10 stages
    tick = dxdt.TimeEvent([20.0], lambda u, p, t: None)  # past the end: the same steps
    for options in (dict(saveat=np.linspace(0.0, 10.0, 11)), dict(dense=True), dict(events=[tick])):
        sol = dxdt.solve(lv, Vern7(), backend="jax", **options)
        assert sol.stats["naccept"] + sol.stats["nreject"] == attempts, options
        assert sol.stats["nfev"] == plain.stats["nfev"] + 6 * attempts, options


@pytest.mark.parametrize("method, options", [(RK4(), {}), (Euler(), {}), (Tsit5(), {"adaptive": False})],
                         ids=["RK4", "Euler", "Tsit5 fixed"])
def test_fixed_steps_take_the_numpy_grid_and_stop_where_the_state_turns_nonfinite(method, options):
    """dt = 0.3 does not divide the span: both backends step 0, 0.3, ..., 1.8, 2 (diffrax's
    ConstantStepSize would spread the last steps evenly); the step that gives NaN ends the
    solve as on the NumPy backend, with its message and partial data, and ``throw=True``
    raises."""
    decay = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), -u), np.array([1.0, 2.0]), (0.0, 2.0))
    npy, jx = (dxdt.solve(decay, method, dt=0.3, backend=b, **options) for b in ("numpy", "jax"))
    np.testing.assert_allclose(jx.t, [0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.0], rtol=1e-14)
    np.testing.assert_allclose(jx.u, npy.u, rtol=1e-13)
    # every call of f, on both: (stages - FSAL) per step, plus f(u0) for an FSAL method (the
    # JAX count added f(u0) for RK4 and Euler too, which evaluate it inside their first step)
    assert jx.stats["nfev"] == npy.stats["nfev"] == 7 * (method.tableau.stages - method.tableau.fsal) + method.tableau.fsal
    prob = dxdt.ODEProblem(nan_after_one, np.array([1.0, 2.0]), (0.0, 2.0))
    for saveat in (None, np.linspace(0.0, 2.0, 41)):
        npy, jx = (dxdt.solve(prob, method, dt=0.1, saveat=saveat, backend=b, **options) for b in ("numpy", "jax"))
        assert npy.status == jx.status == "nonfinite"
        assert jx.message == npy.message and "in the step from t=" in jx.message
        np.testing.assert_allclose(jx.t, npy.t, rtol=1e-14)
        np.testing.assert_allclose(jx.u, npy.u, rtol=1e-13)
        assert jx.stats["naccept"] == npy.stats["naccept"] and jx.stats["nreject"] == 0
    with pytest.raises(dxdt.SolverError, match="non-finite"):
        dxdt.solve(prob, method, dt=0.1, backend="jax", throw=True, **options)


@pytest.mark.parametrize("saveat", [None, np.linspace(0.0, 2.0, 9)], ids=["every step", "saveat"])
def test_f_nonfinite_from_t0_keeps_the_t0_row_on_both_backends(saveat):
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, p[0] * u[0]), np.array([1.0]), (0.0, 2.0),
                           np.array([np.nan]))
    npy, jx = (dxdt.solve(prob, Tsit5(), saveat=saveat, backend=b) for b in ("numpy", "jax"))
    assert npy.status == jx.status == "nonfinite"
    np.testing.assert_array_equal(jx.t, [0.0])
    np.testing.assert_array_equal(jx.u, npy.u)
    assert "t=0" in jx.message and "dt=0)" not in jx.message  # (the step underflowed to nothing)


def test_parameters_in_a_named_tuple_or_dict():
    """``p`` as a NamedTuple (it once crashed in the JAX backend's conversion) or a dict:
    the same solution as the NumPy backend and as the closed form ``u0 exp(-(a + b) t)``."""
    from typing import NamedTuple

    class Rates(NamedTuple):
        a: np.ndarray
        b: float

    def decay(du, u, p, t):
        du[:] = -(p.a + p.b) * u if isinstance(p, tuple) else -(p["a"] + p["b"]) * u

    u0, ts = np.array([1.0, 2.0]), np.linspace(0.0, 1.0, 5)
    for p in (Rates(np.array([0.5, 1.0]), 0.25), {"a": np.array([0.5, 1.0]), "b": 0.25}):
        prob = dxdt.ODEProblem(decay, u0, (0.0, 1.0), p)
        jax_sol = dxdt.solve(prob, Tsit5(), backend="jax", saveat=ts, rtol=1e-10, atol=1e-12)
        numpy_sol = dxdt.solve(prob, Tsit5(), saveat=ts, rtol=1e-10, atol=1e-12)
        exact = u0 * np.exp(-np.outer(ts, [0.75, 1.25]))
        np.testing.assert_allclose(jax_sol.u, exact, rtol=1e-8)
        np.testing.assert_allclose(jax_sol.u, numpy_sol.u, rtol=1e-8)
        assert type(prob.p) is type(p)


def test_an_atol_array_after_a_scalar_atol_builds_its_own_program():
    """The program of a scalar ``atol`` was once found again for an array ``atol`` of the
    same problem (the key missed its shape), which then failed to pack the array."""
    def decay(du, u, p, t):
        du[:] = -p * u

    prob = dxdt.ODEProblem(decay, np.array([1.0, 0.5]), (0.0, 1.0), np.array([1.0, 2.0]))
    exact = prob.u0 * np.exp(-prob.p)
    for atol in (1e-10, np.array([1e-10, 1e-12])):
        sol = dxdt.solve(prob, Tsit5(), rtol=1e-10, atol=atol, saveat=[1.0], backend="jax")
        np.testing.assert_allclose(sol.u[-1], exact, rtol=1e-8)


@pytest.mark.parametrize("method_name, rtol", [("Tsit5", 1e-3), ("Tsit5", 1e-10), ("DP5", 1e-6)])
def test_the_jax_backend_takes_the_numpy_backends_steps(method_name, rtol):
    """Same first step (Hairer & Wanner in physical time: diffrax's selection gave 0.01
    of the span for the wrapped terms), same PI exponents (they were scaled for a diffrax
    that divided by order + 1, a 20% more aggressive controller) and the same clipping
    rules, so the methods take the NumPy backend's steps, and a max_steps failure keeps the
    same partial data. (DP5 ran as diffrax's Dopri5, whose error estimate uses other
    embedded weights: 101 against 110 steps.)"""
    import dxdt.solvers

    method = getattr(dxdt.solvers, method_name)

    def lv(du, u, p, t):
        du[0] = 1.5 * u[0] - u[0] * u[1]
        du[1] = -3.0 * u[1] + u[0] * u[1]

    prob = dxdt.ODEProblem(lv, np.array([1.0, 1.0]), (0.0, 10.0))
    sols = {be: dxdt.solve(prob, method(), backend=be, rtol=rtol, atol=rtol * 1e-2) for be in ("numpy", "jax")}
    assert sols["jax"].stats["naccept"] == sols["numpy"].stats["naccept"]
    assert sols["jax"].stats["nreject"] == sols["numpy"].stats["nreject"]
    np.testing.assert_allclose(sols["jax"].t, sols["numpy"].t, rtol=1e-6)  # (normalised time rounds)
    short = {be: dxdt.solve(prob, method(), backend=be, rtol=rtol, atol=rtol * 1e-2, max_steps=7)
             for be in ("numpy", "jax")}
    assert short["jax"].status == short["numpy"].status == "max_steps"
    np.testing.assert_allclose(short["jax"].t, short["numpy"].t, rtol=1e-6)


def test_an_atol_of_zero_or_shaped_like_a_grid_takes_the_same_steps_on_both_backends():
    """``atol=0`` on an entry starting at 0 made the NumPy backend's first-step selection
    divide by zero (``||f(u0)||`` overflowed, the trial step was 0): ZeroDivisionError.
    An ``atol`` array for a 2-D state broke the JAX backend's (it was added to the raveled
    state): shape (2, 3) raised, shape (2, 1) broadcast to a wrong first step."""
    def feed(du, u, p, t):
        du[0] = -u[0]
        du[1] = u[0]

    prob = dxdt.ODEProblem(feed, np.array([1.0, 0.0]), (0.0, 1.0))
    exact = [np.exp(-1.0), 1.0 - np.exp(-1.0)]
    for atol in (0.0, np.array([1e-8, 0.0])):
        by = {b: dxdt.solve(prob, Tsit5(), rtol=1e-8, atol=atol, backend=b) for b in ("numpy", "jax")}
        assert by["numpy"].stats["naccept"] == by["jax"].stats["naccept"]
        for sol in by.values():
            np.testing.assert_allclose(sol.u[-1], exact, rtol=1e-7)

    def grid_decay(du, u, p, t):
        du[...] = -np.array([[1.0], [2.0]]) * u

    grid = dxdt.ODEProblem(grid_decay, np.ones((2, 3)), (0.0, 1.0))
    for atol in (np.full((2, 3), 1e-8), np.array([[1e-8], [1e-4]]), np.array([1e-8, 1e-9, 1e-8])):
        by = {b: dxdt.solve(grid, Tsit5(), rtol=1e-6, atol=atol, backend=b) for b in ("numpy", "jax")}
        assert by["jax"].stats["naccept"] == by["numpy"].stats["naccept"]
        np.testing.assert_allclose(by["jax"].t, by["numpy"].t, rtol=1e-6)  # (normalised time rounds)
        np.testing.assert_allclose(by["jax"].u[-1], np.exp(-np.array([[1.0], [2.0]])) * np.ones((2, 3)), rtol=1e-5)


def test_complex_state_on_jax_is_accurate_and_quiet():
    """u' = 2i u: the JAX backend matches the closed form, without diffrax's notice that
    complex support is "a work in progress" (it named no call of the user's)."""
    import warnings

    from dxdt.solvers import Tsit5

    def rotation(du, u, p, t):
        du[...] = 1j * p * u

    prob = dxdt.ODEProblem(rotation, np.array([1.0 + 0j, 0.5j]), (0.0, 3.0), 2.0)
    with warnings.catch_warnings(record=True) as caught:  # the filters in force, as a user has them
        sol = dxdt.solve(prob, Tsit5(), backend="jax", rtol=1e-8, atol=1e-10, dense=True)
    assert not [w for w in caught if "Complex dtype" in str(w.message)]
    np.testing.assert_allclose(sol(3.0), np.exp(6j) * np.array([1.0, 0.5j]), atol=1e-7)
    np.testing.assert_allclose(sol.u[-1], np.exp(6j) * np.array([1.0, 0.5j]), atol=1e-7)
