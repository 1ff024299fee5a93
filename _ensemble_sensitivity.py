"""Sensitivities of ensembles: the members as one stacked problem.

An :class:`~dxdt.EnsembleProblem` whose members differ by their ``u0`` and/or ``p``
(batches; same ``f``, same ``tspan``) is the single ODE system

.. math:: \\frac{d}{dt} U_i = f(U_i, P_i, t), \\qquad i = 1 \\dots m,

with the stacked state ``U`` of shape ``(members, *u0.shape)`` and ``P`` the ``p`` batch
(or the shared ``prob.p``). Every sensitivity operator then applies to it unchanged:
the target ``wrt="p"`` is the ``p`` batch (per-member parameters) or, without one, the
shared ``prob.p`` (multi-experiment fitting: the gradient sums the members'
contributions); ``wrt="u0"`` gives ``(members, *u0.shape)``; ``mode="auto"`` sees the
whole ensemble's dimensions. The loss receives the stacked trajectories
``(members, len(saveat), *u0.shape)``.

One error norm controls all members together, so the steps are those of the most
demanding member: every member is solved at least as accurately as alone, and the
gradient is accurate to the tolerances (it equals the sum of the per-member gradients
to that accuracy, not bitwise). ``f`` is traced once per member: meant for the tens of
experiments of a fit, not for sweeps of thousands.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._ensemble import EnsembleProblem, tree_leaves, tree_map
from ._problem import ODEProblem


def stack_members(op: str, args: tuple) -> tuple:
    """``args`` of a sensitivity operator with an ensemble replaced by its stacked problem.

    ``(loss, ens, ...)`` becomes ``(stacked_loss, stacked_prob, ...)``; other arguments
    are returned unchanged.

    Raises
    ------
    ValueError
        The ensemble has a ``tspan`` batch or a ``prob_func``, or ``op`` is ``"jacobian"``.
    """
    position = 0 if op == "jacobian" else 1
    if len(args) <= position or not isinstance(args[position], EnsembleProblem):
        return args
    if op == "jacobian":
        raise ValueError("jacobian does not take an EnsembleProblem: differentiate a loss over the "
                         "stacked trajectories with gradient/hvp/hessian, or take each member's jacobian")
    loss = args[0]
    if not callable(loss):
        stacked_problem(args[position])  # (its own errors first)
        return args  # prepare names the bad loss
    return (_stacked_loss(loss), stacked_problem(args[position]), *args[position + 1:])


def stacked_problem(ens: EnsembleProblem) -> ODEProblem:
    """The members of ``ens`` as one problem: ``U' = F(U, P, t)``, ``U`` of shape
    ``(members, *u0.shape)``, ``P`` the ``p`` batch or the shared ``p``.

    Raises
    ------
    ValueError
        The ensemble has a ``tspan`` batch or a ``prob_func``, or an integer ``p`` batch.
    """
    if ens._tspan is not None or ens.prob_func is not None:
        raise ValueError("sensitivity operators take ensembles whose members differ by u0 and p batches "
                         "only (no tspan batch, no prob_func)")
    prob, m = ens.prob, len(ens)
    u0 = ens._u0 if ens._u0 is not None else np.broadcast_to(prob.u0, (m,) + prob.u0.shape)
    batched = ens._p is not None
    p = ens._p if batched else prob.p
    if batched:
        for path, leaf in tree_leaves(p):
            if not np.issubdtype(leaf.dtype, np.inexact):
                raise ValueError(f"p{path} batch must be floating to be differentiated, got {leaf.dtype}")
    return ODEProblem(_stacked_rhs(prob.f, prob.inplace, m, batched), u0, prob.tspan, p)


def _stacked_rhs(f: Callable, inplace: bool, m: int, batched: bool) -> Callable:
    """``F(dU, U, P, t)``: member ``f`` on each row (``P`` indexed per member when batched)."""

    def stacked(du, u, p, t):
        for i in range(m):
            p_i = tree_map(lambda leaf, path: leaf[i], p) if batched else p
            if inplace:
                f(du[i], u[i], p_i, t)
            else:
                du[i] = f(u[i], p_i, t)

    return stacked


def _stacked_loss(loss: Callable) -> Callable:
    """The loss of the stacked solution ``(len(saveat), members, ...)``, as the user's loss
    of ``(members, len(saveat), ...)``; a loss written with JAX stays a JAX loss."""
    from .sensitivity._loss import _refers_to_jax, _required_positional

    two = _required_positional(loss) == 2
    if _refers_to_jax(loss):
        import jax.numpy as jnp  # in the closure: the wrapper is recognised as a JAX loss

        if two:
            return lambda u, p: loss(jnp.swapaxes(u, 0, 1), p)
        return lambda u: loss(jnp.swapaxes(u, 0, 1))
    if two:
        return lambda u, p: loss(u.swapaxes(0, 1), p)
    return lambda u: loss(u.swapaxes(0, 1))

