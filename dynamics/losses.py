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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

LOSSES = ("mse", "cross_entropy")


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


def get(name: str):
    if name == "mse":
        return mse
    if name == "cross_entropy":
        return cross_entropy
    raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")


def accuracy(outputs, targets):
    y, mask = split(targets)
    labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
    hits = (jnp.argmax(outputs, axis=-1) == labels).astype(outputs.dtype)
    return _reduce(hits, mask)
