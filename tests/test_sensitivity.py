"""Preparation, mode choice, failure paths and guarantees of the sensitivity operators."""


import dxdt
import numpy as np
import pytest
from dxdt import problems
from dxdt import sensitivity as sens
from dxdt.solvers import Euler, Tsit5
from references import TIGHT, weighted_loss

# --- preparation --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lv_prepared():
    prob = problems.lotka_volterra(tspan=(0.0, 5.0))
    return prob, sens.prepare("value_and_gradient", weighted_loss, prob, Tsit5(), **TIGHT)


def test_prepared_at_one_point_evaluated_at_another(lv_prepared):
    prob, prep = lv_prepared
    assert prep.mode == "forward"
    for scale in (0.9, 1.05, 1.2):
        p = prob.p * scale
        value, grad = prep(p)
        direct_value, direct_grad = sens.value_and_gradient(weighted_loss, prob.remake(p=p), Tsit5(), **TIGHT)
        assert value == pytest.approx(direct_value, rel=1e-12)
        np.testing.assert_allclose(grad, direct_grad, rtol=1e-10)
    assert prep.n_traces == 1


def test_prepared_calls_are_identical_and_pure(lv_prepared):
    prob, prep = lv_prepared
    p = prob.p.copy()
    first, second = prep(p), prep(p)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(p, prob.p)
    assert first[1].dtype == np.float64


def test_prepared_keeps_the_context_it_was_prepared_with():
    """The rest of the problem (p when the target is u0) keeps its value at preparation:
    the user's p array changed in place afterwards changes nothing."""
    p = np.array([1.5, 1.0, 3.0, 1.0])
    prob = dxdt.ODEProblem(problems.lotka_volterra().f, [1.0, 1.0], (0.0, 5.0), p)
    assert prob.p is p
    prep = sens.prepare("value_and_gradient", weighted_loss, prob, Tsit5(), wrt="u0", **TIGHT)
    before = prep(prob.u0)
    p *= 1.1  # the user's array, which the problem holds
    after = prep(prob.u0)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    fresh = sens.value_and_gradient(weighted_loss, prob, Tsit5(), wrt="u0", **TIGHT)
    assert fresh[0] != pytest.approx(before[0])  # an unprepared call sees the new p


def test_prepared_rejects_other_shapes(lv_prepared):
    prob, prep = lv_prepared
    with pytest.raises(ValueError, match="shape"):
        prep(np.ones(3))
    with pytest.raises(TypeError, match="target must be numbers .* got str"):  # (was "target has shape ()")
        prep("ab")
    with pytest.raises(ValueError, match="structure"):
        prep((np.ones(2), np.ones(2)))


def test_prepared_hvp_and_jacobian_modes():
    prob = problems.heat_1d(n=24, tspan=(0.0, 0.3))
    hvp = sens.prepare("hvp", weighted_loss, prob, Tsit5())
    assert hvp.mode == "forward-over-reverse"
    small = problems.lotka_volterra(tspan=(0.0, 2.0))
    assert sens.prepare("hessian", weighted_loss, small, Tsit5()).mode == "forward-over-forward"
    v = np.linspace(-1, 1, 24)
    hv = hvp(prob.p, v)
    eps = 1e-6
    gp = sens.gradient(weighted_loss, prob.remake(p=prob.p + eps * v), Tsit5(), rtol=1e-10, atol=1e-12)
    gm = sens.gradient(weighted_loss, prob.remake(p=prob.p - eps * v), Tsit5(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hv, (gp - gm) / (2 * eps), rtol=1e-3, atol=1e-3 * np.abs(hv).max())
    assert hvp.n_traces == 1

# --- mode choice ----------------------------------------------------------------------------

def test_auto_uses_forward_mode_when_the_adjoints_dense_output_is_large(monkeypatch):
    """By dimensions a 4-parameter Gray-Scott gradient is an adjoint; once the planned dense
    output exceeds ADJOINT_DENSE_LIMIT (lowered here to 64 KiB: this solve keeps about
    3 MiB) mode="auto" builds forward mode instead and says why; the gradient agrees with the
    adjoint's. A large target (wrt="u0", 512 entries) keeps the adjoint."""
    from dxdt.sensitivity import _mode

    prob = problems.gray_scott(n=16, tspan=(0.0, 20.0))
    tol = dict(rtol=1e-7, atol=1e-9)  # options no other test uses: a fresh build

    def loss(u):
        return np.mean(u[-1, 1])

    assert sens.choose_mode(prob)[0] == "reverse"
    adjoint = sens.gradient(loss, prob, Tsit5(), mode="reverse", **tol)
    monkeypatch.setattr(_mode, "ADJOINT_DENSE_LIMIT", 2**16)
    prep = sens.prepare("gradient", loss, prob, Tsit5(), **tol)
    assert prep.mode == "forward" and prep.adjoint is None
    assert "MiB of dense output" in prep.reason and "forward mode" in prep.reason
    np.testing.assert_allclose(prep(prob.p), adjoint, rtol=1e-5)
    big = sens.prepare("gradient", loss, prob, Tsit5(), wrt="u0", **tol)
    assert big.mode == "reverse" and "dense output" not in big.reason


def test_choose_mode_by_dimensions():
    # few states: a forward direction is cheap (vectorised with the primal)
    mode, reason = sens.choose_mode(problems.lotka_volterra(), wrt="p")
    assert mode == "forward" and "4 target entries" in reason and "2 states" in reason
    # many states and 4 parameters: reverse (measured 2.0-2.3x faster on Gray-Scott 32/64)
    mode, reason = sens.choose_mode(problems.gray_scott(n=64), wrt="p")
    assert mode == "reverse" and "4 target entries" in reason and "8192 states" in reason
    # ... but forward for one parameter
    one = problems.gray_scott(n=64)
    one = dxdt.ODEProblem(one.f, one.u0, one.tspan, np.array([1.0]))
    assert sens.choose_mode(one, wrt="p")[0] == "forward"
    assert sens.choose_mode(problems.gray_scott(n=64), wrt="u0")[0] == "reverse"
    assert sens.choose_mode(problems.heat_1d(n=32), wrt="p")[0] == "reverse"  # m = 32
    mode, reason = sens.choose_mode(problems.heat_1d(n=256), wrt="p")
    assert mode == "reverse" and "256 target entries" in reason
    assert sens.choose_mode(problems.lotka_volterra(), n_outputs=np.int64(3))[0] == "forward"
    # the target checked as the operators check it (it reported "0 target entries")
    no_p = dxdt.ODEProblem(lambda du, u, p, t: np.negative(u, out=du), [1.0], (0.0, 1.0))
    with pytest.raises(ValueError, match="no parameters"):
        sens.choose_mode(no_p)
    with pytest.raises(TypeError, match="p must be"):
        sens.choose_mode(no_p.remake(p="abc"))
    with pytest.raises(ValueError, match="order"):
        sens.choose_mode(problems.lotka_volterra(), order=True)
    # the crossover falls with the state size, as measured
    sizes = [2, 32, 256, 2048, 8192]
    from dxdt.sensitivity._mode import crossover
    crossovers = [crossover(n) for n in sizes]
    assert all(a > b for a, b in zip(crossovers, crossovers[1:]))
    assert 7 < crossovers[0] < 10 and 1 < crossovers[-1] < 2
    assert sens.choose_mode(problems.heat_1d(n=256), wrt="p", order=2)[0] == "forward-over-reverse"
    assert sens.choose_mode(problems.lorenz(), wrt="u0", order=2)[0] == "forward-over-forward"
    assert sens.choose_mode(problems.heat_1d(n=256), n_outputs=256)[0] == "forward"

def test_interpolating_adjoint_refuses_a_dense_output_that_does_not_fit(monkeypatch):
    from dxdt.sensitivity import _operators

    monkeypatch.setattr(_operators, "DENSE_BUDGET_BYTES", 1000)
    prob = problems.heat_1d(n=16, tspan=(0.0, 0.05))
    with pytest.raises(dxdt.SolverError, match="GiB.*mode='forward'"):
        sens.gradient(weighted_loss, prob, Tsit5(), mode="reverse", adjoint="interpolating", rtol=1e-4)

# --- failures and bad input ------------------------------------------------------------------

def test_solve_failure_raises_solver_error():
    prob = problems.lotka_volterra()
    with pytest.raises(dxdt.SolverError, match="max_steps"):
        sens.gradient(weighted_loss, prob, Tsit5(), max_steps=5)


@pytest.mark.parametrize("adjoint", ["interpolating", "backsolve"])
def test_a_state_solve_out_of_steps_is_reported_as_max_steps_by_the_adjoints(adjoint):
    """With save times, the adjoint over the failed state's unfilled rows failed too, and
    its "nonfinite" hid the state's "max_steps" (a message contradicting itself)."""
    prob = problems.lotka_volterra()
    with pytest.raises(dxdt.SolverError, match="status 'max_steps'") as info:
        sens.gradient(weighted_loss, prob, Tsit5(), mode="reverse", adjoint=adjoint, max_steps=20,
                      saveat=[5.0, 10.0])
    assert "nonfinite" not in str(info.value)


def _nan_after_one(du, u, p, t):
    du[:] = np.where(t < 1.0, -p[0] * u, np.nan * u)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_failing_solve_is_explained_with_its_time_and_partial_solution(mode):
    """An operator whose solve fails says where, as solve() does, and keeps the partial
    solution of the state (``err.solution``); the same for an eager jax_solve."""
    prob = dxdt.ODEProblem(_nan_after_one, np.ones(2), (0.0, 2.0), p=np.array([1.0]))
    with pytest.raises(dxdt.SolverError, match=r"'nonfinite'.*at t=1\b") as info:
        sens.gradient(lambda u: np.sum(u), prob, Tsit5(), saveat=[0.5, 2.0], mode=mode)
    sol = info.value.solution
    assert sol.status == "nonfinite"
    np.testing.assert_array_equal(sol.t, [0.5])
    np.testing.assert_allclose(sol.u[0], np.exp(-0.5) * np.ones(2), rtol=1e-6)
    if mode == "reverse":
        import jax.numpy as jnp

        F = sens.jax_solve(prob, Tsit5(), saveat=[0.5, 2.0])
        with pytest.raises(dxdt.SolverError, match=r"'nonfinite'.*at t=1\b") as info:
            F(jnp.ones(2), jnp.array([1.0]))
        np.testing.assert_array_equal(info.value.solution.t, [0.5])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"wrt": "q"}, ValueError, "wrt"),
        ({"wrt": np.array(["p"])}, ValueError, "wrt"),  # (was "unhashable type")
        ({"mode": "sideways"}, ValueError, "mode"),
        ({"adjoint": "magic"}, ValueError, "adjoint"),
        ({"rtol": -1.0}, ValueError, "rtol"),
        ({"saveat": [20.0]}, ValueError, "saveat"),
        ({"method": Euler()}, ValueError, "adaptive"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        sens.gradient(weighted_loss, problems.lotka_volterra(), **kwargs)


def test_bad_loss():
    prob = problems.lotka_volterra()
    with pytest.raises(TypeError, match="loss"):
        sens.gradient(None, prob)
    with pytest.raises(ValueError, match="scalar"):
        sens.gradient(lambda u: u[-1], prob)
    with pytest.raises(ValueError, match="no parameters"):
        sens.gradient(weighted_loss, dxdt.ODEProblem(lambda du, u, p, t: np.negative(u, out=du), [1.0], (0, 1)))
    with pytest.raises(TypeError, match=r"takes t_events.*no events were given: pass events=\[\.\.\.\]"):
        sens.gradient(lambda u, *, t_events: u[-1, 0], prob)  # (was Python's "missing keyword-only argument")


def test_hvp_with_discrete_adjoint_is_refused():
    with pytest.raises(ValueError, match="forward-differentiable"):
        sens.hvp(weighted_loss, problems.lotka_volterra(), np.ones(4), mode="reverse", adjoint="checkpoint")


@pytest.mark.parametrize("bad, error", [(lambda u: None, TypeError), (lambda u: "x", TypeError),
                                        (lambda u: np.sum(u) + 1j, TypeError)], ids=["None", "str", "complex"])
def test_loss_of_the_wrong_kind_is_named(bad, error):
    with pytest.raises(error, match="loss must return a real scalar"):
        sens.gradient(bad, problems.lotka_volterra())


@pytest.mark.parametrize("mode, adjoint", [("forward", "interpolating"), ("reverse", "interpolating"),
                                           ("reverse", "checkpoint")])
def test_a_nonfinite_loss_or_derivative_is_an_error_naming_its_cause(mode, adjoint):
    """A loss that is NaN although the solve succeeded names the loss (not f); a finite loss
    whose derivative is not finite (sqrt at 0) is an error too, never a NaN gradient."""
    prob = problems.lotka_volterra()
    with pytest.raises(dxdt.SolverError, match="the loss returned a non-finite value"):
        sens.value_and_gradient(lambda u: np.sum(np.log(u - 10.0)), prob, Tsit5(), mode=mode, adjoint=adjoint)
    with pytest.raises(dxdt.SolverError, match="derivative is not finite"):
        sens.gradient(lambda u: np.sqrt(0.0 * u[-1, 0]), prob, Tsit5(), mode=mode, adjoint=adjoint)


def test_a_failing_sensitivity_pass_is_told_apart_from_a_failing_state_solve():
    """Forward mode keeps the tangents in the error norm: on Lotka-Volterra it takes about
    420 steps where the state alone takes about 270, so with max_steps=340 only the
    tangent solve fails, and the error says so."""
    prob = problems.lotka_volterra()
    with pytest.raises(dxdt.SolverError, match="max_steps") as info:
        sens.gradient(weighted_loss, prob, Tsit5(), mode="forward", rtol=1e-8, atol=1e-10, max_steps=340)
    assert any("state alone succeeds" in note for note in info.value.__notes__)
    assert info.value.solution is None


def test_a_failing_state_solve_under_backsolve_gets_no_advice_to_switch_adjoint():
    """``y' = 2 y^2`` blows up at t = 0.5: the state solve fails whatever the adjoint, yet
    backsolve's error said the backward problem was ill-posed and to use 'interpolating'."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(0, p[0] * u[0] ** 2), np.array([1.0]), (0.0, 1.0),
                           np.array([2.0]))
    with pytest.raises(dxdt.SolverError, match=r"state failed with status 'dt_min'.*t=0\.5") as info:
        sens.gradient(lambda u: np.sum(u**2), prob, Tsit5(), mode="reverse", adjoint="backsolve")
    assert "interpolating" not in str(info.value) and info.value.solution is not None


def test_the_diagnosis_of_a_failure_leaves_the_users_buffers_unchanged():
    """The failed operator's diagnosis solves the state with the user's f: its closure work
    buffer stays bitwise as it was (API.md: f, its closure arrays and prob are never
    modified by an operator)."""
    work = np.full(2, 7.0)

    def f(du, u, p, t):
        np.multiply(u, -p[0], out=work)
        du[:] = np.where(t < 1.0, work, np.nan * work)

    prob = dxdt.ODEProblem(f, np.ones(2), (0.0, 2.0), p=np.array([1.0]))
    before, u0_before, p_before = work.copy(), prob.u0.copy(), prob.p.copy()
    with pytest.raises(dxdt.SolverError, match=r"at t=1\b") as info:
        sens.gradient(lambda u: np.sum(u), prob, Tsit5(), saveat=[0.5, 2.0], mode="reverse")
    assert info.value.solution is not None
    np.testing.assert_array_equal(work, before)
    np.testing.assert_array_equal(prob.u0, u0_before)
    np.testing.assert_array_equal(prob.p, p_before)


def test_where_guarded_powers_outside_the_reals_have_reverse_gradients():
    """``np.where(u > 0, u ** 1.5, 0)`` and ``np.where(u > 0, np.sqrt(u), 0)`` with a state
    below 0: the unselected branch is NaN, and its derivative (NaN in jax.numpy) times the
    zero cotangent made every reverse-mode gradient NaN. Their derivatives are 0 where the
    value is NaN now: reverse equals forward (which was right) and finite differences.
    A NaN that goes on through other operations before np.where (``p[0] * u ** 1.5``)
    still fails in reverse mode, with a message that names the cause and mode='forward'."""
    import warnings

    def f(du, u, p, t):
        flow = p[0] * np.where(u > 0, u**1.5, 0.0) + np.where(u > 0, np.sqrt(u), 0.0)
        du[:] = -flow + p[1] * (1.0 - u)

    prob = dxdt.ODEProblem(f, np.array([0.5, -0.2, 1.0]), (0.0, 1.0), np.array([0.7, 0.1]))
    ts = np.linspace(0.0, 1.0, 6)

    def loss(u):
        return np.sum(u**2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's own invalid power and sqrt
        forward = sens.gradient(loss, prob, saveat=ts, mode="forward", **TIGHT)
        h = 1e-6
        fd = [(loss(dxdt.solve(prob.remake(p=prob.p + h * e), saveat=ts, rtol=1e-12, atol=1e-14).u)
               - loss(dxdt.solve(prob.remake(p=prob.p - h * e), saveat=ts, rtol=1e-12, atol=1e-14).u)) / (2 * h)
              for e in np.eye(2)]
        np.testing.assert_allclose(forward, fd, rtol=1e-6)
        for adjoint in ("interpolating", "checkpoint"):
            np.testing.assert_allclose(sens.gradient(loss, prob, saveat=ts, mode="reverse", adjoint=adjoint, **TIGHT),
                                       forward, rtol=1e-8)

        def g(du, u, p, t):
            du[:] = -np.where(u > 0, p[0] * u**1.5, 0.0) + p[1] * (1.0 - u)

        with pytest.raises(dxdt.SolverError, match="np.where does not select.*mode='forward'"):
            sens.gradient(loss, prob.remake(f=g), saveat=ts, mode="reverse", **TIGHT)


def test_an_empty_events_list_is_no_events():
    """``events=[]`` (built programmatically) is no events, as in ``solve``; it crashed
    every operator with a raw TypeError."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), -p * u), np.array([1.0, 2.0]), (0.0, 2.0),
                           np.array([0.5, 0.3]))
    loss = lambda u: np.sum(u**2)  # noqa: E731
    np.testing.assert_allclose(sens.gradient(loss, prob, events=[], **TIGHT), sens.gradient(loss, prob, **TIGHT),
                               rtol=1e-12)


def test_bad_targets_and_directions_are_named():
    """A NaN in ``p`` or in ``hvp``'s ``v`` is named (it was reported as a blow-up of the
    solution, or as f not being differentiable); a list where an array was prepared gets
    the hint to pass an array; a complex direction is refused (its imaginary part was
    dropped with NumPy's ComplexWarning only)."""
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), -p * u), np.array([1.0, 2.0]), (0.0, 2.0),
                           np.array([0.5, 0.3]))
    loss = lambda u: np.sum(u**2)  # noqa: E731
    with pytest.raises(ValueError, match=r"target \(p\) contains non-finite values"):
        sens.gradient(loss, prob.remake(p=np.array([np.nan, 0.3])))
    with pytest.raises(ValueError, match="v contains non-finite values"):
        sens.hvp(loss, prob, np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"pass v as a NumPy array"):
        sens.hvp(loss, prob, [1.0, 0.0])
    with pytest.raises(ValueError, match="v is complex"):
        sens.hvp(loss, prob, np.array([1.0, 1j]))
    # v of another shape: named against the target (it said "prepare it again", though the
    # call prepares, and a direction never has another shape than the target)
    with pytest.raises(ValueError, match=r"v has shape \(3,\) but must have the shape of the target p: \(2,\)$"):
        sens.hvp(loss, prob, np.ones(3))
    with pytest.raises(ValueError, match=r"must have the structure of the target \(u0, p\).*\(u0 direction"):
        sens.hvp(loss, prob, np.ones(4), wrt=("u0", "p"))


def test_a_parameter_object_gets_an_error_that_says_what_to_pass():
    """A dataclass or SimpleNamespace ``p`` (fine for the NumPy backend, which only hands it
    to ``f``) is no pytree: the gradient failed with "float() argument must be a string
    or a real number, not 'Params'"."""
    import dataclasses
    import types

    @dataclasses.dataclass
    class Params:
        k: float

    def f(du, u, p, t):
        du[:] = -p.k * u

    for p in (Params(0.5), types.SimpleNamespace(k=0.5)):
        prob = dxdt.ODEProblem(f, np.ones(2), (0.0, 1.0), p)
        assert dxdt.solve(prob).success  # the NumPy backend takes any p
        for call in (lambda: sens.gradient(lambda u: np.sum(u[-1]), prob),
                     lambda: dxdt.solve(prob, backend="jax")):
            with pytest.raises(TypeError, match=r"got (Params|SimpleNamespace): pass its fields as a dict"):
                call()


def test_a_likelihood_written_with_scipy_stats():
    """``scipy.stats`` distributions in a loss (module-level ``norm``, a frozen
    ``scipy.stats.norm(u, s)``, ``poisson.logpmf`` of counts with a traced mean): their
    ``jax.scipy.stats`` counterparts; the gradient against finite differences (they were
    refused as a conversion of a traced value)."""
    import scipy.stats
    from scipy.stats import norm, poisson

    def decay(du, u, p, t):
        du[:] = -p * u

    prob = dxdt.ODEProblem(decay, np.array([2.0, 1.0]), (0.0, 3.0), np.array([0.4, 0.9]))
    ts = np.array([0.5, 1.0, 2.0, 3.0])
    data = prob.u0 * np.exp(-np.outer(ts, prob.p)) * np.array([1.05, 0.97])
    counts = np.round(10 * data)

    def nll(u):
        return (-np.sum(norm.logpdf(data, loc=u, scale=0.1)) - np.sum(scipy.stats.norm(u, 0.2).logpdf(data))
                - np.sum(poisson.logpmf(counts, 10 * u)))

    grad = sens.gradient(nll, prob, saveat=ts, rtol=1e-10, atol=1e-12)
    exact = lambda q: nll(prob.u0 * np.exp(-np.outer(ts, q)))  # noqa: E731
    h = 1e-6
    fd = [(exact(prob.p + h * e) - exact(prob.p - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_missing_data_dropped_with_nansum():
    """``np.nansum((u - data) ** 2)`` with a NaN in ``data`` is finite, but the square's
    derivative at the NaN entry made the gradient ``0 * NaN``: a power's derivative is now
    0 where its base is NaN, so the gradient equals the closed form. Arithmetic whose
    derivative is still NaN there (``r * r``) gets an error naming the case and the
    rewrite (it said only "not differentiable at these states")."""
    def decay(du, u, p, t):
        du[:] = -p * u

    prob = dxdt.ODEProblem(decay, np.array([2.0, 1.0]), (0.0, 2.0), np.array([0.4, 0.9]))
    ts = np.array([1.0, 2.0])
    data = np.array([[1.4, np.nan], [0.9, 0.2]])
    u = prob.u0 * np.exp(-np.outer(ts, prob.p))  # d/dp_j of (u_ij - data_ij)^2 = -2 t_i u_ij (u_ij - data_ij)
    exact = np.nansum(-2 * ts[:, None] * u * (u - data), axis=0)
    for loss in (lambda U: np.nansum((U - data) ** 2), lambda U: np.nanmean(np.square(U - data)) * 3,
                 lambda U: np.sum(np.where(np.isnan(data), 0.0, U - np.nan_to_num(data)) ** 2)):
        for mode in ("forward", "reverse"):
            grad = sens.gradient(loss, prob, saveat=ts, mode=mode, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(grad, exact, rtol=1e-8)
    with pytest.raises(dxdt.SolverError, match=r"drops NaNs after arithmetic on them.*np\.where\(np\.isnan"):
        sens.gradient(lambda U: np.nansum((U - data) * (U - data)), prob, saveat=ts)


def test_f_and_the_loss_get_a_dict_p_in_its_own_key_order():
    """``rate, amp = p.values()`` (a dict read by position): the translation handed ``f``
    and the loss the dict with its keys sorted, as JAX flattens it, so the JAX backend and
    every operator solved another model (rate and amp swapped), silently; and a program
    traced for one key order was found again for another. ``u' = -rate u + amp``:
    ``u(1) = amp/rate + (u0 - amp/rate) e^{-rate}``, in either order of the keys."""
    def f(du, u, p, t):
        rate, amp = p.values()
        du[:] = -rate * u + amp

    def loss(U, p):
        weight, _ = p.values()
        return weight * np.sum(U**2)

    u0 = np.array([1.0, 0.5])
    for p in ({"rate": 0.5, "amp": 2.0}, {"amp": 0.5, "rate": 2.0}):
        first, second = p.values()
        exact = second / first + (u0 - second / first) * np.exp(-first)
        prob = dxdt.ODEProblem(f, u0, (0.0, 1.0), p)
        for backend in ("numpy", "jax"):
            np.testing.assert_allclose(dxdt.solve(prob, Tsit5(), saveat=[1.0], backend=backend, **TIGHT).u[-1],
                                       exact, rtol=1e-8)
        # d/d(first) and d/d(second) of first * |u(1)|^2, by the chain rule on the closed form
        du_dfirst = -second / first**2 * (1 - np.exp(-first)) - (u0 - second / first) * np.exp(-first)
        du_dsecond = (1 - np.exp(-first)) / first
        expected = [np.sum(exact**2) + first * 2 * np.sum(exact * du_dfirst),
                    first * 2 * np.sum(exact * du_dsecond)]
        grad = sens.gradient(loss, prob, Tsit5(), saveat=[1.0], **TIGHT)
        assert list(grad) == list(p)
        np.testing.assert_allclose([grad[k] for k in p], expected, rtol=1e-7)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_dict_parameters_come_back_in_their_own_key_order(mode):
    """A dict ``p`` written out of alphabetical order: gradients, Hessian-vector products and
    Jacobians keep its key order, and a Hessian's rows and columns follow it (JAX flattens
    dicts in sorted key order: they came back sorted, the Hessian silently permuted).
    Decays ``u_i' = -k_i u_i`` to T = 1 with loss ``u_0(T) + 2 u_1(T)``: exact."""
    def decay(du, u, p, t):
        du[0] = -p["k_fast"] * u[0]
        du[1] = -p["a_slow"] * u[1]

    p = {"k_fast": 2.0, "a_slow": 0.1}
    prob = dxdt.ODEProblem(decay, np.array([1.0, 1.0]), (0.0, 1.0), p)
    exact_grad = {"k_fast": -np.exp(-2.0), "a_slow": -2 * np.exp(-0.1)}
    exact_hess = np.diag([np.exp(-2.0), 2 * np.exp(-0.1)])  # in p's order: k_fast, a_slow

    def loss(u):
        return u[-1, 0] + 2 * u[-1, 1]

    options = dict(mode=mode, **TIGHT)
    g = sens.gradient(loss, prob, Tsit5(), **options)
    assert list(g) == list(p)
    for k in p:
        np.testing.assert_allclose(g[k], exact_grad[k], rtol=1e-8)
    H = sens.hessian(loss, prob, Tsit5(), **options)
    np.testing.assert_allclose(H, exact_hess, rtol=1e-7, atol=1e-9)
    prepared = sens.prepare("hessian", loss, prob, Tsit5(), **options)
    np.testing.assert_allclose(prepared(p), exact_hess, rtol=1e-7, atol=1e-9)
    hv = sens.hvp(loss, prob, {"a_slow": 1.0, "k_fast": 0.0}, Tsit5(), **options)
    assert list(hv) == list(p)
    np.testing.assert_allclose([hv["k_fast"], hv["a_slow"]], exact_hess[:, 1], rtol=1e-7, atol=1e-9)
    J = sens.jacobian(prob, Tsit5(), mode=mode, **TIGHT)
    assert list(J) == list(p)
    np.testing.assert_allclose(J["k_fast"][-1], [-np.exp(-2.0), 0.0], rtol=1e-8, atol=1e-12)
    both = sens.hessian(loss, prob, Tsit5(), wrt=("u0", "p"), **options)  # u0 first, then p's order
    np.testing.assert_allclose(np.diag(both)[2:], np.diag(exact_hess), rtol=1e-7)
    np.testing.assert_allclose(both[0, 2], -np.exp(-2.0), rtol=1e-7)  # d2L / du0_0 dk_fast
