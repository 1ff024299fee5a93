"""The user's loss ``loss(u)`` or ``loss(u, p)`` as a pure JAX function ``L(U, p)``.

The loss may be written with ``jax.numpy`` or with NumPy functions; NumPy calls are
translated exactly like those of ``f`` (see :mod:`dxdt.sensitivity._translate`).
"""

from __future__ import annotations

from typing import Callable

from .._problem import count_positional
from ._jax import load_jax
from ._trace import call

jax, jnp = load_jax()


def translate_loss(loss: Callable, duplicate_closure: bool = True) -> Callable:
    """``L(U, p) -> scalar`` for ``loss(u)`` or ``loss(u, p)`` (``U``: the saved trajectory)."""
    n = count_positional(loss)
    if n not in (1, 2):
        raise TypeError(
            f"loss must be loss(u) or loss(u, p); {getattr(loss, '__name__', loss)!s} takes "
            f"{'an unknown number of' if n is None else n} positional arguments"
        )

    def L(U, p):
        value = call(loss, (U,) if n == 1 else (U, p), duplicate_closure=duplicate_closure)
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"loss must return a scalar, got shape {value.shape}")
        return value

    return L

