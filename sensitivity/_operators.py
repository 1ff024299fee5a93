"""The public sensitivity operators, each ``prepare`` + call.

``prepare`` translates ``f`` (and a NumPy loss) to JAX, picks the strategy, and traces
and compiles the operator once; the prepared operator is then called with new target
values. The unprepared operators prepare and call once. Compiled operators are
:class:`._compiled.Program` objects: the same ``f``, loss, shapes and options find the
compiled code again (in memory, or on disk in a later process) instead of tracing and
compiling, unless a closure array they read has changed.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from .. import _checks
from .._backend_jax import structure
from .._events import check_events
from .._problem import ODEProblem
from .._solution import SolverError
from ..solvers import AbstractStabilized, Tsit5
from . import _compiled
from ._jax import load_jax
from ._loss import translate_loss
from ._mode import choose_mode, forward_instead_of_adjoint, reverse_for_stabilized, target_size
from ._options import BACKSOLVE_DOUBTFUL, BACKSOLVE_MISMATCH, DERIVATIVE_NONFINITE, STATUS_CODES, SolveOptions, raise_on_failure
from ._target import Target, check_has_parameters, check_wrt, describe, flat_order, nonfinite_argument, to_numpy
from .translate._trace import in_order_of

jax, jnp = load_jax()

OPERATORS = ("gradient", "value_and_gradient", "jacobian", "hvp", "hessian")
MODES = ("auto", "forward", "reverse")
ADJOINTS = ("interpolating", "checkpoint", "backsolve")
CHECKPOINT_STIFFNESS = 0.3  # h_mean * rho(J) / stability boundary above which the discrete
# adjoint is differentiating steps set by stability (measured: heat_1d 0.9, Lotka-Volterra < 0.05)


_BACKSOLVE_HINT = ("; with adjoint='backsolve' a failing backward solve usually means the backward problem is "
                   "ill-posed: use adjoint='interpolating'")


class PreparedOperator:
    """A sensitivity operator traced and compiled for one problem, target and options.

    Call it with new values of the target (``prep(p)``; ``prep(p, v)`` for ``hvp``). The
    rest of the problem (``u0`` or ``p`` when not differentiated, ``tspan``, ``saveat``)
    and the closure arrays of ``f`` keep the values they had when it was prepared.

    Attributes
    ----------
    op : str
    mode : str
        The strategy: ``"forward"``, ``"reverse"``, ``"forward-over-forward"`` or
        ``"forward-over-reverse"``.
    reason : str
        Why ``mode="auto"`` chose it (or that the user did).
    adjoint : str or None
        The reverse strategy, when reverse mode is used.
    n_traces : int
        How many times the operator (with ``f`` in it) was traced to build its compiled
        code; stays 1 across calls with same shapes (a program loaded from the disk cache
        counts the trace that built it).
    """

    extra = None  # an argument of programs built by from_build(..., extra=...)

    def __init__(self, op, mode, reason, adjoint, program, context, target, rebuild, diagnose=None):
        self.op, self._chosen, self.diagnose = op, (mode, reason, adjoint), diagnose
        self._rebuild, self._host_context = rebuild, context
        self._adopt(program)
        self._target, self._dtype = target, context[0].dtype
        theta0 = target.select(context[0], context[1])
        self._signature = describe(theta0)
        self._fast = isinstance(theta0, np.ndarray) and (theta0.shape, theta0.dtype)

    def _adopt(self, program) -> None:
        """Run ``program``; its strategy is the one chosen, unless ``mode="auto"`` switched
        to forward mode when building it (``meta["mode"]``, see :func:`prepare`)."""
        mode, reason, adjoint = self._chosen
        self.mode = program.meta.get("mode", mode)
        self.reason = reason + program.meta.get("reason_note", "")
        self.adjoint = adjoint if "reverse" in self.mode else None
        self._program = program
        self._run = program.bind(self._host_context)  # the context packed once, as it is now

    @classmethod
    def from_build(cls, op, build: Callable, setup, mode, reason, adjoint, extra=None) -> PreparedOperator:
        """Compile ``build(setup)`` directly (not through the compiled-code cache).

        For strategies whose setup is planned on the host per problem (events). With
        ``extra`` (an array), the built function takes it after the target (and ``v``),
        and every call passes the operator's :attr:`extra` (set it before a call).
        """
        u0, p = np.asarray(setup.u0), to_numpy(setup.p)
        theta0 = to_numpy(setup.target.select(u0, p))
        example = (theta0, theta0) if op == "hvp" else (theta0,)
        example += (() if extra is None else (extra,)) + ((u0, p),)

        def compile_for(setup, traces):
            fn = build(setup)
            executable, meta = _compiled.compile_function(lambda *args: flag_nonfinite(*fn(*args[:-1])), *example)
            steps = getattr(setup, "dense_steps", 0)
            return _compiled.Program(executable, (), {"dense_steps": steps, **meta}, traces=traces)

        program = compile_for(setup, 1)

        def rebuild(dense_steps):
            """A setup with a dense step buffer (``setup.dense_steps``) is rebuilt larger."""
            if not getattr(setup, "dense_steps", 0):
                raise SolverError(f"{op}: the dense step buffer overflowed; increase max_steps")
            traces = prepared._program.traces + 1
            return compile_for(replace(setup, dense_steps=dense_steps), traces)

        prepared = cls(op, mode, reason, adjoint, program, (u0, p), setup.target, rebuild)
        prepared.extra = extra
        return prepared

    @property
    def n_traces(self) -> int:
        return self._program.traces

    def _as_target(self, value, argument: str):
        """``value`` as NumPy leaves of the problem's dtype (the compiled call transfers them)."""
        if self._fast and isinstance(value, np.ndarray) and (value.shape, value.dtype) == self._fast:
            return value
        self._target.check(value, self._signature, argument)
        return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype=self._dtype), value)

    def __call__(self, target, v=None):
        args = (self._as_target(target, "target"),)
        if self.op == "hvp":
            if v is None:
                raise TypeError("a prepared hvp is called as prep(target, v)")
            args += (self._as_target(v, "v"),)
        elif v is not None:
            raise TypeError(f"a prepared {self.op} takes only the target")
        if self.extra is not None:
            args += (self.extra,)
        result, aux = self._run(*args)  # one transfer each way
        while bool(aux["dense_overflow"]):
            self._adopt(self._rebuild(4 * self._program.meta["dense_steps"]))
            result, aux = self._run(*args)
        try:
            self._check(aux)
        except SolverError as err:
            for argument, value in zip((f"target ({self._target.name})", "v"), (target, v)):
                message = nonfinite_argument(value, argument)
                if message is not None:
                    raise ValueError(message) from err
            self._explain(err, aux, args[0])
            raise
        return self._to_user(result, target)

    def _explain(self, err: SolverError, aux, target) -> None:
        """Complete a failed solve's error with where and why: the primal solve at the same
        target, on the JAX backend (same controller), gives the time, the message of
        ``solve`` and the partial solution (``err.solution``); if it succeeds, the failing
        solve was a sensitivity pass (tangents or adjoint)."""
        codes = np.atleast_1d(np.asarray(aux["code"]))
        if self.diagnose is None or not np.isin(codes, list(STATUS_CODES)[1:]).any():
            return
        sol = self.diagnose(target)
        if sol is None:
            return
        if sol.success:
            err.add_note(f"The solve of the state alone succeeds at this target ({sol.message}): the "
                         "failing solve is a sensitivity pass (tangents or adjoint); try mode='forward' / "
                         "'reverse' or another adjoint, or a larger max_steps.")
        else:  # (then no other adjoint helps: the backsolve hint goes)
            err.args = (f"{err.args[0].replace(_BACKSOLVE_HINT, '')} The solve of the state failed with status "
                        f"{sol.status!r}: {sol.message}",)
            err.solution = sol

    def _check(self, aux) -> None:
        raise_on_failure(aux["code"], f"{self.op} ({self.mode})",
                         _BACKSOLVE_HINT if self.adjoint == "backsolve" else "")
        if self.adjoint == "backsolve":
            mismatch = float(aux["mismatch"])
            if not np.isfinite(mismatch) or mismatch > BACKSOLVE_MISMATCH:
                raise SolverError(
                    "adjoint='backsolve' could not reconstruct the forward state by integrating "
                    f"backwards (error {mismatch:.3g} x tolerance): the backward problem is "
                    "ill-posed (e.g. diffusion run backwards). Use adjoint='interpolating'."
                )
            if mismatch > BACKSOLVE_DOUBTFUL:
                warnings.warn(
                    f"adjoint='backsolve' cannot vouch for this gradient: the state reconstructed by "
                    f"integrating backwards is off by {mismatch:.3g} x tolerance (the backward problem "
                    "is close to ill-posed), and the gradient can be that much less accurate than "
                    "rtol/atol. Use adjoint='interpolating' (error-controlled) for an accurate gradient.",
                    RuntimeWarning, stacklevel=3,
                )
        if self.adjoint == "checkpoint":
            stiffness = float(aux["stiffness"])
            if stiffness > CHECKPOINT_STIFFNESS:
                warnings.warn(
                    f"adjoint='checkpoint' cannot vouch for this gradient: the mean step times "
                    f"the spectral radius of df/du is {stiffness:.2f} of the method's stability "
                    "limit, so stability, not accuracy, set the step size, and the derivative "
                    "of those steps can be far from the true gradient. Use "
                    "adjoint='interpolating' (error-controlled) for an accurate gradient.",
                    RuntimeWarning, stacklevel=3,
                )

    def _to_user(self, result, target):
        """NumPy results, float64 on every strategy (the discrete adjoint of a float32
        problem differentiates float32 steps; the others integrate in float64), with
        dicts in the key order of the ``target`` given (a Hessian's rows and columns too)."""
        if self.op == "value_and_gradient":
            value, grad = result
            return float(value), in_order_of(_widen(to_numpy(grad)), target)
        if self.op in ("gradient", "hvp"):
            return in_order_of(_widen(to_numpy(result[1])), target)
        if self.op == "hessian":
            perm = None if self._fast else flat_order(target)
            result = _widen(to_numpy(result))
            return result if perm is None else result[np.ix_(perm, perm)]
        return in_order_of(_widen(to_numpy(result)), target)

    def __repr__(self) -> str:
        return f"PreparedOperator(op={self.op!r}, mode={self.mode!r}, n_traces={self.n_traces})"


def _options(method, rtol, atol, max_steps, u0_shape) -> SolveOptions:
    method = Tsit5() if method is None else _checks.check_method(method)
    if not method.adaptive:
        raise ValueError(f"sensitivities need an adaptive method with error control; {method!r} has none")
    rtol, atol = _checks.check_tolerances(rtol, atol, u0_shape)
    if np.ndim(atol):
        raise ValueError("sensitivity operators take a scalar atol")
    return SolveOptions(method, float(rtol), float(atol), _checks.check_max_steps(max_steps))


def _resolve_mode(op, prob, wrt, mode, adjoint, n_outputs) -> tuple[str, str, str]:
    """``(chosen, reason, adjoint)``: the strategy ``mode`` names or ``"auto"`` picks."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}")
    order = 2 if op in ("hvp", "hessian") else 1
    if mode == "auto" and prob.u0.dtype.kind == "c" and order == 1:
        chosen, reason, adjoint = _auto_for_complex(op, adjoint)
    elif mode == "auto":
        chosen, reason = choose_mode(prob, wrt, n_outputs, order)
    else:
        chosen = mode if order == 1 else f"forward-over-{mode}"
        reason = f"mode={mode!r} was requested"
    if order == 2 and chosen.endswith("reverse") and adjoint == "checkpoint":
        raise ValueError(
            "second-order operators need a forward-differentiable reverse pass: "
            "adjoint='checkpoint' (the discrete adjoint) is not; use adjoint='interpolating' "
            "(forward-over-reverse) or mode='forward'"
        )
    return chosen, reason, adjoint


def _auto_for_complex(op: str, adjoint: str) -> tuple[str, str, str]:
    """``mode="auto"`` on a complex state: the one strategy right for it, whatever the
    dimensions (see :func:`_check_complex`). A gradient takes the discrete adjoint unless
    another adjoint than the default was asked for (which then raises, naming it)."""
    if op == "jacobian":
        return ("forward", "a complex state: forward mode (a reverse pass keeps only the real part of complex "
                "outputs)", adjoint)
    reason = ("a complex state: the discrete adjoint (adjoint='checkpoint'), the only strategy that differentiates "
              "complex states; the continuous adjoints and forward mode support real states only")
    return "reverse", reason, "checkpoint" if adjoint == "interpolating" else adjoint


def _widen(tree: Any) -> Any:
    """Floating leaves narrower than float64 (complex64) as float64 (complex128)."""
    if type(tree) is np.ndarray and tree.dtype == np.float64:  # the common case
        return tree
    return jax.tree_util.tree_map(
        lambda x: x.astype(np.promote_types(x.dtype, np.float64)) if np.issubdtype(x.dtype, np.inexact) else x, tree)


def _numpy_tree(tree: Any, dtype) -> Any:
    """Leaves as NumPy copies, cast to the problem's floating dtype or wider: a float32
    ``p`` of a float64 state is solved in float64 (its adjoint's increments were rounded
    to float32: a reverse gradient 20x less accurate than rtol 1e-10 asked)."""
    real = np.finfo(dtype).dtype if np.issubdtype(dtype, np.inexact) else dtype  # (real p of a complex state)

    def leaf(x):
        x = np.array(x)
        wide = np.promote_types(x.dtype, real) if np.issubdtype(x.dtype, np.inexact) else dtype
        return x if x.dtype == wide else x.astype(wide)
    return jax.tree_util.tree_map(leaf, tree)


def _check_complex(op: str, prob: ODEProblem, wrt: str, chosen: str, adjoint: str) -> None:
    """Complex states: the strategies that give the right numbers (the continuous adjoints
    and forward-mode gradients do not handle them); no complex target."""
    leaves = ([prob.u0] if wrt != "p" else []) + (jax.tree_util.tree_leaves(prob.p) if wrt != "u0" else [])
    if any(np.iscomplexobj(leaf) for leaf in leaves):
        raise TypeError(f"{op}: derivatives with respect to complex values are not supported (wrt={wrt!r} "
                        "holds complex numbers); split them into real and imaginary parts")
    if prob.u0.dtype.kind != "c":
        return
    if op == "jacobian" and chosen != "forward":
        raise ValueError("jacobian of a complex state needs mode='forward' (a reverse pass keeps only "
                         "the real part of complex outputs)")
    if op in ("gradient", "value_and_gradient") and (chosen != "reverse" or adjoint != "checkpoint"):
        raise ValueError(f"{op} of a loss of a complex state needs mode='reverse', adjoint='checkpoint' "
                         "(the discrete adjoint); the continuous adjoints and forward mode support real "
                         "states only")
    if op in ("hvp", "hessian"):
        raise ValueError(f"{op} of a loss of a complex state is not supported: second derivatives "
                         "need a continuous adjoint, which supports real states only")


def prepare(op: str, *args, method=None, saveat=None, rtol=1e-6, atol=1e-8,
            max_steps=100_000, wrt="p", mode="auto", adjoint="interpolating",
            duplicate_closure=True, events=None, **kwargs) -> PreparedOperator:
    """Trace and compile a sensitivity operator once, for repeated calls.

    ``prepare("gradient", loss, prob, method, ...)``; ``prepare("jacobian", prob, method,
    ...)``; likewise ``"value_and_gradient"``, ``"hvp"`` (without ``v``) and ``"hessian"``.
    Takes the keyword arguments of the operator. Compiled code is reused from the
    compiled-code cache (memory and disk) when ``f``, the loss, shapes and options match
    a previous preparation (see :mod:`dxdt.sensitivity._compiled`).

    Returns
    -------
    PreparedOperator
        ``prep(target)`` (``prep(target, v)`` for ``hvp``) with target values of the
        prepared shapes; a differently shaped target raises ``ValueError``.
    """
    if op not in OPERATORS:
        raise ValueError(f"op must be one of {OPERATORS}, got {op!r}")
    if kwargs:
        raise TypeError(f"prepare() got unexpected keyword arguments {sorted(kwargs)}")
    from .._ensemble_sensitivity import stack_members

    stacked = stack_members(op, args)  # an EnsembleProblem: its members as one stacked problem
    if stacked is not args and events:
        raise ValueError("events with an EnsembleProblem are not supported by the sensitivity operators "
                         "(the stacked members would share one event location and affect): take each "
                         "member's gradient, or solve the ensemble with events on the NumPy backend")
    args = stacked
    loss, rest = (None, args) if op == "jacobian" else (args[0] if args else None, args[1:])
    if op != "jacobian" and not callable(loss):
        raise TypeError(f"loss must be a callable loss(u) or loss(u, p), got {type(loss).__name__}")
    if not rest:
        raise TypeError(f"{op} needs the problem: {op}({'' if op == 'jacobian' else 'loss, '}prob, method, ...)")
    prob = _checks.check_problem(rest[0])
    _checks.check_jax_dtype(prob.u0, "dxdt.sensitivity")
    from .translate._to_jax import check_parameters

    check_parameters(prob.p)
    if len(rest) > 2:
        raise TypeError(f"{op} takes at most (loss, prob, method) positionally")
    if len(rest) == 2:
        if method is not None:
            raise TypeError("method given both positionally and by keyword")
        method = rest[1]
    options = _options(method, rtol, atol, max_steps, prob.u0.shape)
    saveat = _checks.check_saveat([prob.tspan[1]] if saveat is None else saveat, prob.tspan)
    target = Target(check_wrt(wrt))
    check_has_parameters(prob, target.wrt)
    duplicate_closure = _checks.check_flag("duplicate_closure", duplicate_closure)
    n_outputs = len(saveat) * prob.u0.size if op == "jacobian" else 1
    chosen, reason, adjoint = _resolve_mode(op, prob, target.wrt, mode, adjoint, n_outputs)
    if (mode == "auto" and chosen.endswith("forward") and adjoint == "interpolating"
            and isinstance(options.method, AbstractStabilized)
            and prob.u0.dtype.kind != "c"):  # the adjoint it was measured with (not for complex states)
        note = reverse_for_stabilized(target_size(prob, target.wrt), n_outputs)
        if note is not None:
            chosen, reason = chosen[: -len("forward")] + "reverse", reason + note
    _check_complex(op, prob, target.wrt, chosen, adjoint)
    if events is not None and len(check_events(events)):  # events=[]: none, as in solve
        from ._events import prepare_with_events

        return prepare_with_events(op, loss, prob, events, options, saveat, target, chosen, reason,
                                   adjoint, duplicate_closure, auto=mode == "auto")

    from ._estimate import translate_eigen_est, with_estimate
    from .translate import to_jax

    L = None if loss is None else translate_loss(loss, duplicate_closure, prob.p)
    dtype = prob.u0.dtype
    f64 = np.float64
    context = (np.array(prob.u0), _numpy_tree(prob.p, dtype), f64(prob.tspan[0]),
               f64(prob.tspan[1]), np.asarray(saveat, f64))
    theta0 = target.select(context[0], context[1])
    dense = "reverse" in chosen and adjoint == "interpolating"
    inner = "forward" if chosen.endswith("forward") else "reverse"
    # (auto's programs apart: auto may build forward mode where an adjoint is too large)
    static = (op, chosen, mode == "auto", adjoint if "reverse" in chosen else None, target.wrt, repr(options.method),
              options.rtol, options.atol, options.max_steps, structure(prob.u0), structure(prob.p),
              len(saveat), duplicate_closure, None if L is None else (L.n_args, L.pure_jax))

    def build(dense_steps: int | None = None) -> _compiled.Program:
        steps = dense_steps or (_dense_steps(prob, options) if dense else 0)
        strategy, note = inner, None
        if dense and mode == "auto":  # the adjoint auto chose: is its dense output too large?
            note = _auto_forward_note(op, prob, target.wrt, len(saveat), steps, options)
        if note is not None:
            strategy, steps = "forward", 0
        _check_dense_memory(steps, options, prob.u0)
        g = to_jax(prob.f, prob.u0, prob.p, duplicate_closure=duplicate_closure)
        reads = len(g.constant_reads)
        estimate = translate_eigen_est(options.method, owner=len(callables) - 1)
        run = _builder(op, strategy, adjoint, g, L, target, replace(options, estimate=estimate), steps)
        example = (theta0, theta0, context) if op == "hvp" else (theta0, context)
        executable, meta = _compiled.compile_function(lambda *args: flag_nonfinite(*run(*args)), *example)
        if note is not None:
            meta.update(mode=chosen.replace("reverse", "forward"), reason_note=note)
        loss_reads = tuple(L.constant_reads) if L is not None else ()
        estimate_reads = tuple(estimate.constant_reads) if estimate is not None else ()
        all_reads = tuple(g.constant_reads[reads:]) + loss_reads + estimate_reads
        return _compiled.Program(executable, all_reads, {"dense_steps": steps, **meta}, traces=1)

    # the user's functions traced into the program, in the order of their ``owner`` number
    callables, flags = with_estimate(options.method, (prob.f,) if L is None else (prob.f, loss),
                                     (False,) if L is None else (False, L.pure_jax))
    program = _compiled.lookup("operator", static, callables, build, constant_arrays=flags)

    def rebuild(dense_steps: int) -> _compiled.Program:
        with _compiled.without_host_callbacks():
            larger = build(dense_steps)
        larger.key = program.key
        _compiled.remember(larger, disk=True)
        return larger

    return PreparedOperator(op, chosen, reason, adjoint, program, context, target, rebuild,
                            _diagnosis(prob, target, context, options, saveat))


def _diagnosis(prob, target, context, options: SolveOptions, saveat) -> Callable:
    """``diagnose(theta)``: :func:`state_solution` at target ``theta``."""
    return lambda theta: state_solution(prob, *target.merge(theta, context[0], context[1]), options, saveat)


def state_solution(prob, u0, p, options: SolveOptions, saveat):
    """The state alone solved at ``(u0, p)`` with a failed computation's options, for its
    error (``solve(backend="jax")``: the same controller, never the user's closure
    buffers); None if that cannot be done either (a courtesy: the original error stands)."""
    from .._solve import solve

    try:
        return solve(prob.remake(u0=u0, p=p), options.method, rtol=options.rtol, atol=options.atol,
                     saveat=saveat, max_steps=options.max_steps, backend="jax")
    except Exception:
        return None


def flag_nonfinite(result, aux):
    """``(result, aux)`` with ``aux["code"]`` set to ``DERIVATIVE_NONFINITE`` where every
    solve succeeded but ``result`` is not finite (``f`` or the loss is not differentiable
    there): checked inside the compiled program, so a call pays no host-side scan for an
    operator that never returns a NaN."""
    leaves = jax.tree_util.tree_leaves(result)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True
    code = aux["code"]
    return result, {**aux, "code": jnp.where((code == 0) & ~finite, DERIVATIVE_NONFINITE, code)}


def _builder(op: str, inner: str, adjoint: str, g, loss, target, options, dense_steps) -> Callable:
    """The pure function ``(theta, [v,] context) -> (result, aux)`` that is compiled."""
    from . import _strategies as strategies

    g_once = jax.jit(g)  # solves evaluate the field at several places: trace f once

    def setup_for(context):
        u0, p, t0, t1, saveat = context
        return strategies.Setup(g=g_once, loss=loss, target=target, u0=u0, p=p, t0=t0, t1=t1,
                                saveat=saveat, options=options, dense_steps=dense_steps)

    def run(*args):
        *thetas, context = args
        setup = setup_for(context)
        if op == "jacobian":
            if inner == "forward":
                return strategies.jacobian_forward(setup, *thetas)
            return strategies.jacobian_reverse(setup, *thetas, adjoint)
        first = strategies.value_and_gradient(setup, inner, adjoint)
        return {"hvp": strategies.hvp, "hessian": strategies.hessian}.get(op, lambda fn: fn)(first)(*thetas)
    return run


def _dense_steps(prob, options: SolveOptions) -> int:
    """Step buffer for dense forward solves: a NumPy solve counts the steps, with margin.

    diffrax sizes dense output by its ``max_steps``, and every pass over the buffer (its
    initialisation, the copies at the loop's boundary) costs in proportion to its size:
    sized by a default of 100 000 the buffers dominate the cost of the interpolating
    adjoint. The size is the step count plus 25% and 16 (the JAX solve's steps differ a
    little from the NumPy solve's), rounded up to an eighth of a power of two, so that
    few sizes get compiled; a buffer that still overflows is rebuilt larger.
    """
    from .._solve import solve
    from .translate import duplicate

    private = ODEProblem(duplicate(prob.f), prob.u0, prob.tspan, prob.p)  # never the user's buffers
    sol = solve(private, options.method, rtol=options.rtol, atol=options.atol, max_steps=options.max_steps)
    steps = sol.stats["naccept"] + sol.stats["nreject"]
    if not sol.success:  # a moderate buffer (chunks or a rebuild extend it), not max_steps,
        steps = min(steps, FAILED_PLAN_STEPS)  # which every later call would pay for
    return min(options.max_steps, _round_up(steps + steps // 4 + 16))


FAILED_PLAN_STEPS = 4096  # dense buffer steps planned from a solve that failed at the problem's point


DENSE_BUDGET_BYTES = 2 * 2**30  # dense output of the interpolating adjoint's forward solve


def _auto_forward_note(op: str, prob, wrt, n_save: int, steps: int, options: SolveOptions) -> str | None:
    """Why ``mode="auto"`` builds forward mode instead of the interpolating adjoint it chose
    by dimensions, whose dense output would keep ``steps`` steps (None: keep the adjoint);
    :func:`._mode.forward_instead_of_adjoint` for ``op`` on ``prob``."""
    n_outputs = n_save * prob.u0.size if op == "jacobian" else 1
    return forward_instead_of_adjoint(target_size(prob, wrt), prob.u0.size, n_outputs,
                                      _dense_bytes(steps, options, prob.u0))


def _dense_bytes(steps: int, options: SolveOptions, u0) -> int:
    """Bytes of the dense output of ``steps`` steps (``method.dense_vectors`` a step)."""
    return steps * options.method.dense_vectors * u0.nbytes


def _check_dense_memory(steps: int, options: SolveOptions, u0) -> None:
    """Refuse a dense forward solve whose step buffer would not fit in memory."""
    per_step = _dense_bytes(1, options, u0)
    if steps * per_step > DENSE_BUDGET_BYTES:
        raise SolverError(
            f"adjoint='interpolating' would keep the dense output of {steps} steps "
            f"({steps * per_step / 2**30:.1f} GiB, above {DENSE_BUDGET_BYTES / 2**30:.0f} GiB): use "
            "mode='forward' for a small target, adjoint='backsolve' or 'checkpoint', fewer steps "
            "(looser rtol, a stabilized method such as ROCK2 for a stiff PDE), or a shorter tspan.")


def _round_up(n: int) -> int:
    """``n`` rounded up to a multiple of ``2**(k - 3)`` where ``2**(k - 1) <= n < 2**k``."""
    quantum = 1 << max(n.bit_length() - 3, 0)
    return -(-n // quantum) * quantum


def _call(op: str, args, options: dict, v=None):
    prep = prepare(op, *args, **options)
    u0, p = prep._host_context[:2]
    prob = next((a for a in args if isinstance(a, ODEProblem)), None)
    if prob is not None:  # the user's p: its dicts in their own key order, which the results keep
        p = prob.p
    target = prep._target.select(u0, p)
    return prep(target) if v is None else prep(target, v)


def gradient(loss: Callable, prob: ODEProblem, method=None, *, saveat=None, rtol: float = 1e-6,
             atol: float = 1e-8, max_steps: int = 100_000, wrt="p", mode: str = "auto",
             adjoint: str = "interpolating", duplicate_closure: bool = True, events=None) -> Any:
    """Gradient of ``loss(u)`` (or ``loss(u, p)``) of the trajectory ``u`` at ``saveat``.

    Parameters
    ----------
    loss : callable
        ``loss(u)`` or ``loss(u, p)`` returning a scalar; ``u`` has shape
        ``(len(saveat), *u0.shape)``. NumPy functions are translated like ``f``.
    prob : ODEProblem
        The problem; its ``u0`` and ``p`` are the point of differentiation.
    method : AbstractRungeKutta, optional
        An adaptive method from :mod:`dxdt.solvers`; default ``Tsit5()``.
    saveat : array_like, optional
        Save times (default ``[t1]``: the final state only).
    rtol, atol : float
        Tolerances of every solve (forward, tangent and adjoint; the adjoint's ``atol``
        relative to the largest cotangent, so a loss's scale does not change its accuracy).
    max_steps : int
        Step budget of every solve.
    wrt : {"p", "u0", ("u0", "p")}
        The target.
    mode : {"auto", "forward", "reverse"}
        ``"auto"`` follows :func:`choose_mode`.
    adjoint : {"interpolating", "checkpoint", "backsolve"}
        Reverse strategy (see :mod:`dxdt.sensitivity`).
    duplicate_closure : bool
        Give work buffers reachable from ``f`` (and the loss) private copies while tracing.
    events : list of Event or TimeEvent, optional
        Differentiate through event times (implicit function theorem) and affects (jump
        conditions); the loss may then take ``t_events`` as a keyword-only parameter.

    Returns
    -------
    gradient : ndarray, tuple or dict
        Shaped like the target (``p``, ``u0`` or the tuple ``(u0, p)``); NumPy float64
        for float64 problems.

    Raises
    ------
    SolverError
        A solve failed, or ``adjoint="backsolve"`` met an ill-posed backward problem.
    """
    return _call("gradient", (loss, prob, method), _keywords(locals()))


def value_and_gradient(loss: Callable, prob: ODEProblem, method=None, *, saveat=None,
                       rtol: float = 1e-6, atol: float = 1e-8, max_steps: int = 100_000, wrt="p",
                       mode: str = "auto", adjoint: str = "interpolating",
                       duplicate_closure: bool = True, events=None):
    """``(loss value as float, gradient)``; arguments as :func:`gradient`."""
    return _call("value_and_gradient", (loss, prob, method), _keywords(locals()))


def jacobian(prob: ODEProblem, method=None, *, saveat=None, rtol: float = 1e-6, atol: float = 1e-8,
             max_steps: int = 100_000, wrt="p", mode: str = "auto", adjoint: str = "interpolating",
             duplicate_closure: bool = True, events=None):
    """``d u(saveat) / d target`` of shape ``(len(saveat), *u0.shape, *target.shape)``.

    For a tuple or dict target each leaf gets its own block of that form. Arguments as
    :func:`gradient`.
    """
    return _call("jacobian", (prob, method), _keywords(locals()))


def hvp(loss: Callable, prob: ODEProblem, v, method=None, *, saveat=None, rtol: float = 1e-6,
        atol: float = 1e-8, max_steps: int = 100_000, wrt="p", mode: str = "auto",
        adjoint: str = "interpolating", duplicate_closure: bool = True, events=None):
    """Hessian of the loss times ``v`` (shaped like the target).

    Forward-over-reverse or forward-over-forward (see :func:`choose_mode`); arguments as
    :func:`gradient`.
    """
    return _call("hvp", (loss, prob, method), _keywords(locals()), v=v)


def hessian(loss: Callable, prob: ODEProblem, method=None, *, saveat=None, rtol: float = 1e-6,
            atol: float = 1e-8, max_steps: int = 100_000, wrt="p", mode: str = "auto",
            adjoint: str = "interpolating", duplicate_closure: bool = True, events=None):
    """Hessian of the loss: ``(n, n)`` for a target of ``n`` entries (flattened in order).

    Arguments as :func:`gradient`.
    """
    return _call("hessian", (loss, prob, method), _keywords(locals()))


_KEYWORDS = ("saveat", "rtol", "atol", "max_steps", "wrt", "mode", "adjoint", "duplicate_closure", "events")


def _keywords(arguments: dict) -> dict:
    """The keyword options of an operator call, as ``prepare`` takes them."""
    return {name: arguments[name] for name in _KEYWORDS}
