"""What is differentiated: ``wrt="p"``, ``"u0"`` or ``("u0", "p")``, as a JAX pytree.

A target is a pytree ``theta``: ``p`` (array, scalar, tuple, list or dict), ``u0``, or the
tuple ``(u0, p)``. This module selects it from a problem, puts new values back, checks
that a new value has the prepared structure and shapes, and converts results to NumPy
float64 in the caller's structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._jax import load_jax

jax, jnp = load_jax()

WRT_CHOICES = ("p", "u0", ("u0", "p"))


def check_wrt(wrt: Any) -> str | tuple:
    if isinstance(wrt, list):
        wrt = tuple(wrt)
    if not isinstance(wrt, (str, tuple)) or wrt not in WRT_CHOICES:
        raise ValueError(f"wrt must be 'p', 'u0' or ('u0', 'p'), got {wrt!r}")
    return wrt


def as_jax_tree(tree: Any, dtype) -> Any:
    """Leaves as JAX arrays of the problem's floating dtype (structure kept)."""
    def leaf(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if not jnp.issubdtype(x.dtype, jnp.inexact) else x
    return jax.tree_util.tree_map(leaf, tree)


def to_numpy(tree: Any) -> Any:
    """Leaves as NumPy arrays (float64 stays float64), containers kept."""
    if type(tree) is np.ndarray:  # the common case: no tree to walk
        return tree
    return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


def flat_order(like: Any) -> np.ndarray | None:
    """The permutation taking a flattened target (``ravel_pytree``: dict keys sorted) to the
    order of ``like``'s own keys; None where they agree (no dict out of order)."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    sizes = [int(np.size(x)) for x in leaves]
    starts = np.cumsum([0] + sizes[:-1])
    positions = jax.tree_util.tree_unflatten(
        treedef, [np.arange(a, a + n).reshape(np.shape(x)) for a, n, x in zip(starts, sizes, leaves)])
    ordered = []

    def walk(tree, like):  # the leaves in the order of like's keys (tree_leaves would sort them)
        if isinstance(like, dict):
            for k in like:
                walk(tree[k], like[k])
        elif isinstance(like, (tuple, list)):
            for a, b in zip(tree, like):
                walk(a, b)
        elif like is not None:
            ordered.append(np.ravel(tree))

    walk(positions, like)
    perm = np.concatenate(ordered) if ordered else np.zeros(0, int)
    return None if np.array_equal(perm, np.arange(perm.size)) else perm


def check_has_parameters(prob, wrt) -> None:
    """A target holding ``p`` needs numeric parameters (``TypeError``, ``ValueError``)."""
    from .translate._to_jax import check_parameters

    if wrt == "u0":
        return
    check_parameters(prob.p)
    if not jax.tree_util.tree_leaves(prob.p):
        raise ValueError("wrt='p' but the problem has no parameters (p is None); use wrt='u0'")


def describe(tree: Any) -> list[tuple[str, tuple]]:
    """``(path, shape)`` for every leaf, for comparing a new target with the prepared one."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path), np.shape(leaf)) for path, leaf in leaves]


@dataclass(frozen=True)
class Target:
    """The differentiated part of ``(u0, p)``."""

    wrt: str | tuple

    @property
    def name(self) -> str:
        return "(u0, p)" if isinstance(self.wrt, tuple) else self.wrt

    def select(self, u0, p):
        return {"p": p, "u0": u0}[self.wrt] if isinstance(self.wrt, str) else (u0, p)

    def merge(self, theta, u0, p):
        """``(u0, p)`` with the target replaced by ``theta``."""
        if self.wrt == "p":
            return u0, theta
        if self.wrt == "u0":
            return theta, p
        return theta

    def tangent_parts(self, theta_dot, u0, p):
        """``(u0_dot, p_dot)`` of a target tangent (zeros for the untargeted part)."""
        zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)  # noqa: E731
        if self.wrt == "p":
            return zeros(u0), theta_dot
        if self.wrt == "u0":
            return theta_dot, zeros(p)
        return theta_dot

    def check(self, theta, prepared: list[tuple[str, tuple]], argument: str = "target") -> None:
        """Raise ``ValueError`` naming what differs from the prepared structure and shapes."""
        try:
            now = describe(theta)
        except TypeError as err:
            raise ValueError(f"{argument} ({self.name}) is not an array or a container of arrays") from err
        for path, leaf in jax.tree_util.tree_flatten_with_path(theta)[0]:
            kind = "U" if isinstance(leaf, (str, bytes)) else np.asarray(leaf).dtype.kind
            if kind not in "biufc":
                raise TypeError(f"{argument}{jax.tree_util.keystr(path)} must be numbers (an array of the "
                                f"shape of {self.name}), got {type(leaf).__name__}")
        direction = argument == "v"  # hvp's direction: shaped like the target, whatever was prepared
        if [path for path, _ in now] != [path for path, _ in prepared]:
            if isinstance(theta, (list, tuple)) and [path for path, _ in prepared] == [""]:
                hint = f"; pass {argument} as a NumPy array (np.asarray)"
            else:
                hint = "" if direction else "; prepare it again"
            raise ValueError(
                f"{argument} has structure {[p for p, _ in now]} but " + (
                    f"must have the structure of the target {self.name}: {[p for p, _ in prepared]}"
                    + (" (a tuple (u0 direction, p direction))" if isinstance(self.wrt, tuple) else "")
                    if direction else f"the operator was prepared for {self.name} with structure "
                    f"{[p for p, _ in prepared]}") + hint)
        for (path, shape), (_, expected) in zip(now, prepared):
            if shape != expected:
                raise ValueError(
                    f"{argument}{path} has shape {shape} but must have the shape of the target "
                    f"{self.name}{path}: {expected}" if direction else
                    f"{argument}{path} has shape {shape} but the operator was prepared for "
                    f"{self.name}{path} of shape {expected}; prepare it again for new shapes"
                )
        for path, leaf in jax.tree_util.tree_flatten_with_path(theta)[0]:
            value = np.asarray(leaf)
            if value.dtype.kind == "c" and np.any(value.imag != 0):
                raise ValueError(f"{argument}{jax.tree_util.keystr(path)} is complex: derivatives are taken in real "
                                 "directions; give its real part (a complex state belongs in u0 of a complex problem)")


def nonfinite_argument(value, argument: str) -> str | None:
    """A message naming the first leaf of ``value`` with NaN or inf, or None. (Asked after a
    failed call only: a check on every call would cost the prepared operator's fast path.)"""
    for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
        leaf = np.asarray(leaf)
        if leaf.dtype.kind in "fc" and not np.all(np.isfinite(leaf)):
            return (f"{argument}{jax.tree_util.keystr(path)} contains non-finite values (nan or inf): "
                    "the solve and its derivative are undefined there; give finite values")
    return None
