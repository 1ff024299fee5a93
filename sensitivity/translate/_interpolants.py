"""SciPy interpolants called inside ``f``: piecewise polynomials evaluated in JAX.

A model driven by measured data (a temperature, a dose rate, an inflow) often evaluates
a SciPy interpolant of the data at ``t``: ``CubicSpline``, ``PchipInterpolator``,
``Akima1DInterpolator`` (``PPoly`` subclasses), ``make_interp_spline``'s ``BSpline``, or
``interp1d``. Their evaluation is NumPy code that a traced ``t`` cannot pass through.
Each is a piecewise polynomial on breakpoints ``x_0 < ... < x_m`` (``BSpline`` and the
spline kinds of ``interp1d`` by ``PPoly.from_spline``, ``interp1d(kind="linear")`` by its
slopes; ``interp1d``'s piecewise-constant kinds are looked up by SciPy's rules), which
:class:`Interpolant` evaluates with ``jax.numpy``:

.. math:: s(x) = \\sum_{j=0}^{k} c_{j,i} (x - x_i)^{k-j}, \\qquad x_i \\le x < x_{i+1},

Horner's rule in the interval found by ``searchsorted``; derivatives (``nu``) by the
derivative of the coefficients; outside the breakpoints the end polynomials extrapolate,
or NaN where the interpolant would not (``extrapolate=False``; ``interp1d``'s
``bounds_error``: a NaN ends the solve as ``"nonfinite"`` where NumPy would raise), or
``interp1d``'s ``fill_value``. The interpolant's data are constants of the trace (keyed
by their content in the compiled-code cache, as every library object).

Reference: C. de Boor, "A Practical Guide to Splines" (1978), ch. VII (the pp form).
"""

from __future__ import annotations

import numpy as np

from ._traced import all_concrete, unwrap, wrap
from ._views import jnp


def is_interpolant(obj) -> bool:
    """Whether ``obj`` is a SciPy interpolant :class:`Interpolant` evaluates."""
    return type(obj).__module__.startswith("scipy.interpolate") and _piecewise(obj) is not None


def _piecewise(obj):
    """``(breaks, coefficients (k + 1, m, *rest), axis, outside)`` of ``obj``, or None.

    ``outside``: ``"extrapolate"``, ``"periodic"``, ``"nan"`` or ``(below, above)`` values."""
    from scipy import interpolate

    if isinstance(obj, interpolate.PPoly):
        return obj.x, obj.c, obj.axis, _extrapolation(obj.extrapolate)
    if isinstance(obj, interpolate.BSpline):
        return (*_pp_form(obj), obj.axis, _extrapolation(obj.extrapolate))
    if isinstance(obj, interpolate.interp1d):
        if obj._kind == "linear":
            y = np.moveaxis(np.asarray(obj.y), obj.axis, 0)
            slopes = np.diff(y, axis=0) / np.diff(obj.x).reshape((-1,) + (1,) * (y.ndim - 1))
            breaks, coefficients = obj.x, np.stack([slopes, y[:-1]])
        elif getattr(obj, "_spline", None) is not None:
            breaks, coefficients = _pp_form(obj._spline)
        else:  # nearest, nearest-up, previous, next: a table, see Interpolant._stepwise
            breaks, coefficients = obj.x, None
        extra = tuple(obj._y_extra_shape)  # y's shape without the interpolation axis
        if coefficients is not None:
            coefficients = np.asarray(coefficients).reshape(np.shape(coefficients)[:2] + extra)
        if obj._extrapolate:
            outside = "extrapolate"
        elif obj.bounds_error:
            outside = "nan"
        else:
            outside = tuple(_shaped(fill, extra) for fill in (obj._fill_value_below, obj._fill_value_above))
        return breaks, coefficients, obj.axis, outside
    return None


def _shaped(fill, shape: tuple) -> np.ndarray:
    fill = np.asarray(fill, float)
    return np.broadcast_to(fill.reshape(-1)[0] if fill.size == 1 else fill.reshape(shape), shape)


def _pp_form(spline):
    """``(breaks, coefficients)`` of a ``BSpline`` (``PPoly.from_spline`` takes one
    coefficient column at a time)."""
    from scipy import interpolate

    t, c, k = spline.t, np.asarray(spline.c), spline.k
    columns = c.reshape(c.shape[0], -1)
    pieces = [interpolate.PPoly.from_spline(interpolate.BSpline(t, columns[:, j], k)) for j in range(columns.shape[1])]
    coefficients = np.stack([pp.c for pp in pieces], axis=-1).reshape(pieces[0].c.shape + c.shape[1:])
    return pieces[0].x, coefficients


def _extrapolation(extrapolate) -> str:
    return "periodic" if extrapolate == "periodic" else "extrapolate" if extrapolate else "nan"


class Interpolant:
    """A SciPy interpolant inside the traced ``f``: SciPy's own on constants, else the
    piecewise polynomial evaluated with ``jax.numpy`` (see the module)."""

    def __init__(self, obj):
        self._original = obj
        breaks, coefficients, self._axis, self._outside = _piecewise(obj)
        breaks = np.asarray(breaks, float)
        self._sign = -1.0 if breaks[0] > breaks[-1] else 1.0  # decreasing breakpoints: search in -x
        self._breaks = breaks
        if coefficients is None:  # interp1d's nearest, nearest-up, previous, next
            self._coefficients = None
            self._extra_ndim = len(obj._y_extra_shape)
        else:
            self._coefficients = np.asarray(coefficients)
            self._extra_ndim = self._coefficients.ndim - 2

    def __call__(self, x, nu=0, extrapolate=None):
        if all_concrete(unwrap(x)):
            args = (unwrap(x),) if nu == 0 and extrapolate is None else (unwrap(x), nu, extrapolate)
            return wrap(np.asarray(self._original(*args)))
        if extrapolate is not None or int(nu) < 0:
            from ._errors import translation_error

            raise translation_error("a SciPy interpolant called with extrapolate= or an antiderivative (nu < 0) "
                                    "on a value that depends on u, p or t",
                                    "Call it with the point (and a derivative order nu >= 0) only.")
        return wrap(self._evaluate(jnp.asarray(unwrap(x)), int(nu)))

    def _stepwise(self, x):
        """interp1d's piecewise-constant kinds, by SciPy's own rules (``_call_nearest``,
        ``_call_previousnext``), ties at the data points and midpoints going the same way;
        its values, ``_y``, have the shape ``(n, prod(extra))``. SciPy searches the data
        moved by one ulp (``previous``: ``nextafter(x, -inf)``, side left; ``next``: to
        +inf, side right), which is searching ``x`` itself with the other side (and keeps
        the subnormal ``nextafter(0, inf)``, which XLA flushes to 0, out)."""
        obj = self._original
        n = len(obj.x)
        if obj._kind in ("nearest", "nearest-up"):
            i = jnp.clip(jnp.searchsorted(jnp.asarray(obj.x_bds), x, side=obj._side), 0, n - 1)
        else:
            side = "right" if obj._side == "left" else "left"
            i = jnp.clip(jnp.searchsorted(jnp.asarray(obj.x), x, side=side), 1 - obj._ind, n - obj._ind)
            i = i + obj._ind - 1
        value = jnp.asarray(obj._y)[i]
        return value.reshape(x.shape + tuple(obj._y_extra_shape))

    def _evaluate(self, x, nu: int):
        breaks, c, sign = self._breaks, self._coefficients, self._sign
        if c is None:
            value = self._stepwise(x) if nu == 0 else jnp.zeros(x.shape + tuple(self._original._y_extra_shape))
            return self._outside_and_axes(x, value)
        for _ in range(nu):  # d/dx of sum_j c_j (x - x_i)^(k - j)
            k = c.shape[0] - 1
            c = c[:-1] * np.arange(k, 0, -1).reshape((-1,) + (1,) * (c.ndim - 1)) if k > 0 else np.zeros_like(c)
        if self._outside == "periodic":
            x = breaks[0] + jnp.mod(x - breaks[0], breaks[-1] - breaks[0])
        m = len(breaks) - 1
        i = jnp.clip(jnp.searchsorted(sign * breaks, sign * x, side="right") - 1, 0, m - 1)
        dx = (x - jnp.asarray(breaks)[i]).reshape(x.shape + (1,) * (c.ndim - 2))
        value = jnp.asarray(c[0])[i]
        for row in c[1:]:
            value = value * dx + jnp.asarray(row)[i]
        return self._outside_and_axes(x, value)

    def _outside_and_axes(self, x, value):
        """``value`` (shape ``x.shape + extra``) outside the breakpoints and with the
        point's axes where SciPy puts them."""
        breaks = self._breaks
        lo, hi = min(breaks[0], breaks[-1]), max(breaks[0], breaks[-1])
        dx_shape = x.shape + (1,) * self._extra_ndim
        below = (x < lo).reshape(dx_shape)
        above = (x > hi).reshape(dx_shape)
        if self._outside == "nan":
            value = jnp.where(below | above, jnp.nan, value)
        elif isinstance(self._outside, tuple):
            value = jnp.where(below, self._outside[0], jnp.where(above, self._outside[1], value))
        # the point's axes where SciPy puts them: at the interpolation axis of the data
        axis = self._axis % (self._extra_ndim + 1) if self._extra_ndim else 0
        return jnp.moveaxis(value, tuple(range(x.ndim)), tuple(range(axis, axis + x.ndim)))
