"""Reference problems with exact solutions, shared by the tests."""

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
