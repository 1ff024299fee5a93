"""The in-place NumPy to JAX translation: :func:`to_jax`, :func:`duplicate`.

How it works, module by module:

- :mod:`._closure` walks everything a callable reaches (closure cells, globals,
  ``self``, ``functools.partial`` arguments, containers, helpers) and rebuilds the part
  that leads to a replaced array; :mod:`._replace` keeps views of a replaced array views.
- :mod:`._trace` runs the user's ``f`` once on :class:`._traced.TracedArray` stand-ins
  (closure arrays become private shadow buffers, :mod:`._buffer`), giving ``du``.
- :mod:`._traced`, :mod:`._views`, :mod:`._dispatch`, :mod:`._numpy_proxy` and
  :mod:`._sparse` give traced arrays NumPy's semantics: views, writes through views,
  ufuncs and NumPy functions mapped to ``jax.numpy``, array constructors, SciPy sparse;
  :mod:`._interpolants` evaluates SciPy interpolants of data (``CubicSpline(t)``).
- :mod:`._tiling` defers writes and increments of boxes (``out[1:] += a[:-1]``) and
  joins them with ``concatenate``, so that stencils compile like ``jnp.roll``.
- :mod:`._errors` names what cannot be translated and where.

Nothing here imports JAX at import time except through :func:`to_jax`.
"""

from ._errors import TranslationError
from ._to_jax import TranslatedFunction, duplicate, to_jax

__all__ = ["TranslationError", "TranslatedFunction", "duplicate", "to_jax"]
