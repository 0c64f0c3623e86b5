r"""Losses and their normalisation, written once.

For ``P`` examples with outputs ``f_i in R^K``:

* ``mse``: :math:`L = \frac{1}{P}\sum_{i=1}^{P} \sum_{k=1}^{K} (f_{ik} - y_{ik})^2`
  (mean over examples, sum over outputs, no factor 1/2). Hence the Hessian of linear
  regression ``f = X w`` is ``(2/P) X^T X``, and gradient flow in function space reads
  ``df/dt = -(2/P) eta K (f - y)`` with ``K`` the NTK on the training set.
* ``cross_entropy``: :math:`L = -\frac{1}{P}\sum_i \log \mathrm{softmax}(f_i)_{y_i}` with
  integer labels ``y_i``.

Accuracy is the fraction of examples whose arg-max output is the label (for ``mse`` on
one-hot targets, the arg-max of the target).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("mse", "cross_entropy")


def mse(outputs, targets):
    return jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))


def cross_entropy(outputs, labels):
    logp = jax.nn.log_softmax(outputs, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def get(name: str):
    if name == "mse":
        return mse
    if name == "cross_entropy":
        return cross_entropy
    raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")


def accuracy(outputs, targets):
    labels = targets if targets.ndim == 1 else jnp.argmax(targets, axis=-1)
    return jnp.mean((jnp.argmax(outputs, axis=-1) == labels).astype(outputs.dtype))
