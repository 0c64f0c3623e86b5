r"""Matrix-free curvature operators on parameter pytrees.

Each operator is a product ``v -> M v`` with a tangent ``v`` shaped like the parameters;
the matrix ``M`` (``P x P`` for ``P`` parameters) is never formed. For a loss of the mean
form ``L(theta) = (1/N) sum_i l(f(theta, x_i), y_i)`` (``dynamics.losses``):

* Hessian ``H = d^2 L / d theta^2``: ``hvp`` differentiates the gradient forward,
  ``H v = d/de grad L(theta + e v) |_{e=0}`` (forward-over-reverse: one ``jax.jvp`` of
  ``jax.grad``; Pearlmutter 1994, "Fast exact multiplication by the Hessian", Sec. 3).
  It costs about two to three gradients (``traindyn bench curvature`` measures it).
* Generalised Gauss-Newton ``G = J^T H_L J`` with ``J = df/dtheta`` on the rows and
  ``H_L = d^2 L / df^2`` the Hessian of the loss in the outputs (Schraudolph 2002,
  "Fast curvature matrix-vector products", Eq. 6; Martens 2020, "New insights and
  perspectives on the natural gradient method", Sec. 8.1): a ``jvp`` of the outputs,
  ``H_L`` applied to it (itself a ``jvp`` of the output gradient), and a ``vjp``. ``G`` is
  positive semi-definite for convex losses and equals ``H`` minus the term weighted by
  the residuals, so ``G = H`` for a model linear in its parameters.
* Empirical Fisher ``F = (1/N) sum_i g_i g_i^T`` with ``g_i = grad_theta l_i`` the
  per-example gradients (Kunstner, Balles & Hennig 2019, "Limitations of the empirical
  Fisher approximation", Eq. 3). With ``r_i = dl_i/df_i = N dL/df_i``,
  ``F v = (1/N) J^T [r_i (r_i . (J v)_i)]_i``: one ``jvp`` and one ``vjp``. (The *true*
  Fisher of softmax cross-entropy equals the GGN; use ``ggn_vp`` for it.)

Full training set or a batch: ``training_matvec`` builds ``v -> M v`` for the loss on all
training rows, on given ``rows``, or on all rows accumulated over row-batches of
``rows_per_pass`` (a ``lax.scan``, so that the memory of one product is that of a batch):
for a mean loss, ``M = sum_b (|b| / N) M_b``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dynamics import losses
from dynamics.curvature import blocks

KINDS = ("hessian", "ggn", "fisher")


def hvp(loss_fn: Callable, params, v):
    """``H v`` for the Hessian of ``loss_fn(params) -> scalar``, forward-over-reverse."""
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def ggn_vp(outputs_fn: Callable, loss_of_outputs: Callable, params, v):
    """``J^T H_L J v`` with ``J`` the Jacobian of ``outputs_fn(params)`` and ``H_L`` the
    Hessian of ``loss_of_outputs(outputs) -> scalar`` (Schraudolph 2002, Eq. 6)."""
    outputs, jv = jax.jvp(outputs_fn, (params,), (v,))
    hjv = jax.jvp(jax.grad(loss_of_outputs), (outputs,), (jv,))[1]
    _, pullback = jax.vjp(outputs_fn, params)
    return pullback(hjv)[0]


def fisher_vp(outputs_fn: Callable, loss_of_outputs: Callable, params, v):
    """Empirical Fisher ``(1/N) sum_i g_i g_i^T v`` of a mean loss over the ``N`` rows of
    ``outputs_fn(params)`` (Kunstner et al. 2019, Eq. 3), through ``r_i = N dL/df_i``."""
    outputs, jv = jax.jvp(outputs_fn, (params,), (v,))
    n = outputs.shape[0]
    r = n * jax.grad(loss_of_outputs)(outputs)
    per_row = jnp.sum(r * jv, axis=tuple(range(1, jv.ndim)))
    weighted = r * per_row.reshape((n,) + (1,) * (r.ndim - 1)) / n
    _, pullback = jax.vjp(outputs_fn, params)
    return pullback(weighted)[0]


def batch_matvec(kind: str, outputs: Callable, loss: Callable, targets, params, rows=None):
    """``v -> M v`` for the loss ``loss(outputs(p, rows), targets[rows])`` on ``rows``
    (all rows when ``None``); ``kind`` is ``"hessian"``, ``"ggn"`` or ``"fisher"``."""
    check_kind(kind)
    y = targets if rows is None else jax.tree.map(lambda a: a[rows], targets)

    def outputs_fn(p):
        return outputs(p, rows)

    def loss_of_outputs(f):
        return loss(f, y)

    if kind == "hessian":
        return lambda v: hvp(lambda p: loss_of_outputs(outputs_fn(p)), params, v)
    if kind == "ggn":
        return lambda v: ggn_vp(outputs_fn, loss_of_outputs, params, v)
    return lambda v: fisher_vp(outputs_fn, loss_of_outputs, params, v)


def training_matvec(
    kind: str,
    outputs: Callable,
    loss: Callable,
    targets,
    params,
    *,
    rows=None,
    rows_per_pass: int | None = None,
):
    """``v -> M v`` for the mean loss on the training set.

    ``outputs(params, rows)`` gives the outputs on integer ``rows`` (all rows for
    ``None``), ``loss(outputs, targets)`` is a (masked) mean over positions
    (``dynamics.losses``). With ``rows`` the operator is that of the batch ``rows``;
    otherwise that of all ``N`` rows, in one pass (``rows_per_pass=None``) or accumulated
    over consecutive row-batches of ``rows_per_pass`` rows (the last one shorter if it does
    not divide ``N``), each weighted by its share of the counted positions
    (``losses.weight``: ``|b| / N`` without a mask).
    """
    check_kind(kind)
    if rows is not None or rows_per_pass is None:
        return batch_matvec(kind, outputs, loss, targets, params, rows)
    n = jax.tree.leaves(targets)[0].shape[0]
    if not isinstance(rows_per_pass, int) or rows_per_pass < 1:
        raise ValueError(f"rows_per_pass must be an int >= 1 or None, got {rows_per_pass!r}")
    b = min(rows_per_pass, n)
    full, rest = divmod(n, b)

    total = losses.weight(targets)

    def on(rows, v):
        count = losses.weight(jax.tree.map(lambda a: a[rows], targets))
        m = batch_matvec(kind, outputs, loss, targets, params, rows)(v)
        return jax.tree.map(lambda x: x * (jnp.asarray(count, x.dtype) / total), m)

    def matvec(v):
        def body(acc, start):
            rows = start + jnp.arange(b)
            return jax.tree.map(jnp.add, acc, on(rows, v)), None

        acc = jax.tree.map(jnp.zeros_like, v)
        acc, _ = jax.lax.scan(body, acc, jnp.arange(full) * b)
        if rest:
            acc = jax.tree.map(jnp.add, acc, on(full * b + jnp.arange(rest), v))
        return acc

    return matvec


def from_context(ctx, kind: str = "hessian", *, rows=None, rows_per_pass: int | None = None,
                 block: str | None = None):
    """The operator of the training loss of an observable's ``Context``: the loss
    ``ctx.loss(ctx.outputs(params, "train", rows), ctx.data["y_train"][rows])`` at
    ``ctx.params`` (the very loss the loop trains, with its output scale, centering and
    label noise). With ``block`` (a name of ``curvature.blocks``), the diagonal block of
    that operator for the block's parameters, the others held fixed: a product on
    tangents shaped like ``blocks.block_leaves(ctx.params, block)``."""
    outputs, params = (lambda p, r: ctx.outputs(p, "train", r)), ctx.params
    if block is not None:
        outputs = blocks.restrict(outputs, ctx.params, block)
        params = blocks.block_leaves(ctx.params, block)
    return training_matvec(
        kind,
        outputs,
        ctx.loss,
        ctx.data["y_train"],
        params,
        rows=rows,
        rows_per_pass=rows_per_pass,
    )


def check_kind(kind) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
