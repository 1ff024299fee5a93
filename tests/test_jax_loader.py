"""dxdt's JAX loader (``sensitivity/_jax.py``): float64, and XLA:CPU's small-loop
threshold and inline CPU execution set before JAX's backend starts
(docs/compiled.md, "Small loops", "The cost of a call")."""

import os
import subprocess
import sys
import textwrap

import pytest

from dxdt.sensitivity._jax import SMALL_WHILE_LOOP_BYTES, xla_flags_with_small_loops

OPTION = f"xla_cpu_small_while_loop_byte_threshold={SMALL_WHILE_LOOP_BYTES}"


@pytest.mark.parametrize("flags, expected", [
    ("", f"--xla_backend_extra_options={OPTION}"),
    ("--xla_force_host_platform_device_count=2",
     f"--xla_force_host_platform_device_count=2 --xla_backend_extra_options={OPTION}"),
    ("--xla_backend_extra_options=a=1 --xla_dump_to=/tmp/x",
     f"--xla_backend_extra_options=a=1,{OPTION} --xla_dump_to=/tmp/x"),
    ("--xla_backend_extra_options= --xla_dump_to=/tmp/x",
     f"--xla_backend_extra_options={OPTION} --xla_dump_to=/tmp/x"),
    # the user's own threshold is kept
    ("--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=64",
     "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=64"),
])
def test_the_threshold_joins_the_users_xla_flags(flags, expected):
    assert xla_flags_with_small_loops(flags) == expected


LOOP_PROGRAM = textwrap.dedent("""
    import os, sys
    import dxdt
    from dxdt.sensitivity._jax import load_jax
    jax, jnp = load_jax()
    assert jnp.ones(2).dtype == jnp.float64
    step = lambda i, y: jnp.sin(y) * 1.1  # a loop whose state (8 KiB) is above XLA's own threshold
    text = jax.jit(lambda x: jax.lax.fori_loop(0, 10, step, x)).lower(jnp.ones(1024)).compile().as_text()
    entry = text[text.index("ENTRY"):]
    print("hoisted" if " while(" not in entry else "loop", os.environ.get("XLA_FLAGS", ""))
""")


def _run(environment, program=LOOP_PROGRAM):
    """``(kind, XLA_FLAGS)`` printed by ``program`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "DXDT_XLA_DEFAULTS")}
    env.update(environment)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return (out.stdout.split(maxsplit=1) + [""])[:2]


def test_small_loops_compile_into_one_kernel_after_load_jax():
    """The option takes effect: XLA compiles the loop into one call (no ``while`` left in
    the entry computation), and ``XLA_FLAGS`` says so."""
    kind, flags = _run({})
    assert kind == "hoisted"
    assert OPTION in flags


def test_dxdt_xla_defaults_keeps_xlas_threshold():
    kind, flags = _run({"DXDT_XLA_DEFAULTS": "1"})
    assert kind == "loop"
    assert "small_while_loop" not in flags


def test_a_backend_started_before_dxdt_is_left_alone():
    """Once JAX's backend exists ``XLA_FLAGS`` is not read again: dxdt does not pretend."""
    program = LOOP_PROGRAM.replace("import dxdt\n", "import dxdt, jax.numpy\njax_ = jax.numpy.ones(1)\n", 1)
    assert program != LOOP_PROGRAM
    kind, flags = _run({}, program)
    assert kind == "loop" and not flags


DISPATCH_PROGRAM = textwrap.dedent("""
    import dxdt
    from dxdt.sensitivity._jax import load_jax
    jax, jnp = load_jax()
    from jax._src import xla_bridge
    jnp.ones(2).block_until_ready()  # the backend starts with the setting of this moment
    print("async" if xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value else "inline", "-")
""")


@pytest.mark.parametrize("environment, started_first, expected", [
    ({}, False, "inline"),  # dxdt's programs run on the calling thread (no thread hand-off)
    ({"DXDT_XLA_DEFAULTS": "1"}, False, "async"),  # JAX's default kept on request
    ({}, True, "async"),  # a backend that already runs is left as it is
])
def test_cpu_programs_run_inline_unless_jax_started_first_or_defaults_asked(environment, started_first, expected):
    program = DISPATCH_PROGRAM
    if started_first:
        program = program.replace("import dxdt\n", "import dxdt, jax.numpy\njax.numpy.ones(1)\n", 1)
    kind, _ = _run(environment, program)
    assert kind == expected


FIRST_LOAD_PROGRAM = textwrap.dedent("""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    import dxdt
    from dxdt import sensitivity as sens
    from dxdt.solvers import Tsit5
    lv = dxdt.problems.lotka_volterra(tspan=(0.0, 1.0))
    jobs = [
        lambda: dxdt.solve(lv, Tsit5(), backend="jax").u[-1],
        lambda: sens.gradient(lambda u: np.sum(u ** 2), lv, Tsit5()),
        lambda: np.asarray(sens.jax_solve(lv, Tsit5())(lv.u0, lv.p)),
        lambda: dxdt.solve(dxdt.EnsembleProblem(lv, p=np.stack([lv.p, lv.p])), Tsit5(), backend="jax", saveat=[1.0]).u,
    ]
    barrier = threading.Barrier(len(jobs))
    def run(job):
        barrier.wait()
        return job()
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = [future.result(timeout=250) for future in [pool.submit(run, job) for job in jobs]]
    assert all(np.all(np.isfinite(r)) for r in results)
    print("ok -")
""")


def test_first_jax_paths_on_several_threads_at_once():
    """Several threads reaching dxdt's JAX paths first at the same instant wait for one
    import of JAX (it failed with 'partially initialized module' in 5 of 6 runs)."""
    kind, _ = _run({"DXDT_CACHE": "0"}, FIRST_LOAD_PROGRAM)
    assert kind == "ok"
