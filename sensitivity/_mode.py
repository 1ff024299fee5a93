"""``choose_mode``: forward or reverse by problem dimensions, with the reason shown.

Cost model (one "solve" = one forward solve of the problem, ``n`` states):

* forward sensitivities cost about ``1 + m * c_F(n)`` solves for a target of ``m``
  entries, whatever the number of outputs. The cost of a direction grows with the state
  size: with few states a step is dominated by fixed per-step work that the directions
  share (vectorised), with many states each direction costs about a Jacobian-vector
  product of ``f`` per stage,

  .. math:: c_F(n) = c_0 + c_1 \frac{n}{n + n_{1/2}};

* the continuous adjoint costs about ``REVERSE_COST`` solves per output (a dense forward
  solve, then a backward solve with vector-Jacobian products), whatever ``m``.

Forward wins when ``m <= crossover(n) * n_outputs`` with ``crossover(n) = (REVERSE_COST -
1) / c_F(n)``: about 8 target entries for a few states, 5 for 256 states, 2 for 2048
and 1.5 for very large states. Second order (Hessian-vector products) nests the same choice inside an outer
forward pass: forward-over-forward for small targets, forward-over-reverse otherwise;
never reverse-over-reverse.

The constants are measured by ``benchmarks/bench_sensitivity.py`` (see docs).
"""

from __future__ import annotations

import numbers

from .._checks import check_problem
from ._target import check_has_parameters, check_wrt

# Calibrated by benchmarks/bench_sensitivity.py (Tsit5, rtol 1e-6, 2-core CPU, XLA's
# small-loop threshold raised as load_jax() does). What the rule needs is the crossover,
# (reverse/primal - 1) / ((forward/primal - 1) / m), which each problem of a run implies:
# 34 and 12 (two runs, 2026-12-01 and 12-02) for Lotka-Volterra, 9 or more for Lorenz,
# 1.5 and 2.0 for Gray-Scott 32 and 1.8 for Gray-Scott 64 (four parameters; forward mode
# 8.7-10 primal solves against the adjoint's 4.1-5.1), 1.3-2.3 for heat_1d(256) and
# none (the adjoint always cheaper) for heat_1d 32-128. The constants give 8.05 for a few
# states, 4.8 at 256, 2.18 at 2048 and 1.63 at 8192. The separate costs are noisier than
# their ratio (the primal is one short call: the median adjoint cost was 1.81 primal
# solves in the first run and 3.16 in the second): REVERSE_COST is the first run's. Before
# the threshold the adjoint cost 3.56 solves of a slower primal and the crossover stayed
# above 5 for every state size, so a four-parameter Gray-Scott gradient went forward and
# ran 2x slower than its adjoint. (Long solves of large states pay page faults for the
# adjoint's dense buffer above 32 MiB, see docs/compiled.md; measured on Gray-Scott 64 to
# t = 1000, before the threshold, the adjoint was then 6% slower than forward mode.)
REVERSE_COST = 1.81  # c_R: solves per adjoint (dense forward + backward vjp solve)
FORWARD_COST_SMALL = 0.1  # c_0: extra solves per forward direction with few states
FORWARD_COST_LARGE = 0.47  # c_1: the part that grows with the number of states
STATE_SCALE = 1500  # n_1/2: states at which half of c_1 applies


def forward_cost_per_direction(n_states: int) -> float:
    """``c_F(n)``: extra forward solves per target entry for a state of ``n`` entries."""
    return FORWARD_COST_SMALL + FORWARD_COST_LARGE * n_states / (n_states + STATE_SCALE)


def crossover(n_states: int) -> float:
    """Target entries per output up to which forward mode is cheaper, for ``n`` states."""
    return (REVERSE_COST - 1.0) / forward_cost_per_direction(n_states)


def target_size(prob, wrt) -> int:
    """Number of scalar entries in the differentiated part of ``(u0, p)``."""
    import numpy as np

    from jax import tree_util

    parts = {"p": [prob.p], "u0": [prob.u0], ("u0", "p"): [prob.u0, prob.p]}[wrt]
    return int(sum(np.size(leaf) for part in parts for leaf in tree_util.tree_leaves(part)))


def choose_mode(prob, wrt="p", n_outputs: int = 1, order: int = 1) -> tuple[str, str]:
    """The strategy ``mode="auto"`` applies, and why.

    By dimensions alone. A prepared operator then knows its step count; where the adjoint
    chosen here would keep more dense output than :data:`ADJOINT_DENSE_LIMIT` and forward
    mode is not much dearer, it uses forward mode and says so in its ``reason`` (see
    :func:`forward_instead_of_adjoint`).

    Parameters
    ----------
    prob : ODEProblem or EnsembleProblem
        An ensemble counts as its members stacked (states and ``p`` batches of all of
        them), as the operators differentiate it.
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
    from .._ensemble import EnsembleProblem

    if isinstance(prob, EnsembleProblem):  # the operators' view of it: its members stacked
        from .._ensemble_sensitivity import stacked_problem

        prob = stacked_problem(prob)
    prob = check_problem(prob)
    wrt = check_wrt(wrt)
    check_has_parameters(prob, wrt)
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, numbers.Integral) or n_outputs < 1:
        raise ValueError(f"n_outputs must be a positive integer, got {n_outputs!r}")
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    m = target_size(prob, wrt)
    cross = crossover(prob.u0.size)
    limit = cross * n_outputs
    forward = m <= limit
    inner = "forward" if forward else "reverse"
    mode = inner if order == 1 else f"forward-over-{inner}"
    relation = "<=" if forward else ">"
    reason = (
        f"{m} target entries {relation} {limit:.3g} (= {cross:.3g} x {n_outputs} outputs, the "
        f"measured forward/reverse crossover for {prob.u0.size} states): {inner} mode "
        + ("costs grow with the target size, which is small here"
           if forward else "cost is independent of the target size, which is large here")
    )
    return mode, reason


# A stabilized method's forward sensitivities cost far more than the rule above models:
# the tangents inside the error norm about double its steps, each with its many stages.
# benchmarks/bench_stiff.py (ROCK2, heat 1-D with 200 states and a cubic sink, two
# parameters, rtol 1e-6): forward mode 6.64 primal solves, the interpolating adjoint 3.68.
STABILIZED_FORWARD_COST = 2.82  # extra solves per forward direction: (6.64 - 1) / 2
STABILIZED_REVERSE_COST = 3.68  # solves per adjoint


def reverse_for_stabilized(m: int, n_outputs: int) -> str | None:
    """Why ``mode="auto"`` should use the adjoint after all for a stabilized method (RKC,
    RKL2, ROCK2, ROCK4), or None: when its measured adjoint cost,
    :data:`STABILIZED_REVERSE_COST` solves per output, is below forward mode's
    ``1 + m`` :data:`STABILIZED_FORWARD_COST`. ``choose_mode`` decides by dimensions; the
    operators, which know the method, apply this after it."""
    forward = 1.0 + m * STABILIZED_FORWARD_COST
    reverse = STABILIZED_REVERSE_COST * n_outputs
    if forward <= reverse:
        return None
    return (f"; but with a stabilized method forward mode costs about {forward:.3g} solves (its "
            f"tangents inside the error norm about double the steps) against {reverse:.3g} for "
            f"the adjoint, so reverse mode")


# Above this, the dense output the interpolating adjoint keeps costs page faults on every
# call (glibc serves it with mmap, docs/compiled.md: ~0.65 ms per MiB on the 2-core test
# machine): on Gray-Scott 64 to t = 1000 (222 MiB) forward mode was already as fast.
ADJOINT_DENSE_LIMIT = 256 * 2**20
FORWARD_FALLBACK_FACTOR = 4.0  # ... if forward mode costs at most this times the adjoint


def forward_instead_of_adjoint(m: int, n_states: int, n_outputs: int, dense_bytes: int) -> str | None:
    """Why ``mode="auto"`` should use forward mode after all, or None.

    ``choose_mode`` decides by dimensions alone; once the step count is known (the
    operator plans its dense step buffer with a NumPy solve) an adjoint whose dense
    output would exceed :data:`ADJOINT_DENSE_LIMIT` gives way to forward mode when
    forward mode's modelled cost, ``1 + m c_F(n)`` solves, is at most
    :data:`FORWARD_FALLBACK_FACTOR` times the adjoint's (``c_R`` per output): a long
    solve of a large model with a few parameters. A large target keeps the adjoint.
    """
    if dense_bytes <= ADJOINT_DENSE_LIMIT:
        return None
    forward = 1.0 + m * forward_cost_per_direction(n_states)
    if forward > FORWARD_FALLBACK_FACTOR * REVERSE_COST * n_outputs:
        return None
    return (f"; but the adjoint would keep {dense_bytes / 2**20:.3g} MiB of dense output (above "
            f"{ADJOINT_DENSE_LIMIT / 2**20:.3g} MiB: page faults on every call), so forward mode "
            f"(about {forward:.3g} solves)")
