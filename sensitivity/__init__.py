"""Sensitivities of in-place NumPy models: NumPy-to-JAX translation and AD operators.

Operators (each is prepare + call; see :func:`prepare`): :func:`gradient`,
:func:`value_and_gradient`, :func:`jacobian`, :func:`hvp`, :func:`hessian`; the mode
rule :func:`choose_mode`; the translation :func:`to_jax` and :func:`duplicate`; the
solve as a JAX function :func:`jax_solve`; the compiled-code cache :func:`cache_info`
and :func:`clear_cache`.

``import dxdt.sensitivity`` does not import JAX; JAX loads when a JAX path is used.
"""

from importlib import import_module as _import_module

from .translate import TranslationError, duplicate, to_jax

_LAZY = {  # name -> module; these import JAX, so only on first use
    "gradient": "_operators", "value_and_gradient": "_operators", "jacobian": "_operators",
    "hvp": "_operators", "hessian": "_operators", "prepare": "_operators",
    "PreparedOperator": "_operators", "choose_mode": "_mode",
    "clear_cache": "_compiled", "cache_info": "_compiled",
    "jax_solve": "_jax_solve",
}

__all__ = ["TranslationError", "duplicate", "to_jax", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(_import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dxdt.sensitivity' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
