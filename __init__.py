"""dxdt: differentiable ODE/PDE solvers for in-place NumPy models.

Solve ``f(du, u, p, t)`` right-hand sides with allocation-free explicit Runge-Kutta
methods (:mod:`dxdt.solvers`), translate them to JAX and differentiate through the
solves (:mod:`dxdt.sensitivity`), on ready-made problems (:mod:`dxdt.problems`).

``import dxdt`` does not import JAX; JAX loads on the first use of a JAX path.
"""

from importlib import import_module as _import_module

from . import solvers
from ._ensemble import EnsembleProblem, EnsembleSolution
from ._events import Event, TimeEvent
from ._problem import ODEProblem
from ._solution import Solution, SolverError
from ._solve import solve

__version__ = "0.1.0"
__all__ = ["EnsembleProblem", "EnsembleSolution", "Event", "TimeEvent", "ODEProblem", "Solution", "SolverError", "solve", "solvers", "problems", "sensitivity"]


def __getattr__(name):
    if name in ("problems", "sensitivity"):
        return _import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dxdt' has no attribute {name!r}")
