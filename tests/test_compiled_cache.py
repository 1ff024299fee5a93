"""The compiled-code cache (``sensitivity/_compiled.py``): reuse across calls and processes,
never a stale constant, and a disk cache that survives corrupt entries, concurrent writers
and its size cap. API.md, "Compiled-operator caching"."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import dxdt
from dxdt import sensitivity as sens
from dxdt.solvers import Tsit5

compiled = pytest.importorskip("dxdt.sensitivity._compiled")
T1 = 1.5
TOL = dict(rtol=1e-10, atol=1e-12)


def counts():
    info = sens.cache_info()
    return info["builds"], info["memory_hits"], info["disk_hits"]


def decay_problem(rates):
    """du/dt = -rates * u with ``rates`` read from the closure: u(T1) = exp(-rates T1) u0."""
    def f(du, u, p, t):
        np.multiply(rates, u, out=du)
        np.negative(du, out=du)

    return dxdt.ODEProblem(f, np.ones(rates.size), (0.0, T1), p=np.ones(1))


def total(u):
    return np.sum(u[-1])


def test_second_unprepared_call_reuses_the_compiled_operator():
    prob = decay_problem(np.array([0.5, 1.0]))
    first = sens.gradient(total, prob, Tsit5(), wrt="u0", **TOL)
    builds, hits, _ = counts()
    second = sens.gradient(total, prob, Tsit5(), wrt="u0", **TOL)
    assert counts()[:2] == (builds, hits + 1)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, np.exp(-np.array([0.5, 1.0]) * T1), rtol=1e-8)
    # a new u0 of the same shape reuses it too (u0 is an argument, not a constant)
    third = sens.gradient(total, prob.remake(u0=np.array([2.0, 3.0])), Tsit5(), wrt="u0", **TOL)
    assert counts()[0] == builds
    np.testing.assert_allclose(third, first, rtol=1e-8)


def test_closure_array_changed_in_place_is_seen_by_operators_and_jax_solve():
    rates = np.array([0.5, 1.0])
    prob = decay_problem(rates)
    sens.gradient(total, prob, Tsit5(), wrt="u0", **TOL)
    dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    rates *= 2.0  # the user scales the rate vector in place between calls
    grad = sens.gradient(total, prob, Tsit5(), wrt="u0", **TOL)
    np.testing.assert_allclose(grad, np.exp(-rates * T1), rtol=1e-8)
    sol = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    np.testing.assert_allclose(sol.u[0], np.exp(-rates * T1), rtol=1e-8)


GLOBAL_RATES = np.array([0.3, 0.6])


def global_rhs(du, u, p, t):
    du[:] = -GLOBAL_RATES * u


def test_global_array_changed_in_place_is_seen():
    prob = dxdt.ODEProblem(global_rhs, np.ones(2), (0.0, T1))
    before = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0]
    np.testing.assert_allclose(before, np.exp(-GLOBAL_RATES * T1), rtol=1e-8)
    GLOBAL_RATES[:] = [0.9, 1.2]
    try:
        after = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0]
        grad = sens.gradient(total, prob, Tsit5(), wrt="u0", **TOL)
    finally:
        GLOBAL_RATES[:] = [0.3, 0.6]
    np.testing.assert_allclose(after, np.exp(-np.array([0.9, 1.2]) * T1), rtol=1e-8)
    np.testing.assert_allclose(grad, np.exp(-np.array([0.9, 1.2]) * T1), rtol=1e-8)


def test_user_module_attribute_changed_or_rebound_is_seen(tmp_path, monkeypatch):
    """``f`` reading ``config.RATES`` of a user module: an in-place change and a rebinding
    of the attribute are both seen by the next compiled solve and operator."""
    (tmp_path / "dxdt_test_config.py").write_text("import numpy as np\nRATES = np.array([0.3, 0.6])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import dxdt_test_config as config

    def f(du, u, p, t):
        du[:] = -config.RATES * u

    prob = dxdt.ODEProblem(f, np.ones(2), (0.0, T1))

    def solve_and_gradient():
        u = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0]
        return u, sens.gradient(total, prob, Tsit5(), wrt="u0", **TOL)

    for rates in ([0.3, 0.6], [0.9, 1.2], [2.0, 0.1]):
        if rates == [0.9, 1.2]:
            config.RATES[:] = rates  # in place
        elif rates == [2.0, 0.1]:
            config.RATES = np.array(rates)  # rebound
        u, grad = solve_and_gradient()
        np.testing.assert_allclose(u, np.exp(-np.array(rates) * T1), rtol=1e-8)
        np.testing.assert_allclose(grad, np.exp(-np.array(rates) * T1), rtol=1e-8)


@pytest.mark.parametrize("flavour", ["numpy", "jax"])
def test_loss_data_changed_in_place_is_seen(flavour):
    prob = decay_problem(np.array([1.0]))
    data = np.array([0.1])
    if flavour == "numpy":
        def loss(u):
            return np.sum((u[-1] - data) ** 2)
    else:
        import jax.numpy as jnp

        def loss(u):
            return jnp.sum((u[-1] - data) ** 2)
    u1 = np.exp(-T1)
    for target in (0.1, 0.4):
        data[:] = target
        value, grad = sens.value_and_gradient(loss, prob, Tsit5(), wrt="u0", **TOL)
        assert value == pytest.approx((u1 - target) ** 2, rel=1e-8)
        np.testing.assert_allclose(grad, 2 * (u1 - target) * u1, rtol=1e-7)


def test_closure_scalar_rebound_is_seen():
    rate = 0.5

    def f(du, u, p, t):
        du[:] = -rate * u

    prob = dxdt.ODEProblem(f, np.ones(1), (0.0, T1))
    first = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    rate = 2.0  # rebinds the closure cell
    second = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    assert first == pytest.approx(np.exp(-0.5 * T1), rel=1e-8)
    assert second == pytest.approx(np.exp(-2.0 * T1), rel=1e-8)


_RATE = 1.0


@np.vectorize
def _vectorized_rate(x):
    return _RATE * x


def _dispatched_rate(x):
    return _RATE * x


_dispatched_rate = __import__("functools").singledispatch(_dispatched_rate)


def _library_reading_rhs(du, u, p, t):
    du[:] = -(float(os.environ.get("DXDT_TEST_RATE", "1.0")) * u + _vectorized_rate(u) + _dispatched_rate(u))


def test_helpers_behind_vectorize_singledispatch_and_library_data_are_keyed(monkeypatch):
    """The key missed what the trace reads through an np.vectorize (its pyfunc), a
    functools.singledispatch helper (its implementations) and a library module's data
    (os.environ, sys.argv, math.pi): changing them gave the old program's numbers."""
    import math

    from dxdt.sensitivity.translate._fingerprint import reach

    prob = dxdt.ODEProblem(_library_reading_rhs, np.ones(1), (0.0, T1))
    for env, rate in (("1.0", 1.0), ("1.0", 2.0), ("3.0", 2.0)):
        monkeypatch.setenv("DXDT_TEST_RATE", env)
        monkeypatch.setattr(sys.modules[__name__], "_RATE", rate)
        u1 = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
        assert u1 == pytest.approx(np.exp(-(float(env) + 2 * rate) * T1), rel=1e-8), (env, rate)

    def argv_rhs(du, u, p, t):
        du[:] = -float(sys.argv[-1]) * math.pi * u

    first = reach(argv_rhs).digest
    monkeypatch.setattr(sys, "argv", sys.argv[:-1] + ["2.5"])
    second = reach(argv_rhs).digest
    monkeypatch.setattr(math, "pi", 3.0)
    assert len({first, second, reach(argv_rhs).digest}) == 3  # (the disk key holds this digest)


def test_work_buffers_written_by_a_numpy_solve_do_not_force_a_rebuild():
    prob = dxdt.problems.gray_scott(n=8, tspan=(0.0, 5.0))
    dxdt.solve(prob, Tsit5(), saveat=[5.0], backend="jax")
    builds = counts()[0]
    dxdt.solve(prob, Tsit5(), saveat=[5.0])  # NumPy backend: fills f's scratch buffers
    dxdt.solve(prob, Tsit5(), saveat=[5.0], backend="jax")
    assert counts()[0] == builds
    # an identical problem built anew (new closure, same code and constants) shares it
    dxdt.solve(dxdt.problems.gray_scott(n=8, tspan=(0.0, 5.0)), Tsit5(), saveat=[5.0], backend="jax")
    assert counts()[0] == builds


# -- the disk cache, across processes ------------------------------------------------------

SCRIPT = """
import json, sys
import numpy as np
import dxdt
from dxdt import sensitivity as sens
RATES = np.array([{rates}])
def f(du, u, p, t):
    du[:] = -{factor} * RATES * u * p[0]
prob = dxdt.ODEProblem(f, np.ones(2), (0.0, 1.5), p=np.array([1.0]))
sol = dxdt.solve(prob, saveat=[1.5], backend="jax", rtol=1e-10, atol=1e-12)
grad = sens.gradient(lambda u: np.sum(u[-1]), prob, rtol=1e-10, atol=1e-12)
info = sens.cache_info()
print(json.dumps({{"u": sol.u[0].tolist(), "grad": grad.tolist(), "builds": info["builds"],
                   "disk_hits": info["disk_hits"]}}))
"""


def run_script(tmp_path, cache, rates="0.5, 1.0", factor="1.0", **env):
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(SCRIPT.format(rates=rates, factor=factor)))
    environment = {**os.environ, "DXDT_CACHE_DIR": str(cache), **env}
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=environment,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def expected(rates, factor=1.0):
    rates = np.asarray(rates) * factor
    return np.exp(-rates * 1.5), -1.5 * np.sum(rates * np.exp(-rates * 1.5))


def test_disk_cache_across_processes(tmp_path):
    cache = tmp_path / "cache"
    first = run_script(tmp_path, cache)
    assert first["builds"] == 2 and first["disk_hits"] == 0
    assert len(list(cache.glob("*.dxdt"))) == 2
    second = run_script(tmp_path, cache)  # a rerun: neither traced nor compiled
    assert second["builds"] == 0 and second["disk_hits"] == 2
    assert second["u"] == first["u"] and second["grad"] == first["grad"]
    u, grad = expected([0.5, 1.0])
    np.testing.assert_allclose(first["u"], u, rtol=1e-8)
    np.testing.assert_allclose(first["grad"], grad, rtol=1e-7)
    changed_line = run_script(tmp_path, cache, factor="2.0")  # a changed line of f misses
    assert changed_line["builds"] == 2
    np.testing.assert_allclose(changed_line["u"], expected([0.5, 1.0], 2.0)[0], rtol=1e-8)
    changed_constant = run_script(tmp_path, cache, rates="0.25, 1.0")  # a changed constant misses
    assert changed_constant["builds"] == 2
    np.testing.assert_allclose(changed_constant["grad"], expected([0.25, 1.0])[1], rtol=1e-7)
    off = run_script(tmp_path, tmp_path / "unused", DXDT_CACHE="0")
    assert off["disk_hits"] == 0 and not (tmp_path / "unused").exists()


LINALG_SCRIPT = """
import json
import numpy as np
import dxdt
L = np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
def f(du, u, p, t):
    du[:] = np.linalg.solve(np.eye(3) + p[0] * L, -u)
prob = dxdt.ODEProblem(f, np.array([1.0, 0.5, 0.2]), (0.0, 1.0), p=np.array([0.3]))
sol = dxdt.solve(prob, saveat=[1.0], backend="jax", rtol=1e-10, atol=1e-12)
print(json.dumps({"u": sol.u[-1].tolist(), "disk_hits": dxdt.sensitivity.cache_info()["disk_hits"]}))
"""


def test_a_program_calling_lapack_runs_when_loaded_from_disk(tmp_path):
    """An ``f`` with ``np.linalg.solve`` (LAPACK on CPU): the script's second run loaded
    the program from disk and died with a segmentation fault (jaxlib resolves its LAPACK
    kernels when it lowers a program, which a loaded one skips)."""
    import scipy.linalg

    path = tmp_path / "linalg_model.py"
    path.write_text(LINALG_SCRIPT)
    environment = {**os.environ, "DXDT_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=environment,
                             cwd=tmp_path, timeout=600)
        assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["disk_hits"] == 0 and runs[1]["disk_hits"] == 1
    L = np.array([[2.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
    exact = scipy.linalg.expm(-np.linalg.inv(np.eye(3) + 0.3 * L)) @ np.array([1.0, 0.5, 0.2])
    for run in runs:
        np.testing.assert_allclose(run["u"], exact, rtol=1e-8)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DXDT_CACHE_DIR", str(tmp_path))
    compiled.clear_cache(disk=False)
    yield tmp_path
    compiled.clear_cache(disk=False)


def _users_diffrax_solve():
    """The user's own diffrax code, saving at two times (as dxdt's solve below does), so
    that diffrax's checks of ``saveat.ts`` are traced with the same arguments in both."""
    import diffrax
    import jax
    import jax.numpy as jnp

    def solve(ts):
        return diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -y), diffrax.Tsit5(), 0.0, T1, 0.1,
                                   jnp.ones(1), saveat=diffrax.SaveAt(ts=ts)).ys
    return jax.jit(solve)


def test_checks_traced_with_callbacks_elsewhere_keep_no_program_off_the_disk(private_cache):
    import jax

    prob = decay_problem(np.array([0.3]))
    F = sens.jax_solve(prob, Tsit5(), saveat=[0.5, T1], **TOL)  # traced in the user's jit: with callbacks
    jax.jit(F)(prob.u0, prob.p)  # (equinox caches its checks' traces by their arguments)
    sol = dxdt.solve(prob, Tsit5(), saveat=[0.5, T1], backend="jax", **TOL)
    np.testing.assert_allclose(sol.u[:, 0], np.exp(-0.3 * np.array([0.5, T1])), rtol=1e-9)
    assert len(list(private_cache.glob("*.dxdt"))) == 1  # serialisable: written to disk


def test_dxdt_programs_leave_the_users_diffrax_checks_raising(private_cache):
    dxdt.solve(decay_problem(np.array([0.4])), Tsit5(), saveat=[0.5, T1], backend="jax", **TOL)
    users = _users_diffrax_solve()  # traced after dxdt traced the same checks as NaN outputs
    with pytest.raises(Exception, match="saveat.ts must be increasing or decreasing"):
        np.asarray(users(np.array([T1, 0.5])))  # out of order


def test_corrupt_or_foreign_entries_are_ignored_with_a_warning(private_cache):
    prob = decay_problem(np.array([0.7]))
    good = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u
    (entry,) = private_cache.glob("*.dxdt")
    magic = compiled._MAGIC  # a header length of 2**62 bytes: refused, not allocated
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"not a dxdt entry at all",
                   lambda b: magic + (2**62).to_bytes(8, "little") + b[len(magic) + 8:]):
        entry.write_bytes(damage(entry.read_bytes()))
        compiled.clear_cache(disk=False)
        with pytest.warns(RuntimeWarning, match="unreadable compiled-code cache entry"):
            again = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u
        np.testing.assert_array_equal(again, good)
        assert entry.exists()  # rebuilt and written again
    compiled.clear_cache(disk=False)
    dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    assert counts()[2] >= 1  # the rewritten entry loads


def test_concurrent_writers_and_the_size_cap(private_cache, monkeypatch):
    prob = decay_problem(np.array([0.7, 0.1, 0.2]))
    dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    (entry,) = private_cache.glob("*.dxdt")
    (program,) = [p for programs in compiled._MEMORY.values() for p in programs if entry.name.startswith(p.key)]
    entry.unlink()
    threads = [threading.Thread(target=compiled._store, args=(private_cache, program)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.name for p in private_cache.iterdir()] == [entry.name]  # no temporary files left
    compiled.clear_cache(disk=False)
    dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    assert counts()[2] >= 1
    size = entry.stat().st_size
    monkeypatch.setenv("DXDT_CACHE_MAX_MB", str(1.5 * size / 2**20))  # room for one entry
    dxdt.solve(decay_problem(np.array([0.3, 0.4])), Tsit5(), saveat=[T1], backend="jax", **TOL)
    remaining = list(private_cache.glob("*.dxdt"))
    assert len(remaining) == 1 and remaining[0] != entry  # the least recently used went


def test_clear_cache_empties_the_directory(private_cache):
    dxdt.solve(decay_problem(np.array([0.5])), Tsit5(), saveat=[T1], backend="jax")
    assert list(private_cache.glob("*.dxdt"))
    sens.clear_cache()
    assert not list(private_cache.glob("*.dxdt")) and sens.cache_info()["in_memory"] == 0
    assert sens.cache_info()["directory"] == str(private_cache)


@pytest.mark.parametrize("op", ["gradient", "hessian"])
def test_f_is_traced_once_per_compilation(op):
    import itertools

    calls = itertools.count()  # not a list: a trace runs f on copies of the lists it reaches

    def f(du, u, p, t):
        next(calls)  # runs once per trace (the translation executes f on traced arrays)
        du[:] = -p * u

    prob = dxdt.ODEProblem(f, np.ones(2), (0.0, 1.0), p=np.array([0.5, 0.25]))
    getattr(sens, op)(total, prob, Tsit5(), mode="forward")
    assert next(calls) == 1


def test_an_edited_dxdt_module_changes_the_cache_key():
    """Programs compiled by another state of dxdt's own code are never loaded, even when
    the version number is unchanged (an edited checkout): the key stamps every module."""
    module = Path(compiled.__file__)
    before = compiled._source_stamp()
    info = module.stat()
    try:
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        assert compiled._source_stamp() != before
    finally:
        os.utime(module, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert compiled._source_stamp() == before


def test_programs_compile_with_dxdts_options_which_the_key_names(monkeypatch):
    """On a CPU dxdt's programs use XLA's classic emitters (docs/compiled.md, "Compile
    options"); DXDT_XLA_DEFAULTS=1 turns that off, changes the key (programs compiled
    either way are never mixed) and gives the same solution."""
    import jax

    prob = decay_problem(np.array([0.7, 0.2]))
    key_of = lambda: compiled._key("solve", ("static",), [])  # noqa: E731
    compiled._KEYS.clear()
    ours = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u
    if jax.default_backend() == "cpu":
        assert compiled.compiler_options() == {"xla_cpu_use_fusion_emitters": False,
                                               "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
        assert not compiled._OPTIONS_REFUSED  # this jaxlib knows the options
        # reductions stay XLA's own loops (a YNNPACK call each cost 4x a Gray-Scott VJP)
        lowered = jax.jit(lambda x: (x * x).sum(axis=1)).lower(np.ones((64, 64)))
        assert "ynn" not in compiled._compile(lowered).as_text()
    key_ours = key_of()
    monkeypatch.setenv("DXDT_XLA_DEFAULTS", "1")
    for memo in (compiled.compiler_options, compiled._environment):
        memo.cache_clear()
    compiled._KEYS.clear()
    try:
        assert compiled.compiler_options() is None
        assert key_of() != key_ours or jax.default_backend() != "cpu"
        builds = counts()[0]
        defaults = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u
        assert counts()[0] == builds + (jax.default_backend() == "cpu")
    finally:
        monkeypatch.delenv("DXDT_XLA_DEFAULTS")
        for memo in (compiled.compiler_options, compiled._environment):
            memo.cache_clear()
        compiled._KEYS.clear()
    np.testing.assert_allclose(defaults, ours, rtol=1e-13, atol=0)
    np.testing.assert_allclose(ours[-1], np.exp(-np.array([0.7, 0.2]) * T1), rtol=1e-9)


@pytest.mark.parametrize("option", [{"xla_no_such_option_at_all": True},
                                    {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_FUSION_TYPE"}],
                         ids=["unknown option", "unknown value"])
def test_a_refused_compile_option_falls_back_to_xla_defaults(monkeypatch, option):
    """A later jaxlib that drops an option or one of its values: XLA's defaults, no crash."""
    import jax

    monkeypatch.setattr(compiled, "_OPTIONS_REFUSED", [])
    monkeypatch.setattr(compiled, "compiler_options", lambda: option)
    executable = compiled._compile(jax.jit(lambda x: 2 * x).lower(np.ones(3)))
    np.testing.assert_array_equal(np.asarray(executable(np.ones(3))), 2 * np.ones(3))
    assert compiled._OPTIONS_REFUSED and next(iter(option)) in compiled._OPTIONS_REFUSED[0]


@pytest.mark.parametrize("with_complex", [False, True])
def test_flat_layout_round_trips_every_leaf_dtype(with_complex):
    """One vector each way: float32, int, bool (and complex) leaves come back with their
    values, shapes and dtypes (the cast plan is made once per layout)."""
    import jax

    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(7), "ok": np.array([True, False]),
            "x": (np.linspace(0, 1, 4), np.float64(2.5))}
    if with_complex:
        tree["z"] = np.array([1 + 2j, -3j])
    layout = compiled.FlatLayout.of(tree)
    assert layout.dtype == ("<c16" if with_complex else "<f8")
    back = layout.unpack(layout.pack(tree))
    for _ in range(2):  # the plan is reused
        flat_in, flat_back = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(back)
        assert [np.asarray(b).dtype for b in flat_back] == [np.asarray(a).dtype for a in flat_in]
        for a, b in zip(flat_in, flat_back):
            np.testing.assert_array_equal(b, a)
        back = layout.unpack(layout.pack(back))


class _Model:
    scale = 2.0

    def __init__(self):
        self.rates = np.array([0.5, 1.0])
        self.items = [np.zeros(2), 1.0]

    def __call__(self, du, u, p, t):
        du[:] = -self.scale * self.rates * u + self.items[1]


_GLOBAL_OFFSET = 0.0


def test_the_warm_recheck_of_a_walk_sees_every_change_a_new_walk_sees(tmp_path, monkeypatch):
    """``reach`` reuses its last walk of a callable when a snapshot of what that walk read
    is unchanged: after each kind of change (a rebound cell, global, default, attribute or
    class attribute, a container's item replaced, added or moved to its neighbour, an
    array reshaped, a module attribute rebound, a new code object) its digest is the one
    of a walk from scratch, and differs from the digest before the change where the items
    differ."""
    from dxdt.sensitivity.translate import _fingerprint

    (tmp_path / "dxdt_test_walk_config.py").write_text("K = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import dxdt_test_walk_config as config

    model, first, second = _Model(), [1.0, 2.0], [3.0]
    table = {"a": 1.0}
    buffer = np.zeros(6)
    rate = 0.5

    def f(du, u, p, t, c=1.0, *, d=2.0):
        du[:] = -rate * model.rates * u + first[0] + second[0] + table["a"] + buffer[0] + c + d
        du += config.K + _GLOBAL_OFFSET

    def fresh():
        _fingerprint._LAST.clear()
        return _fingerprint.reach(f).digest

    def changed(mutate, expect_new=True):
        before = _fingerprint.reach(f).digest
        assert _fingerprint.reach(f).digest == before  # warm, unchanged
        mutate()
        warm = _fingerprint.reach(f).digest
        assert warm == fresh()
        assert (warm != before) == expect_new

    def rebind_rate():
        nonlocal rate
        rate = 0.7

    def rebind_global():
        global _GLOBAL_OFFSET
        _GLOBAL_OFFSET = 1.0

    def new_code():
        def g(du, u, p, t, c=1.0, *, d=2.0):
            du[:] = -rate * model.rates * u + first[0] + second[0] + table["a"] + buffer[0] + c + d
            du -= config.K + _GLOBAL_OFFSET
        f.__code__ = g.__code__.replace(co_freevars=f.__code__.co_freevars) \
            if g.__code__.co_freevars != f.__code__.co_freevars else g.__code__

    changed(rebind_rate)
    changed(rebind_global)
    changed(lambda: setattr(f, "__defaults__", (3.0,)))
    changed(lambda: setattr(f, "__kwdefaults__", {"d": 4.0}))
    changed(lambda: first.__setitem__(0, 5.0))
    changed(lambda: (first.pop(), second.insert(0, 2.0)))  # an item moved to the neighbour list
    changed(lambda: table.__setitem__("b", 6.0))
    new_rates = np.array([0.1, 0.2])
    changed(lambda: setattr(model, "rates", new_rates), expect_new=False)  # same shape: same items,
    assert any(a is new_rates for a in _fingerprint.reach(f).roots.values())  # the new array's content read
    changed(lambda: setattr(model, "extra", 7.0))
    changed(lambda: setattr(_Model, "scale", 3.0))
    changed(lambda: setattr(buffer, "shape", (2, 3)))  # reshaped in place
    changed(lambda: setattr(config, "K", 2.0))
    changed(new_code)
    model.rates[:] = 9.0  # content, not structure: the same walk (constant reads catch it)
    assert _fingerprint.reach(f).digest == fresh()


def test_a_value_rebound_to_an_object_another_path_holds_is_seen():
    """``rates["used"]`` rebound from the object ``rates["first"]`` holds to the one
    ``rates["spare"]`` holds: the objects the walk visits are the same before and after,
    only which path shares which changed; the compiled solve must not keep the old rate."""
    fast, slow = 2.0, 0.5
    rates = {"used": fast, "spare": slow, "first": fast}

    def f(du, u, p, t):
        du[:] = -rates["used"] * u

    prob = dxdt.ODEProblem(f, np.ones(1), (0.0, T1))
    first = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    rates["used"] = slow
    second = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    assert first == pytest.approx(np.exp(-2.0 * T1), rel=1e-8)
    assert second == pytest.approx(np.exp(-0.5 * T1), rel=1e-8)


class _Speed(__import__("enum").Enum):
    SLOW = 0.5
    FAST = 2.0


def test_an_enum_member_rebound_is_seen():
    """An Enum member (its class has its own metaclass: the walk does not enter it) read by
    ``f`` is part of the key: rebinding the closure variable to another member must not
    reuse the program that baked the first member's value."""
    speed = _Speed.FAST

    def f(du, u, p, t):
        du[:] = -speed.value * u

    prob = dxdt.ODEProblem(f, np.ones(1), (0.0, T1))
    first = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    speed = _Speed.SLOW
    second = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    assert first == pytest.approx(np.exp(-2.0 * T1), rel=1e-8)
    assert second == pytest.approx(np.exp(-0.5 * T1), rel=1e-8)


@pytest.mark.parametrize("root", ["object", "method", "partial"])
def test_the_warm_recheck_follows_callable_objects_methods_and_partials(root):
    """The snapshot re-check from a callable object, a bound method and a
    ``functools.partial`` as ``f``: a changed attribute or partial argument gives the
    digest of a walk from scratch."""
    import functools

    from dxdt.sensitivity.translate import _fingerprint

    model = _Model()

    def g(du, u, p, t, scale):
        du[:] = -scale * u

    fn = {"object": model, "method": model.__call__, "partial": functools.partial(g, scale=1.0)}[root]

    def digest(fresh=False):
        if fresh:
            _fingerprint._LAST.clear()
        return _fingerprint.reach(fn).digest

    before = digest()
    assert digest() == before
    if root == "partial":
        fn.keywords["scale"] = 2.0
    else:
        model.items[1] = 5.0
    warm = digest()
    assert warm == digest(fresh=True) and warm != before


class _Rates:  # a class used as a namespace of constants, named by f
    fast = 2.0


class _Buffers:  # ... and of work buffers, written by f
    work = np.zeros(1)


def _module(name: str, source: str):
    """A user module ``name`` made from ``source`` (its functions' globals are its dict)."""
    import sys
    import types

    module = types.ModuleType(name)
    exec(source, module.__dict__)
    sys.modules[name] = module
    return module


def _rate_changes():
    """``(f, change)`` pairs: ``f`` decays at rate 2 until ``change()``, then at rate 0.5,
    each through a path the compiled-code cache once missed (a stale program)."""
    import functools
    import sys
    from typing import NamedTuple

    cases = {}

    def class_attribute(du, u, p, t):
        du[:] = -_Rates.fast * u

    cases["class attribute"] = (class_attribute, lambda: setattr(_Rates, "fast", 0.5))

    class Pair(NamedTuple):
        rate: np.ndarray
        label: str

    pair = Pair(np.array([2.0]), "decay")

    def named_tuple(du, u, p, t):
        du[:] = -pair.rate * u

    cases["array in a NamedTuple, in place"] = (named_tuple, lambda: pair.rate.__setitem__(0, 0.5))

    helpers = _module("_dxdt_test_helpers", "K = 2.0\ndef inner():\n    return K\ndef outer():\n    return inner()\n")

    def module_callee(du, u, p, t):
        du[:] = -helpers.outer() * u

    cases["constant read by a module function's callee"] = (module_callee, lambda: setattr(helpers, "K", 0.5))

    table = _module("_dxdt_test_table", "RATES = {'decay': 2.0}\n")

    def module_dict(du, u, p, t):
        du[:] = -table.RATES["decay"] * u

    cases["dict entry of a module"] = (module_dict, lambda: table.RATES.__setitem__("decay", 0.5))

    @functools.lru_cache
    def cached_rate():
        return 2.0

    def lru_helper(du, u, p, t):
        du[:] = -cached_rate() * u

    def redefine():
        nonlocal cached_rate

        @functools.lru_cache
        def cached_rate():
            return 0.5

    cases["lru_cache helper redefined"] = (lru_helper, redefine)

    def function_attribute(du, u, p, t):
        du[:] = -function_attribute.rate * u

    function_attribute.rate = 2.0
    cases["function attribute"] = (function_attribute, lambda: setattr(function_attribute, "rate", 0.5))

    class Hidden(float):
        def __repr__(self):
            return "rate"

    hidden = [Hidden(2.0)]

    def float_subclass(du, u, p, t):
        du[:] = -hidden[0] * u

    cases["float subclass with a constant repr"] = (float_subclass, lambda: hidden.__setitem__(0, Hidden(0.5)))

    _module("_dxdt_test_imported", "RATE = 2.0\n")

    def import_inside(du, u, p, t):
        import _dxdt_test_imported

        du[:] = -_dxdt_test_imported.RATE * u

    cases["module imported inside f"] = (import_inside, lambda: setattr(sys.modules["_dxdt_test_imported"], "RATE", 0.5))

    # containers the walk did not enter, or whose change its cheap recheck did not see
    import collections
    import types

    backing = {"k": 2.0}
    proxy = types.MappingProxyType(backing)

    def mapping_proxy(du, u, p, t):
        du[:] = -proxy["k"] * u

    cases["value behind a mapping proxy"] = (mapping_proxy, lambda: backing.__setitem__("k", 0.5))
    queue = collections.deque([2.0])

    def deque_item(du, u, p, t):
        du[:] = -queue[0] * u

    cases["deque item rebound"] = (deque_item, lambda: queue.__setitem__(0, 0.5))
    held = np.empty(1, dtype=object)
    held[0] = 2.0

    def object_array(du, u, p, t):
        du[:] = -held[0] * u

    cases["object array element rebound"] = (object_array, lambda: held.__setitem__(0, 0.5))

    def subclass_attribute(base):  # class Params(dict) with params.rate
        class Params(base):
            pass

        params = Params()
        params.rate = 2.0

        def container_subclass(du, u, p, t):
            du[:] = -params.rate * u

        return container_subclass, lambda: setattr(params, "rate", 0.5)

    for base in (dict, list):
        cases[f"attribute of a {base.__name__} subclass"] = subclass_attribute(base)

    class Config(NamedTuple):
        scale: float
        SPEED = 2.0

        def rate(self):
            return self.SPEED * self.scale

    config = Config(1.0)

    def named_tuple_method(du, u, p, t):
        du[:] = -config.rate() * u

    cases["class attribute read by a NamedTuple method"] = (named_tuple_method, lambda: setattr(Config, "SPEED", 0.5))
    return cases


_RATE_CHANGES = _rate_changes()


@pytest.mark.parametrize("case", sorted(_RATE_CHANGES))
def test_what_f_reads_through_classes_modules_and_wrappers_is_part_of_the_key(case):
    f, change = _RATE_CHANGES[case]
    prob = dxdt.ODEProblem(f, np.ones(1), (0.0, T1))
    first = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    change()
    second = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0]
    assert first == pytest.approx(np.exp(-2.0 * T1), rel=1e-8)
    assert second == pytest.approx(np.exp(-0.5 * T1), rel=1e-8)


def test_work_buffers_of_a_class_or_namespace_named_by_f_are_duplicated():
    """``_Buffers.work`` (a class named by ``f``) and ``ns.work`` (a SimpleNamespace) are
    work buffers: translated, they are duplicated (the derivative flows through them) and
    the user's arrays are not written."""
    import types

    ns = types.SimpleNamespace(work=np.zeros(1))

    def through_class(du, u, p, t):
        _Buffers.work[:] = p[0] * u
        du[:] = -_Buffers.work

    def through_namespace(du, u, p, t):
        ns.work[:] = p[0] * u
        du[:] = -ns.work

    for f, buffer in ((through_class, _Buffers.work), (through_namespace, ns.work)):
        prob = dxdt.ODEProblem(f, np.ones(1), (0.0, T1), np.array([2.0]))
        sol = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
        assert sol.u[0, 0] == pytest.approx(np.exp(-2.0 * T1), rel=1e-8)
        grad = dxdt.sensitivity.gradient(lambda u: u[-1, 0], prob, Tsit5(), **TOL)
        assert grad[0] == pytest.approx(-T1 * np.exp(-2.0 * T1), rel=1e-6)
        assert buffer[0] == 0.0


def test_a_module_f_imports_on_its_first_call_is_part_of_the_first_key(tmp_path, monkeypatch):
    """``import`` inside ``f`` of a module not imported yet: the first key already holds
    what it provides (it once missed it, so a later process loaded the program of another
    value from the disk cache)."""
    import sys

    (tmp_path / "_dxdt_lazy_rates.py").write_text("RATE = 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "_dxdt_lazy_rates", raising=False)

    def f(du, u, p, t):
        from _dxdt_lazy_rates import RATE

        du[:] = -RATE * u

    from dxdt.sensitivity.translate import _fingerprint

    first = _fingerprint.reach(f).digest
    assert "_dxdt_lazy_rates" in sys.modules
    sys.modules["_dxdt_lazy_rates"].RATE = 0.5
    assert _fingerprint.reach(f).digest != first
    prob = dxdt.ODEProblem(f, np.ones(1), (0.0, T1))
    assert dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL).u[0, 0] == pytest.approx(
        np.exp(-0.5 * T1), rel=1e-8)


def test_nan_mode_of_equinox_checks_is_per_thread_and_restored():
    """dxdt traces equinox's runtime checks as NaNs while it builds a cacheable program,
    on its own thread only: a user's ``eqx.error_if`` traced meanwhile on another thread,
    or after builds that overlapped on two threads, still raises (it once returned NaN
    for the rest of the process)."""
    from dxdt.sensitivity._compiled import without_host_callbacks
    from dxdt.sensitivity._jax import load_jax

    jax, jnp = load_jax()
    import equinox as eqx

    def user_check(scale):
        checked = jax.jit(lambda x: eqx.error_if(x, x < 0, "x must be >= 0") * scale)
        try:
            return float(checked(jnp.array(-1.0)))
        except Exception:  # noqa: BLE001 - equinox's runtime error, whatever its class
            return "raised"

    def dxdt_check(scale):
        return float(jax.jit(lambda x: eqx.error_if(x, x < 0, "x must be >= 0") * scale)(jnp.array(-1.0)))

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def build_a():
        with without_host_callbacks():
            seen["a"] = dxdt_check(2.0)
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def build_b():
        a_in.wait(10)
        with without_host_callbacks():
            b_in.set()
            a_out.wait(10)  # A leaves first: enter A, enter B, exit A, exit B
            seen["b"] = dxdt_check(3.0)

    def user():
        a_in.wait(10)
        seen["user during"] = user_check(4.0)

    threads = [threading.Thread(target=fn) for fn in (build_a, build_b, user)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert np.isnan(seen["a"]) and np.isnan(seen["b"])  # dxdt's own traces: NaN, no callback
    assert seen["user during"] == "raised"
    assert user_check(5.0) == "raised"


_CARRIED = np.zeros(2)


def _stateful(du, u, p, t):
    _CARRIED[:] = _CARRIED + u  # read before written: state carried from call to call
    du[:] = -p * u


def test_a_build_warning_is_raised_again_when_the_program_comes_from_a_cache(private_cache):
    """The stale-buffer warning is raised by the trace; a program found on disk (a rerun
    of the script) skips the trace and returned the gradient silently."""
    prob = dxdt.ODEProblem(_stateful, np.array([1.0, 2.0]), (0.0, 1.0), np.array([0.5, 0.3]))
    before = _CARRIED.copy()
    grad = lambda: sens.gradient(lambda u: np.sum(u[-1] ** 2), prob, saveat=[1.0], **TOL)  # noqa: E731
    message = "global variable '_CARRIED' of _stateful is read before it is written"
    with pytest.warns(UserWarning, match=message):
        built = grad()
    builds = counts()[0]
    compiled.clear_cache(disk=False)  # as in a new process
    with pytest.warns(UserWarning, match=message):
        loaded = grad()
    assert counts()[0] == builds and counts()[2] >= 1  # not traced again: from the disk
    np.testing.assert_array_equal(loaded, built)
    compiled.clear_cache(disk=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=message)  # the user's filters apply
        grad()
    np.testing.assert_array_equal(_CARRIED, before)


COEFFICIENTS = np.array([0.5, 0.0])
SIGN = np.array([0.0])


def tolist_rhs(du, u, p, t):
    a, b = COEFFICIENTS.tolist()  # a constant read through tolist(), a common idiom
    du[0] = -a * u[0] + b + 0.0 * float(f"{COEFFICIENTS[1]:.3f}")


def signed_rhs(du, u, p, t):
    du[0] = -np.copysign(1.0, SIGN[0]) * u[0]


def test_constants_read_through_tolist_format_or_a_signed_zero_are_checked(private_cache):
    """Values read as Python numbers (``a.tolist()``, ``f"{a[0]:.3f}"``) are reads the cache
    checks, and -0.0 is not 0.0 to it: the JAX backend reused programs with the old values
    (both reads went unrecorded; values were compared with ==), in memory and on disk."""
    prob = dxdt.ODEProblem(tolist_rhs, np.ones(1), (0.0, T1), np.ones(1))
    for rate in (0.5, 1.5):
        COEFFICIENTS[0] = rate
        sol = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
        np.testing.assert_allclose(sol.u[-1, 0], np.exp(-rate * T1), rtol=1e-9)
        np.testing.assert_allclose(sens.gradient(total, prob.remake(u0=np.array([2.0])), Tsit5(), wrt="u0", **TOL),
                                   [np.exp(-rate * T1)], rtol=1e-8)
    compiled.clear_cache(disk=False)  # from disk: the entry was built at rate 1.5
    COEFFICIENTS[0] = 0.5
    sol = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    np.testing.assert_allclose(sol.u[-1, 0], np.exp(-0.5 * T1), rtol=1e-9)
    signed = dxdt.ODEProblem(signed_rhs, np.ones(1), (0.0, T1))
    for value, expected in ((0.0, np.exp(-T1)), (-0.0, np.exp(T1))):
        SIGN[0] = value
        sol = dxdt.solve(signed, Tsit5(), saveat=[T1], backend="jax", **TOL)
        np.testing.assert_allclose(sol.u[-1, 0], expected, rtol=1e-9)


def test_an_unwritable_cache_directory_leaves_a_warning_and_the_memory_cache(private_cache, monkeypatch):
    """A directory that refuses even the temporary file (PermissionError in
    NamedTemporaryFile) crashed the first solve with UnboundLocalError."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(private_cache))

    monkeypatch.setattr(compiled.tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(compiled, "_WARNED", set(), raising=False)
    prob = decay_problem(np.array([0.9]))
    with pytest.warns(RuntimeWarning, match="could not write to the compiled-code cache.*in memory only"):
        sol = dxdt.solve(prob, Tsit5(), saveat=[T1], backend="jax", **TOL)
    np.testing.assert_allclose(sol.u[-1, 0], np.exp(-0.9 * T1), rtol=1e-9)
    assert not list(private_cache.iterdir())


def test_a_callable_eigen_est_does_not_put_its_address_in_the_key(private_cache):
    """The key held ``repr(method)``, which shows a callable eigen_est's memory address:
    every process (and every fresh lambda) built again and left an unreachable entry."""
    from dxdt.solvers import RKC

    prob = decay_problem(np.array([40.0]))
    before = counts()[0]
    for _ in range(3):  # equal lambdas, made afresh: one program
        dxdt.solve(prob, RKC(eigen_est=lambda u, p, t: 40.0), saveat=[T1], backend="jax", rtol=1e-6)
    assert counts()[0] - before == 1
    assert len(list(private_cache.glob("*.dxdt"))) == 1


def test_an_eigen_est_reading_a_changed_array_is_seen_also_in_jax_numpy_and_through_events():
    """An eigen_est written in jax.numpy runs as written, recording no reads: its closure
    array changed in place reused the old program (6 stages where 17 are due); through
    events the operator's key left eigen_est out (its repr, addresses stripped, named
    every estimate alike), so a changed estimate got the old gradient."""
    from dxdt.sensitivity._jax import load_jax
    from dxdt.solvers import RKC

    _, jnp = load_jax()
    bound = np.array([100.0])
    prob = dxdt.ODEProblem(lambda du, u, p, t: du.__setitem__(slice(None), -p[0] * u), np.ones(3), (0.0, 1.0),
                           np.array([50.0]))
    method = RKC(eigen_est=lambda u, p, t: jnp.asarray(bound[0]))
    stages = []
    for value in (100.0, 1000.0):
        bound[0] = value
        stages.append(dxdt.solve(prob, method, backend="jax", rtol=1e-6, atol=1e-8).stats["max_stages_used"])
    assert stages[1] > 2 * stages[0]

    scale = np.array([30.0])
    estimate = RKC(eigen_est=lambda u, p, t: scale[0])
    nothing = dxdt.TimeEvent([0.5], lambda u, p, t: None)

    def gradient():
        return sens.gradient(lambda u: np.sum(u**2), prob, estimate, events=[nothing], saveat=[1.0],
                             rtol=1e-3, atol=1e-6)

    low = gradient()
    scale[0] = 3000.0  # more stages, another discretisation: another gradient
    high = gradient()
    sens.clear_cache()
    np.testing.assert_array_equal(high, gradient())  # what a fresh build gives
    assert not np.array_equal(low, high)
