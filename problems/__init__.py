"""Ready-made ODE and PDE problems with in-place NumPy right-hand sides.

Each constructor returns a :class:`dxdt.ODEProblem` whose ``f(du, u, p, t)`` is written
the way a careful NumPy user writes fast code: work buffers allocated once, in the
closure, and no array allocated per call. Defaults are documented with their source.

==================  ==========================================  ===================
constructor         model                                       state shape
==================  ==========================================  ===================
lotka_volterra      predator-prey                               (2,)
lorenz              Lorenz (1963)                               (3,)
fitzhugh_nagumo     FitzHugh-Nagumo excitable neuron            (2,)
gray_scott          2-D periodic reaction-diffusion             (2, n, n)
gierer_meinhardt    2-D activator-inhibitor, matrix Laplacian   (2, n, n)
brusselator         2-D periodic Brusselator benchmark (stiff)  (2, n, n)
heat_1d             1-D diffusion, diffusivity field as ``p``   (n,)
linear              ``du/dt = A u`` with ``.exact``             (m,)
==================  ==========================================  ===================
"""

from ._brusselator import brusselator
from ._fitzhugh_nagumo import fitzhugh_nagumo
from ._gierer_meinhardt import gierer_meinhardt
from ._gray_scott import gray_scott
from ._heat_1d import heat_1d
from ._linear import LinearExact, LinearProblem, linear
from ._lorenz import lorenz
from ._lotka_volterra import lotka_volterra

__all__ = [
    "LinearExact", "LinearProblem", "brusselator", "fitzhugh_nagumo", "gierer_meinhardt", "gray_scott",
    "heat_1d", "linear", "lorenz", "lotka_volterra",
]
