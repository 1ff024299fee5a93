"""Ready-made ODE and PDE problems with in-place NumPy right-hand sides.

Each constructor returns a :class:`dxdt.ODEProblem` whose ``f(du, u, p, t)`` is written
the way a careful NumPy user writes fast code: work buffers allocated once, in the
closure, and no array allocated per call. Defaults are documented with their source.

==================  ==========================================  ===================
constructor         model                                       state shape
==================  ==========================================  ===================
lotka_volterra      predator-prey                               (2,)
lorenz              Lorenz (1963)                               (3,)
gray_scott          2-D periodic reaction-diffusion             (2, n, n)
heat_1d             1-D diffusion, diffusivity field as ``p``   (n,)
linear              ``du/dt = A u`` with ``.exact``             (m,)
==================  ==========================================  ===================
"""

from ._gray_scott import gray_scott
from ._heat_1d import heat_1d
from ._linear import LinearExact, LinearProblem, linear
from ._lorenz import lorenz
from ._lotka_volterra import lotka_volterra

__all__ = ["LinearExact", "LinearProblem", "gray_scott", "heat_1d", "linear", "lorenz", "lotka_volterra"]
