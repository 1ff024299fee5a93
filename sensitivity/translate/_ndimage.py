"""``scipy.ndimage``'s linear filters on values of ``u``, ``p`` or ``t``, in ``jax.numpy``.

A reaction-diffusion model written with SciPy often takes its Laplacian from
``scipy.ndimage`` (``laplace(U, mode="wrap")``, ``convolve(U, stencil)``,
``correlate1d``, a ``gaussian_filter`` for a nonlocal kernel). SciPy runs them in C on
NumPy arrays, which a traced value cannot enter. Each is a correlation with a constant
kernel ``w`` of size ``n`` along an axis (or several),

.. math:: y_i = \\sum_{j=0}^{n-1} w_j\\, x_{i + j - c}, \\qquad c = \\lfloor n/2 \\rfloor + \\text{origin},

computed here as a sum of ``n`` shifted slices of ``x`` padded by SciPy's boundary
``mode`` (``reflect``, ``mirror``, ``nearest``, ``wrap``, ``constant`` with ``cval``, and
their ``grid-`` spellings); a convolution is the correlation with the kernel reversed
(and, for an even size, shifted by one, as SciPy does). Kernels must be constants.

Reference: SciPy, ``scipy/ndimage/_filters.py`` (the definitions reproduced here).
"""

from __future__ import annotations

import numpy as np

from ._views import jnp

_PAD = {"reflect": "symmetric", "grid-mirror": "symmetric", "mirror": "reflect", "nearest": "edge",
        "wrap": "wrap", "grid-wrap": "wrap", "constant": "constant", "grid-constant": "constant"}


def _constant_kernel(weights, name: str) -> np.ndarray:
    try:
        return np.asarray(weights, dtype=float)
    except Exception as err:  # a TracedArray refuses the conversion
        from ._errors import translation_error

        raise translation_error(f"scipy.ndimage.{name} with weights that depend on u, p or t",
                                "Keep the kernel constant (in the closure), or write the sum of shifted "
                                "slices in f.") from err


def _per_axis(value, n: int) -> list:
    return list(value) if np.ndim(value) else [value] * n


def _correlate_along(x, weights: np.ndarray, axes, mode: str, cval, origins):
    """``sum_j w[j] x[i + j - c]`` over the axes of ``weights``' dimensions."""
    if mode not in _PAD:
        raise ValueError(f"mode must be one of {sorted(_PAD)}, got {mode!r}")
    pads = [(0, 0)] * x.ndim
    for k, axis in enumerate(axes):
        n, origin = weights.shape[k], int(origins[k])
        if not -(n // 2) <= origin <= (n - 1) // 2:
            raise ValueError(f"invalid origin {origin} for a kernel of size {n}")
        centre = n // 2 + origin
        pads[axis] = (centre, n - 1 - centre)
    options = {"constant_values": cval} if _PAD[mode] == "constant" else {}
    padded = jnp.pad(x, pads, mode=_PAD[mode], **options)
    out = jnp.zeros(x.shape, jnp.result_type(x, weights.dtype))
    for index in zip(*np.nonzero(weights)):  # zero weights (a 5-point stencil's corners) skipped
        window = [slice(None)] * x.ndim
        for k, axis in enumerate(axes):
            window[axis] = slice(index[k], index[k] + x.shape[axis])
        out = out + weights[index] * padded[tuple(window)]
    return out


def _axes(x, axes, ndim_weights=None):
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in np.atleast_1d(axes))
    if ndim_weights is not None and ndim_weights != len(axes):
        raise RuntimeError("filter weights array has incorrect shape")
    return axes


def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    x, w = jnp.asarray(input), _constant_kernel(weights, "correlate1d")
    return _correlate_along(x, w, (axis % x.ndim,), mode, cval, [origin])


def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    w = _constant_kernel(weights, "convolve1d")[::-1]
    origin = -origin - (0 if len(w) & 1 else 1)
    return correlate1d(input, w, axis, None, mode, cval, origin)


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    x, w = jnp.asarray(input), _constant_kernel(weights, "correlate")
    axes = _axes(x, axes, w.ndim)
    return _correlate_along(x, w, axes, mode, cval, _per_axis(origin, len(axes)))


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    w = _constant_kernel(weights, "convolve")
    flipped = w[(slice(None, None, -1),) * w.ndim]
    origins = [-o - (0 if n & 1 else 1) for o, n in zip(_per_axis(origin, w.ndim), w.shape)]
    return correlate(input, flipped, None, mode, cval, origins, axes=axes)


def laplace(input, output=None, mode="reflect", cval=0.0, *, axes=None):
    x = jnp.asarray(input)
    stencil = np.array([1.0, -2.0, 1.0])
    modes = _per_axis(mode, x.ndim) if not isinstance(mode, str) else [mode] * x.ndim
    return sum(_correlate_along(x, stencil, (axis,), modes[k], cval, [0])
               for k, axis in enumerate(_axes(x, axes)))


def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0, *,
                      radius=None):
    from scipy.ndimage._filters import _gaussian_kernel1d

    radius = int(truncate * float(sigma) + 0.5) if radius is None else int(radius)
    weights = _gaussian_kernel1d(float(sigma), int(order), radius)[::-1]
    return correlate1d(input, weights, axis, None, mode, cval, 0)


def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0, *, radius=None,
                    axes=None):
    x = jnp.asarray(input)
    axes = _axes(x, axes)
    n = len(axes)
    for axis, s, o, m, r in zip(axes, _per_axis(sigma, n), _per_axis(order, n),
                                [mode] * n if isinstance(mode, str) else list(mode), _per_axis(radius, n)):
        if float(s) > 1e-15:  # SciPy skips axes with sigma 0
            x = gaussian_filter1d(x, s, axis, o, None, m, cval, truncate, radius=r)
    return x


def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    return correlate1d(input, np.full(int(size), 1.0 / int(size)), axis, None, mode, cval, origin)


def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    x = jnp.asarray(input)
    axes = _axes(x, axes)
    n = len(axes)
    for axis, s, m, o in zip(axes, _per_axis(size, n), [mode] * n if isinstance(mode, str) else list(mode),
                             _per_axis(origin, n)):
        if int(s) > 1:
            x = uniform_filter1d(x, s, axis, None, m, cval, o)
    return x


FUNCTIONS = ("correlate1d", "convolve1d", "correlate", "convolve", "laplace", "gaussian_filter1d",
             "gaussian_filter", "uniform_filter1d", "uniform_filter")
