"""The four linear maps of an ODE solve ``F(x) = u(saveat)``, ``x = (u0, p)``, as JAX
primitives whose derivative and transpose rules call one another.

=============================  ===================================  =========================
primitive                      value                                computed by
=============================  ===================================  =========================
``tangent_p(x; v)``            ``T = F'(x) v``                      forward sensitivities
``adjoint_p(x; w)``            ``A = F'(x)^T w``                    the chosen adjoint
``second_tangent_p(x; v, d)``  ``B = F''(x)[v, d]``                 forward mode of ``T``
``second_adjoint_p(x; w, d, dw)`` ``D = (d/dx F'(x)^T w) d + A(x; dw)`` forward mode of ``A``
=============================  ===================================  =========================

Each is linear in the arguments after the semicolon, ``D`` in ``(d, dw)`` and, with
``dw = None`` (zero), in ``w``: ``C(x; w, d) = D(x; w, d, None)``. The rules close the
family under every first and second derivative JAX asks for:

- derivatives (JVP): ``T' = T(x; v') + B(x; v, x')``, ``A' = D(x; w, x', w')``: the
  derivative of a gradient whose cotangent moves too (``jax.hessian``, ``jvp(grad)``) is
  one second-adjoint solve whose second adjoint jumps by ``w'`` (the interpolating
  adjoint), not a second-adjoint solve plus a separate adjoint solve;
- transposes: ``T^T = A``, ``A^T = T``; ``B`` transposed in ``d`` is ``C(x; ct, v)`` (in
  ``v``: ``C(x; ct, d)``, ``B`` being symmetric); ``D`` transposed in ``d`` is
  ``C(x; w, ct)`` (the Hessian of ``<w, F>`` is symmetric), in ``dw`` it is ``T(x; ct)``,
  in ``w`` (``dw = None``) it is ``B(x; d, ct)``.

So ``jax.grad`` transposes ``T`` into the adjoint solve, and every second derivative
(``hessian``, ``jacrev(jacfwd)``, ``grad(grad)``, ...) ends in ``B`` or ``C``: forward
derivatives of the tangent or adjoint solves, which are plain forward-differentiable
diffrax solves. No rule ever transposes a solve (no reverse-over-reverse). Batching
(``vmap``) is inherited by vmapping the rules (``equinox.internal.create_vprim``), so a
``vmap`` over directions only (``jacfwd``, ``jacrev``) shares whatever does not depend on
them, e.g. the forward solve of the adjoint. Third derivatives in ``x`` are not provided.

Each value is NaN where one of its solves failed (status code not 0): never a finite
wrong value inside a trace.

References
----------
J. Bradbury et al., "How JAX primitives work" (JAX documentation); P. Kidger, lineax
``linear_solve_p`` (a primitive whose JVP and transpose rules call each other).
"""

from __future__ import annotations

from ._jax import load_diffrax, load_jax

jax, jnp = load_jax()  # first: JAX and equinox are imported once, under a lock
load_diffrax()
import equinox.internal as eqxi  # noqa: E402
from equinox.internal._primitive import _missing_dynamic as _DYNAMIC  # noqa: E402  (an array's place in "static")


from ._jax_solve_passes import SolveStatic, adjoint, jit_pass, second_adjoint, second_tangent, tangent

ad = jax.interpreters.ad
batching = jax.interpreters.batching


def _is_undefined(x) -> bool:
    return isinstance(x, ad.UndefinedPrimal)


def _nonzero(tangent_tree) -> bool:
    """Whether a tangent pytree (``None`` leaves for symbolic zeros) has a nonzero part."""
    return any(t is not None for t in jax.tree_util.tree_leaves(tangent_tree, is_leaf=lambda t: t is None))


def _materialise(primal, tangent_tree):
    return jax.tree_util.tree_map(eqxi.materialise_zeros, primal, tangent_tree, is_leaf=lambda t: t is None)


def _add(a, b):
    if a is None:
        return b
    return a if b is None else jax.tree_util.tree_map(jnp.add, a, b)


def _keep_undefined(inputs, cts):
    """Cotangents for the undefined (linear) inputs only; ``None`` for the known ones."""
    return jax.tree_util.tree_map(lambda i, c: c if _is_undefined(i) else None, inputs, cts,
                                  is_leaf=_is_undefined)


def _none(tree):
    return jax.tree_util.tree_map(lambda _: None, tree, is_leaf=_is_undefined)


def _check_known(tree) -> None:
    if any(_is_undefined(x) for x in jax.tree_util.tree_leaves(tree, is_leaf=_is_undefined)):
        raise NotImplementedError("jax_solve: a linear map of the solve was transposed with respect "
                                  "to the point of linearisation (third-order derivative)")


def _check_fixed_times(spec_tangent) -> None:
    """The solves' times (span, save times) are fixed (chains through ``TimeEvent(times(p))``
    move their joints instead, see ``_jax_solve_events.run_chain``): a tangent in them is
    refused, never dropped."""
    if _nonzero(spec_tangent):
        raise NotImplementedError(
            "jax_solve: a solve's start, end and save times are fixed; derivatives through moving "
            "times are not provided")


def _third_order() -> None:
    raise NotImplementedError(
        "jax_solve provides first and second derivatives (hessian, jacrev(jacfwd), grad of grad, "
        "...); a third derivative with respect to (u0, p) is not supported")


def _trajectory_dtype(u0):
    """The solves' dtype: a float32 state is solved in float64 (as diffrax promotes it)."""
    return jnp.promote_types(u0.dtype, jnp.result_type(float))


def _trajectory_shape(spec, u0):
    return jax.core.ShapedArray((spec.n_save,) + tuple(u0.shape), _trajectory_dtype(u0))


def _like(tree):
    return jax.tree_util.tree_map(lambda x: jax.core.ShapedArray(x.shape, x.dtype), tree)


def _cotangent(like, ct):
    """``ct`` with zeros where a cotangent is missing (``None``: a symbolic zero under vmap)."""
    return jax.tree_util.tree_map(lambda x, c: jnp.zeros(x.shape, x.dtype) if c is None else c,
                                  like, ct, is_leaf=lambda c: c is None)


def _trajectory_cotangent(spec, u0, ct):
    return jnp.zeros((spec.n_save,) + jnp.shape(u0), _trajectory_dtype(u0)) if ct is None else ct


def _bind(prim, *args):
    return eqxi.filter_primitive_bind(prim, *args)


# --- T(x; v) ------------------------------------------------------------------------------

@eqxi.filter_primitive_def
def _tangent_abstract(spec, u0, p, v0, vp):
    return _trajectory_shape(spec, u0)


@eqxi.filter_primitive_jvp
def _tangent_jvp(primals, tangents):
    spec, u0, p, v0, vp = primals
    t_spec, tu0, tp, tv0, tvp = tangents
    _check_fixed_times(t_spec)
    out, t_out = _bind(tangent_p, spec, u0, p, v0, vp), None
    if _nonzero((tv0, tvp)):
        t_out = _bind(tangent_p, spec, u0, p, *_materialise((v0, vp), (tv0, tvp)))
    if _nonzero((tu0, tp)):
        d0, dp = _materialise((u0, p), (tu0, tp))
        t_out = _add(t_out, _bind(second_tangent_p, spec, u0, p, v0, vp, d0, dp))
    return out, t_out


@eqxi.filter_primitive_transpose(materialise_zeros=True)
def _tangent_transpose(inputs, ct):
    spec, u0, p, v0, vp = inputs
    _check_known((u0, p))
    lam, mu = _bind(adjoint_p, spec, u0, p, _trajectory_cotangent(spec, u0, ct))
    return (_none(spec), _none(u0), _none(p)) + _keep_undefined((v0, vp), (lam, mu))


def _refuse_checkpoint_second_order(spec) -> None:
    if spec.adjoint == "checkpoint":
        raise ValueError(
            "adjoint='checkpoint' (the discrete adjoint) cannot be differentiated again: "
            "second derivatives through an adjoint (hessian, jacrev(jacfwd), jvp/grad of a "
            "gradient) need adjoint='interpolating' or adjoint='backsolve'; jacfwd(jacfwd) works "
            "with every adjoint")


# --- A(x; w) ------------------------------------------------------------------------------

@eqxi.filter_primitive_def
def _adjoint_abstract(spec, u0, p, w):
    return _like((u0, p))


@eqxi.filter_primitive_jvp
def _adjoint_jvp(primals, tangents):
    spec, u0, p, w = primals
    t_spec, tu0, tp, tw = tangents
    _check_fixed_times(t_spec)
    out = _bind(adjoint_p, spec, u0, p, w)
    dw = _materialise(w, tw) if _nonzero(tw) else None
    if not _nonzero((tu0, tp)):
        return out, None if dw is None else _bind(adjoint_p, spec, u0, p, dw)
    _refuse_checkpoint_second_order(spec)
    d0, dp = _materialise((u0, p), (tu0, tp))
    return out, _bind(second_adjoint_p, spec, u0, p, w, d0, dp, dw)


@eqxi.filter_primitive_transpose(materialise_zeros=True)
def _adjoint_transpose(inputs, ct):
    spec, u0, p, w = inputs
    _check_known((u0, p))
    S = _bind(tangent_p, spec, u0, p, *_cotangent((u0, p), ct))
    return (_none(spec), _none(u0), _none(p), _keep_undefined(w, S))


# --- B(x; v, d) ---------------------------------------------------------------------------

@eqxi.filter_primitive_def
def _second_tangent_abstract(spec, u0, p, v0, vp, d0, dp):
    return _trajectory_shape(spec, u0)


@eqxi.filter_primitive_jvp
def _second_tangent_jvp(primals, tangents):
    spec, u0, p, v0, vp, d0, dp = primals
    t_spec, tu0, tp, tv0, tvp, td0, tdp = tangents
    _check_fixed_times(t_spec)
    if _nonzero((tu0, tp)):
        _third_order()
    out, t_out = _bind(second_tangent_p, *primals), None
    if _nonzero((tv0, tvp)):
        t_out = _bind(second_tangent_p, spec, u0, p, *_materialise((v0, vp), (tv0, tvp)), d0, dp)
    if _nonzero((td0, tdp)):
        t_out = _add(t_out, _bind(second_tangent_p, spec, u0, p, v0, vp,
                                  *_materialise((d0, dp), (td0, tdp))))
    return out, t_out


@eqxi.filter_primitive_transpose(materialise_zeros=True)
def _second_tangent_transpose(inputs, ct):
    spec, u0, p, v0, vp, d0, dp = inputs
    _check_known((u0, p))
    _refuse_checkpoint_second_order(spec)  # the transpose runs forward mode through the adjoint
    ct = _trajectory_cotangent(spec, u0, ct)
    v_undefined = any(map(_is_undefined, jax.tree_util.tree_leaves((v0, vp), is_leaf=_is_undefined)))
    if v_undefined:  # B is symmetric in (v, d): transpose in v is C(x; ct, d)
        ct_v = _bind(second_adjoint_p, spec, u0, p, ct, d0, dp, None)
        return (_none(spec), _none(u0), _none(p)) + _keep_undefined((v0, vp), ct_v) + (_none(d0), _none(dp))
    ct_d = _bind(second_adjoint_p, spec, u0, p, ct, v0, vp, None)
    return (_none(spec), _none(u0), _none(p), _none(v0), _none(vp)) + _keep_undefined((d0, dp), ct_d)


# --- D(x; w, d, dw) ------------------------------------------------------------------------

@eqxi.filter_primitive_def
def _second_adjoint_abstract(spec, u0, p, w, d0, dp, dw):
    return _like((u0, p))


@eqxi.filter_primitive_jvp
def _second_adjoint_jvp(primals, tangents):
    spec, u0, p, w, d0, dp, dw = primals
    t_spec, tu0, tp, tw, td0, tdp, tdw = tangents
    _check_fixed_times(t_spec)
    if _nonzero((tu0, tp)):
        _third_order()
    out, t_out = _bind(second_adjoint_p, *primals), None
    tdw = _materialise(dw, tdw) if _nonzero(tdw) else None
    if _nonzero(tw):  # C(x; tw, d) + A(x; tdw)
        t_out = _bind(second_adjoint_p, spec, u0, p, _materialise(w, tw), d0, dp, tdw)
    elif tdw is not None:
        t_out = _bind(adjoint_p, spec, u0, p, tdw)
    if _nonzero((td0, tdp)):
        t_out = _add(t_out, _bind(second_adjoint_p, spec, u0, p, w,
                                  *_materialise((d0, dp), (td0, tdp)), None))
    return out, t_out


@eqxi.filter_primitive_transpose(materialise_zeros=True)
def _second_adjoint_transpose(inputs, ct):
    spec, u0, p, w, d0, dp, dw = inputs
    _check_known((u0, p))
    ct = _cotangent((u0, p), ct)
    if any(map(_is_undefined, jax.tree_util.tree_leaves(w, is_leaf=_is_undefined))):
        if dw is not None:  # D is linear in w only without dw; the rules never bind it so
            raise NotImplementedError("jax_solve: D(x; w, d, dw) transposed in w with dw given")
        ct_w = _bind(second_tangent_p, spec, u0, p, d0, dp, *ct)  # <ct, C(w) d> = <w, B(d, ct)>
        return (_none(spec), _none(u0), _none(p), _keep_undefined(w, ct_w), _none(d0), _none(dp), None)
    ct_d = ct_dw = None
    if any(map(_is_undefined, jax.tree_util.tree_leaves((d0, dp), is_leaf=_is_undefined))):
        ct_d = _bind(second_adjoint_p, spec, u0, p, w, *ct, None)  # the Hessian of <w, F> is symmetric
    if any(map(_is_undefined, jax.tree_util.tree_leaves(dw, is_leaf=_is_undefined))):
        ct_dw = _bind(tangent_p, spec, u0, p, *ct)  # <ct, A(x; dw)> = <T(x; ct), dw>
    d_out = _none((d0, dp)) if ct_d is None else _keep_undefined((d0, dp), ct_d)
    dw_out = _none(dw) if ct_dw is None else _keep_undefined(dw, ct_dw)
    return (_none(spec), _none(u0), _none(p), _none(w)) + d_out + (dw_out,)


def _impl(pass_):
    return eqxi.filter_primitive_def(jit_pass(pass_))


def _primitive(name, pass_, abstract, jvp, transpose):
    """A vmappable primitive whose linear arguments are batched whenever any argument is.

    ``vmap`` of a transpose must return an unbatched cotangent for an unbatched linear
    input, which ``create_vprim`` does not do; broadcasting the linear inputs first makes
    JAX sum their cotangents over the batch (the transpose of the broadcast).
    """
    prim = eqxi.create_vprim(name, _impl(pass_), abstract, jvp, transpose)
    batch_all = batching.fancy_primitive_batchers[prim]

    def batch_rule(axis_data, inputs, batch_axes, **params):
        if any(b is not None for b in batch_axes):
            static = next(s for s in params["static"] if isinstance(s, SolveStatic))
            inputs, batch_axes = list(inputs), list(batch_axes)
            # the spec's operands (times, first chunk: the arrays among its leaves) come first
            n_spec = params["treedef"].children()[0].num_leaves
            n_operands = sum(1 for s in params["static"][:n_spec] if s is _DYNAMIC)
            for i in range(n_operands + static.n_x, len(inputs)):  # after the spec's operands and x
                if batch_axes[i] is None:
                    inputs[i] = jnp.broadcast_to(inputs[i], (axis_data.size,) + jnp.shape(inputs[i]))
                    batch_axes[i] = 0
        return batch_all(axis_data, tuple(inputs), tuple(batch_axes), **params)

    batching.fancy_primitive_batchers[prim] = batch_rule
    return prim


tangent_p = _primitive("dxdt_tangent", tangent, _tangent_abstract, _tangent_jvp, _tangent_transpose)
adjoint_p = _primitive("dxdt_adjoint", adjoint, _adjoint_abstract, _adjoint_jvp, _adjoint_transpose)
second_tangent_p = _primitive("dxdt_second_tangent", second_tangent, _second_tangent_abstract,
                              _second_tangent_jvp, _second_tangent_transpose)
second_adjoint_p = _primitive("dxdt_second_adjoint", second_adjoint, _second_adjoint_abstract,
                              _second_adjoint_jvp, _second_adjoint_transpose)


def apply_tangent(spec, u0, p, v0, vp):
    """``F'(x) v`` with ``v = (v0, vp)``."""
    return _bind(tangent_p, spec, u0, p, v0, vp)
