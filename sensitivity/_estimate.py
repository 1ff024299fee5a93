"""A stabilized method's ``eigen_est`` as a JAX function, for the JAX backend.

``eigen_est`` is a float or a NumPy-style ``eigen_est(u, p, t) -> float``; compiled solves
need ``rho(t, u, p)`` on JAX values. A float becomes a constant; a callable that names
JAX itself is called as written; any other is translated like ``f`` (its NumPy calls run
on traced arrays, :mod:`dxdt.sensitivity.translate`), reading its closure arrays as
constants (recorded in ``constant_reads``, so a compiled program is not reused after one
of them changed) and writing its work buffers into private copies, as ``f`` does.
"""

from __future__ import annotations

from typing import Any, Callable

from ..solvers import AbstractStabilized
from ._jax import load_jax
from ._loss import _refers_to_jax
from .translate._trace import call

OWNER = 1  # the position of eigen_est after f among the callables a solve program traces


class TranslatedEstimate:
    """``rho(t, u, p)``: the user's ``eigen_est`` on JAX values (a scalar).

    Attributes
    ----------
    eigen_est : float or callable
        The method's ``eigen_est``.
    constant_reads : list of ConstantRead
        Closure arrays of a NumPy ``eigen_est`` read by the traces.
    """

    def __init__(self, eigen_est: Any, owner: int = OWNER):
        self.eigen_est, self.owner = eigen_est, owner
        self.pure_jax = callable(eigen_est) and _refers_to_jax(eigen_est)
        self.constant_reads: list = []

    def __call__(self, t, u, p):
        _, jnp = load_jax()
        if not callable(self.eigen_est):
            return jnp.asarray(self.eigen_est, jnp.result_type(float))
        if self.pure_jax:
            value = self.eigen_est(u, p, t)
        else:
            value = call(self.eigen_est, (u, p, t), duplicate_closure=True,
                         reads=self.constant_reads, owner=self.owner)
        value = jnp.asarray(value)
        if value.shape != () or value.dtype.kind not in "biuf":
            raise TypeError(f"eigen_est(u, p, t) must return a real scalar, got "
                            f"{value.dtype} of shape {value.shape}")
        return value.astype(jnp.result_type(float))


def translate_eigen_est(method, owner: int = OWNER) -> TranslatedEstimate | None:
    """``rho(t, u, p)`` for a stabilized ``method`` with an ``eigen_est``; None otherwise
    (the solver then runs its power iteration). ``owner``: its position among the
    callables of the program's cache key."""
    if not isinstance(method, AbstractStabilized) or method.eigen_est is None:
        return None
    return TranslatedEstimate(method.eigen_est, owner)


def estimate_callables(method) -> tuple[Callable, ...]:
    """The user's functions a solve with ``method`` traces besides ``f`` (for cache keys)."""
    est = getattr(method, "eigen_est", None) if isinstance(method, AbstractStabilized) else None
    return (est,) if callable(est) else ()


def with_estimate(method, callables: tuple, constant_arrays: tuple) -> tuple[tuple, tuple]:
    """``(callables, constant_arrays)`` for :func:`._compiled.lookup`: the user's functions
    a solve with ``method`` traces, its ``eigen_est`` appended with whether the key reads
    its arrays as constants (an ``eigen_est`` in ``jax.numpy`` runs as written, recording
    no reads, so a closure array it reads must be part of the key)."""
    estimates = estimate_callables(method)
    return callables + estimates, constant_arrays + tuple(_refers_to_jax(est) for est in estimates)
