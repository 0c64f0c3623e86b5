r"""The empirical NTK by structured derivatives (Novak, Sohl-Dickstein & Schoenholz 2022,
"Fast Finite Width Neural Tangent Kernel", Sec. 3.3 and Table 1).

A parameter ``W`` that enters the network through one linear layer ``y = x W`` reaches
the outputs only through ``y``, so its Jacobian factors as ``df_a/dW = x^T delta^a`` with
``delta^a = df_a/dy`` the cotangent back-propagated to the layer's output. Its share of
the kernel is then a contraction of two small Gram matrices, never the Jacobian
(Novak et al. 2022, Sec. 3.3, the structure of a dense layer's Jacobian; the kernel is the
sum of such terms over the parameters):

.. math::

    \Theta^W_{ab}(x_i, x_j) = \sum_{l, m} (x_{i,l} \cdot x_{j,m})
                              (\delta^a_{i,l} \cdot \delta^b_{j,m})

where ``l, m`` run over the dimensions that share the weight inside one example (positions,
tokens; one term for a plain dense layer) and ``(x . x')`` contracts the layer's input
features, ``(delta . delta')`` its output features. A convolution is the same rule with
``x_{i,l}`` the input patch under output position ``l`` (Sec. 3.3, a convolution as a
dense layer applied to patches). When the sharing dimensions are large the other order
is cheaper: first the per-example weight Jacobian ``sum_l x_{i,l}^T delta^a_{i,l}``, then
its contraction (the rule's "Jacobian first" order); each layer takes the cheaper order
by the FLOP counts of Table 1.

The layers are found in the model's program: ``apply_fn`` is traced on one example to a
jaxpr (``jax.make_jaxpr`` over ``params``); a parameter leaf is *structured* when its only
use is one ``dot_general`` or ``conv_general_dilated`` (calls to jitted functions are
inlined). The interpreter then evaluates the jaxpr with a zero perturbation ``eps`` added to
each structured layer's output, records each layer's input, and takes the derivatives of
the outputs with respect to the perturbations (the cotangents ``delta``) and to every other
parameter in one reverse pass per output. A bias added to a layer's output (after scalar
multipliers such as a parametrization's) joins that layer as one more input feature
(``Layer``). Every other parameter (norm gains, other biases, weights used twice or
through another operation, the parameters of a program it does not recognise) contributes
by the Jacobian contraction of that parameter alone, so the kernel is exact whatever the
model.

Costs (multiply-adds, ``n1 + n2`` examples, ``O`` outputs, a layer with ``C`` input and ``R``
output features shared over ``L`` positions): the cotangents ``(n1 + n2) O [FP]``; a layer
``n1 n2 L^2 (C + O^2 R)`` Gram first or ``(n1 + n2) O L C R + n1 n2 O^2 C R`` Jacobian first
(``O^2 -> O`` with ``trace``); a fallback parameter ``n1 n2 O^2 P_p``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from kernels.empirical import contract_jacobians

_CALLS = ("jit", "pjit", "closed_call", "core_call")
_LAYERS = ("dot_general", "conv_general_dilated")


@dataclasses.dataclass(frozen=True)
class Layer:
    """A structured layer of the traced program: the equation's ``path`` (indices through
    inlined calls), the parameter ``leaf`` it consumes, the operand position of that
    parameter (``0`` or ``1``), the sizes ``(B, L, C, R)`` of its factorisation (weight-
    sharing batch, positions, input and output features) and its output shape.

    An affine layer ``y = c (x W) + s b`` (scalars ``c, s``; ``b`` broadcast over the
    positions) is one layer with input ``[c x, s]`` (``C + 1`` features) whose cotangent is
    taken at ``y`` (``eps_path``, the ``add``): its weight and bias share one Gram of
    cotangents. ``scales`` / ``bias_scales`` are the ``(path, operand)`` of the scalar
    factors ``c`` and ``s``, read when the program runs."""

    path: tuple
    primitive: str
    leaf: int
    param_operand: int
    sizes: tuple
    out_order: tuple
    out_shape: tuple
    out_dtype: object
    eps_path: tuple = None
    bias: int | None = None
    scales: tuple = ()
    bias_scales: tuple = ()

    def without_bias(self):
        b, l, c, r = self.sizes
        return dataclasses.replace(self, sizes=(b, l, c - 1, r), eps_path=self.path,
                                   bias=None, scales=(), bias_scales=())


# -- finding the layers ----------------------------------------------------------------------


def _walk(jaxpr, tracked, path, uses, candidates):
    """Count every use of each parameter leaf (``tracked``: var -> leaf) and collect the
    ``dot_general`` / ``conv_general_dilated`` equations that consume one directly."""
    for k, eqn in enumerate(jaxpr.eqns):
        here = path + (k,)
        leaves = [tracked.get(v) if isinstance(v, jcore.Var) else None for v in eqn.invars]
        if eqn.primitive.name in _CALLS and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            inner = getattr(inner, "jaxpr", inner)
            _walk(inner, {v: l for v, l in zip(inner.invars, leaves) if l is not None},
                  here, uses, candidates)
            continue
        for leaf in leaves:
            if leaf is not None:
                uses[leaf] = uses.get(leaf, 0) + 1
        if eqn.primitive.name in _LAYERS:
            found = [i for i, l in enumerate(leaves) if l is not None]
            if len(found) == 1 and leaves[0] != leaves[1]:
                form = _layer_form(eqn, found[0])
                if form is not None:
                    out = eqn.outvars[0].aval
                    layer = Layer(here, eqn.primitive.name, leaves[found[0]], found[0],
                                  *form, out.shape, out.dtype, eps_path=here)
                    candidates.append(_with_bias(jaxpr, k, layer, tracked, path))
    for v in jaxpr.outvars:
        if isinstance(v, jcore.Var) and v in tracked:
            uses[tracked[v]] = uses.get(tracked[v], 0) + 1


_RESHAPES = ("reshape", "broadcast_in_dim", "convert_element_type", "squeeze",
             "expand_dims", "copy")


def _scalar_operand(eqn, v):
    """The index of the scalar operand of ``mul(v, scalar)`` / ``mul(scalar, v)``."""
    if eqn.primitive.name != "mul" or len(eqn.invars) != 2:
        return None
    for i in (0, 1):
        if eqn.invars[1 - i] is v and getattr(eqn.invars[i].aval, "shape", None) == ():
            return i
    return None


def _with_bias(jaxpr, k, layer, tracked, path):
    """The affine layer ``c (x W) + s b`` when the dot's output reaches an ``add`` only
    through scalar multiplications, and the other operand of that ``add`` is a parameter
    ``b`` only reshaped, broadcast and scaled by scalars, laid along the layer's output
    features and broadcast over its positions (Novak et al. 2022, Sec. 3.3: the Jacobian
    of ``add`` is the identity, that of a scalar ``mul`` a multiple of it, that of a
    broadcast a sum over the broadcast axes). Otherwise the layer as it is."""
    if layer.sizes[0] != 1:
        return layer
    consumers, producer = {}, {}
    for j, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jcore.Var):
                consumers.setdefault(v, []).append(j)
        for v in eqn.outvars:
            producer[v] = j
    outs = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}

    def single_use(v):
        return v not in outs and len(consumers.get(v, ())) == 1

    v, scales = jaxpr.eqns[k].outvars[0], []
    while single_use(v):
        eqn = jaxpr.eqns[consumers[v][0]]
        i = _scalar_operand(eqn, v)
        if i is None:
            break
        scales.append((path + (consumers[v][0],), i))
        v = eqn.outvars[0]
    if not single_use(v):
        return layer
    j_add = consumers[v][0]
    add = jaxpr.eqns[j_add]
    if add.primitive.name != "add" or add.outvars[0].aval.shape != layer.out_shape:
        return layer
    t = add.invars[1] if add.invars[0] is v else add.invars[0]
    chain, bias_scales = [], []
    while isinstance(t, jcore.Var) and t not in tracked:
        if not single_use(t) or t not in producer:
            return layer
        eqn = jaxpr.eqns[producer[t]]
        if eqn.primitive.name in _RESHAPES:
            chain.append(eqn)
            t = eqn.invars[0]
            continue
        i = None
        for i_ in (0, 1):
            if eqn.primitive.name == "mul" and getattr(eqn.invars[i_].aval, "shape", 0) == ():
                i = i_
        if i is None:
            return layer
        bias_scales.append((path + (producer[t],), i))
        t = eqn.invars[1 - i]
    if not isinstance(t, jcore.Var) or not _lays_along_features(t, chain, layer):
        return layer
    b, l, c, r = layer.sizes
    return dataclasses.replace(layer, sizes=(b, l, c + 1, r), eps_path=path + (j_add,),
                               bias=tracked[t], scales=tuple(scales),
                               bias_scales=tuple(bias_scales))


def _lays_along_features(t, chain, layer):
    """Whether the reshapes and broadcasts ``chain`` (last first) put the entries of
    ``t`` along the layer's output features, the same at every position: checked on the
    values ``1..R``."""
    r = layer.sizes[3]
    if math.prod(t.aval.shape) != r:
        return False
    with jax.ensure_compile_time_eval():
        val = jnp.arange(1, r + 1, dtype=jnp.float32).reshape(t.aval.shape)
        for eqn in reversed(chain):
            if eqn.primitive.name == "convert_element_type":
                continue
            val = eqn.primitive.bind(val, **eqn.primitive.get_bind_params(eqn.params))
        try:
            val = jnp.broadcast_to(val, layer.out_shape)
        except ValueError:
            return False
        val = jnp.transpose(val, layer.out_order).reshape(layer.sizes[:2] + (r,))
        return bool(jnp.all(val == jnp.arange(1, r + 1, dtype=jnp.float32)))


def _layer_form(eqn, param_operand):
    """``(B, L, C, R)`` of a layer and the order of its output dimensions that lists them
    as ``(B, L, R)``, or None for a form the rules do not cover."""
    a = eqn.invars[1 - param_operand].aval.shape
    w = eqn.invars[param_operand].aval.shape
    if eqn.primitive.name == "dot_general":
        (contract, batch) = eqn.params["dimension_numbers"]
        ac, wc = contract[1 - param_operand], contract[param_operand]
        ab, wb = batch[1 - param_operand], batch[param_operand]
        b = math.prod(a[d] for d in ab)
        c = math.prod(a[d] for d in ac)
        l = math.prod(a[d] for d in range(len(a)) if d not in ac and d not in ab)
        r = math.prod(w[d] for d in range(len(w)) if d not in wc and d not in wb)
        # output dimensions: batch, lhs free, rhs free
        nb, na = len(ab), len(a) - len(ac) - len(ab)
        nw = len(w) - len(wc) - len(wb)
        dims = tuple(range(nb + na + nw))
        order = dims if param_operand == 1 else dims[:nb] + dims[nb + nw:] + dims[nb:nb + nw]
        return (b, l, c, r), order
    if param_operand != 1 or eqn.params["feature_group_count"] != 1 \
            or eqn.params["batch_group_count"] != 1:
        return None  # grouped convolutions, or a kernel given as the lhs: fallback
    dn = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval.shape
    l = math.prod(out[d] for d in (dn.out_spec[0],) + tuple(dn.out_spec[2:]))
    c = math.prod(w[d] for d in (dn.rhs_spec[1],) + tuple(dn.rhs_spec[2:]))
    order = (dn.out_spec[0],) + tuple(dn.out_spec[2:]) + (dn.out_spec[1],)
    return (1, l, c, w[dn.rhs_spec[0]]), order


@dataclasses.dataclass(frozen=True)
class Structure:
    """What the trace found: the closed jaxpr of one example, its structured layers and
    the parameter leaves that fall back to the Jacobian contraction."""

    jaxpr: object
    layers: tuple
    fallback: tuple


def analyse(apply_fn, params, x) -> Structure:
    """Trace ``apply_fn`` on the first example of ``x`` and find its structured layers."""
    closed = jax.make_jaxpr(lambda p, xi: apply_fn(p, xi[None])[0])(params, x[0])
    n_leaves = len(jax.tree.leaves(params))
    jaxpr = closed.jaxpr
    uses, candidates = {}, []
    _walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars[:n_leaves])}, (), uses,
          candidates)
    layers = tuple(c if c.bias is None or uses.get(c.bias) == 1 else c.without_bias()
                   for c in candidates if uses.get(c.leaf) == 1)
    done = {c.leaf for c in layers} | {c.bias for c in layers if c.bias is not None}
    fallback = tuple(i for i in range(n_leaves) if i not in done and uses.get(i, 0) > 0)
    return Structure(closed, layers, fallback)


# -- evaluating with perturbed layer outputs ------------------------------------------------------


def _evaluate(jaxpr, consts, args, actions, eps, record, path=()):
    """``jax.core.eval_jaxpr`` that, at the equations named in ``actions`` (path -> list
    of ``(kind, slot, layer or operand)``), writes a layer's input (a dense layer's
    operand, a convolution's patches) to ``record["input"][slot]``, a scalar factor to
    ``record[kind][slot]``, and adds ``eps[slot]`` to a layer's output."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for k, eqn in enumerate(jaxpr.eqns):
        here = path + (k,)
        vals = [read(v) for v in eqn.invars]
        if eqn.primitive.name in _CALLS and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            outs = _evaluate(getattr(inner, "jaxpr", inner), getattr(inner, "consts", ()),
                             vals, actions, eps, record, here)
        else:
            outs = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
            for kind, slot, what in actions.get(here, ()):
                if kind == "input":
                    record["input"][slot] = _layer_input(eqn, what, vals)
                elif kind == "eps":
                    outs = [outs[0] + eps[slot]]
                else:
                    record[kind][slot].append(vals[what])
        for v, val in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = val
    return [read(v) for v in jaxpr.outvars]


def _layer_input(eqn, layer, vals):
    """The layer's input as ``(B, L, C)``."""
    a = vals[1 - layer.param_operand]
    b, l, c, _ = layer.sizes
    c -= layer.bias is not None
    if eqn.primitive.name == "dot_general":
        (contract, batch) = eqn.params["dimension_numbers"]
        ac, ab = contract[1 - layer.param_operand], batch[1 - layer.param_operand]
        free = [d for d in range(a.ndim) if d not in ac and d not in ab]
        return jnp.transpose(a, tuple(ab) + tuple(free) + tuple(ac)).reshape(b, l, c)
    p = eqn.params
    dn = p["dimension_numbers"]
    w_shape = vals[1].shape
    patches = jax.lax.conv_general_dilated_patches(
        a, tuple(w_shape[d] for d in dn.rhs_spec[2:]), p["window_strides"], p["padding"],
        p["lhs_dilation"], p["rhs_dilation"], dn, precision=p["precision"])
    return jnp.transpose(patches, layer.out_order).reshape(b, l, c)


# -- the kernel ------------------------------------------------------------------------------------


def _derivatives(structure, params, x):
    """Per example: each layer's input ``(n, B, L, C)`` and output cotangents
    ``(n, O, B, L, R)``, and the fallback leaves' Jacobians ``(n, O, *leaf)``, from one
    reverse pass per output (``jacrev``) with respect to the perturbations and those
    leaves only."""
    leaves = jax.tree.leaves(params)
    layers, fallback, closed = structure.layers, structure.fallback, structure.jaxpr
    actions = {}
    for k, layer in enumerate(layers):
        actions.setdefault(layer.path, []).append(("input", k, layer))
        actions.setdefault(layer.eps_path, []).append(("eps", k, layer))
        for kind in ("scales", "bias_scales"):
            for where, operand in getattr(layer, kind):
                actions.setdefault(where, []).append((kind, k, operand))

    def outputs(eps, fallback_leaves, xi):
        args = list(leaves)
        for i, leaf in zip(fallback, fallback_leaves):
            args[i] = leaf
        record = {"input": [None] * len(layers), "scales": [[] for _ in layers],
                  "bias_scales": [[] for _ in layers]}
        (out,) = _evaluate(closed.jaxpr, closed.consts, args + [xi], actions, eps, record)
        inputs = []
        for k, (layer, x) in enumerate(zip(layers, record["input"])):
            if layer.bias is not None:  # the affine layer's input [c x, s]
                c = math.prod(record["scales"][k], start=jnp.ones((), x.dtype))
                s = math.prod(record["bias_scales"][k], start=jnp.ones((), x.dtype))
                x = jnp.concatenate([c * x, jnp.broadcast_to(s, x.shape[:2] + (1,))], -1)
            inputs.append(x)
        return out, inputs

    def one(xi):
        eps = [jnp.zeros(layer.out_shape, layer.out_dtype) for layer in layers]
        (d_eps, d_fallback), inputs = jax.jacrev(outputs, argnums=(0, 1), has_aux=True)(
            eps, [leaves[i] for i in fallback], xi)
        deltas = []
        for layer, d in zip(layers, d_eps):
            b, l, _, r = layer.sizes
            order = (0,) + tuple(1 + k for k in layer.out_order)
            deltas.append(jnp.transpose(d, order).reshape(d.shape[0], b, l, r))
        return inputs, deltas, d_fallback

    return jax.vmap(one)(x)


def layer_costs(layer, n1, n2, outputs, trace):
    """Multiply-adds of the two orders of a layer's contraction (Novak et al. 2022,
    Table 1): ``(gram_first, jacobian_first)``."""
    b, l, c, r = layer.sizes
    oo = outputs if trace else outputs * outputs
    gram = n1 * n2 * b * l * l * (c + oo * r + oo)
    jacobian = (n1 + n2) * outputs * b * l * c * r + n1 * n2 * oo * b * c * r
    return gram, jacobian


def _layer_term(layer, a1, d1, a2, d2, trace):
    """A layer's share, ``(n1, O, n2, O)`` (``(n1, n2)`` with ``trace``), in the cheaper
    order."""
    n1, o = d1.shape[:2]
    gram, jacobian = layer_costs(layer, n1, d2.shape[0], o, trace)
    if gram > jacobian:
        j1 = jnp.einsum("iblc,iablr->iabcr", a1, d1)
        j2 = jnp.einsum("iblc,iablr->iabcr", a2, d2)
        return contract_jacobians([j1], [j2], trace, layout="iajb")
    b, l, _, r = layer.sizes
    if b == l == 1:  # a dense layer: (x_i . x_j) (delta_i^a . delta_j^b), one product each
        gx = a1[:, 0, 0] @ a2[:, 0, 0].T
        if trace:
            return gx * jnp.einsum("iar,jar->ij", d1[:, :, 0, 0], d2[:, :, 0, 0]) / o
        gd = d1.reshape(n1 * o, r) @ d2.reshape(-1, r).T
        return gx[:, None, :, None] * gd.reshape(n1, o, -1, o)
    gx = jnp.einsum("iblc,jbmc->ijblm", a1, a2)
    if trace:
        return jnp.einsum("ijblm,ijblm->ij", gx, jnp.einsum("iablr,jabmr->ijblm", d1, d2)) / o
    return jnp.einsum("ijblm,iajdblm->iajd", gx, jnp.einsum("iablr,jdbmr->iajdblm", d1, d2))


def structured_block(apply_fn, params, x1, x2, trace, mult):
    """The NTK block ``(n1, n2, O, O)`` (``(n1, n2)`` with ``trace``) by structured
    derivatives; ``mult`` a pytree of per-leaf multipliers like ``params`` or None."""
    structure = analyse(apply_fn, params, x1)
    a1, d1, f1 = _derivatives(structure, params, x1)
    a2, d2, f2 = (a1, d1, f1) if x2 is None else _derivatives(structure, params, x2)
    mults = jax.tree.leaves(mult) if mult is not None else None
    out = contract_jacobians(f1, f2, trace, None if mults is None else
                             [mults[i] for i in structure.fallback], layout="iajb")
    for k, layer in enumerate(structure.layers):
        a = a1[k]
        if mults is not None:  # c_W on the weight's features, c_b on the bias feature
            a = a * mults[layer.leaf] if layer.bias is None else jnp.concatenate(
                [a[..., :-1] * mults[layer.leaf], a[..., -1:] * mults[layer.bias]], -1)
        out = out + _layer_term(layer, a, d1[k], a2[k], d2[k], trace)
    return out if trace else jnp.transpose(out, (0, 2, 1, 3))


def structured_flops(apply_fn, params, x1, x2, trace, forward_flops) -> float:
    """FLOPs of ``structured_block`` in the cost model of ``kernels.ntk_cost``: about two
    forward passes per output and example for the cotangents (the forward pass and the
    reverse pass to the layer outputs, without weight gradients), each layer's cheaper
    contraction and the Jacobian contraction of the fallback leaves (Novak et al. 2022,
    Table 1); two FLOPs per multiply-add."""
    structure = analyse(apply_fn, params, x1)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    o = jax.eval_shape(apply_fn, params, x1[:1]).shape[-1]
    oo = o if trace else o * o
    leaves = jax.tree.leaves(params)
    n_fallback = sum(math.prod(jnp.shape(leaves[i])) for i in structure.fallback)
    n_derivative = n1 + (0 if x2 is None else n2)
    layers = sum(min(layer_costs(layer, n1, n2, o, trace)) for layer in structure.layers)
    return float(n_derivative * o * 2 * forward_flops
                 + 2 * (layers + n1 * n2 * oo * n_fallback))
