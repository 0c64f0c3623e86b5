r"""Empirical (finite-width) NTK and NNGP of any pure ``apply(params, x) -> (n, out)``.

The empirical NTK of a network ``f(theta, x) in R^O`` at parameters ``theta`` is

.. math::

    \Theta_{ab}(x, x') = \sum_p \frac{\partial f_a(\theta, x)}{\partial \theta_p}
                         \frac{\partial f_b(\theta, x')}{\partial \theta_p}
                       = [J(x) J(x')^\top]_{ab}

(Jacot, Gabriel & Hongler 2018, eq. 2). ``empirical_ntk`` returns the full output block
``(n1, n2, O, O)`` or, with ``trace=True``, the mean over the output diagonal
``(1/O) sum_a Theta_aa`` of shape ``(n1, n2)``, whose width -> infinity limit is
``kernels.ntk``. Three exact methods (Novak, Sohl-Dickstein & Schoenholz 2022, "Fast
Finite Width Neural Tangent Kernel", Sec. 3 and Table 1):

* ``"jacobian"`` (Jacobian contraction): per-example Jacobians ``J(x)`` of shape
  ``(O, P)`` by reverse mode (a ``vmap`` over examples of ``jacrev``), then the
  contraction ``J(x) J(x')^T``. Time ``~ (n1 + n2) O [FP] + n1 n2 O^2 P`` (``n1 n2 O P``
  with ``trace``), memory ``(n1 + n2) O P``.
* ``"ntvp"`` (NTK-vector products): ``Theta v = J(x1) (J(x2)^T v)`` for the ``n2 O``
  basis cotangents ``v`` (a ``vjp`` at ``x2`` then a ``jvp`` at ``x1``), never forming a
  per-example Jacobian. Time ``~ n2 O (n1 + n2) [FP]``, memory ``~ n2 O P``.

* ``"structured"`` (structured derivatives, Sec. 3.3; ``kernels.structured``): each dense or
  convolutional layer's share as a contraction of the Gram matrix of its inputs with that
  of its back-propagated cotangents, never a Jacobian; other parameters by the Jacobian
  contraction of that parameter alone. Time ``~ (n1 + n2) O [FP] + n1 n2 O^2 sum_l
  (C_l + R_l)`` for dense layers of ``C_l`` inputs and ``R_l`` outputs.

``[FP]`` is the cost of one example's forward pass and ``P`` the number of parameters.
``"auto"`` evaluates this cost model (``ntk_cost``; ``[FP]`` from XLA's cost analysis of
the lowered forward pass, no compile) and takes the cheapest method. The contraction term
``n^2 O^2 P`` makes NTK-vector products cheaper than the Jacobian once ``O P > [FP]``: for
a dense network (``[FP] ~ 2P``) the Jacobian contraction wins with one output or with
``trace`` and NTK-vector products win for the full block of a few outputs or more; the
structured derivatives of a network of dense layers undercut both.

``batch_size`` splits ``x1`` and ``x2`` into blocks of that many rows (padded to a whole
number of blocks, so one compile per shape) and assembles the kernel block by block under
a ``lax.map``: memory is bounded by one block pair whatever ``n``. Every function here is
pure and ``vmap``-able over ``params`` (runs of a sweep).

``lr_multipliers`` (a pytree like ``params`` of per-leaf factors ``c_p``, or a scalar)
gives the kernel that drives gradient descent with per-layer learning rates,
``sum_p c_p dF/dtheta_p dF/dtheta_p`` (``model.lr_multipliers(params)`` of the simulator).

The empirical NNGP (``empirical_nngp``) is the kernel of last-layer features
``phi(x) in R^F``: ``(1/F) phi(x) . phi(x')`` (Lee et al. 2018, eq. 5, estimated from one
network's features; trace over the feature axis), or with ``trace=False`` the outer
product ``phi_a(x) phi_b(x')`` of shape ``(n1, n2, F, F)``. ``mlp_features`` gives those
features for a ``dynamics.MLP`` and ``mlp_empirical_nngp`` the output NNGP built from them,
whose width -> infinity limit is ``kernels.nngp``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

METHODS = ("auto", "jacobian", "ntvp", "structured")


# -- validation ----------------------------------------------------------------------------


def _check_inputs(method, x1, x2, batch_size, methods=METHODS):
    if method not in methods:
        raise ValueError(f"method must be one of {list(methods)}, got {method!r}")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and jnp.ndim(x) < 1:
            raise ValueError(f"{name} must have a leading example dimension, got shape "
                             f"{jnp.shape(x)}")
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")


def _multipliers(lr_multipliers, params):
    """A pytree of per-leaf multipliers like ``params`` (a scalar is broadcast)."""
    if lr_multipliers is None:
        return None
    if isinstance(lr_multipliers, (int, float)) or getattr(lr_multipliers, "ndim", None) == 0:
        return jax.tree.map(lambda _: lr_multipliers, params)
    return lr_multipliers


# -- per-example Jacobians and the two contractions -------------------------------------------


def _example_jacobians(apply_fn, params, x):
    """Per-example Jacobians: a pytree like ``params`` with leaves ``(n, O, *leaf)``."""

    def one(xi):
        return jax.jacrev(lambda p: apply_fn(p, xi[None])[0])(params)

    return jax.vmap(one)(x)


def contract_jacobians(j1, j2, trace, mults=None, layout="ijab"):
    """``sum_p c_p J_p(x1) J_p(x2)^T`` over lists of per-example Jacobian leaves
    ``(n, O, *leaf)``: ``(n1, n2, O, O)`` (``(n1, O, n2, O)`` with ``layout="iajb"``), or
    ``(n1, n2)`` with ``trace``; ``mults`` the per-leaf factors ``c_p`` or None."""
    out = 0.0
    for i, (a, b) in enumerate(zip(j1, j2)):
        a = a.reshape(a.shape[:2] + (-1,))
        b = b.reshape(b.shape[:2] + (-1,))
        if trace:
            term = jnp.einsum("iap,jap->ij", a, b) / a.shape[1]
        else:
            term = jnp.einsum(f"iap,jbp->{layout}", a, b)
        out = out + (term if mults is None else mults[i] * term)
    return out


def _jacobian_block(apply_fn, params, x1, x2, trace, mult):
    j1 = _example_jacobians(apply_fn, params, x1)
    j2 = j1 if x2 is None else _example_jacobians(apply_fn, params, x2)
    mults = jax.tree.leaves(mult) if mult is not None else None
    return contract_jacobians(jax.tree.leaves(j1), jax.tree.leaves(j2), trace, mults)


def _ntvp_block(apply_fn, params, x1, x2, trace, mult):
    x2 = x1 if x2 is None else x2
    out2, vjp_fn = jax.vjp(lambda p: apply_fn(p, x2), params)
    n2, o = out2.shape

    def column(cotangent):
        (v,) = vjp_fn(cotangent)
        if mult is not None:
            v = jax.tree.map(lambda t, m: t * m, v, mult)
        return jax.jvp(lambda p: apply_fn(p, x1), (params,), (v,))[1]  # (n1, O)

    basis = jnp.eye(n2 * o, dtype=out2.dtype).reshape(n2 * o, n2, o)
    cols = jax.lax.map(column, basis, batch_size=min(n2 * o, 64))  # (n2*O, n1, O)
    cols = cols.reshape(n2, o, cols.shape[1], o)  # (j, b, i, a)
    full = jnp.transpose(cols, (2, 0, 3, 1))  # (i, j, a, b)
    if trace:
        return jnp.trace(full, axis1=2, axis2=3) / o
    return full


# -- the cost model -----------------------------------------------------------------------


def forward_flops(apply_fn, params, x) -> float:
    """FLOPs of one example's forward pass, from XLA's cost analysis of the lowered
    program (no compile)."""
    try:
        shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype),
                              (params, x[:1]))
        lowered = jax.jit(apply_fn).lower(*shapes)
        cost = lowered.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        flops = float(cost.get("flops", 0.0))
    except Exception:  # no cost analysis (or a closure over traced values): 2 per parameter
        flops = 0.0
    if not flops > 0:
        flops = 2.0 * sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    return flops


def ntk_cost(apply_fn, params, x1, x2=None, *, trace=False) -> dict[str, Any]:
    """The cost model of ``"auto"`` (Novak, Sohl-Dickstein & Schoenholz 2022, Table 1):
    estimated FLOPs of each method (``kernels.structured.structured_flops`` for structured
    derivatives) and the one chosen. A backward pass costs about two
    forward passes, a jvp about one more, and a multiply-add two FLOPs."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    out = jax.eval_shape(apply_fn, params, x1[:1]).shape[-1]
    n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    fp = forward_flops(apply_fn, params, x1)
    n_jac = n1 + (0 if x2 is None else n2)
    jacobian = n_jac * out * 3 * fp + 2 * n1 * n2 * out * (1 if trace else out) * n_params
    ntvp = n2 * out * (3 * n2 * fp + 2 * n1 * fp)
    from kernels.structured import structured_flops

    costs = {"jacobian": float(jacobian), "ntvp": float(ntvp),
             "structured": structured_flops(apply_fn, params, x1, x2, trace, fp)}
    return {
        "n1": n1, "n2": n2, "outputs": out, "parameters": n_params, "forward_flops": fp,
        "flops": costs, "choice": min(costs, key=costs.get),
    }


# -- blocking over data ----------------------------------------------------------------------


def _pad_blocks(x, b):
    n = x.shape[0]
    blocks = -(-n // b)
    pad = blocks * b - n
    if pad:
        x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
    return x.reshape((blocks, b) + x.shape[1:]), n


def _blocked(block_fn, x1, x2, batch_size):
    """Assemble ``block_fn(x1_block, x2_block)`` over row blocks of both inputs."""
    same = x2 is None
    x2 = x1 if same else x2
    b1, n1 = _pad_blocks(x1, min(batch_size, x1.shape[0]))
    b2, n2 = _pad_blocks(x2, min(batch_size, x2.shape[0]))

    def row(xa):
        return jax.lax.map(lambda xb: block_fn(xa, xb), b2)  # (B2, b, b, ...)

    k = jax.lax.map(row, b1)  # (B1, B2, b1, b2, ...)
    k = jnp.moveaxis(k, 2, 1)  # (B1, b1, B2, b2, ...)
    k = k.reshape((k.shape[0] * k.shape[1], k.shape[2] * k.shape[3]) + k.shape[4:])
    return k[:n1, :n2]


# -- public functions -----------------------------------------------------------------------


def empirical_ntk(
    apply_fn: Callable,
    params,
    x1,
    x2=None,
    *,
    method: str = "auto",
    trace: bool = False,
    batch_size: int | None = None,
    lr_multipliers=None,
):
    """The empirical NTK ``J(x1) J(x2)^T`` (see the module doc).

    ``apply_fn(params, x) -> (n, O)`` must treat examples independently (no batch
    statistics); ``x`` may be any array with a leading example axis (also integer row
    indices). Returns ``(n1, n2, O, O)``, or ``(n1, n2)`` with ``trace=True`` (the mean
    over the output diagonal). ``x2=None`` means ``x2 = x1``.
    """
    _check_inputs(method, x1, x2, batch_size)
    if method == "auto":
        method = ntk_cost(apply_fn, params, x1, x2, trace=trace)["choice"]
    mult = _multipliers(lr_multipliers, params)
    from kernels.structured import structured_block

    block = {"jacobian": _jacobian_block, "ntvp": _ntvp_block,
             "structured": structured_block}[method]

    def fn(a, b):
        return block(apply_fn, params, a, b, trace, mult)

    if batch_size is None:
        return fn(x1, x2)
    return _blocked(fn, x1, x2, batch_size)


def empirical_nngp(
    feature_fn: Callable,
    params,
    x1,
    x2=None,
    *,
    trace: bool = True,
    batch_size: int | None = None,
):
    """The empirical NNGP of features ``feature_fn(params, x) -> (n, F)``:
    ``(1/F) phi(x1) phi(x2)^T`` of shape ``(n1, n2)`` with ``trace=True`` (Lee et al.
    2018, eq. 5, from one draw), else ``phi_a(x1) phi_b(x2)`` of shape ``(n1, n2, F, F)``."""
    _check_inputs("auto", x1, x2, batch_size)

    def fn(a, b):
        fa = feature_fn(params, a)
        fb = fa if b is None else feature_fn(params, b)
        if trace:
            return fa @ fb.T / fa.shape[-1]
        return jnp.einsum("ia,jb->ijab", fa, fb)

    if batch_size is None:
        return fn(x1, x2)
    return _blocked(fn, x1, x2, batch_size)


def mlp_features(model, hparams: Mapping | None = None) -> Callable:
    """``features(params, x) -> phi(h^L)``: the post-activation last hidden layer of a
    ``dynamics.MLP`` (the inputs ``x`` themselves for ``depth = 0``)."""
    from dynamics import activations

    phi = activations.get(model.activation)

    def features(params, x):
        layers = model.layers(x.shape[-1], hparams)
        h = x
        for l, (p, layer) in enumerate(zip(params[:-1], layers[:-1])):
            if l > 0:
                h = phi(h)
            h = layer.scale.multiplier * (h @ p["w"])
            if model.has_bias(l):
                h = h + layer.scale.bias_multiplier * p["b"]
        return h if model.depth == 0 else phi(h)

    return features


def mlp_empirical_nngp(model, params, x1, x2=None, hparams: Mapping | None = None, *,
                       batch_size: int | None = None):
    r"""The NNGP of a ``dynamics.MLP``'s outputs estimated from one network's last-layer
    features: the readout ``f = alpha (m_L W^L phi + beta_L b^L)`` with
    ``W^L ~ N(0, s_L^2)``, ``b^L ~ N(0, t_L^2)`` has covariance
    ``alpha^2 (m_L^2 s_L^2 F (1/F) phi . phi' + beta_L^2 t_L^2)`` over the readout's draw
    (Lee et al. 2018, eq. 4-5); its width -> infinity limit is ``kernels.nngp(model)``."""
    hp = model.values(hparams)
    readout = model.layers(jnp.shape(x1)[-1], hp)[-1]
    s, fan_in = readout.scale, readout.fan_in
    k = empirical_nngp(mlp_features(model, hparams), params, x1, x2, batch_size=batch_size)
    bias = (s.bias_multiplier * s.bias_std) ** 2 if model.has_bias(readout.index) else 0.0
    return hp["output_scale"] ** 2 * ((s.multiplier * s.weight_std) ** 2 * fan_in * k + bias)
