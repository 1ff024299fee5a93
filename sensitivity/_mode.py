"""``choose_mode``: forward or reverse by problem dimensions, with the reason shown.

Cost model (one "solve" = one forward solve of the problem):

* forward sensitivities cost about ``1 + m * FORWARD_COST_PER_DIRECTION`` solves for a
  target of ``m`` entries, whatever the number of outputs;
* the continuous adjoint costs about ``REVERSE_COST`` solves per output (a dense forward
  solve, then a backward solve with vector-Jacobian products), whatever ``m``.

Forward wins when ``m <= crossover * n_outputs`` with ``crossover = (REVERSE_COST - 1) /
FORWARD_COST_PER_DIRECTION``. Second order (Hessian-vector products) nests the same
choice inside an outer forward pass: forward-over-forward for small targets,
forward-over-reverse otherwise; never reverse-over-reverse. The number of states does
not enter the rule: both strategies scale linearly with it (unlike the fixed rule
"forward when states + parameters <= 100", which sends a 4-parameter PDE with thousands
of states to reverse mode although forward is faster there).

The constants are measured by ``benchmarks/bench_sensitivity.py`` (see docs).
"""

from __future__ import annotations

from .._checks import check_problem
from ._target import check_wrt

# Calibrated by benchmarks/bench_sensitivity.py (2026-11-22, Tsit5, rtol 1e-6, 2-core CPU):
# reverse-interpolating costs a median 3.2 primal solves over the grid; the crossover in
# target size that minimises the worst slowdown of the rule over the grid is m ~ 11
# (heat_1d: forward 1.2x / reverse 0.8x the primal at m = 32, 4.1x / 1.05x at m = 64).
REVERSE_COST = 3.2  # solves per adjoint (dense forward + backward vjp solve)
FORWARD_COST_PER_DIRECTION = 0.195  # extra solves per forward direction (vmapped jvp)
CROSSOVER = (REVERSE_COST - 1.0) / FORWARD_COST_PER_DIRECTION  # ~11.3 target entries per output


def target_size(prob, wrt) -> int:
    """Number of scalar entries in the differentiated part of ``(u0, p)``."""
    import numpy as np

    from jax import tree_util

    parts = {"p": [prob.p], "u0": [prob.u0], ("u0", "p"): [prob.u0, prob.p]}[wrt]
    return int(sum(np.size(leaf) for part in parts for leaf in tree_util.tree_leaves(part)))


def choose_mode(prob, wrt="p", n_outputs: int = 1, order: int = 1) -> tuple[str, str]:
    """The strategy ``mode="auto"`` applies, and why.

    Parameters
    ----------
    prob : ODEProblem
    wrt : {"p", "u0", ("u0", "p")}
    n_outputs : int
        Number of scalar outputs differentiated (1 for a loss; ``len(saveat) * u0.size``
        for a Jacobian of the trajectory).
    order : {1, 2}
        1 for gradients and Jacobians, 2 for Hessian-vector products and Hessians.

    Returns
    -------
    mode : str
        ``"forward"`` or ``"reverse"`` (order 1); ``"forward-over-forward"`` or
        ``"forward-over-reverse"`` (order 2).
    reason : str
        The dimensions and the rule that decided.
    """
    prob = check_problem(prob)
    wrt = check_wrt(wrt)
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
        raise ValueError(f"n_outputs must be a positive integer, got {n_outputs!r}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    m = target_size(prob, wrt)
    limit = CROSSOVER * n_outputs
    forward = m <= limit
    inner = "forward" if forward else "reverse"
    mode = inner if order == 1 else f"forward-over-{inner}"
    relation = "<=" if forward else ">"
    reason = (
        f"{m} target entries {relation} {limit:.3g} (= {CROSSOVER:.3g} x {n_outputs} outputs, the "
        f"measured forward/reverse crossover) with {prob.u0.size} states: {inner} mode "
        + ("costs grow with the target size, which is small here"
           if forward else "cost is independent of the target size, which is large here")
    )
    return mode, reason
