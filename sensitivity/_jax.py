"""The one place where dxdt imports JAX.

``import dxdt`` and ``import dxdt.sensitivity`` stay light; every JAX code path calls
:func:`load_jax` first, which imports JAX and switches on 64-bit floats so that float64
problems give float64 results.
"""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def load_jax() -> tuple[ModuleType, ModuleType]:
    """Import JAX with 64-bit floats enabled.

    Returns
    -------
    jax, jnp : module
        The ``jax`` and ``jax.numpy`` modules.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp
