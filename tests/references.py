"""Reference problems with exact solutions, shared by the tests."""

import gc
import tracemalloc

import numpy as np

KEPLER_ECCENTRICITY = 0.3


def kepler(du, u, p, t):
    """Two-body problem in the plane, ``u = (x, y, x', y')``."""
    r3 = (u[0] * u[0] + u[1] * u[1]) ** 1.5
    du[0] = u[2]
    du[1] = u[3]
    du[2] = -u[0] / r3
    du[3] = -u[1] / r3


def kepler_exact(t, e=KEPLER_ECCENTRICITY):
    """Exact Kepler orbit from Kepler's equation ``E - e sin E = t`` (Newton iterations)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    E = t.copy()
    for _ in range(50):
        E = E - (E - e * np.sin(E) - t) / (1 - e * np.cos(E))
    dE = 1 / (1 - e * np.cos(E))
    w = np.sqrt(1 - e * e)
    return np.stack([np.cos(E) - e, w * np.sin(E), -np.sin(E) * dE, w * np.cos(E) * dE], -1)




TIGHT = dict(rtol=1e-10, atol=1e-12)
STRATEGIES = [  # sensitivity (mode, adjoint) pairs
    ("forward", "interpolating"),
    ("reverse", "interpolating"),
    ("reverse", "checkpoint"),
    ("reverse", "backsolve"),
]


def sq_norm_final(u):
    """``||u(t1)||^2`` of a saved trajectory."""
    return np.sum(u[-1] ** 2)


def weighted_loss(u):
    """A weighted squared norm of the final state (weights break symmetries)."""
    w = np.linspace(0.5, 1.5, u[-1].size).reshape(u[-1].shape)
    return np.sum(w * u[-1] ** 2)


# --- right-hand side checks shared by the problem tests ----------------------------

def random_arguments(prob, seed):
    """A random state near ``u0`` and a parameter vector perturbed by up to 10%."""
    rng = np.random.default_rng(seed)
    u = prob.u0 * (1 + 0.5 * rng.uniform(-1, 1, prob.u0.shape)) + 0.1 * rng.standard_normal(prob.u0.shape)
    p = prob.p * (1 + 0.1 * rng.uniform(-1, 1, prob.p.shape))
    return u, p


def assert_matches(actual, expected, rtol=1e-13):
    """Agreement to ``rtol`` relative to the largest entry of ``expected``."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def call(prob, u, p, t=0.3):
    du = np.full_like(u, np.nan)
    prob.f(du, u, p, t)
    return du


def traced_growth(fn, calls: int = 50, repeats: int = 3) -> int:
    """Smallest peak traced memory (bytes) of ``calls`` calls of ``fn``, over ``repeats`` tries.

    tracemalloc sees every thread; the minimum over tries ignores a background thread
    (JAX's, in a test worker that used it) allocating during one window.
    """
    fn()
    growth = []
    for _ in range(repeats):
        gc.collect()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for _ in range(calls):
                fn()
            growth.append(tracemalloc.get_traced_memory()[1] - baseline)
        finally:
            tracemalloc.stop()
    return min(growth)
