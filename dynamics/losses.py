r"""Losses and their normalisation, written once.

Outputs ``f`` have shape ``(P, ..., K)``: one output vector of size ``K`` per *position*,
where the positions are the example axis and any axes after it but the last (one position
per example for ``(P, K)`` outputs, ``T`` per example for sequence outputs ``(P, T, K)``).
Targets have the outputs' shape (``mse``) or their shape without ``K`` (integer labels for
``cross_entropy``). An optional boolean mask ``m`` of the positions' shape selects the
positions that count (``Masked(targets, mask)``; without one every position counts). With
``l_i`` the loss term of position ``i``:

.. math::

    L = \frac{\sum_i m_i\, l_i}{\sum_i m_i}, \qquad
    l_i^{\mathrm{mse}} = \sum_{k=1}^{K} (f_{ik} - y_{ik})^2, \qquad
    l_i^{\mathrm{ce}} = -\log \mathrm{softmax}(f_i)_{y_i},

i.e. a mean over every axis but the last, a sum over the last (the outputs), no factor
1/2. For ``P`` examples with one position each and no mask this is
``L = (1/P) sum_i sum_k (f_ik - y_ik)^2``, so the Hessian of linear regression ``f = X w``
is ``(2/P) X^T X`` and gradient flow in function space reads
``df/dt = -(2/P) eta K (f - y)`` with ``K`` the NTK on the training set.

Accuracy is the (masked) fraction of positions whose arg-max output is the label (for
``mse`` on one-hot targets, the arg-max of the target).

StableMax (Prieto, Barsbey, Mediano & Birdal 2025, "Grokking at the edge of numerical
stability", ICLR 2025, their definitions of ``s`` and of StableMax) replaces the
exponential of the softmax by a function that grows linearly for positive and decays like
``1/|x|`` for negative logits,

.. math::

    s(x) = \begin{cases} x + 1 & x \ge 0 \\ 1 / (1 - x) & x < 0 \end{cases}, \qquad
    \mathrm{StableMax}(f)_k = \frac{s(f_k)}{\sum_j s(f_j)}, \qquad
    l_i^{\mathrm{stablemax}} = -\log \mathrm{StableMax}(f_i)_{y_i},

(``stablemax_cross_entropy``; ``s`` is continuous with ``s(0) = s'(0) = 1`` and positive,
so StableMax is a distribution with the arg-max of the logits). ``log_stablemax`` is
``log StableMax(f)``: since it is a vector of log-probabilities, the softmax
cross-entropy of ``log_stablemax(f)`` is the StableMax cross-entropy of ``f``, which is how
a task with ``loss="cross_entropy"`` trains with StableMax (a model whose outputs are
``log_stablemax`` of its logits). The StableMax loss is not one of ``LOSSES`` (the names a
``Task`` takes): its targets are those of ``cross_entropy``.

The z-loss (Chowdhery et al. 2022, "PaLM: Scaling language modeling with pathways",
Sec. 5, "Training instability"; used against the output-logit divergence by Wortsman et
al. 2023, "Small-scale proxies for large-scale Transformer training instabilities",
Sec. 3.1.2) adds to the cross-entropy the square of the log-partition of each position's
logits, which keeps ``log Z`` near 0 (the softmax self-normalised):

.. math::

    l_i^{\mathrm{ce+z}} = -\log \mathrm{softmax}(f_i)_{y_i} + c\, (\log Z_i)^2, \qquad
    \log Z_i = \log \sum_{k} e^{f_{ik}}, \qquad c = 10^{-4},

(``cross_entropy_z_loss``; ``c = Z_LOSS_COEFFICIENT``, PaLM's value, also Wortsman et
al.'s). It is one of ``LOSSES``: a task built with ``loss="cross_entropy_z_loss"`` has the
targets, masks, label noise, classes and accuracy of a ``cross_entropy`` task and trains
on ``l^{ce+z}`` (its loss observables report ``l^{ce+z}`` too). ``c`` is fixed, not a swept
hyperparameter: the training loop and the loss observables call ``get(task.loss)`` on
``(outputs, targets)`` alone.

Target kinds
------------
Each loss takes one kind of targets (``TARGET_KINDS``, the one place that says which):
``"real"`` targets of the outputs' shape (``mse``) or ``"labels"``, integer class labels of
the positions' shape (``cross_entropy``, ``cross_entropy_z_loss``). Tasks and their
generators ask ``takes_labels(loss)``, never compare a loss with a name.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.checks import check_choice

# The kind of targets each loss takes (module doc, "Target kinds"); its keys are the losses
# a Task is built with.
TARGET_KINDS = {"mse": "real", "cross_entropy": "labels", "cross_entropy_z_loss": "labels"}
LOSSES = tuple(TARGET_KINDS)
LABEL_LOSSES = tuple(name for name, kind in TARGET_KINDS.items() if kind == "labels")


def takes_labels(loss: str) -> bool:
    """Whether ``loss`` takes integer class labels (else real targets); ValueError naming
    the allowed losses for an unknown one."""
    return TARGET_KINDS[check_choice("loss", loss, LOSSES)] == "labels"


class Masked(NamedTuple):
    """Targets with a boolean mask over their positions (a pytree: rows of both are
    selected together)."""

    values: Any
    mask: Any


def split(targets):
    """``(values, mask or None)`` of plain or ``Masked`` targets."""
    if isinstance(targets, Masked):
        return targets.values, targets.mask
    return targets, None


def _reduce(terms, mask):
    """The mean of the per-position ``terms`` weighted by ``mask`` (module doc)."""
    if mask is None:
        return jnp.mean(terms)
    w = mask.astype(terms.dtype)
    return jnp.sum(w * terms) / jnp.sum(w)


def weight(targets):
    """``sum_i m_i``: how many positions count (an int, traced with a mask); a loss on
    the union of disjoint row sets is the ``weight``-weighted mean of the losses on each."""
    values, mask = split(targets)
    if mask is not None:
        return jnp.sum(mask.astype(jnp.int32))
    return values.size if jnp.issubdtype(values.dtype, jnp.integer) else (
        values.size // values.shape[-1])


def mse(outputs, targets):
    y, mask = split(targets)
    return _reduce(jnp.sum((outputs - y) ** 2, axis=-1), mask)


def cross_entropy(outputs, targets):
    labels, mask = split(targets)
    logp = jax.nn.log_softmax(outputs, axis=-1)
    terms = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return _reduce(terms, mask)


def stablemax_s(x):
    """``s(x) = x + 1`` for ``x >= 0``, ``1 / (1 - x)`` for ``x < 0`` (module doc; Prieto et
    al. 2025). The negative branch is evaluated at ``min(x, 0)`` so that neither
    branch produces an infinity or a NaN gradient under ``jnp.where``."""
    negative = 1.0 / (1.0 - jnp.minimum(x, 0.0))
    return jnp.where(x >= 0, x + 1.0, negative)


def log_stablemax(outputs):
    """``log StableMax(f) = log s(f) - log sum_j s(f_j)`` over the last axis (module doc)."""
    s = stablemax_s(outputs)
    return jnp.log(s) - jnp.log(jnp.sum(s, axis=-1, keepdims=True))


def stablemax_cross_entropy(outputs, targets):
    """``-log StableMax(f_i)_{y_i}``, reduced as every loss (module doc); integer labels,
    optionally ``Masked``, as for ``cross_entropy``."""
    labels, mask = split(targets)
    logp = log_stablemax(outputs)
    terms = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return _reduce(terms, mask)


Z_LOSS_COEFFICIENT = 1e-4  # Chowdhery et al. 2022, Sec. 5


def cross_entropy_z_loss(outputs, targets, coefficient: float = Z_LOSS_COEFFICIENT):
    """``-log softmax(f_i)_{y_i} + c (log Z_i)^2``, reduced as every loss (module doc;
    Chowdhery et al. 2022, Sec. 5); integer labels, optionally ``Masked``."""
    labels, mask = split(targets)
    log_z = jax.nn.logsumexp(outputs, axis=-1)
    label_logit = jnp.take_along_axis(outputs, labels[..., None], axis=-1)[..., 0]
    terms = (log_z - label_logit) + coefficient * jnp.square(log_z)
    return _reduce(terms, mask)


def get(name: str):
    """The loss function ``(outputs, targets) -> scalar`` named ``name`` (one of
    ``LOSSES``)."""
    functions = {"mse": mse, "cross_entropy": cross_entropy,
                 "cross_entropy_z_loss": cross_entropy_z_loss}
    return functions[check_choice("loss", name, LOSSES)]


def accuracy(outputs, targets):
    y, mask = split(targets)
    labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
    hits = (jnp.argmax(outputs, axis=-1) == labels).astype(outputs.dtype)
    return _reduce(hits, mask)
