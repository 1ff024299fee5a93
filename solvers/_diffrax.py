"""dxdt's tableaus as diffrax solvers, so one set of coefficients serves both backends.

Methods diffrax ships with identical coefficients and interpolant map to the built-in
solver (BS3 -> ``Bosh3``, Euler, and Tsit5 without a dense buffer); the others become an
``AbstractERK`` built from the :class:`ButcherTableau`, with dxdt's dense-output
polynomials as the local interpolation; a solve that keeps every step's dense output
keeps them as the polynomial's coefficients in ``theta``
(:func:`polynomial_interpolation`). Verner's interpolation-only stages cannot be
evaluated lazily inside diffrax's step, so for dense output they become ordinary
stages (weight 0 in ``b`` and ``b_err``), computed on every step. The stabilized methods
(RKC, RKL2, ROCK2, ROCK4) become a :class:`~dxdt.solvers._stabilized_diffrax.StabilizedSolver`.

Imported only on a JAX path, after :func:`dxdt.sensitivity._jax.load_jax`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np

from ._base import AbstractRungeKutta
from ._stabilized import AbstractStabilized
from ._tableau import ButcherTableau

# (not DP5: diffrax's Dopri5 estimates the error with Shampine's other embedded weights,
# 1951/21600, ..., and took other steps than the NumPy backend: 101 against 110; Tsit5
# only without a dense buffer: diffrax keeps its seven stages per step, dxdt five
# coefficients)
_BUILTIN = {"Tsit5": "Tsit5", "BS3": "Bosh3", "Euler": "Euler"}


def diffrax_solver(method: AbstractRungeKutta, with_interpolant: bool = True, *,
                   dense_buffer: bool = False, spectral_radius=None, limited: bool = False,
                   stage_input=None):
    """A diffrax solver with ``method``'s coefficients.

    ``with_interpolant=False`` skips interpolation-only stages (for solves that save
    only step ends). ``dense_buffer``: the solve keeps every step's dense output (diffrax's
    ``SaveAt(dense=True)``), which is then each step's polynomial in theta
    (:func:`polynomial_interpolation`: fewer vectors to keep and to read). Without it the
    step keeps diffrax's stages and interpolates from them only where it saves (forming
    the coefficients on every step cost a Gray-Scott 64 solve with 11 save times 13%).
    ``spectral_radius(t, y, args)``: for a stabilized method, the bound
    of the spectral radius to use instead of its power iteration (in the solve's time
    unit; see :class:`~dxdt.solvers._stabilized_diffrax.StabilizedSolver`); ``limited``:
    it reports its stability bound to dxdt's controller
    (:class:`~dxdt.solvers._diffrax_controller.GuardedController`, which it then needs).
    ``stage_input(times)``: an input of the vector field known in advance at any time
    (the interpolating adjoint's forward state), for a 1-d array of the solve's times
    (result on a leading axis), which a Runge-Kutta step then evaluates at all its stage
    times at once (:class:`StageArgs`); a stabilized solver ignores it (its field
    evaluates the input itself).
    """
    if isinstance(method, AbstractStabilized):
        from ._stabilized_diffrax import StabilizedSolver

        return StabilizedSolver(method, spectral_radius, limited)
    name = type(method).__name__
    if name in _BUILTIN and not (dense_buffer and name == "Tsit5") and stage_input is None:
        from ..sensitivity._jax import load_diffrax

        diffrax = load_diffrax()

        return getattr(diffrax, _BUILTIN[name])()
    needs_extra = with_interpolant and method.tableau.extra_a is not None
    return _erk_class(type(method), needs_extra, dense_buffer)(stage_input=stage_input)


def pid_coefficients(method: AbstractRungeKutta) -> tuple[float, float]:
    """``(pcoeff, icoeff)`` making diffrax's PID controller equal to dxdt's PI controller.

    diffrax divides its exponents by the solver's ``error_order``, which is ``k`` (the
    embedded pair's lower order plus one: 5 for Tsit5 and DP5, 7 for Vern7); dxdt's
    controller uses ``beta1 = 0.7/k``, ``beta2 = 0.4/k`` (see
    :class:`dxdt.solvers._controller.PIController`). (An earlier version scaled both by
    ``(order + 1) / k``, for a diffrax that divided by ``order + 1``: the JAX backend's
    controller was then 20% more aggressive than the NumPy backend's on Tsit5, with more
    rejected steps.)
    """
    from ._controller import PIController

    ctrl = PIController()
    return ctrl.beta2_numerator, ctrl.beta1_numerator - ctrl.beta2_numerator


def _stacked(tableau: ButcherTableau, with_extra: bool):
    """``(a, b, b_err, c, interp)`` with the extra stages appended as ordinary stages."""
    if not with_extra:
        return tableau.a, tableau.b, tableau.b_err, tableau.c, tableau.interp[: tableau.stages]
    s, e = tableau.stages, len(tableau.extra_c)
    a = np.zeros((s + e, s + e))
    a[:s, :s] = tableau.a
    a[s:, :] = tableau.extra_a
    pad = np.zeros(e)
    b_err = None if tableau.b_err is None else np.concatenate([tableau.b_err, pad])
    return a, np.concatenate([tableau.b, pad]), b_err, np.concatenate([tableau.c, tableau.extra_c]), tableau.interp


@lru_cache(maxsize=None)
def _erk_class(method_type: type, with_extra: bool, coefficients: bool):
    from ..sensitivity._jax import load_diffrax

    diffrax = load_diffrax()
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    StageArgs = stage_args_class()
    tableau = method_type.tableau
    a, b, b_err, c, interp = _stacked(tableau, with_extra)
    if not with_extra and tableau.extra_a is not None:
        interp = None  # the full interpolant needs the extra stages: fall back to Hermite
    dx_tableau = diffrax.ButcherTableau(
        c=c[1:], b_sol=b, b_error=np.zeros_like(b) if b_err is None else b_err,
        a_lower=tuple(a[i, :i] for i in range(1, len(c))),
    )

    if interp is None:
        interpolation = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    elif coefficients:
        interpolation = polynomial_interpolation()
    else:
        interpolation = _stage_interpolation(interp)
    to_coefficients = np.asarray(interp).T if interp is not None and coefficients else None

    def _coefficients(k):
        """``c = B^T k``: the polynomial's coefficients in theta from diffrax's increments
        ``k_i = h f_i``, as sums XLA fuses into one loop (a dot per step costs more on
        small states)."""
        def row(weights):
            return sum((float(w) * k[i] for i, w in enumerate(weights) if w != 0.0), jnp.zeros_like(k[0]))
        return jnp.stack([row(weights) for weights in to_coefficients])

    stage_c = np.concatenate([[0.0], np.asarray(c[1:], dtype=float)])

    class _ERK(diffrax.AbstractERK):
        tableau: ClassVar[diffrax.ButcherTableau] = dx_tableau
        interpolation_cls: ClassVar = interpolation
        stage_input: object = eqx.field(static=True, default=None)

        def order(self, terms):
            return tableau.order

        def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
            if self.stage_input is not None:
                # the stage times as diffrax forms them (t1 exactly where c = 1)
                times = jnp.where(stage_c == 1, t1, t0 + stage_c * (t1 - t0))
                args = StageArgs(args, times, self.stage_input(times))
            y1, y_error, dense_info, solver_state, result = super().step(
                terms, t0, t1, y0, args, solver_state, made_jump)
            if to_coefficients is not None:
                # one pass over the stages per step (dead code unless dense output or save
                # times read it): the dense buffer keeps 1 + degree vectors per step, not
                # 2 + stages (Tsit5: 5 against 9), and reading it sums 5 instead of 8
                dense_info = {"y0": dense_info["y0"],
                              "c": jax.tree_util.tree_map(_coefficients, dense_info["k"])}
            return y1, y_error, dense_info, solver_state, result

    _ERK.__name__ = _ERK.__qualname__ = f"{method_type.__name__}ERK"
    return _ERK


@lru_cache(maxsize=None)
def stage_args_class():
    """:class:`StageArgs`, defined on first use (it needs equinox)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    class StageArgs(eqx.Module):
        """A vector field's ``args`` within one Runge-Kutta step that also carries an input
        evaluated at the step's stage ``times`` in one vectorised call (``table``, leading
        axis the stages), instead of once per stage: the interpolating adjoint reads the
        forward solve's dense output so, one lookup of the step's interval per step
        rather than per stage (the lookups were a third of a small model's backward
        step). :meth:`at` picks the stage whose time is nearest ``s``."""

        args: object
        times: jax.Array
        table: object

        def at(self, s):
            i = jnp.argmin(jnp.abs(self.times - s))
            return jax.tree_util.tree_map(lambda x: x[i], self.table)

    return StageArgs


def horner(y0, c, theta):
    """``y0 + sum_j c_j theta^(j+1)`` for one leaf (``c`` stacks the coefficients on its
    first axis), by Horner's rule."""
    out = c[-1]
    for j in range(c.shape[0] - 2, -1, -1):
        out = out * theta + c[j]
    return y0 + out * theta


def sorted_position(a, v, side: str = "left"):
    """``jnp.searchsorted(a, v, side)`` for a sorted 1-d ``a`` (``+inf`` padding allowed):
    the number of entries ``< v`` (``<= v`` for ``side="right"``), ``v`` any shape.

    A branch-free bisection unrolled over the ``ceil(log2(len(a) + 1))`` halvings, which
    XLA fuses into one kernel: JAX's default ``"scan"`` method is a loop whose iterations
    each cost a kernel launch on CPU (100 ns against 32 ns for one lookup in a 384-step
    buffer). The interpolating adjoint looks up the dense output at every stage of every
    backward step, where this was most of a small model's backward step.
    """
    import jax.numpy as jnp

    n = a.shape[0]
    below = (lambda x: x < v) if side == "left" else (lambda x: x <= v)
    position = jnp.zeros(jnp.shape(v), dtype=jnp.int32)
    step = 1 << n.bit_length() - 1 if n else 0
    while step:  # invariant: a[:position] all below v; try position + step
        nxt = position + step
        ok = (nxt <= n) & below(a[jnp.minimum(nxt, n) - 1])
        position = jnp.where(ok, nxt, position)
        step //= 2
    return position


def _stage_interpolation(interp: np.ndarray):
    """``u(theta) = u_n + sum_i b_i(theta) k_i`` from diffrax's increments ``k_i = h f_i``
    (the interpolation of solves without a dense buffer, which evaluate it only at save
    times)."""
    from ..sensitivity._jax import load_diffrax

    diffrax = load_diffrax()
    import jax
    import jax.numpy as jnp

    class StageInterpolation(diffrax.AbstractLocalInterpolation):
        t0: float
        t1: float
        y0: object
        k: object

        def __init__(self, *, t0, t1, y0, y1, k):
            del y1
            self.t0, self.t1, self.y0, self.k = t0, t1, y0, k

        def evaluate(self, t0, t1=None, left=True):
            del left
            if t1 is not None:
                return self.evaluate(t1) - self.evaluate(t0)
            theta = (t0 - self.t0) / (self.t1 - self.t0)
            powers = theta ** jnp.arange(1, interp.shape[1] + 1)

            def leaf(y0, k):  # the state may be a pytree (a state with its tangents)
                weights = jnp.asarray(interp, dtype=y0.dtype) @ powers.astype(y0.dtype)
                return y0 + jnp.tensordot(weights, k, axes=1)
            return jax.tree_util.tree_map(leaf, self.y0, self.k)

    return StageInterpolation


@lru_cache(maxsize=None)
def polynomial_interpolation():
    """The local interpolation of dxdt's tableaus in diffrax:
    ``u(theta) = u_n + sum_j c_j theta^(j+1)``, ``theta = (t - t_n)/(t_{n+1} - t_n)``, with
    ``c = B^T k`` formed once per step from the stage increments (``B``: the tableau's
    ``interp``, Hairer, Norsett & Wanner, Sec. II.6)."""
    from ..sensitivity._jax import load_diffrax

    diffrax = load_diffrax()
    import jax

    class PolynomialInterpolation(diffrax.AbstractLocalInterpolation):
        t0: float
        t1: float
        y0: object
        c: object  # pytree like y0, each leaf with the coefficients stacked on axis 0

        def evaluate(self, t0, t1=None, left=True):
            del left
            if t1 is not None:
                return self.evaluate(t1) - self.evaluate(t0)
            theta = (t0 - self.t0) / (self.t1 - self.t0)
            return jax.tree_util.tree_map(lambda y, c: horner(y, c, theta.astype(c.real.dtype)), self.y0, self.c)

    return PolynomialInterpolation
