r"""Observables of the numerical stability of the softmax and of naive loss minimisation.

Prieto, Barsbey, Mediano & Birdal (2025), "Grokking at the edge of numerical stability"
(ICLR 2025). Both are general observables, usable in any sweep of a classification task.

Softmax collapse (``SoftmaxCollapse``)
--------------------------------------
The softmax is computed as ``exp(z_k) / sum_j exp(z_j)`` with ``z = f - max_k f_k``, so
the largest term is ``exp(0) = 1`` exactly. Once every other ``exp(z_j)`` is small
against the spacing of floating-point numbers near 1 (``2^-23`` in float32, ``2^-52`` in
float64), the sum rounds to exactly 1 ("absorption"): the predicted probability of the
arg-max class is exactly 1, its loss term ``-log softmax`` is exactly 0 when it is the
label, and the label's logit gets exactly zero gradient. Prieto et al. call this *softmax
collapse* (SC) and measure the fraction of training examples whose floating-point sum is
exactly 1,

.. math::  \mathrm{SC} = \frac{1}{P} \sum_{i=1}^{P}
           \mathbb{1}\Big[\mathrm{fl}\Big(\sum_k e^{\,f_{ik} - \max_j f_{ij}}\Big) = 1\Big],

computed in the precision of the softmax (``dtype``; by default the outputs' own). In
float32 an example collapses once all its margins ``max f - f_j`` exceed about
``log 2^24 ~ 16.6`` (plus ``log K`` for ``K`` classes if the sum is not absorbed term by
term); in float64 about 37. ``zero_loss_fraction`` is the fraction of training examples
whose cross-entropy term ``-log softmax(f_i)_{y_i}`` is exactly 0 in that precision (the
paper's "zero terms"): collapsed examples whose arg-max is the label. Both are
per-position averages with the task's mask, as every loss (``dynamics.losses``).

Gradient-weight alignment (``GradientWeightAlignment``)
-------------------------------------------------------
Past the point of fitting the training set, most of the gradient of a cross-entropy lies
along the *naive loss minimisation* direction: scaling the logits up lowers the loss
without changing any prediction, and for a network that is positively homogeneous in its
weights (a ReLU MLP without biases) scaling the logits is scaling the weights, so
``-grad L`` points along ``theta`` (Prieto et al. 2025, their NLM direction). The
observable is the cosine

.. math::  \cos(-\nabla_\theta L, \theta) = \frac{-\langle \nabla_\theta L, \theta\rangle}
           {\lVert \nabla_\theta L \rVert\, \lVert \theta \rVert}

over all parameters together (the full-batch training loss's gradient, that of
``train_loss``). It is 1 when gradient descent only scales the weights up, 0 when it is
orthogonal to them (as ⊥Grad makes the update, ``dynamics.optimizers.orthogonal``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dynamics import losses
from dynamics.checks import check_choice
from dynamics.observables import Context, Observable

DTYPES = ("float16", "float32", "float64")


def softmax_sum(outputs, dtype=None):
    """``fl(sum_k exp(f_k - max_j f_j))`` over the last axis, in ``dtype`` (default: the
    outputs' dtype): exactly 1 for a collapsed softmax (module doc)."""
    f = outputs if dtype is None else outputs.astype(dtype)
    z = f - jnp.max(f, axis=-1, keepdims=True)
    return jnp.sum(jnp.exp(z), axis=-1)


def softmax_collapse(outputs, targets, dtype=None):
    """``(collapse fraction, zero-loss fraction)`` of ``outputs (P, ..., K)`` with
    integer labels ``targets`` (optionally ``losses.Masked``), in ``dtype`` (module doc)."""
    labels, mask = losses.split(targets)
    f = outputs if dtype is None else outputs.astype(dtype)
    collapsed = (softmax_sum(f) == 1).astype(f.dtype)
    logp = jax.nn.log_softmax(f, axis=-1)
    terms = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    zero = (terms == 0).astype(f.dtype)
    return losses._reduce(collapsed, mask), losses._reduce(zero, mask)


def gradient_weight_cosine(grads, params):
    """``cos(-g, theta)`` of two pytrees of the same structure, over all leaves together
    (module doc)."""
    g = jax.tree.leaves(grads)
    t = jax.tree.leaves(params)
    dot = sum(jnp.vdot(a, b) for a, b in zip(g, t))
    norm_g = jnp.sqrt(sum(jnp.vdot(a, a) for a in g))
    norm_t = jnp.sqrt(sum(jnp.vdot(b, b) for b in t))
    return -dot / (norm_g * norm_t)


@dataclasses.dataclass(frozen=True)
class SoftmaxCollapse(Observable):
    """``softmax_collapse`` and ``zero_loss_fraction`` on the training set, the softmax in
    ``dtype`` (``None``: the precision the run computes in). Classification tasks only."""

    dtype: str | None = None

    def __post_init__(self):
        if self.dtype is not None:
            check_choice("dtype", self.dtype, DTYPES)

    descriptions: ClassVar = {
        "softmax_collapse": (
            "softmax collapse fraction",
            "fraction of the training examples whose floating-point softmax denominator "
            "fl(Σ_k exp(f_k - max_j f_j)) equals 1 exactly, in the softmax's precision "
            "(Prieto et al. 2025): their arg-max probability is exactly 1"),
        "zero_loss_fraction": (
            "zero-loss fraction",
            "fraction of the training examples whose cross-entropy term "
            "-log softmax(f_i)_(y_i) is exactly 0 in the softmax's precision (collapsed "
            "and correctly classified; the label's logit gets zero gradient)"),
    }

    def applies_to(self, classification):
        return classification

    def __call__(self, ctx: Context):
        collapse, zero = softmax_collapse(ctx.train_outputs, ctx.data["y_train"], self.dtype)
        return {"softmax_collapse": collapse, "zero_loss_fraction": zero}


@dataclasses.dataclass(frozen=True)
class GradientWeightAlignment(Observable):
    """``gradient_weight_cosine = cos(-grad L_train, theta)`` over all parameters."""

    descriptions: ClassVar = {
        "gradient_weight_cosine": (
            "cosine of the negative gradient with the weights",
            "-<∇_θ L_train, θ> / (||∇_θ L_train|| ||θ||) over all parameters together, "
            "L_train the full-batch training loss: 1 when descent only scales the weights "
            "(naive loss minimisation, Prieto et al. 2025)"),
    }

    def __call__(self, ctx: Context):
        return {"gradient_weight_cosine": gradient_weight_cosine(ctx.train_loss_and_grad[1],
                                                                  ctx.params)}
